"""The report is built from the run's files: its numbers must be the ones the stages wrote."""

import re

import pytest

from sae_ooc.cli import main
from sae_ooc.io import read_json


@pytest.mark.figures
def test_report_quotes_the_stage_outputs_and_copies_figures(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["--config", "configs/tiny.yaml", "--run", str(run), "--set", "train.steps=30", "--set", "train.eval_every=10"]
    assert main(["data", *base]) == 0
    assert main(["train", *base]) == 0
    results = tmp_path / "results"
    assert main(["report", "--run", str(run), "--out", str(results)]) == 0
    text = (results / "REPORT.md").read_text()
    # the run's own copy links the run's files where they lie; results/ holds them side by side under stable names
    assert text.replace("](accuracy.png)", "](model/accuracy.png)") == (run / "REPORT.md").read_text()
    assert (run / "model" / "accuracy.png").exists()
    fm = read_json(run / "model" / "final_metrics.json")
    row = re.search(r"^\| test_id \| ([0-9.]+) \| ([0-9.]+) \|$", text.split("## 2.")[1], re.M)
    assert float(row.group(1)) == round(fm["accuracy"]["test_id"], 3)
    assert float(row.group(2)) == round(fm["majority_rate"]["test_id"], 3)
    sizes = read_json(run / "stages.json")["data"]["info"]["sizes"]
    assert f"| train | {sizes['train']} |" in text
    # stages that have not run are named with the command to run, not silently left out
    assert "Not run yet: `sae-ooc train-sae`" in text and "Not run yet: `sae-ooc circuit`" in text
    assert (results / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_json(results / "train_metrics.json") == fm
    # issue 19: --out overwrites only what an earlier report wrote there (its marker lists it), never the user's files
    (results / "REPORT.md").write_text("stale")
    assert main(["report", "--run", str(run), "--out", str(results)]) == 0
    assert (results / "REPORT.md").read_text() == text
    capsys.readouterr()
    before = (run / "REPORT.md").stat().st_mtime_ns
    for name in ("REPORT.md", "accuracy.png"):  # a fixed name (refused up front) and a figure's (refused once the figures are known)
        mine = tmp_path / f"mine-{name}"
        mine.mkdir()
        (mine / name).write_text("my own notes")
        assert main(["report", "--run", str(run), "--out", str(mine)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "was not written by `sae-ooc report`" in err and name in err
        assert [p.name for p in mine.iterdir()] == [name] and (mine / name).read_text() == "my own notes"
    assert (run / "REPORT.md").stat().st_mtime_ns == before  # refused before anything was written
    # --out the run directory itself: the report is written there anyway; one line that says so, not "not written by"
    assert main(["report", "--run", str(run), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the run directory" in err
    # a report that changes nothing rewrites nothing (REPORT.md, summary.json, stages.json): a read-only run stays answerable
    assert main(["report", "--run", str(run)]) == 0  # (records that this report copied nowhere)
    files = [run / "REPORT.md", run / "summary.json", run / "stages.json"]
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    assert main(["report", "--run", str(run)]) == 0
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files] == stamps


def test_report_before_any_stage_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", "--config", "configs/tiny.yaml", "--run", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sae-ooc pipeline" in err


def test_the_same_figure_gives_the_same_bytes(tmp_path):
    from sae_ooc.viz.plots import plt, save_figure

    files = []
    for k in range(2):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], marker="o", label="x")
        ax.legend()
        files.append([p.read_bytes() for p in save_figure(fig, tmp_path / f"fig{k}")])
    assert files[0] == files[1]  # committed results/ figures change only when their data do


def test_the_pipeline_writes_results_only_for_the_default_run_directory(tmp_path, monkeypatch):
    """Issue #10: a default-config pipeline in another directory must not overwrite the committed results/."""
    from pathlib import Path

    import sae_ooc.pipeline

    root = Path(__file__).parents[1]
    asked = []
    monkeypatch.setattr(sae_ooc.pipeline, "run", lambda run, options, **kw: asked.append((run.root, options["report"].get("out"))) or [])
    monkeypatch.chdir(tmp_path)
    cfg = ["--config", str(root / "configs" / "default.yaml")]
    for argv in ([*cfg, "--run", str(tmp_path / "x")], cfg, [*cfg, "--run", "runs/default"], ["--config", str(root / "configs" / "tiny.yaml")]):
        assert main(["pipeline", *argv]) == 0
    assert [out for _, out in asked] == [None, Path("results"), Path("results"), None]
    assert not (tmp_path / "results").exists() and not (tmp_path / "x").exists()


def test_section_numbers_follow_the_section_order(monkeypatch):
    """Section numbers come from report.doc's order, not from the text: the report runs its sections in that order, and
    moving a section renumbers its heading, its subsections and the cross-references to it."""
    import pytest

    from sae_ooc.report import doc as doc_mod
    from sae_ooc.report.doc import Doc
    from sae_ooc.report.report import SECTIONS

    assert [f.__name__.removesuffix("_section") for f in SECTIONS] == list(doc_mod.ORDER)
    d = Doc(run=None)
    d.heading("bridge", "Where the bridge lives")
    d.heading("task", "Task")
    d.heading("analyses", "Mechanistic analyses")
    d.subheading("analyses", 2, "Logit lens")
    assert [x for x in d.lines if x] == ["## Where the bridge lives", "## 1. Task", "## 7. Mechanistic analyses", "### 7.2 Logit lens"]
    assert d.ref("sae") == "section 3"
    swapped = ("analyses",) + tuple(n for n in doc_mod.NUMBERED if n != "analyses")
    monkeypatch.setattr(doc_mod, "NUMBERED", swapped)
    d = Doc(run=None)
    d.heading("analyses", "Mechanistic analyses")
    d.heading("task", "Task")
    assert [x for x in d.lines if x] == ["## 1. Mechanistic analyses", "## 2. Task"] and d.ref("sae") == "section 4"
    with pytest.raises(KeyError, match="not a report section"):
        d.heading("nope", "x")
