"""The train stage: saved models load without sae_ooc, resume is exact, failures keep the last checkpoint."""

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

import sae_ooc.models.train as train_mod
from sae_ooc.cli import main
from sae_ooc.config import load_config
from sae_ooc.io import read_json, read_jsonl
from sae_ooc.models.train import BatchSampler, lr_at
from sae_ooc.pipeline import run_stage
from sae_ooc.rundir import RunDir
from sae_ooc.tasks.data import SPLITS

from conftest import rendered_figures

TINY = "configs/tiny.yaml"


def _run(tmp_path, name, overrides=()):
    run = RunDir(tmp_path / name, load_config(TINY, list(overrides)))
    run_stage(run, "data")
    return run


def _load_plain(model_dir: Path) -> HookedTransformer:
    """The model exactly as an outside user would load it: transformer_lens + safetensors only."""
    kwargs = json.loads((model_dir / "config.json").read_text())
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    return model.eval()


def _split_accuracy(model, split) -> float:
    """Accuracy recomputed from the raw dataset rows, without sae_ooc's tensor helpers."""
    correct = 0
    with torch.no_grad():
        for ids, answer in zip(split["input_ids"], split["answer"]):
            logits = model(torch.tensor([ids]))[0, len(ids) - 1]
            correct += int(int(logits.argmax()) == answer)
    return correct / len(split)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = _run(tmp_path_factory.mktemp("train"), "tiny")
    with rendered_figures():  # test_figures_written reads them
        assert run_stage(run, "train").ran
    return run


def test_saved_model_loads_without_sae_ooc_and_reproduces_final_accuracy(trained):
    final = read_json(trained.model_dir / "final_metrics.json")
    model = _load_plain(trained.model_dir)
    ds = load_from_disk(str(trained.data_dir))
    for split in SPLITS:
        assert _split_accuracy(model, ds[split]) == pytest.approx(final["accuracy"][split], abs=1e-12)
        counts = np.bincount(ds[split]["answer"])
        assert final["majority_rate"][split] == pytest.approx(counts.max() / counts.sum())
    assert final["steps"] == trained.cfg.train.steps
    # tiny must learn its atomic facts well above chance (1/12), or the tests downstream mean little
    assert final["accuracy"]["atomic_test"] > 0.8


def test_checkpoints_on_log_schedule_load_and_match_final(trained):
    ckpts = trained.model_dir / "checkpoints"
    tc = trained.cfg.train
    expected = sorted({int(round(10 ** (math.log10(tc.steps) * i / (tc.n_checkpoints - 1)))) for i in range(tc.n_checkpoints)} | {tc.steps})
    found = sorted(int(d.name.split("_")[1]) for d in ckpts.glob("step_*"))
    assert found == [0] + expected and expected == [1, 6, 34, 200]  # step 0: the initialisation, for eval-sae's control
    assert (ckpts / "latest").is_dir()
    final = load_file(str(trained.model_dir / "model.safetensors"))
    for step in found:
        d = ckpts / f"step_{step}"
        model = _load_plain(d)
        assert read_json(d / "trainer_state.json")["step"] == step
        opt = torch.optim.AdamW(model.parameters())
        opt.load_state_dict(train_mod.unflatten_optimizer_state(load_file(str(d / "optimizer.safetensors")), read_json(d / "optimizer.json")))
        assert all(float(s["step"]) == step for s in opt.state.values())
    last = load_file(str(ckpts / f"step_{tc.steps}" / "model.safetensors"))
    assert all(torch.equal(final[k], last[k]) for k in final)
    early = load_file(str(ckpts / "step_1" / "model.safetensors"))
    assert not all(torch.equal(final[k], early[k]) for k in final)


def test_metrics_jsonl_well_formed(trained):
    recs = read_jsonl(trained.model_dir / "metrics.jsonl")
    tc = trained.cfg.train
    assert [r["step"] for r in recs] == list(range(0, tc.steps + 1, tc.eval_every))
    assert all(a["elapsed_s"] <= b["elapsed_s"] for a, b in zip(recs, recs[1:]))
    for r in recs:
        for s in SPLITS:
            assert 0.0 <= r[f"{s}_acc"] <= 1.0 and r[f"{s}_loss"] >= 0
    assert recs[0]["loss"] is None and all(math.isfinite(r["loss"]) for r in recs[1:])
    # tiny's splits are smaller than eval_max_examples, so the last periodic eval is the full one
    final = read_json(trained.model_dir / "final_metrics.json")
    for s in SPLITS:
        assert recs[-1][f"{s}_acc"] == pytest.approx(final["accuracy"][s])


def test_figures_written(trained):
    png = trained.model_dir / "accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(trained.model_dir / "accuracy.svg").getroot().tag.endswith("svg")


