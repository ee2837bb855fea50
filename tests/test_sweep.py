"""`sae-ooc sweep`: grid points, submitit's local executor, resuming after a kill, the phase diagram and table."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sae_ooc.config import ConfigError
from sae_ooc.errors import UserError
from sae_ooc.sweep import runner
from sae_ooc.sweep.runner import POINT_FILE, run_point, run_sweep
from sae_ooc.sweep.spec import load_sweep
from sae_ooc.sweep.result import SweepPoint
from sae_ooc.sweep.summary import smallest
from conftest import TINY, rendered_figures
from sae_ooc.config import load_config

pytest.importorskip("submitit")

SWEEP = f"""
name: t
base: {TINY}
set: {{train.steps: 40, train.eval_every: 10, train.n_checkpoints: 3}}
grid:
  model.n_layers: [1, 2]
  model.weight_sharing: [false, true]
exclude:
  - {{model.n_layers: 1, model.weight_sharing: true}}
"""


def _write(tmp_path, text=SWEEP):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_grid_points_exclude_and_errors(tmp_path):
    sw = load_sweep(_write(tmp_path))
    pts = sw.points()
    assert [p.slug for p in pts] == ["n_layers=1__weight_sharing=false", "n_layers=2__weight_sharing=false", "n_layers=2__weight_sharing=true"]
    assert pts[2].cfg.model.weight_sharing and pts[2].cfg.model.n_layers == 2 and pts[2].cfg.train.steps == 40
    assert sw.axes() == ("model.n_layers", "model.weight_sharing")
    with pytest.raises(ConfigError, match="model.n_layerz"):
        load_sweep(_write(tmp_path, SWEEP.replace("model.n_layers: [1, 2]", "model.n_layerz: [1, 2]"))).points()
    with pytest.raises(UserError, match="unknown key"):
        load_sweep(_write(tmp_path, SWEEP + "bogus: 1\n"))
    with pytest.raises(UserError, match="not found"):
        load_sweep(tmp_path / "nope.yaml")


@pytest.mark.parametrize("edit, needles", [
    (("grid:", "set: [1, 2]\ngrid:"), ["'set' must be a mapping"]),  # each crashed with a traceback
    (("  - {model.n_layers: 1, model.weight_sharing: true}", "  - model.n_layers"), ["'exclude' must be a list of mappings"]),
    (("grid:", "plot: model.n_layers\ngrid:"), ["'plot' must be a mapping"]),
    ((f"base: {TINY}", "base: nothere.yaml"), ["base", "nothere.yaml not found", "relative to the sweep file"]),  # was "e.g. --config"
    (("model.n_layers: [1, 2]", "sae_eval.probe_steps: [1, 2]"), ["grid key 'sae_eval.probe_steps' is not in task, model, train"]),
    (("grid:", "stages: [data]\ngrid:"), ["unknown key(s) stages"]),  # was accepted and ignored
    (("grid:", "grid: {model.n_layers: [1, 2]\nx:"), ["is not valid YAML at line"]),
])
def test_malformed_sweep_files_are_one_line_errors(tmp_path, edit, needles):
    with pytest.raises(UserError) as e:
        load_sweep(_write(tmp_path, SWEEP.replace(*edit, 1)))
    assert len(str(e.value).splitlines()) == 1 and all(n in str(e.value) for n in needles), str(e.value)


def test_sweep_help_has_no_device(capsys):
    from sae_ooc.cli import main

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    h = capsys.readouterr().out
    assert "--device" not in h and "--jobs" in h  # a point's RunDir is CPU: a --device here reached nothing


def test_smallest_composing_point_is_the_one_with_fewest_distinct_parameters():
    def rec(n: int, test_id: float) -> SweepPoint:
        return SweepPoint(slug=str(n), values={}, config_hash="", unique_parameters=n, accuracy={"test_id": test_id, "atomic_test": 1.0},
                          majority_rate={}, steps=1, minutes=0.0, stopped_early=False, test_id_0_9_step=None, valid_id_0_9_step=None,
                          max_steps=1)

    recs = [rec(900, 0.95), rec(500, 0.95), rec(100, 0.5)]
    assert smallest(recs).unique_parameters == 500
    assert smallest(recs[2:]) is None


def test_sweep_resumes_after_a_kill_through_submitit_local_executor(tmp_path, capsys, monkeypatch):
    sw = load_sweep(_write(tmp_path, SWEEP.replace("[1, 2]", "[2]").replace("train.steps: 40", "train.steps: 30")))
    out = tmp_path / "sweep"
    tied = "n_layers=2__weight_sharing=true"
    pts = {q.slug: q for q in sw.points()}

    class InProcess:  # the first attempt in this process (a submitit job costs a process's imports)
        def submit(self, fn, *args):
            rec = fn(*args)
            return type("Job", (), {"done": lambda self: True, "result": lambda self: rec, "cancel": lambda self, check: None})()

    # first attempt: the tied point is killed at step 25 (its last checkpoint: step 20); the other finishes
    with monkeypatch.context() as m:
        m.setattr(runner, "_executor", lambda *a: InProcess())
        m.setattr(runner, "POLL_S", 0)
        res = run_sweep(sw, jobs=2, out=out, stop_after_steps={tied: 25})
    assert not res["all_done"] and set(res["done"]) == set(pts) - {tied}
    assert not (out / "points" / tied / POINT_FILE).exists()
    assert (out / "points" / tied / "model" / "checkpoints" / "latest").is_dir()
    stamps = {p.slug: (out / "points" / p.slug / POINT_FILE).stat().st_mtime_ns for p in sw.points() if p.slug != tied}

    # the sweep skips the finished point and resumes the killed one as a submitit job: one real process boundary
    with rendered_figures():  # the phase diagram, read below (the job's process renders as a user's does)
        res = run_sweep(sw, jobs=2, out=out)
    assert res["all_done"] and set(res["done"]) == set(pts)
    assert "1 finished (skipped), 1 to run" in capsys.readouterr().out
    assert len(list((out / ".submitit").glob("*_log.out"))) == 1  # the resumed point ran as a submitit job
    for slug, ns in stamps.items():  # finished points were not run again
        assert (out / "points" / slug / POINT_FILE).stat().st_mtime_ns == ns
    log = "".join(f.read_text() for f in (out / ".submitit").glob("*_log.out"))
    assert "resuming from" in log

    # the resumed point ends bit-identical to the same point run without interruption
    p = pts[tied]
    ref_dir = tmp_path / "ref" / tied
    run_point(str(ref_dir), str(sw.base), p.overrides, p.cfg.name, p.config_hash, p.values)
    ref = load_file(str(ref_dir / "model" / "model.safetensors"))
    got = load_file(str(out / "points" / tied / "model" / "model.safetensors"))
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)

    table = (out / "table.md").read_text()
    assert table.count("| 2 | false |") == 1 and "| 2 | true |" in table
    js = json.loads((out / "sweep.json").read_text())
    assert len(js["points"]) == 2
    tied_rec = next(r for r in js["points"] if r["slug"] == tied)
    untied_rec = next(r for r in js["points"] if r["slug"] == "n_layers=2__weight_sharing=false")
    assert tied_rec["unique_parameters"] < untied_rec["unique_parameters"]
    assert (out / f"phase_{js['name']}.png").is_file() and (out / f"phase_{js['name']}.svg").is_file()

    # the report of a run beside the sweeps folder shows every point, the smallest composing one and the phase diagram
    import shutil

    from sae_ooc.report.doc import Doc
    from sae_ooc.report.sweeps import sweep_section

    shutil.copytree(out, tmp_path / "runs" / "sweeps" / js["name"], ignore=shutil.ignore_patterns("points", ".submitit"))

    class Run:
        root = tmp_path / "runs" / "default"
        cfg = load_config(TINY)  # the report's headings ask the run's family's question

    doc = Doc(Run())
    sweep_section(doc)
    text = "\n".join(doc.lines)
    rows = [line for line in text.splitlines() if line.startswith("| 2 | ")]
    assert len(rows) == len(js["points"]) == 2
    for r in js["points"]:
        row = next(line for line in rows if line.startswith(f"| 2 | {str(r['values']['model.weight_sharing']).lower()} |"))
        assert f"{r['accuracy']['test_id']:.3f}" in row and f"{r['unique_parameters']:,}" in row
    assert [f.name for f in doc.figures] == [f"phase_{js['name']}.png", f"phase_{js['name']}.svg"]
    assert (js["smallest_composed"] is None) == ("No point of this sweep composed." in text)


@pytest.mark.figures
def test_family_and_seed_axes_spread_over_seeds_in_table_json_and_phase_diagram(tmp_path):
    """A family axis is a grid key; `seeds` runs each setting once per seed (task.seed = train.seed = it), and the
    table, sweep.json and phase diagram give each setting's mean and range over its seeds."""
    import numpy as np

    from sae_ooc.sweep.summary import write_summary
    from sae_ooc.viz.phase_plots import cell

    text = SWEEP.replace("model.weight_sharing: [false, true]", "task.family: [twohop, comparison]").replace(
        "exclude:\n  - {model.n_layers: 1, model.weight_sharing: true}\n", "seeds: [0, 1, 2]\n")
    sw = load_sweep(_write(tmp_path, text))
    pts = sw.points()
    assert len(pts) == 2 * 2 * 3 and pts[0].slug == "n_layers=1__family=twohop__seed=0"
    assert [(p.cfg.task.seed, p.cfg.train.seed, p.seed) for p in pts[:3]] == [(0, 0, 0), (1, 1, 1), (2, 2, 2)]
    assert {p.cfg.task.family for p in pts} == {"twohop", "comparison"}
    rng = np.random.default_rng(0)
    done = {}
    for q in pts[:-1]:  # the last run is not finished
        a = {s: float(rng.uniform()) for s in ("test_id", "test_ood_sys", "test_unanswerable", "valid_id", "atomic_test")}
        done[q.slug] = SweepPoint(slug=q.slug, values=q.values, seed=q.seed, config_hash="", accuracy=a, majority_rate={},
                                  unique_parameters=10, steps=40, minutes=0.0, stopped_early=False, max_steps=40,
                                  valid_id_0_9_step=None if q.seed == 2 else 10 * (q.seed + 1), test_id_0_9_step=None)
    out = tmp_path / "sweep"
    out.mkdir()
    res = write_summary(sw, out, pts, done)
    js = json.loads((out / "sweep.json").read_text())
    assert js["seeds"] == [0, 1, 2] and len(js["settings"]) == 4 and len(js["points"]) == 11
    for st in js["settings"]:
        runs = [done[q.slug] for q in pts if q.values == st["values"] and q.slug in done]
        ood = [r.accuracy["test_ood_sys"] for r in runs]
        assert st["n_runs"] == len(runs) and st["test_ood_sys"]["mean"] == pytest.approx(np.mean(ood))
        assert (st["test_ood_sys"]["min"], st["test_ood_sys"]["max"]) == (min(ood), max(ood))
        assert st["test_ood_sys"]["sd"] == pytest.approx(np.std(ood, ddof=1))
        assert st["valid_id_0.9_step"]["n"] == 2 and st["valid_id_0.9_step"]["mean"] == 15  # seeds 0 and 1 got there
        v, txt = cell(runs, "test_ood_sys")
        assert v == pytest.approx(np.mean(ood)) and txt.splitlines()[1] == f"{min(ood):.2f}–{max(ood):.2f}"
        assert cell(runs, "steps")[1].splitlines() == ["15", "10–20"] + ([f"2/{len(runs)}"] if len(runs) > 2 else [])
    table = (out / "table.md").read_text()
    assert "Across seeds 0, 1, 2" in table and table.count("| comparison |") == 6 + 2  # 6 runs (one unfinished), 2 settings
    assert table.count("not by 40") == 11 + 3  # every run's test_id step, seed 2's valid_id step: within its 40 steps
    assert [f.suffix for f in res["figures"]] == [".png", ".svg"] and all(f.stat().st_size > 0 for f in res["figures"])


