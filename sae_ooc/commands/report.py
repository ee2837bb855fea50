"""Write RUN/REPORT.md from every stage's outputs; --out DIR also copies it with its tables and figures there."""

from pathlib import Path

COMMON = {"force": False, "overrides": False}


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=None,
                   help="also copy the report, tables, figures and diagrams to this folder (e.g. results/); files there are overwritten only if "
                        "an earlier report wrote them (listed in its .sae_ooc_report.json); default: only RUN/REPORT.md")


def options(args) -> dict:
    if args.out is not None:  # refused before anything runs; the figures' names are checked again once they are known
        from sae_ooc.report.out import FIXED, check_out

        check_out(args.out, FIXED, run_root=getattr(args, "run", None))
    return {"out": args.out}


def summarize(run, result) -> str:
    from sae_ooc.commands import files_written

    out = result.info.get("out")
    return f"report: wrote {files_written(run, 'report')}" + (f" and {out}/ ({', '.join(result.info['copied'])})" if out else "")
