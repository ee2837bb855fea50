"""The shared headline numbers of several runs: each run's `summary.json` (a list of {name, value, measured_on,
in_sample}), the names whose value is a number in every run, and per name each run's value, mean, sd (sample sd,
ddof=1), min and max. Torch-free."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sae_ooc.errors import UserError
from sae_ooc.report.summary import SUMMARY_FILE, HeadlineNumber, ReportSummary

SUMMARY = SUMMARY_FILE


def read_summary(run: Path) -> dict[str, HeadlineNumber]:
    """{name: number} of RUN/summary.json; a missing or unreadable one is a UserError naming `sae-ooc report`."""
    path = Path(run) / SUMMARY
    if not path.is_file():
        raise UserError(f"{run}: no {SUMMARY}; run `sae-ooc pipeline --run {run}` (or `sae-ooc report --run {run}`) first")
    return ReportSummary.load(run, rebuild=f"sae-ooc report --run {run}").by_name()


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def headline_table(summaries: list[dict[str, HeadlineNumber]]) -> dict:
    """{"rows": [{name, values, mean, sd, min, max, in_sample, measured_on}], "not_shared": [names]}: a row for every
    name whose value is a finite number in every run (in the first run's order); the others are listed, not averaged."""
    names = list(summaries[0])
    for s in summaries[1:]:
        names += [n for n in s if n not in names]
    rows, not_shared = [], []
    for name in names:
        vals = [_number(s[name].value) if name in s else None for s in summaries]
        if any(v is None for v in vals):
            not_shared.append(name)
            continue
        a = np.asarray(vals, dtype=float)
        first = summaries[0][name]
        rows.append({"name": name, "values": vals, "mean": float(a.mean()), "sd": float(a.std(ddof=1)),
                     "min": float(a.min()), "max": float(a.max()),
                     "in_sample": any(bool(s[name].in_sample) for s in summaries if name in s),
                     "measured_on": first.measured_on})
    return {"rows": rows, "not_shared": not_shared}


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def markdown(table: dict, labels: list[str]) -> list[str]:
    """The table as Markdown lines; in-sample numbers are marked (*)."""
    head = ["number", *labels, "mean", "sd", "min", "max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        name = r["name"] + (" (*)" if r["in_sample"] else "")
        cells = [name, *map(_fmt, r["values"]), _fmt(r["mean"]), _fmt(r["sd"]), _fmt(r["min"]), _fmt(r["max"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"(*) in-sample in at least one run. sd: sample standard deviation (ddof=1) over the {len(labels)} runs."]
    if table["not_shared"]:
        lines.append(f"Not a number in every run, so not compared: {len(table['not_shared'])} "
                     f"({', '.join(table['not_shared'][:8])}{', ...' if len(table['not_shared']) > 8 else ''}).")
    return lines
