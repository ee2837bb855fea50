"""Compare finished runs (seeds, sizes, families): their shared headline numbers, curves and mechanism side by side.

Reads each RUN's summary.json and outputs; writes DIR/compare.md (per number: each run, mean, sd, min, max; whether the
bridge is carried and used at the same place and the variable circuit has the same shape; SAE features matched
across runs by decoder cosine and by activation correlation on shared prompts; for a run and a fine-tuning run of it,
where the new facts go: sae_ooc.compare.finetune), DIR/compare.json and figures
(accuracy, probes, patching, control_curves .png/.svg). DIR must be new, empty or an earlier compare's output.
"""

from pathlib import Path

# a reader of many runs: no run directory, config or device of its own
COMMON = {"force": False, "overrides": False, "config": False, "run": False, "device": False}


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories (at least 2) holding summary.json")
    p.add_argument("--out", type=Path, required=True, help="folder for compare.md, compare.json and the figures")
    p.add_argument("--no-sae-match", dest="match_saes", action="store_false", help="skip SAE feature matching (no torch needed)")
    p.add_argument("--no-finetune", dest="finetune", action="store_false",
                   help="skip the fine-tuning comparison of a run and its fine-tuning run (model.source: run): causal tracing "
                        "of old and new facts, the bridge probe, the pretrained DAS subspace and SAEs on the fine-tuned model")


def main(args) -> int:
    from sae_ooc.compare.run import run_compare

    res = run_compare(args.runs, args.out, match_saes=args.match_saes, finetune=args.finetune)
    print(f"compare: {len(res['runs'])} runs, {len(res['table']['rows'])} shared numbers; wrote {args.out}/compare.md, "
          f"compare.json, {', '.join(res['figures'])} (.png/.svg)")
    return 0
