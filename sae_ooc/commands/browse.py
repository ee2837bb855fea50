"""Write RUN/browse/: an offline feature browser, one page per SAE feature (open RUN/browse/index.html in any browser).

Per feature: density, activation histogram on held-out prefixes, top and random activating prompts with the model's
answer, logit effects through the unembedding, eval-sae's ground-truth labels and alignment, attribution's node
effect and the circuits it is in; per hook a sortable, filterable index. Plain HTML + one JS + one CSS file, no network.
Each feature's data is also written as JSON in SAE-dashboard/Neuronpedia field names. --out DIR copies the site there.
"""

from pathlib import Path

from sae_ooc.commands import verb


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=None, help="also copy the site to this folder (new, empty, or an earlier copy of a site); "
                                                         "default: only RUN/browse/")


def options(args) -> dict:
    if args.out is not None:  # a bad --out is refused before the pages are built, not after
        from sae_ooc.browse.copy import check_out

        check_out(args.out)
    return {}


def summarize(run, result) -> str:
    info = result.info or {}
    shot = f"; screenshot {run.root / 'browse' / info['screenshot']}" if info.get("screenshot") else "; no screenshot (Chromium not found)"
    return (f"browse: {verb(result)} {info.get('n_features', '?')} feature pages over {len(info.get('hooks', []))} hooks into "
            f"{run.root / 'browse'}/ (open index.html){shot}")


def after(run, args) -> str | None:
    if args.out is None:
        return None
    from sae_ooc.browse.copy import copy_site

    return f"browse: copied the site to {copy_site(run.root / 'browse', args.out)}/ (open index.html)"
