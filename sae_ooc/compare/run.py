"""`run_compare(runs, out)`: read every run, write OUT/compare.md, OUT/compare.json and the side-by-side figures.

OUT is refused when it is a file, or a non-empty folder that compare did not write (its marker, OUT/.sae_ooc_compare.json,
is missing): compare overwrites only its own earlier output."""

from __future__ import annotations

import itertools
from pathlib import Path

from sae_ooc.compare import curves, mechanism, table
from sae_ooc.errors import UserError
from sae_ooc.io import read_json, write_json, write_text

MARKER = ".sae_ooc_compare.json"
WRITER = "sae-ooc compare"


def check_out(out: Path) -> None:
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise UserError(f"--out {out}: {p} is a file, not a folder; choose a new or empty folder")
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        ours = read_json(out / MARKER).get("written_by") == WRITER
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UserError(f"--out {out} is not empty and was not written by `{WRITER}` (no {MARKER}); choose a new or empty folder")


def check_runs(runs: list[Path]) -> list[Path]:
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise UserError(f"compare needs at least 2 runs, got {len(runs)}; pass two or more run directories")
    seen = set()
    for r in runs:
        if not r.is_dir():
            raise UserError(f"{r} is not a run directory; pass run directories that hold summary.json")
        if r.resolve() in seen:
            raise UserError(f"{r} is passed twice; pass each run once")
        seen.add(r.resolve())
    return runs


def labels_for(runs: list[Path]) -> list[str]:
    """The runs' folder names, or their paths where two share a name."""
    names = [r.name for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def run_compare(runs: list[Path], out: Path, match_saes: bool = True, finetune: bool = True) -> dict:
    from sae_ooc.viz.compare_plots import (plot_compare_accuracy, plot_compare_controls, plot_compare_patching,
                                           plot_compare_probes)

    runs = check_runs(runs)
    out = Path(out)
    check_out(out)
    summaries = [table.read_summary(r) for r in runs]  # every run checked before anything is written
    labels = labels_for(runs)
    tab = table.headline_table(summaries)
    mech = mechanism.same_mechanism(runs)
    saes = {}
    if match_saes:
        from sae_ooc.compare.match import compare_saes

        for i, j in itertools.combinations(range(len(runs)), 2):
            saes[f"{labels[i]} vs {labels[j]}"] = compare_saes(runs[i], runs[j])
    ft = {}
    if finetune:  # a pretrained run beside a fine-tuning run of it: where the new facts go (sae_ooc.compare.finetune)
        from sae_ooc.compare.finetune import compare_finetune, finetune_pairs

        for i, j in finetune_pairs(runs):
            ft[f"{labels[j]} (fine-tuned from {labels[i]})"] = compare_finetune(runs[i], runs[j])
    write_json(out / MARKER, {"written_by": WRITER})
    figures = {
        "accuracy": plot_compare_accuracy({lab: curves.accuracy(r) for lab, r in zip(labels, runs)}, out / "accuracy"),
        "probes": plot_compare_probes({lab: curves.probes(r) for lab, r in zip(labels, runs)}, out / "probes"),
        "patching": plot_compare_patching({lab: curves.patching(r) for lab, r in zip(labels, runs)}, out / "patching"),
    }
    if ft:
        from sae_ooc.viz.finetune_plots import plot_finetune_compare

        for k, (name, res) in enumerate(ft.items()):
            figures[f"finetune_{k}"] = plot_finetune_compare(res, out / f"finetune_{k}")
    controls = {lab: curves.control_curves(r) for lab, r in zip(labels, runs)}
    if any(controls.values()):
        figures["control_curves"] = plot_compare_controls(controls, out / "control_curves")
    result = {"runs": [str(r) for r in runs], "labels": labels, "table": tab, "mechanism": mech, "sae_matching": saes, "finetune": ft,
              "figures": {k: [p.name for p in v] for k, v in figures.items()}}
    write_json(out / "compare.json", result)
    from sae_ooc.compare.text import render

    write_text(out / "compare.md", render(result))
    return result
