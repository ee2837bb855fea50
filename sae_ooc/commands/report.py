"""Write RUN/REPORT.md from every stage's outputs (and copy it with tables and figures to results/ for the default run)."""

from sae_ooc.viz.export import resolve_results_dir
from sae_ooc.viz.report import run_report


def add_arguments(p) -> None:
    p.add_argument("--results-dir", default="auto",
                   help="also copy the report, tables and figures here: auto (results/ for the default config), none, or a folder")


def main(run, args) -> int:
    results = resolve_results_dir(args.results_dir, run)
    out = run_report(run, results_dir=results)
    print(f"report: wrote {out}" + (f" and {results}/REPORT.md" if results is not None else ""))
    return 0
