"""Fine-tuning a finished run's model on new facts (model.source: run, task.finetune; issue 24): the splits the data
stage builds, checked against the facts they come from, and the whole pipeline on the fine-tuned run."""

from __future__ import annotations

import json

import pytest
import torch

from sae_ooc.cli import main as cli_main
from sae_ooc.config import load_config
from sae_ooc.io import load_tensors
from sae_ooc.models.hooked import load_model
from sae_ooc.tasks.data import load_task, split_tensors
from sae_ooc.tasks.finetune import KINDS, finetune_task

from conftest import ROOT

TINY_FT = ROOT / "configs" / "finetune_toy_tiny.yaml"


def _facts(split) -> dict:
    return {(h, r): t for h, r, t in zip(split["head"], split["r1"], split["answer"])}


def _task(run, *sets):
    cfg = load_config(TINY_FT, [f"model.run={run.root}", *sets])
    return finetune_task(cfg, run.root, load_task)


def test_new_facts_and_their_questions_follow_from_the_facts(harvested_run):
    src, _ = load_task(harvested_run.data_dir)
    old = _facts(src["atomic_test"])
    ds, vocab, meta = _task(harvested_run)
    new = _facts(ds["atomic_test"])
    assert new and not set(new) & set(old)  # new facts only on pairs pretraining never taught
    assert len(new) == meta["n_free_pairs"] == vocab.n_entities * vocab.n_relations - len(old)
    assert sorted(map(tuple, meta["new_facts"])) == sorted((h, r, t) for (h, r), t in new.items())
    facts = {**old, **new}
    trained = {tuple(i) for i in ds["train"]["input_ids"]}
    assert {tuple(i) for i in ds["train"]["input_ids"]} == {(h, r) for h, r in new}  # atomic facts only, no replay
    for kind in KINDS:
        for h, r1, r2, b, t in zip(*(ds[kind][c] for c in ("head", "r1", "r2", "bridge", "answer"))):
            assert facts[(h, r1)] == b and facts[(b, r2)] == t
            assert ((h, r1) in new, (b, r2) in new) == {"new_new": (True, True), "new_old": (True, False), "old_new": (False, True)}[kind]
            assert (h, r1, r2) not in trained
    assert len(ds["test_ood_sys"]) == sum(len(ds[k]) for k in KINDS) > 0
    assert ds["test_id"]["input_ids"] == src["test_id"]["input_ids"] and _facts(ds["pretrain_atomic"]) == old


def test_control_and_replay_keep_the_held_out_questions(harvested_run):
    ds, _, _ = _task(harvested_run)
    ctrl, _, meta = _task(harvested_run, "task.finetune.control=true")
    rep, _, rmeta = _task(harvested_run, "task.finetune.replay=0.5")
    for s in ("test_ood_sys", "new_valid", *KINDS):
        assert ctrl[s]["input_ids"] == ds[s]["input_ids"] == rep[s]["input_ids"]
    two_hop = [tuple(i) for i, hop in zip(ctrl["train"]["input_ids"], ctrl["train"]["hop"]) if hop == 2]
    assert len(two_hop) == meta["n_control_examples"] == round(2.0 * len(ds["atomic_test"]))  # tiny's phi
    held = {tuple(i) for s in ("test_ood_sys", "new_valid") for i in ds[s]["input_ids"]}
    assert two_hop and not set(two_hop) & held
    src, _ = load_task(harvested_run.data_dir)
    n_old = len(src["train"])
    assert len(rep["train"]) == n_old + rmeta["copies_of_new_rows"] * len(ds["atomic_test"])
    assert abs(rmeta["replay_share"] - n_old / len(rep["train"])) < 1e-9 and abs(rmeta["replay_share"] - 0.5) < 0.1


