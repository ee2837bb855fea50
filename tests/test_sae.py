"""SAE training and evaluation: SAELens-loadable output, metrics recomputed independently, resume, errors, AUROC, splicing,
the architecture registry, the standalone script, and each stage writing only its own outputs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from circuit_fixtures import mark_stages
from conftest import copy_run, rendered_figures
from test_heldout_prefixes import row_prefixes
from test_stage_outputs import check_line
from sae_lens import SAE
from safetensors.torch import load_file

from sae_ooc.activations.cache import open_cache
from sae_ooc.config import SAE_ARCHITECTURES, SaeConfig, load_config
from sae_ooc.errors import UserError
from sae_ooc.io import read_json, read_jsonl
from sae_ooc.pipeline import run as run_pipeline
from sae_ooc.pipeline import run_stage
from sae_ooc.rundir import RunDir
from sae_ooc.saes.alignment import auroc_matrix, column_ranks
from sae_ooc.saes.architectures import ARCHITECTURES
from sae_ooc.saes.reconstruction import check_d_in
from sae_ooc.saes.store import eval_metrics_path, eval_rows, load_saes, sae_dir
from sae_ooc.saes.task_metrics import TaskEvaluator
from sae_ooc.saes.trainer import train_sae
from sae_ooc.tasks.data import SPLITS, load_task

REPO = Path(__file__).resolve().parents[1]
SAE_SETTINGS = ["sae.training_tokens=3840", "sae.batch_size=64", "sae.d_sae=64", "sae.d_sae_by_hook={}", "sae.k_by_hook={}", "sae.k=4", "sae.log_every=10", "sae.n_checkpoints=2",
                "sae.dead_feature_window=10", "sae_eval.probe_steps=50"]


@pytest.fixture(scope="module")
def sae_run(harvested_run, tmp_path_factory):
    run = copy_run(harvested_run, tmp_path_factory.mktemp("sae") / "run", SAE_SETTINGS)
    with rendered_figures():  # the training curves, which test_saes_load_with_sae_lens_... reads
        results = run_pipeline(run, stages=["data", "train", "harvest", "train-sae"])
    assert [r.name for r in results if r.ran] == ["train-sae"]  # the shared stages are reused, not recomputed
    check_line(run, "train-sae", results[-1])  # its printed line names every file it wrote (tests/test_stage_outputs.py)
    return run


def test_saes_load_with_sae_lens_and_metrics_recompute_from_the_cache(sae_run):
    root = sae_run.activations_dir
    manifest = read_json(root / "manifest.json")
    held = load_file(str(sae_run.saes_dir / "heldout_rows.safetensors"))["rows"]
    assert 0 < len(held) < manifest["n_tokens"]
    held = distinct(held, row_prefixes(load_file(str(root / "tokens.safetensors"))))  # metrics count each held-out prefix once
    for hook in manifest["hooks"]:
        d = sae_dir(sae_run.saes_dir, hook)
        sae = SAE.load_from_disk(d)
        assert sae.cfg.metadata.hook_name == hook and sae.cfg.d_in == manifest["d_model"] and sae.cfg.d_sae == 64
        # independent recomputation: safetensors shards + the loaded SAE, nothing from sae_ooc
        x = torch.cat([load_file(str(root / hook / s["file"]))["activations"] for s in manifest["shards"][hook]])[held]
        with torch.no_grad():
            acts = sae.encode(x)
            x_hat = sae.decode(acts)
        ev = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        l0 = (acts != 0).float().sum(-1).mean()
        m = read_json(d / "metrics.json")["reconstruction"]
        assert m["explained_variance"] == pytest.approx(float(ev), abs=1e-5)
        assert m["l0"] == pytest.approx(float(l0), abs=1e-6) and m["l0"] <= 4
        assert m["dead_fraction"] == pytest.approx(float(((acts != 0).sum(0) == 0).float().mean()))
        log = read_jsonl(d / "train_log.jsonl")
        assert [r["step"] for r in log] == list(range(10, 61, 10)) and all("explained_variance" in r and "dead_fraction_training_window" in r for r in log)
        assert (d / "curves.png").exists() and (d / "curves.svg").exists()
    assert set(load_saes(sae_run.saes_dir)) == set(manifest["hooks"])


def _no_curves(monkeypatch) -> None:
    """train_sae without its curves figure, for tests that check no figure (curves.png/.svg are test_saes_load_...'s):
    drawing and writing them is most of a tiny SAE's training time."""
    monkeypatch.setattr("sae_ooc.saes.trainer.plot_training_curves", lambda *a, **k: None)


def test_resume_from_checkpoint_matches_uninterrupted_and_batchtopk_saves_as_jumprelu(sae_run, tmp_path, monkeypatch):
    _no_curves(monkeypatch)
    cache = open_cache(sae_run.activations_dir)
    hook = "blocks.1.hook_resid_pre"
    import dataclasses

    p = dataclasses.replace(sae_run.cfg.sae, architecture="batchtopk", training_tokens=1280)  # 20 steps
    full = train_sae(cache, hook, tmp_path / "full", p)
    assert train_sae(cache, hook, tmp_path / "cut", p, stop_after_steps=15) is None
    assert any((tmp_path / "cut" / "checkpoints").iterdir())
    resumed = train_sae(cache, hook, tmp_path / "cut", p)
    a, b = load_file(str(tmp_path / "full/sae_weights.safetensors")), load_file(str(tmp_path / "cut/sae_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.reconstruction == full.reconstruction
    assert SAE.load_from_disk(tmp_path / "full").cfg.architecture() == "jumprelu"  # inference form of BatchTopK
    assert [r["step"] for r in read_jsonl(tmp_path / "cut/train_log.jsonl")] == [r["step"] for r in read_jsonl(tmp_path / "full/train_log.jsonl")]


@pytest.mark.parametrize("arch", ["standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk"])
def test_every_architecture_trains_and_loads_back_with_sae_lens(sae_run, tmp_path, arch, monkeypatch):
    import dataclasses

    _no_curves(monkeypatch)
    cache = open_cache(sae_run.activations_dir)
    hook = "blocks.1.hook_resid_pre"
    p = dataclasses.replace(sae_run.cfg.sae, architecture=arch, training_tokens=1280)
    m = train_sae(cache, hook, tmp_path / arch, p)
    sae = SAE.load_from_disk(tmp_path / arch)
    inference = {"batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}.get(arch, arch)  # SAELens saves BatchTopK as JumpReLU
    assert sae.cfg.architecture() == inference and sae.cfg.d_in == cache.d_model and sae.cfg.d_sae == 64
    x = torch.cat([load_file(str(f))["activations"] for f in sorted((sae_run.activations_dir / hook).glob("shard_*.safetensors"))])
    with torch.no_grad():
        f = sae.encode(x)
        x_hat = sae.decode(f)
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all()
    assert 0 < m.reconstruction.l0 <= 64 and m.reconstruction.explained_variance is not None
    if arch in ("topk",):
        assert torch.all((f > 0).sum(-1) <= 4)  # k = 4 active features per token


def test_unknown_hook_and_d_in_mismatch_are_one_line_errors(sae_run, tmp_path, capsys):
    sys.path.insert(0, str(REPO))
    import train_sae as script

    rc = script.main(["--activations", str(sae_run.activations_dir), "--hook", "blocks.7.hook_resid_pre", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "blocks.0.hook_resid_pre, blocks.1.hook_resid_pre, blocks.1.hook_resid_post" in err
    cache = open_cache(sae_run.activations_dir)
    hook = "blocks.0.hook_resid_pre"
    sae = SAE.load_from_disk(sae_dir(sae_run.saes_dir, hook))
    sae.cfg.d_in = cache.d_model + 1  # an SAE trained on a wider stream
    with pytest.raises(UserError, match="d_in 33 .* d_model 32"):
        check_d_in(sae, cache, hook, "somewhere")
    from sae_ooc.cli import main

    copy = tmp_path / "run"  # the CLI saves the overridden config into the run directory: leave the shared fixture alone
    shutil.copytree(sae_run.root, copy)
    before = _digests(copy / "saes")
    assert main(["train-sae", "--run", str(copy), "--set", "sae.hooks=[blocks.9.hook_resid_pre]"]) == 2
    err = capsys.readouterr().err
    assert "unknown hook 'blocks.9.hook_resid_pre'" in err and "valid hooks: blocks.0.hook_resid_pre" in err
    assert _digests(copy / "saes") == before  # refused before touching the SAEs


def test_a_width_on_the_command_line_wins_over_the_per_hook_default():
    sys.path.insert(0, str(REPO))
    import train_sae as script
    from sae_ooc.saes.architectures import resolved_d_sae, resolved_k

    hook = "blocks.0.hook_resid_pre"  # the built-in config gives this hook its own d_sae (128) and k (3)
    base = ["--activations", "x", "--hook", hook, "--out", "y"]
    assert resolved_d_sae(script.sae_params(script.build_parser().parse_args(base)), 64, hook) == 128
    assert resolved_k(script.sae_params(script.build_parser().parse_args(base)), hook) == 3
    assert resolved_k(script.sae_params(script.build_parser().parse_args(base + ["--k", "5"])), hook) == 5
    assert resolved_d_sae(script.sae_params(script.build_parser().parse_args(base + ["--d-sae", "40"])), 64, hook) == 40
    assert resolved_d_sae(script.sae_params(script.build_parser().parse_args(base + ["--expansion-factor", "2"])), 64, hook) == 128


@pytest.mark.figures
def test_train_sae_script_runs_a_sweep(sae_run, tmp_path, monkeypatch):
    _no_curves(monkeypatch)  # each point's curves: the Pareto figure is this test's
    # in this process: the script as its own process (another folder, no sae_ooc import path of its own) is
    # test_config_and_registry_import_without_torch_and_a_bad_architecture_is_one_line's
    sys.path.insert(0, str(REPO))
    import train_sae as script

    out = tmp_path / "sweep"
    args = ["--activations", str(sae_run.activations_dir), "--hook", "blocks.1.hook_resid_pre",
            "--out", str(out), "--training-tokens", "1280", "--batch-size", "64", "--d-sae", "32", "--sweep-k", "2,4"]
    assert script.main(args) == 0
    for k in (2, 4):
        sae = SAE.load_from_disk(out / "blocks.1.hook_resid_pre" / f"k_{k}")
        assert sae.cfg.d_sae == 32 and sae.cfg.k == k
    points = read_json(out / "blocks.1.hook_resid_pre" / "sweep.json")
    assert [p["value"] for p in points] == [2, 4] and all(p["loss_recovered"] is not None for p in points)
    assert (out / "pareto_blocks_1_hook_resid_pre.png").exists() and (out / "pareto_blocks_1_hook_resid_pre.svg").exists()


def distinct(rows: torch.Tensor, prefixes: list) -> torch.Tensor:
    """The first of `rows` with each prefix (`row_prefixes`), ascending."""
    first: dict = {}
    for r in rows.tolist():
        first.setdefault(prefixes[r], r)
    return torch.tensor(sorted(first.values()))


def _brute_auroc(scores, labels, value):
    pos, neg = scores[labels == value], scores[labels != value]
    wins = (pos[:, None] > neg[None, :]).double().sum() + 0.5 * (pos[:, None] == neg[None, :]).double().sum()
    return float(wins / (len(pos) * len(neg)))


def test_auroc_matches_pairwise_mann_whitney_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (60, 5), generator=g).float()  # heavy ties, like sparse SAE features
    scores[:, 4] = torch.rand(60, generator=g)
    labels = torch.randint(0, 3, (60,), generator=g)
    values = torch.tensor([0, 1, 2])
    got = auroc_matrix(scores, labels, values, chunk=2)
    for c in range(5):
        for j, v in enumerate(values.tolist()):
            assert got[c, j].item() == pytest.approx(_brute_auroc(scores[:, c], labels, v), abs=1e-12)
    assert torch.equal(auroc_matrix(scores, labels, values, ranks=column_ranks(scores)), got)
    perfect = auroc_matrix((labels == 1).float()[:, None], labels, torch.tensor([1]))
    assert perfect.item() == 1.0


def test_spliced_sae_with_error_term_reproduces_clean_loss(sae_run):
    te = TaskEvaluator.from_run(sae_run)
    sae = SAE.load_from_disk(sae_dir(sae_run.saes_dir, "blocks.1.hook_resid_pre"))
    exact = te.evaluate(sae, use_error_term=True)
    for s, r in exact["splits"].items():
        assert r["loss_sae"] == pytest.approx(r["loss_clean"], abs=1e-5) and r["acc_sae"] == r["acc_clean"]
        assert r["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    spliced = te.evaluate(sae)["splits"]["train"]
    assert spliced["loss_sae"] != pytest.approx(spliced["loss_clean"], abs=1e-6)
    assert spliced["loss_recovered"] == pytest.approx(
        (spliced["loss_zero"] - spliced["loss_sae"]) / (spliced["loss_zero"] - spliced["loss_clean"]))


def _label_precision(run, hook, lab):
    """Share of the distinct held-out prefixes at the label's position that determine the variable (every row with
    the prefix agrees on its value; the answer only at answer positions) on which the feature fires that carry the
    labelled value."""
    from sae_ooc.activations.cache import ROLES

    cache = open_cache(run.activations_dir)
    tok = cache.tokens()
    prefixes = row_prefixes(tok)
    var = lab["variable"]
    values: dict = {}
    for r, (v, a) in enumerate(zip(tok[var].tolist(), tok["is_answer_pos"].tolist())):
        if v >= 0 and (a == 1 or var != "answer"):
            values.setdefault(prefixes[r], set()).add(v)
    held = distinct(load_file(str(eval_rows(run.saes_dir)))["rows"], prefixes).tolist()
    rows = [r for r in held if prefixes[r][0] == ROLES.index(lab["position"]) and len(values.get(prefixes[r], ())) == 1]
    sae = SAE.load_from_disk(str(sae_dir(run.saes_dir, hook)))
    with torch.no_grad():
        fires = sae.encode(cache.read(hook, torch.tensor(rows)))[:, lab["feature"]] > 0
    value_id = read_json(run.data_dir / "vocab.json")["id_of"][lab["value"]]
    carried = torch.tensor([next(iter(values[prefixes[r]])) for r in rows])
    return float((carried[fires] == value_id).double().mean())


def _digests(root):
    from sae_ooc.io import sha256_file

    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.figures
def test_eval_sae_writes_metrics_labels_and_summary(sae_run, capsys):
    saes_before = _digests(sae_run.saes_dir)
    capsys.readouterr()
    result = run_stage(sae_run, "eval-sae")
    check_line(sae_run, "eval-sae", result)  # its printed line names every file it wrote, figures included
    bar = capsys.readouterr().err.replace("\r", "\n")  # a progress bar that names the hook in hand and ends full
    assert "eval-sae: blocks.1.hook_resid_post" in bar and "100%" in bar.strip().splitlines()[-1]
    assert result.ran and result.finished and result.info["summary"] == str(sae_run.sae_eval_dir / "summary.md")
    assert _digests(sae_run.saes_dir) == saes_before  # eval-sae reads train-sae's outputs, never rewrites them
    assert not run_stage(sae_run, "eval-sae").ran  # up to date: skipped
    ev = sae_run.sae_eval_dir
    hooks = read_json(sae_run.activations_dir / "manifest.json")["hooks"]
    tok = load_file(str(sae_run.activations_dir / "tokens.safetensors"))
    held = set(load_file(str(eval_rows(sae_run.saes_dir)))["rows"].tolist())
    trained_on = {prefix for r, (_, prefix) in enumerate(row_prefixes(tok)) if r not in held}
    ds, _ = load_task(sae_run.data_dir)
    for h in hooks:
        m = read_json(eval_metrics_path(ev, h))
        assert {"reconstruction", "task", "alignment", "feature_labels"} <= m.keys()
        assert "training" in read_json(sae_dir(sae_run.saes_dir, h) / "metrics.json")  # training metrics stay with train-sae
        assert set(m["task"]["splits"]) == set(SPLITS)
        unseen = m["task"]["heldout_prefixes"]  # prompts whose whole prompt the SAE never saw, counted independently
        for split, r in unseen.items():
            prompts = [tuple(ids) for ids in ds[split]["input_ids"]]
            assert r["n"] == sum(p not in trained_on for p in prompts) and 0 < r["n"] < len(prompts)
        assert "test_id" in unseen
        rec = m["reconstruction"]
        assert set(rec["by_position"]) == {"head", "r1", "r2"} and sum(v["n_tokens"] for v in rec["by_position"].values()) == rec["n_tokens"]
        for a in m["alignment"].values():
            p = a["probe"]
            assert len(p["random_model_accs"]) == len(p["shuffled_accs"]) == sae_run.cfg.sae_eval.n_controls and p["step0_accs"] == []
            assert p["n_heldout"] == a["n_heldout"] and p["heldout_ci95"][0] <= p["heldout_acc"] <= p["heldout_ci95"][1]
        for lab in m["feature_labels"]:
            assert set(lab) == {"feature", "variable", "position", "value", "auroc", "precision"} and lab["auroc"] >= 0.9
            assert 0 <= lab["feature"] < 64 and lab["position"] in ("head", "r1", "r2")
            assert lab["precision"] == pytest.approx(_label_precision(sae_run, h, lab), abs=1e-4) and lab["precision"] >= 0.5
        assert len({lab["feature"] for lab in m["feature_labels"]}) == len(m["feature_labels"])  # best match per feature
    n_labels = sum(len(read_json(eval_metrics_path(ev, h))["feature_labels"]) for h in hooks)
    assert n_labels > 0  # the precision check above must have had something to check
    from sae_ooc.saes.features import load_feature_labels

    labels = load_feature_labels(ev)  # what circuit and query show: eval-sae's labels
    assert sum(len(v) for per in labels.values() for v in per.values()) == n_labels
    assert not any(load_feature_labels(sae_run.saes_dir).values())  # train-sae's metrics carry no labels
    # layer 0 is the embeddings: at r1 the stream is the r1 token, readable from held-out prefixes by the trained and
    # the random models alike (the control is not a floor at zero), while the head entity is not in it at all
    al = read_json(eval_metrics_path(ev, "blocks.0.hook_resid_pre"))["alignment"]
    assert al["r1@r1"]["probe"]["heldout_acc"] == 1.0 and al["r1@r1"]["probe"]["random_model_acc"] == 1.0
    assert al["head@r1"]["probe"]["heldout_acc"] <= al["head@r1"]["probe"]["majority_acc"] + 1e-9
    assert "head@head" not in al  # one prefix per head entity: no held-out value the probe could have seen
    # the standard metrics (SAEBench's sparse probing and absorption, sae_lens.synthetic's matching), loaded back typed
    from sae_ooc.saes.standard_result import PER_LATENT_FILE, StandardMetrics

    for h in hooks:
        std = StandardMetrics.load(eval_metrics_path(ev, h).parent)
        lat = load_file(str(eval_metrics_path(ev, h).parent / PER_LATENT_FILE))
        assert std.hook_name == h and std.rows and std.settings.measured_on.startswith("held-out prefixes")
        for r in std.rows:
            assert set(r.sparse_probing.sae_top_k) == {str(k) for k in sae_run.cfg.sae_eval.sparse_probing_k}
            assert 0 <= r.matching.mcc_decoder <= 1 and 0 <= r.matching.mcc_activation <= 1
            assert lat[f"{r.variable}@{r.position}/precision"].shape == (64,)
    r1 = StandardMetrics.load(eval_metrics_path(ev, "blocks.0.hook_resid_pre").parent).row("r1", "r1")
    assert r1.sparse_probing.llm == 1.0  # the embedding of the r1 token: a linear probe reads it on any held-out prefix
    summary = (ev / "summary.md").read_text()
    assert all(h in summary for h in hooks) and "Bridge entity" in summary
    assert (ev / "alignment_bridge.png").exists() and (ev / "alignment_bridge.svg").exists()


# the architecture registry ---------------------------------------------------------------------------
def test_architecture_registry_matches_config_and_sae_lens():
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    ARCHITECTURES.check()
    assert ARCHITECTURES.names() == SAE_ARCHITECTURES  # same names, same order (--help and error messages list them)
    for name in ARCHITECTURES.names():
        assert ARCHITECTURES.get(name).training_classes() == SAE_TRAINING_CLASS_REGISTRY[name]
    with pytest.raises(UserError, match="unknown sae.architecture 'nope'; valid values: standard, topk"):
        ARCHITECTURES.get("nope")


def test_each_architecture_is_a_config_class_of_fields_its_sae_lens_config_has():
    """SAELens-style: one config class per architecture; its fields are ones its TrainingSAEConfig class declares, they
    reach the built config with the flat `sae` section's values, and an architecture SAELens lacks brings its own classes."""
    import dataclasses

    from sae_ooc.saes.architectures import Architecture, StandardConfig, training_sae_config

    p = SaeConfig(l1_coefficient=2.5, l0_coefficient=0.25, k=4, aux_loss_coefficient=1.5, matryoshka_widths=[4])
    for name in ARCHITECTURES.names():
        arch = ARCHITECTURES.get(name)
        cfg_cls = arch.training_classes()[1]
        mine = [f.name for f in dataclasses.fields(arch.config)]
        assert mine and set(mine) <= {f.name for f in dataclasses.fields(cfg_cls)}, name
        cfg = training_sae_config(dataclasses.replace(p, architecture=name), 8, "blocks.1.hook_resid_pre", None)  # no per-hook default
        assert isinstance(cfg, cfg_cls)
        expected = {"l1_coefficient": 2.5, "l0_coefficient": 0.25, "k": 4, "aux_loss_coefficient": 1.5,
                    "rescale_acts_by_decoder_norm": False, "matryoshka_widths": [4, 128]}
        assert {f: getattr(cfg, f) for f in mine} == {f: expected[f] for f in mine}, name
    own = (object, StandardConfig)  # stand-ins for a TrainingSAE and TrainingSAEConfig SAELens does not have
    assert Architecture("mine", StandardConfig, training=own).training_classes() == own


def test_config_and_registry_import_without_torch_and_a_bad_architecture_is_one_line(tmp_path):
    code = ("import sys, sae_ooc.config, sae_ooc.saes.architectures, sae_ooc.commands.train_sae, sae_ooc.commands.eval_sae; "
            "heavy = [m for m in ('torch', 'sae_lens', 'transformer_lens') if m in sys.modules]; assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, str(REPO / "train_sae.py"), "--activations", "x", "--hook", "h", "--out", "y", "--architecture", "relu"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)  # run as a script from any folder
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err and err.startswith("train_sae.py: error: argument --architecture: invalid choice: 'relu'")
    assert "matryoshka_batchtopk" in err
    r = subprocess.run([sys.executable, str(REPO / "train_sae.py"), "--activations", "x", "--hook", "h", "--out", "y", "--k", "0"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err and "train_sae.py: error: train_sae.py arguments: invalid value for 'sae.k'" in err


# the standalone script and the stage -------------------------------------------------------------------
def test_standalone_script_trains_several_hooks_that_sae_lens_loads(sae_run, tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(REPO))
    import train_sae as script
    from sae_ooc.saes import train_sae as stage
    from sae_ooc.threads import worker_pool

    # the one test of a real spawned pool (pickled jobs, futures): both hooks' jobs through one fresh interpreter, not two
    # (each spawned interpreter costs ~4 CPU-s of imports); the default config's sae.workers still picks the pool path
    pools = []
    monkeypatch.setattr(stage, "worker_pool", lambda n: pools.append(n) or worker_pool(1))

    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    args = ["--activations", str(sae_run.activations_dir), "--out", str(tmp_path / "out"), "--training-tokens", "640", "--batch-size", "64",
            "--d-sae", "16", "--architecture", "jumprelu"]
    for h in hooks:
        args += ["--hook", h]
    assert script.main(args) == 0
    assert pools == [2]
    for h in hooks:
        sae = SAE.load_from_disk(tmp_path / "out" / h)
        assert sae.cfg.metadata.hook_name == h and sae.cfg.d_sae == 16 and sae.cfg.architecture() == "jumprelu"
        assert read_json(tmp_path / "out" / h / "metrics.json")["architecture"] == "jumprelu"
    mtimes = {h: (tmp_path / "out" / h / "sae_weights.safetensors").stat().st_mtime_ns for h in hooks}
    capsys.readouterr()
    assert script.main(args) == 0  # the same settings again: nothing retrained
    assert "kept" in capsys.readouterr().out
    assert {h: (tmp_path / "out" / h / "sae_weights.safetensors").stat().st_mtime_ns for h in hooks} == mtimes


@pytest.mark.figures
def test_train_sae_stage_resumes_an_interrupted_run_and_a_rerun_recomputes(sae_run, tmp_path, monkeypatch):
    import sae_ooc.saes.train_sae as stage

    root = tmp_path / "run"
    shutil.copytree(sae_run.root, root)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    cfg = load_config(root / "config.yaml", [f"sae.hooks=[{','.join(hooks)}]", "sae.training_tokens=1280"])
    run = RunDir(root, cfg)
    weights = lambda h: sae_dir(run.saes_dir, h) / "sae_weights.safetensors"  # noqa: E731

    real = stage.train_sae
    monkeypatch.setattr(stage, "train_sae", lambda cache, h, *a, **kw: real(cache, h, *a, **{**kw, "stop_after_steps": 15 if h == hooks[1] else None}))
    first = run_stage(run, "train-sae")  # the first hook finishes, the second is "killed" at step 15
    assert first.ran and not first.finished and run.stage_record("train-sae") is None
    assert (run.saes_dir / ".progress.json").exists() and any((sae_dir(run.saes_dir, hooks[1]) / "checkpoints").iterdir())
    done_at = weights(hooks[0]).stat().st_mtime_ns
    monkeypatch.setattr(stage, "train_sae", real)

    second = run_stage(run, "train-sae")
    assert second.finished and second.info["hooks"] == hooks and not (run.saes_dir / ".progress.json").exists()
    assert weights(hooks[0]).stat().st_mtime_ns == done_at  # the finished hook was kept, not retrained
    cache = open_cache(run.activations_dir)
    with monkeypatch.context() as mp:  # uninterrupted; only its weights and metrics are compared
        _no_curves(mp)
        full = train_sae(cache, hooks[1], tmp_path / "full", cfg.sae)
    a, b = load_file(str(tmp_path / "full" / "sae_weights.safetensors")), load_file(str(weights(hooks[1])))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_json(sae_dir(run.saes_dir, hooks[1]) / "metrics.json")["reconstruction"] == full.reconstruction.to_json()
    assert sorted(p.name for p in run.saes_dir.iterdir() if p.is_dir()) == hooks  # a fresh run dropped the fixture's other hook

    assert not run_stage(run, "train-sae").ran  # up to date
    before = {h: load_file(str(weights(h))) for h in hooks}
    (sae_dir(run.saes_dir, hooks[0]) / "curves.svg").unlink()  # an output gone: the stage reruns, from scratch
    third = run_stage(run, "train-sae")
    assert third.ran and third.finished and (sae_dir(run.saes_dir, hooks[0]) / "curves.svg").exists()
    assert weights(hooks[0]).stat().st_mtime_ns != done_at
    for h in hooks:
        after = load_file(str(weights(h)))
        assert all(torch.equal(before[h][k], after[k]) for k in after)  # deterministic: the same SAEs again



# damaged inputs and progress (issue #10) ------------------------------------------------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_sae_weights_file_is_a_one_line_error_naming_it_and_the_fix(sae_run, tmp_path):
    run = copy_run(sae_run, tmp_path / "run", SAE_SETTINGS)
    weights = sae_dir(run.saes_dir, "blocks.1.hook_resid_pre") / "sae_weights.safetensors"
    _truncate(weights)
    with pytest.raises(UserError) as e:
        load_saes(run.saes_dir)
    assert str(weights) in str(e.value) and f"sae-ooc train-sae --run {run.root} --force" in str(e.value)
    (sae_dir(run.saes_dir, "blocks.0.hook_resid_pre") / "cfg.json").write_text('{"d_in": 3')
    with pytest.raises(UserError, match="cfg.json is corrupt or truncated"):
        load_saes(run.saes_dir)
    from sae_ooc.saes.eval_sae import run_eval_sae

    with pytest.raises(UserError, match="cfg.json is corrupt"):  # what the eval-sae stage runs into
        run_eval_sae(run)


def test_train_sae_checks_every_shard_before_training_or_deleting_anything(sae_run, tmp_path, capsys):
    from sae_ooc.cli import main

    run = copy_run(sae_run, tmp_path / "run", SAE_SETTINGS)
    shard = sorted((run.activations_dir / "blocks.1.hook_resid_post").glob("shard_*.safetensors"))[-1]  # the last hook's last shard
    _truncate(shard)
    before = _digests(run.saes_dir)
    capsys.readouterr()
    assert main(["train-sae", "--run", str(run.root), "--force"]) == 2  # the pipeline sees the harvest's file changed
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and shard.name in err and f"sae-ooc harvest --run {run.root}" in err
    # where the record cannot tell (the harvest wrote the bad shard itself, or the file kept its size and time), the
    # stage reads every shard's checksum before it trains a step or deletes an SAE
    mark_stages(run, ["harvest"])
    with pytest.raises(UserError) as e:
        run_stage(run, "train-sae", force=True)
    assert str(shard) in str(e.value) and f"sae-ooc harvest --force --run {run.root}" in str(e.value)
    assert _digests(run.saes_dir) == before  # nothing retrained, nothing removed


def test_the_training_bar_names_its_hook_and_ends_at_100_percent(sae_run, tmp_path, capsys, monkeypatch):
    import dataclasses

    _no_curves(monkeypatch)
    cache = open_cache(sae_run.activations_dir)
    p = dataclasses.replace(sae_run.cfg.sae, training_tokens=640)  # 10 steps: SAELens's own bar would stop at 0 of 640
    capsys.readouterr()
    train_sae(cache, "blocks.1.hook_resid_pre", tmp_path / "sae", p)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()
    bar = [line for line in last if "640/640" in line]
    assert bar and "train-sae blocks.1.hook_resid_pre" in bar[-1] and "100%" in bar[-1]
    assert "Training SAE" not in err


def test_saved_sae_files_follow_the_users_umask(sae_run, tmp_path, monkeypatch):
    """SAELens writes its weights 0600 (through a temporary file): a shared run's SAEs must be readable like the rest."""
    import dataclasses
    import stat

    import sae_ooc.io as io_mod

    process_mode = 0o666 & ~io_mod._UMASK
    modes = {p.relative_to(sae_run.root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in sae_run.root.rglob("*") if p.is_file()}
    assert modes and {k: m for k, m in modes.items() if m != process_mode} == {}
    monkeypatch.setattr(io_mod, "_UMASK", 0o002)  # a group-shared project
    train_sae(open_cache(sae_run.activations_dir), "blocks.1.hook_resid_pre", tmp_path / "sae",
              dataclasses.replace(sae_run.cfg.sae, training_tokens=640))
    for name in ("sae_weights.safetensors", "cfg.json", "metrics.json"):
        assert stat.S_IMODE((tmp_path / "sae" / name).stat().st_mode) == 0o664, name


def test_dead_is_one_count_in_the_train_sae_log_eval_sae_browse_and_report(sae_run, tmp_path):
    """Issue 19: train-sae's log said `dead 43.8%` where the browser said 24/128: one definition (never active on the
    held-out prefixes), recomputed here from the raw shards with SAELens's loader, in every place that shows it."""
    from sae_ooc.saes.dead import DEAD_ON
    from sae_ooc.saes.train_sae import summary_line
    from sae_ooc.browse.browse import build_site
    from sae_ooc.report.report import run_report
    from sae_ooc.saes.metrics_result import SaeTrainMetrics

    run_stage(sae_run, "eval-sae")  # skipped when test_eval_sae_writes_metrics_labels_and_summary has run it
    run = copy_run(sae_run, tmp_path / "run", SAE_SETTINGS)
    site = build_site(run, run.browse_dir, shot=False)
    run_report(run)
    report = (run.root / "REPORT.md").read_text()
    root = run.activations_dir
    manifest = read_json(root / "manifest.json")
    held = load_file(str(eval_rows(run.saes_dir)))["rows"]
    differs = False
    for hook in manifest["hooks"]:
        d = sae_dir(run.saes_dir, hook)
        x = torch.cat([load_file(str(root / hook / s["file"]))["activations"] for s in manifest["shards"][hook]])
        with torch.no_grad():
            active = SAE.load_from_disk(d).encode(x) != 0
        n_dead = int((active[held].sum(0) == 0).sum())
        differs |= n_dead != int((active.sum(0) == 0).sum())  # the whole cache (the browser's old count) gives another number
        train_m = SaeTrainMetrics.load(d)
        assert f"dead {n_dead}/64 ({n_dead / 64:.1%}, {DEAD_ON})" in summary_line(hook, train_m, d)  # train-sae's log line
        assert train_m.reconstruction.n_dead == read_json(eval_metrics_path(run.sae_eval_dir, hook))["reconstruction"]["n_dead"] == n_dead
        assert next(s for s in site.hooks if s.hook == hook).n_dead == n_dead
        rows = [r for r in report.splitlines() if r.startswith(f"| `{hook}` |")]
        assert f"| {n_dead}/64 ({100 * n_dead / 64:.1f}%) |" in rows[0]  # the SAE table
        assert rows[-1].split(" | ")[2] == str(n_dead)  # the feature browser's table
    assert differs
    assert report.count(f"dead ({DEAD_ON})") == 2


class _InProcessPool:
    """A worker pool that runs each submitted job at once in this process: train_hooks' pool path (job order,
    progress bookkeeping, each job reopening the cache) without the seconds a spawned interpreter costs."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        from concurrent.futures import Future

        f = Future()
        f.set_result(fn(*args))
        return f


def test_hooks_trained_by_workers_are_the_saes_of_one_process_and_workers_change_no_fingerprint(sae_run, tmp_path, monkeypatch):
    from sae_ooc.saes import train_sae as stage
    from sae_ooc.saes.trainer import Reuse
    from sae_ooc.threads import cpu_workers

    hooks = ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_pre"]
    p = sae_run.cfg.sae
    pools = []
    monkeypatch.setattr(stage, "worker_pool", lambda n: pools.append(n) or _InProcessPool(n))
    monkeypatch.setattr(stage, "worker_count", lambda *a, **k: 2)
    monkeypatch.setattr("sae_ooc.saes.trainer.plot_training_curves", lambda *a, **k: None)  # figures are not what is compared
    reuse = Reuse()
    out = stage.train_hooks(open_cache(sae_run.activations_dir), {h: tmp_path / h for h in hooks}, p, reuse=reuse)
    assert pools == [2] and list(out) == hooks  # the pool path ran; metrics come back in the hooks' order
    for h in hooks:
        a, b = load_file(str(tmp_path / h / "sae_weights.safetensors")), load_file(str(sae_dir(sae_run.saes_dir, h) / "sae_weights.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert reuse.get(tmp_path / h, out[h].settings) is not None  # recorded as done, as the one-process path does
    # workers changes how fast, never what: no stage fingerprint, settings hash or recorded params holds it
    assert "workers" not in out[hooks[0]].params
    assert load_config(None, ["sae.workers=1", "circuit.workers=1"]).section("sae", "circuit") == load_config(None).section("sae", "circuit")
    assert load_config(None, ["sae.k=3"]).section("sae") != load_config(None).section("sae")
    assert cpu_workers(2, 5, "cuda") == 1 and cpu_workers(2, 1) == 1 and cpu_workers(1, 5) == 1 and cpu_workers(8, 5) <= 5
