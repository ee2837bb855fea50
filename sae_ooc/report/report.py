"""Stage `report`: one Markdown page over every stage's outputs, each number with the intervention that produced
it, the data it was measured on, and the command that reproduces it; and RUN/summary.json, every headline number
of the page as `{"name", "value", "measured_on", "in_sample"}` for scripts and comparisons across runs.

With `out` (`sae-ooc report --out results/`, or the pipeline on the default run directory), the report, summary.json,
the metric tables, the figures and the circuit diagrams are copied there too, under stable names, so the committed
results/ folder is always the output of one run. No other stage writes outside the run directory. The report
overwrites there only what it wrote before (the marker `report.out.MARKER` lists it); any other file in the way is
refused before anything is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.io import write_text
from sae_ooc.report.analyses import analyses_section
from sae_ooc.report.bridge import bridge_section
from sae_ooc.report.browse import browse_section
from sae_ooc.report.causal_circuit import causal_circuit_section
from sae_ooc.report.variables_control import variables_control_section
from sae_ooc.report.circuits import attribution_section, circuit_section
from sae_ooc.report.doc import ORDER, Doc
from sae_ooc.report.family import family_section
from sae_ooc.report.finetune import finetune_section
from sae_ooc.report.threehop import threehop_section
from sae_ooc.report.interventions import edit_section, steer_section
from sae_ooc.report.mechanism import mechanism_section
from sae_ooc.report.dynamics import dynamics_section
from sae_ooc.report.sweeps import sweep_section
from sae_ooc.report.model import task_section, train_section
from sae_ooc.report.out import check_out, claim
from sae_ooc.report.saes import sae_section
from sae_ooc.report.summary import SUMMARY_FILE, HeadlineNumber, ReportSummary
from sae_ooc.report.variables import variable_section

_FUNCTIONS = {f.__name__.removesuffix("_section"): f for f in (
    finetune_section, threehop_section, causal_circuit_section, bridge_section, variables_control_section, mechanism_section, task_section, train_section, sae_section, attribution_section,
    circuit_section, variable_section, analyses_section, steer_section, edit_section, browse_section, dynamics_section, sweep_section,
    family_section)}
SECTIONS = tuple(_FUNCTIONS[name] for name in ORDER)  # the page's order, and its section numbers, are report.doc.ORDER
# the export's diagrams that results/ keeps beside the report
DIAGRAMS = tuple(f"{p}circuit.{ext}" for p in ("", "prompt_") for ext in ("png", "svg", "html"))


def build_report(run) -> Doc:
    """The report's Markdown, the figure files it refers to, and its headline numbers."""
    if not run.stages_file.exists():
        raise UserError(f"nothing has been run in {run.root}; run `sae-ooc pipeline --run {run.root}` first")
    doc = Doc(run)
    doc.add(f"# sae_ooc report: `{run.cfg.name}`", "",
            "Every number below comes from the run directory's files; each claim about the model comes from an intervention "
            "(evaluation of the trained model, SAE splicing, activation patching, ablation) named next to it, and says which data "
            "it was measured on. A number measured on the data that chose it is marked *(in-sample)*. The same numbers, "
            "machine-readable: [summary.json](summary.json).", "")
    for section in SECTIONS:
        section(doc)
    doc.add("## Reproduce everything", "", f"`sae-ooc pipeline --config configs/{run.cfg.name}.yaml`", "")
    return doc


def _run_links(run, text: str, figures: list[Path]) -> str:
    """The report links files by bare name (as they lie in results/); in RUN/REPORT.md point them at the run's own files."""
    where = {f.name: f for f in figures}
    for name in DIAGRAMS:
        where[name] = run.export_dir / name
    where["sae_summary.md"] = run.sae_eval_dir / "summary.md"
    for name, path in where.items():
        rel = path.relative_to(run.root).as_posix() if path.is_relative_to(run.root) else path.as_posix()
        text = text.replace(f"]({name})", f"]({rel})")
    return text


def run_report(run, force: bool = False, out: Path | None = None) -> dict:
    """Stage `report`: write RUN/REPORT.md and RUN/summary.json (always: it is cheap); with `out`, copy them with
    their tables, figures and the circuit diagrams there."""
    doc = build_report(run)
    text = "\n".join(doc.lines)
    copies = {}
    if out is not None:
        out = Path(out)
        copies = {f: out / f.name for f in doc.figures}
        copies[run.sae_eval_dir / "summary.md"] = out / "sae_summary.md"
        copies[run.model_dir / "final_metrics.json"] = out / "train_metrics.json"
        copies[run.attribution_dir / "validation.json"] = out / "attribution_validation.json"
        copies[run.circuit_dir / "faithfulness.json"] = out / "faithfulness.json"
        copies.update({run.export_dir / name: out / name for name in DIAGRAMS})
        copies = {src: dst for src, dst in copies.items() if src.exists()}
        names = ["REPORT.md", SUMMARY_FILE] + [dst.name for dst in copies.values()]
        check_out(out, names, run_root=run.root)  # before anything is written, the run's own REPORT.md included
    # unchanged files are left alone, so an up-to-date pipeline writes nothing (and runs on a read-only run directory)
    write_text(run.root / "REPORT.md", _run_links(run, text, doc.figures), only_if_changed=True)
    summary = ReportSummary([HeadlineNumber.from_json(n) for n in doc.numbers])  # Doc.number's rows, typed at the file
    summary.save(run.root, only_if_changed=True)
    if out is None:
        return {"out": None, "copied": [], "n_numbers": len(doc.numbers)}
    out.mkdir(parents=True, exist_ok=True)
    claim(out, names)
    write_text(out / "REPORT.md", text)
    summary.save(out)
    for src, dst in copies.items():
        shutil.copyfile(src, dst)
    return {"out": str(out), "copied": names, "n_numbers": len(doc.numbers)}