def test_pipeline_fine_tunes_a_finished_run_end_to_end(harvested_run, tmp_path, monkeypatch):
    import sae_ooc.browse.browse as browse_stage

    monkeypatch.setattr(browse_stage, "screenshot", lambda *a, **k: None)  # no Chromium: the browse tests cover it
    out = tmp_path / "ft"
    # without SAEBench's absorption (a tenth of this pipeline's time): tests/test_standard_metrics.py and tests/test_sae.py check it
    assert cli_main(["pipeline", "--config", str(TINY_FT), "--set", f"model.run={harvested_run.root}", "--set", "sae_eval.absorption=false",
                     "--run", str(out)]) == 0
    stages = json.loads((out / "stages.json").read_text())
    from sae_ooc.stages import PIPELINE_STAGES

    assert set(PIPELINE_STAGES) <= set(stages), set(PIPELINE_STAGES) - set(stages)
    # the run starts from the pretrained model: its step-0 checkpoint holds model.run's weights
    start = load_tensors(out / "model" / "checkpoints" / "step_0" / "model.safetensors")
    src = load_tensors(harvested_run.model_dir / "model.safetensors")
    assert start.keys() == src.keys() and all(torch.equal(start[k], src[k]) for k in src)
    summary = {n["name"]: n for n in json.loads((out / "summary.json").read_text())}
    ds, vocab = load_task(out / "data")
    model = load_model(out / "model")
    for split, name in (("new_new", "finetune.new_new.test_acc"), ("new_old", "finetune.new_old.test_acc"),
                        ("old_new", "finetune.old_new.test_acc"), ("atomic_test", "finetune.new_atomic.acc"),
                        ("test_id", "finetune.pretrain.test_id_acc")):
        st = split_tensors(ds[split], vocab)
        with torch.no_grad():  # accuracy recomputed here from the saved model, not through the evaluation code
            logits = model(st.tokens)[torch.arange(len(st)), st.answer_pos]
        assert summary[name]["value"] == pytest.approx(float((logits.argmax(-1) == st.answer).float().mean()))
        assert split in summary[name]["measured_on"]
    assert summary["finetune.new_atomic.acc"]["in_sample"] and not summary["finetune.new_new.test_acc"]["in_sample"]
    report = (out / "REPORT.md").read_text()
    assert "## Fine-tuning new facts" in report
    # the model is named by its run (no checkpoint or hub name), and the bridge probe's known/unknown and step-0 control
    # are read for what they are on a fine-tuning run
    assert f"The model of the run `{harvested_run.root}` (" in report and "**On this fine-tuning run** *known*" in report
    # a fine-tuning run of this one (the second phase of a data-ordering experiment) draws the same facts and questions
    cfg = load_config(TINY_FT, [f"model.run={out}", "task.finetune.control=true", "task.finetune.atomic=false"])
    again, _, meta = finetune_task(cfg, out, load_task)
    for s in ("test_ood_sys", "new_valid", *KINDS, "test_id", "pretrain_atomic"):
        assert again[s]["input_ids"] == ds[s]["input_ids"], s
    assert meta["chained"] and set(again["train"]["hop"]) == {2}  # only the two-hop examples: no atomic fact


def test_bad_fine_tuning_configs_are_one_line_errors(harvested_run, tmp_path, capsys):
    from test_bad_input import one_line_error

    one_line_error(capsys, ["data", "--config", str(TINY_FT), "--set", f"model.run={harvested_run.root}", "--set",
                            "task.n_entities=13", "--run", str(tmp_path / "a")], "task.n_entities", "model.run")
    one_line_error(capsys, ["data", "--config", str(TINY_FT), "--set", f"model.run={tmp_path}", "--run", str(tmp_path / "b")],
                   "no trained model")
    one_line_error(capsys, ["data", "--config", str(ROOT / "configs" / "tiny.yaml"), "--set", "task.finetune.replay=0.5",
                            "--run", str(tmp_path / "c")], "task.finetune", "model.source: run")
    # the Hugging Face configs read the section only in a fine-tuning run of a finished run (model.source: run)
    from sae_ooc.typed_yaml import ConfigError

    for name in ("finetune_gpt2", "finetune_pythia70m"):
        with pytest.raises(ConfigError, match="model.source: run"):
            load_config(ROOT / "configs" / f"{name}.yaml", ["task.finetune.replay=0.5"])
