"""Mechanistic analyses of the trained model into RUN/analyze/<name>.{json,png,svg}: attention, logit-lens, patching, causal-tracing, probes, dla, back-patching.

`sae-ooc analyze NAME --run RUN` runs one (or a comma-separated list; `all`, the default, runs every one), each only
if its inputs changed since it ran (--force: recomputed anyway; RUN/stages.json records each analysis). Each
averages over a seeded sample of analyze.n_prompts held-out test_id prompts (probes: held-out prefixes of the
activation cache; back-patching: every failure of valid_id, test_id, test_ood_sys and test_unanswerable). Settings: the `analyze` config
section (n_prompts, seed, metric, noise_scale, noise_samples, window, probe_*, n_controls, ...).
"""

from sae_ooc.commands import files_written, verb
from sae_ooc.config import ANALYSIS_NAMES
from sae_ooc.errors import UserError


def add_arguments(p) -> None:
    p.add_argument("names", nargs="?", default="all", metavar="NAME",
                   help=f"analysis to run: all (default), {', '.join(ANALYSIS_NAMES)}, or several separated by commas")


def options(args) -> dict:
    bad = [n for n in args.names.split(",") if n.strip() not in ("all", *ANALYSIS_NAMES)]
    if bad:
        raise UserError(f"unknown analysis {bad[0].strip()!r}; valid: all, {', '.join(ANALYSIS_NAMES)}")
    return {"names": args.names}


def summarize(run, result) -> str:
    info = result.info or {}
    secs = ", ".join(f"{n} {s:.1f} s" for n, s in info.get("seconds", {}).items())
    names = info.get("analyses", [])  # `analyze attention`: the other analyses' files are older, not written now
    if not result.ran:  # skipped: every analysis the record holds (its info is only the last run's subset)
        names = [n for n in ANALYSIS_NAMES if n in ((run.stage_record("analyze") or {}).get("parts") or names)]
    files = files_written(run, "analyze", keep=lambda rel: rel.split("/")[-1].rsplit(".", 1)[0] in names)
    return (f"analyze: {verb(result)} {files}: {', '.join(names)} on "
            f"{info.get('n_prompts')} held-out test_id prompts" + (f" ({secs})" if secs and result.ran else ""))