def test_a_key_the_y_axis_determines_is_folded_into_its_ticks_and_unreached_steps_name_the_budget(tmp_path):
    """A step budget per family (a train.steps grid key paired with task.family through `exclude`) goes into the family
    tick labels, not a row of half-empty panels; a setting none of whose seeds reached valid_id 0.9 says within how many,
    and an accuracy cell its split's majority-answer rate."""
    from sae_ooc.viz.phase_plots import cell, folded

    text = SWEEP.replace("model.weight_sharing: [false, true]", "task.family: [twohop, comparison]\n  train.steps: [40, 20]").replace(
        "{model.n_layers: 1, model.weight_sharing: true}", "{task.family: twohop, train.steps: 20}\n  - {task.family: comparison, train.steps: 40}")
    pts = load_sweep(_write(tmp_path, text)).points()
    assert [p.cfg.train.steps for p in pts] == [40, 20, 40, 20]
    assert folded(pts, "task.family", ["train.steps"]) == {"train.steps": {"twohop": 40, "comparison": 20}}
    assert folded(pts, "model.n_layers", ["train.steps"]) == {}  # both budgets at each depth: stays a facet
    recs = [SweepPoint(slug="s", values={}, config_hash="", accuracy={"test_ood_sys": 0.7}, majority_rate={"test_ood_sys": 0.48},
                       unique_parameters=1, steps=20, minutes=0.0, stopped_early=False, max_steps=20, valid_id_0_9_step=None,
                       test_id_0_9_step=None)] * 2
    assert cell(recs, "steps") == (None, "not by\n20")
    assert cell(recs, "test_ood_sys") == (pytest.approx(0.7), "0.70\n0.70–0.70\nmajority 0.48")  # chance differs by family