def test_resume_is_bit_identical(tmp_path, monkeypatch, capsys):
    # minibatches, so the batch order has to be reproduced too; 80 steps (tiny: 200) still pass a log-spaced checkpoint
    # (step_19) before the resume point
    over = ["train.batch_size=32", "train.steps=80", "train.eval_every=20"]
    full = _run(tmp_path, "full", over)
    run_stage(full, "train")

    part = _run(tmp_path, "part", over)
    r = run_stage(part, "train", stop_after_steps=33)
    assert r.ran and not r.finished
    assert part.stage_record("train") is None and not (part.model_dir / "model.safetensors").exists()
    # a rerun resumes from the last checkpoint (step 20) and drops the metrics written after it
    assert run_stage(part, "train").finished
    assert "resuming" in capsys.readouterr().out

    # a Ctrl-C half way through, then the same CLI command again
    cli = _run(tmp_path, "cli", over)
    real_step = train_mod.train_step
    calls = {"n": 0}

    def interrupting_step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(train_mod, "train_step", interrupting_step)
    args = ["train", "--config", TINY, *[a for o in over for a in ("--set", o)], "--run", str(cli.root)]
    assert main(args) == 130
    assert read_json(cli.model_dir / "checkpoints" / "latest" / "trainer_state.json")["step"] == 40
    assert main(args) == 0

    ref = load_file(str(full.model_dir / "model.safetensors"))
    ref_opt = load_file(str(full.model_dir / "checkpoints" / "step_80" / "optimizer.safetensors"))
    for run in (part, cli):
        got = load_file(str(run.model_dir / "model.safetensors"))
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
        got_opt = load_file(str(run.model_dir / "checkpoints" / "step_80" / "optimizer.safetensors"))
        assert all(torch.equal(ref_opt[k], got_opt[k]) for k in ref_opt)
        strip = lambda rs: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs]  # noqa: E731
        assert strip(read_jsonl(run.model_dir / "metrics.jsonl")) == strip(read_jsonl(full.model_dir / "metrics.jsonl"))


