"""summary.json's `in_sample` flags (issue #21, part 3): a number measured on data that also chose it, or that the model or
SAE was trained on, is labelled in-sample. Each report section is fed the smallest stage output it reads."""

from types import SimpleNamespace

import pytest
from conftest import TINY, typed

from sae_ooc.analyses.result import AttentionResult, LogitLensResult
from sae_ooc.config import load_config
from sae_ooc.report.doc import Doc
from sae_ooc.report.mechanism import bridge_at_r1, movers
from sae_ooc.report.saes import sae_section
from sae_ooc.report.sweeps import sweep_section
from sae_ooc.saes.metrics_result import SaeEvalMetrics
from sae_ooc.sweep.result import SweepResult


def _doc(tmp_path) -> Doc:
    root = tmp_path / "run"
    run = SimpleNamespace(root=root, cfg=load_config(TINY, ["name=nowhere"]), sae_eval_dir=root / "sae_eval", saes_dir=root / "saes")
    return Doc(run)


def _flags(doc: Doc) -> dict[str, bool]:
    return {n["name"]: n["in_sample"] for n in doc.numbers}


def test_mover_heads_are_chosen_on_the_pairs_they_are_scored_on(tmp_path):
    doc = _doc(tmp_path)
    heads = [{"head": "L2H1", "mover": True, "attn_r2_to_r1": 0.6, "z_patch_at_r2_recovered": 0.4},
             {"head": "L0H0", "mover": False, "attn_r2_to_r1": 0.1, "z_patch_at_r2_recovered": 0.0}]
    movers(doc, {"attention": typed(AttentionResult, {"n_prompts": 12, "movers": ["L2H1"], "heads": heads, "mover_rule": "rule",
                                                      "metric": "logit_diff", "movers_joint_recovered": 0.5})})
    assert _flags(doc) == {"mechanism.mover.L2H1.attention": True, "mechanism.mover.L2H1.patch": True, "mechanism.movers.joint_patch": True}


@pytest.mark.parametrize("top1, name", [([[0.0, 0.1, 0.0], [0.0, 0.9, 0.0]], "mechanism.bridge_r1.lens_top1"),
                                        ([[0.0, 0.1, 0.0], [0.0, 0.2, 0.0]], "mechanism.bridge_r1.lens_top1_max")])
def test_the_lens_at_r1_reads_a_trained_atomic_prompt(tmp_path, top1, name):
    doc = _doc(tmp_path)
    bridge_at_r1(doc, {"probes": None, "logit-lens": typed(LogitLensResult, {"bridge": {"top1": top1}, "states": ["embed", "L0"],
                                                                             "n_sample": 18})})
    assert _flags(doc) == {name: True}
    assert "train examples" in doc.numbers[0]["measured_on"]


def test_loss_recovered_on_test_id_is_in_sample_and_explained_variance_on_held_out_prefixes_is_not(tmp_path):
    doc = _doc(tmp_path)
    ev = doc.run.sae_eval_dir
    typed(SaeEvalMetrics, {"reconstruction": {"explained_variance": 0.9, "n_tokens": 40}, "task": {"loss_recovered": 0.8, "splits": {"test_id": {}}},
                           "alignment": {}, "feature_labels": []}).save(ev / "blocks.0.hook_resid_pre")
    (ev / "summary.md").write_text("x")
    sae_section(doc)
    assert _flags(doc) == {"sae.blocks.0.hook_resid_pre.explained_variance": False, "sae.blocks.0.hook_resid_pre.loss_recovered_test_id": True}


def test_the_smallest_composing_point_was_chosen_on_its_test_id(tmp_path):
    doc = _doc(tmp_path)
    point = {"values": {"model.n_layers": 2}, "unique_parameters": 1000, "steps": 10, "accuracy": {"test_id": 0.95, "test_unanswerable": 0.01,
                                                                                                   "atomic_test": 1.0}}
    typed(SweepResult, {"name": "s", "grid": {"model.n_layers": [2]}, "points": [point], "n_points": 1, "composed_threshold": 0.9,
                        "smallest_composed": point}).save(doc.run.root.parent / "sweeps" / "s")
    sweep_section(doc)
    assert _flags(doc) == {"sweep.s.smallest_test_id": True}