def test_nonfinite_loss_stops_with_exit_2_and_keeps_last_checkpoint(tmp_path, monkeypatch, capsys):
    run = _run(tmp_path, "nan")
    real_step = train_mod.train_step

    def exploding_step(model, opt, tokens, answer_pos, answer, lr, grad_clip=0.0):
        step = int(next(iter(opt.state.values()))["step"]) if opt.state else 0
        return real_step(model, opt, tokens, answer_pos, answer, lr * (1e30 if step >= 120 else 1.0), grad_clip)

    monkeypatch.setattr(train_mod, "train_step", exploding_step)
    assert main(["train", "--config", TINY, "--run", str(run.root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the lines before it are the progress bar
    assert err.startswith("sae-ooc train: error:") and "step 12" in err and "train.lr" in err and "train.grad_clip" in err
    latest = run.model_dir / "checkpoints" / "latest"
    assert read_json(latest / "trainer_state.json")["step"] == 100 and str(latest) in err
    _load_plain(latest)
    assert run.stage_record("train") is None


def test_huge_lr_from_the_command_line_exits_2(tmp_path, capsys):
    run = _run(tmp_path, "lr")
    assert main(["train", "--config", TINY, "--run", str(run.root), "--set", "train.lr=1e30"]) == 2
    err = capsys.readouterr().err
    assert "non" in err or "nan" in err or "inf" in err
    assert "lower train.lr" in err


def test_train_before_data_says_run_data(tmp_path, capsys):
    assert main(["train", "--config", TINY, "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "sae-ooc data" in err and "Traceback" not in err


def test_pipeline_gives_every_stage_its_own_defaults(tmp_path):
    import importlib

    from sae_ooc import commands
    from sae_ooc.cli import build_parser
    from sae_ooc.commands.pipeline import stage_defaults
    from sae_ooc.stages import STAGES

    parser = build_parser()
    for s in STAGES:
        mod = importlib.import_module(s.command)
        # what `sae-ooc <stage>` with no options passes to its stage function, common options aside
        cli_args = parser.parse_args([s.name, "--run", str(tmp_path)])
        assert commands.options(mod, stage_defaults(mod)) == commands.options(mod, cli_args)


def test_pipeline_then_skip_then_recompute_on_changed_lr(tmp_path, capsys, monkeypatch):
    # only the first two stages: the later ones have their own tests and would take minutes here
    args = ["--config", TINY, "--run", str(tmp_path / "r"), "--set", "train.steps=50"]
    assert main(["pipeline", *args, "--stages", "data,train"]) == 0
    out = capsys.readouterr().out
    assert "data: wrote" in out and "train: trained" in out and "test_id" in out
    model_file = tmp_path / "r" / "model" / "model.safetensors"
    before = model_file.read_bytes()
    fp = read_json(tmp_path / "r" / "stages.json")["train"]["fingerprint"]

    assert main(["train", *args]) == 0
    assert "skipped" in capsys.readouterr().out and model_file.read_bytes() == before

    assert main(["train", *args, "--set", "train.lr=1e-3"]) == 0
    assert "train: trained" in capsys.readouterr().out
    assert read_json(tmp_path / "r" / "stages.json")["train"]["fingerprint"] != fp
    assert model_file.read_bytes() != before


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    s = BatchSampler(n=50, batch_size=16, seed=3)
    seen = torch.cat([s.indices(i) for i in range(25)])  # 400 = 8 epochs
    for e in range(8):
        assert sorted(seen[e * 50 : (e + 1) * 50].tolist()) == list(range(50))
    fresh = BatchSampler(n=50, batch_size=16, seed=3)
    assert torch.equal(fresh.indices(17), s.indices(17))
    assert not torch.equal(BatchSampler(50, 16, seed=4).indices(17), s.indices(17))
    assert BatchSampler(50, 0, seed=3).indices(5) is None


def test_lr_schedules():
    tc = load_config(TINY, ["train.warmup_steps=10", "train.lr=1.0", "train.steps=110", "train.lr_schedule=cosine"]).train
    assert lr_at(tc, 0) == pytest.approx(0.1) and lr_at(tc, 9) == pytest.approx(1.0)
    assert lr_at(tc, 60) == pytest.approx(0.5) and lr_at(tc, 110) == pytest.approx(0.0, abs=1e-12)
    tc.lr_schedule = "linear"
    assert lr_at(tc, 60) == pytest.approx(0.5) and lr_at(tc, 35) == pytest.approx(0.75)
    tc.lr_schedule = "constant"
    assert lr_at(tc, 100) == 1.0


def test_early_stop_needs_both_thresholds_and_a_rerun_does_not_continue(tmp_path):
    # atomic facts are learnt long before valid_id moves on tiny, so a low valid_id bar stops at the first eval
    run = _run(tmp_path, "early", ["train.stop_at_valid_id=0.01", "train.stop_at_atomic=0.5"])
    run_stage(run, "train")
    recs = read_jsonl(run.model_dir / "metrics.jsonl")
    first = next(r for r in recs if r["valid_id_acc"] >= 0.01 and r["atomic_test_acc"] >= 0.5 and r["step"] > 0)
    final = read_json(run.model_dir / "final_metrics.json")
    assert final["stopped_early"] and final["steps"] == first["step"] == recs[-1]["step"] < run.cfg.train.steps
    assert (run.model_dir / "checkpoints" / f"step_{first['step']}" / "model.safetensors").exists()
    run.forget("train")  # as after a crash between the last checkpoint and recording the stage
    run_stage(run, "train")
    assert read_json(run.model_dir / "final_metrics.json")["steps"] == first["step"]

    never = _run(tmp_path, "never", ["train.stop_at_valid_id=0.99", "train.stop_at_atomic=0.5", "train.steps=100"])
    run_stage(never, "train")
    final = read_json(never.model_dir / "final_metrics.json")
    assert max(r["valid_id_acc"] for r in read_jsonl(never.model_dir / "metrics.jsonl")) < 0.99
    assert not final["stopped_early"] and final["steps"] == never.cfg.train.steps


def test_early_stop_reads_valid_id_not_test_id(tmp_path, monkeypatch):
    """Periodic evals where test_id passes the bar from step 50 but valid_id only from step 100: the run must
    stop at 100 and say it read valid_id."""
    real = train_mod.evaluate_splits
    periodic = {"n": 0}

    def staged(model, tensors, max_examples=None, device=None):
        m = real(model, tensors, max_examples=max_examples, device=device)
        if max_examples is None:  # the final, full evaluation stays real
            return m
        step = periodic["n"] * 50  # tiny evaluates every 50 steps, starting at step 0
        periodic["n"] += 1
        return {**m, "test_id_acc": 1.0 if step >= 50 else 0.0, "valid_id_acc": 1.0 if step >= 100 else 0.0, "atomic_test_acc": 1.0}

    monkeypatch.setattr(train_mod, "evaluate_splits", staged)
    run = _run(tmp_path, "split", ["train.stop_at_valid_id=0.5", "train.stop_at_atomic=0.5"])
    run_stage(run, "train")
    final = read_json(run.model_dir / "final_metrics.json")
    recs = read_jsonl(run.model_dir / "metrics.jsonl")
    assert final["stopped_early"] and final["steps"] == recs[-1]["step"] == 100
    assert final["stop_split"] == "valid_id"
    assert (final["valid_id_0.9_step"], final["test_id_0.9_step"]) == (100, 50)  # both recorded, from the same lines


def test_stop_on_train_reads_the_taught_rows_alone():
    """A natural-language fine-tuning run stops once its taught rows (train: the new facts' documents) are learned; its
    atomic_test asks held-out paraphrases and valid_id old questions, neither of which may stop it."""
    from sae_ooc.typed_yaml import ConfigError

    tc = load_config(TINY, ["train.stop_on=train", "train.stop_at_atomic=0.99"]).train
    assert train_mod._should_stop(tc, {"train_acc": 0.99, "atomic_test_acc": 0.0, "valid_id_acc": 0.0})
    assert not train_mod._should_stop(tc, {"train_acc": 0.98, "atomic_test_acc": 1.0, "valid_id_acc": 1.0})
    with pytest.raises(ConfigError, match="train.stop_on"):
        load_config(TINY, ["train.stop_on=test_id"])
