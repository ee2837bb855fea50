"""Weight sharing (a looped model) and `sae-ooc dynamics` (per-checkpoint measures, exact replayed checkpoints)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_ooc.config import load_config
from sae_ooc.models.hooked import build_model, is_weight_shared, load_model, save_model
from sae_ooc.models.metrics import EvalRow
from sae_ooc.models.replay import accuracy_rise, dense_steps, fill_gaps, replay_checkpoints, saved_checkpoints
from sae_ooc.pipeline import run as run_pipeline
from sae_ooc.pipeline import run_stage
from sae_ooc.rundir import RunDir
from sae_ooc.tasks.data import load_task
from conftest import NATURAL, ROOT, TINY, copy_run

SMALL = ["train.steps=40", "train.eval_every=10", "train.n_checkpoints=4", "sae.training_tokens=4096", "sae_eval.probe_steps=30",
         "sae_eval.n_controls=1", "dynamics.sae_training_tokens=2048", "dynamics.dense_checkpoints=2", "dynamics.patch_pairs=8",
         "dynamics.das_steps=10"]  # the DAS curve's plumbing; its numbers are checked against the variables stage below


def test_weight_sharing_ties_parameters_keeps_hooks_and_reloads(tiny_cfg, tiny_task, tmp_path):
    _, vocab = tiny_task
    cfg = load_config(TINY, ["model.weight_sharing=true", "model.n_layers=3"])
    model = build_model(cfg.model, vocab, seed=0)
    untied = build_model(load_config(TINY, ["model.n_layers=3"]).model, vocab, seed=0)
    assert is_weight_shared(model) and not is_weight_shared(untied)
    block = sum(p.numel() for p in untied.blocks[0].parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in untied.parameters()) - 2 * block
    for layer in range(3):  # every layer keeps its own TransformerLens hook points
        assert f"blocks.{layer}.hook_resid_pre" in model.hook_dict and f"blocks.{layer}.attn.hook_z" in model.hook_dict
    assert model.hook_dict["blocks.1.hook_resid_pre"] is not model.hook_dict["blocks.2.hook_resid_pre"]

    # one optimizer step moves every layer the same way: the parameters are one block's
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, vocab.d_vocab, (4, 3))
    model(tokens, return_type="loss").backward()
    opt.step()
    assert torch.equal(model.blocks[0].attn.W_Q, model.blocks[2].attn.W_Q)
    assert torch.equal(model.blocks[1].mlp.W_in, model.blocks[0].mlp.W_in)

    save_model(model, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert is_weight_shared(back)
    assert torch.allclose(back(tokens), model(tokens), atol=1e-6)
    # plain TransformerLens, no sae_ooc code: untied, but the same function
    kwargs = json.loads((tmp_path / "m" / "config.json").read_text())
    plain = HookedTransformer(HookedTransformerConfig(**kwargs))
    plain.load_state_dict(load_file(str(tmp_path / "m" / "model.safetensors")))
    assert torch.allclose(plain(tokens), model(tokens), atol=1e-6)
    # an untied model saved afterwards in the same folder is not tied on reload
    save_model(untied, tmp_path / "m")
    assert not is_weight_shared(load_model(tmp_path / "m"))


def test_accuracy_rise_and_dense_steps_known_answers():
    def row(s, a):  # a line of metrics.jsonl
        return EvalRow(step=s, elapsed_s=0.0, lr=1e-3, loss=None, splits={"v_acc": a})

    recs = [row(s, a) for s, a in [(0, 0.0), (10, 0.05), (20, 0.1), (30, 0.4), (40, 0.8), (50, 0.95), (60, 1.0)]]
    r = accuracy_rise(recs, "v", 0.1, 0.9)
    assert r["found"] and (r["start"], r["moment"], r["end"]) == (10, 40, 50)
    assert not accuracy_rise([row(0, 0.2), row(5, 0.22)], "v", 0.1, 0.9)["found"]
    assert dense_steps(10, 50, 4, {20}) == [30, 40, 50]
    # gaps wider than the ratio in the window get geometrically spaced steps: 100 -> 400 at ratio 2 gets 200, 0 -> 100
    # (counted from step 1) gets 1.93, 3.7, ..., 51.8 of which only 52 lies in the window
    assert fill_gaps([0, 100, 400], 50, 400, 2.0) == [52, 200] and fill_gaps([0, 100, 400], 50, 400, 0) == []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("dyn") / "run", load_config(TINY, SMALL))
    assert all(r.finished for r in run_pipeline(run, stages=["data", "train", "harvest"]))
    return run


def test_replayed_checkpoint_is_bit_identical_to_the_saved_one(tiny_run, tmp_path):
    saved = saved_checkpoints(tiny_run.model_dir)
    assert sorted(saved) == [0, 1, 3, 12, 40]
    out = replay_checkpoints(tiny_run, [12, 7], tmp_path / "replay")  # 12 replayed from step 3, not loaded
    ref = load_file(str(saved[12] / "model.safetensors"))
    got = load_file(str(out[12] / "model.safetensors"))
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert (out[7] / "model.safetensors").is_file()
    # a damaged replayed checkpoint is replayed again (it was loaded as is, and the error named `sae-ooc train` on it)
    with open(out[7] / "model.safetensors", "r+b") as f:
        f.truncate(100)
    replay_checkpoints(tiny_run, [12, 7], tmp_path / "replay")
    assert load_file(str(out[7] / "model.safetensors")).keys() == ref.keys()


@pytest.mark.figures
def test_dynamics_runs_on_a_tiny_run_and_its_numbers_check_out(tiny_run, tmp_path):
    from test_stage_outputs import check_line

    res = run_stage(tiny_run, "dynamics")
    assert res.finished and tiny_run.stage_record("dynamics") is not None
    check_line(tiny_run, "dynamics", res)  # its summary line names every file it wrote
    out = json.loads((tiny_run.dynamics_dir / "dynamics.json").read_text())
    assert (tiny_run.dynamics_dir / "dynamics.png").is_file() and (tiny_run.dynamics_dir / "dynamics.svg").is_file()
    steps = [p["step"] for p in out["checkpoints"]]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 40
    last = out["checkpoints"][-1]
    final = json.loads((tiny_run.model_dir / "final_metrics.json").read_text())["accuracy"]
    assert last["accuracy"] == pytest.approx(final)  # the last checkpoint is the final model
    # logit lens after the final layer is the model's own output: the answer is top-1 exactly where the model is right
    model = load_model(tiny_run.model_dir)
    from sae_ooc.dynamics.dynamics import _prompts

    ds, vocab = load_task(tiny_run.data_dir)
    toks, _, answer = _prompts(ds, vocab, tiny_run.cfg.dynamics.n_prompts, tiny_run.cfg.dynamics.seed)
    right = (model(toks)[:, 2].argmax(-1) == answer).float().mean().item()
    assert last["logit_lens"]["answer@r2"]["top1"][-1] == pytest.approx(right)
    # patching the clean resid_pre at layer 0 of the head position replays the whole clean prompt: 1 by construction
    assert last["patching"]["normalised"][0][0] == pytest.approx(1.0, abs=1e-4)
    for p in out["checkpoints"]:
        assert set(p["probes"]) == set(out["hooks"]) and set(p["saes"]) == set(out["sae_hooks"])
        assert set(p["control"]) == set(out["control"]["hooks"]) == {"blocks.1.hook_resid_pre"}
        assert all(0 <= p["control"][h][k] <= 1 for h in p["control"] for k in ("das", "resid_patch", "random"))
    assert out["control"]["rank"] == 16 and out["control"]["n_heldout_pairs"] == last["control"]["blocks.1.hook_resid_pre"]["n"] > 0
    assert "bridge_first_used" in out["answers"] and "bridge_first_used_answer" in out["answers"]
    assert all(set(p["control_answer"]) >= {"blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"} for p in out["checkpoints"])
    # not part of the default pipeline, and skipped when nothing changed
    from sae_ooc.stages import PIPELINE_STAGES, STAGE_NAMES
    from sae_ooc.report.report import build_report

    doc = build_report(tiny_run)  # the report shows the dynamics once they exist
    assert "Training dynamics: when does the bridge" in "\n".join(doc.lines) and tiny_run.dynamics_dir / "dynamics.png" in doc.figures
    assert {"dynamics.final_bridge_probe_r1", "dynamics.final_patching_peak"} <= {n["name"] for n in doc.numbers}
    assert "reads the atomic answer the model was trained to predict" in "\n".join(doc.lines)

    assert "dynamics" in STAGE_NAMES and "dynamics" not in PIPELINE_STAGES
    assert not run_stage(tiny_run, "dynamics").ran


def test_weight_shared_comparison_model_runs_the_pipeline_through_circuit(tmp_path, monkeypatch):
    """Two things at the price of one run: a looped model, and the comparison family (configs/comparison_tiny.yaml)
    through the stages with no family branch: its pairs are comparisons (e1, attr, e2) -> lt / eq / gt whose first
    value v1 = value(e1, attr) is the bridge."""
    from conftest import HARVEST_SETTINGS


    over = [*HARVEST_SETTINGS, "model.weight_sharing=true", "sae.training_tokens=4096", "sae_eval.probe_steps=30", "sae_eval.n_controls=1",
            "sae.hooks=[blocks.1.hook_resid_pre]", "circuit.random_edge_sets=4", "circuit.prune_pairs=2"]  # one SAE: splicing is per hook
    run = RunDir(tmp_path / "run", load_config(ROOT / "configs" / "comparison_tiny.yaml", over))
    stages = ["data", "train", "harvest", "train-sae", "eval-sae", "attribute", "circuit"]
    results = run_pipeline(run, stages=stages)
    assert [r.name for r in results if r.finished] == stages
    assert (run.model_dir / "sharing.json").is_file() and is_weight_shared(load_model(run.model_dir))
    assert is_weight_shared(load_model(run.model_dir, sae_transformer=True))
    assert (run.circuit_dir / "circuit.json").is_file()
    ds, vocab = load_task(run.data_dir)
    pairs = load_file(str(run.root / "attribution" / "node_effects.safetensors"))
    atomic = {(h, r): a for h, r, a in zip(ds["atomic_test"]["head"], ds["atomic_test"]["r1"], ds["atomic_test"]["answer"])}
    rows = {tuple(r["input_ids"]): r for s in ds for r in ds[s] if r["hop"] == 2}
    for key in ("", "_corrupt"):  # each prompt's answer compares the two entities' values; the bridge is the first value
        prompts = pairs["pairs.clean" if not key else "pairs.corrupt"].tolist()
        for p, b, t in zip(prompts, pairs[f"pairs.bridge{key}"].tolist(), pairs[f"pairs.answer{key}"].tolist()):
            v1, v2 = rows[tuple(p)]["bridge"], rows[tuple(p)]["bridge2"]
            assert b == v1 and vocab.name(t) == ("lt", "eq", "gt")[(v1 > v2) - (v1 < v2) + 1]
            if not key:  # a clean prompt is a test_id comparison: both of its values are trained atomic facts
                assert (atomic[(p[0], p[1])], atomic[(p[2], p[1])]) == (v1, v2)


def test_dynamics_on_a_natural_task_reads_the_layouts_positions(natural_trained, tmp_path):
    """A natural-language task: the bridge is read at r1's token and at `last` (the layout's answer position), the
    logit lens ranks the names' first tokens (recomputed here from the model's own logits and embeddings), and the
    patching peak leaves out the head entity's tokens, not position 0 (a BOS)."""
    from sae_ooc.report.report import build_report

    run = copy_run(natural_trained, tmp_path / "run", config=NATURAL,
                   overrides=("harvest.hooks=[blocks.1.hook_resid_pre]", "sae_eval.probe_steps=30",
                              "dynamics.dense_checkpoints=0", "dynamics.sae_training_tokens=1024", "dynamics.n_prompts=1000",
                              "dynamics.patch_pairs=8", "dynamics.sae_hooks=[blocks.1.hook_resid_pre]",
                              "dynamics.dense_max_ratio=0", "dynamics.das_steps=5"))
    assert all(r.finished for r in run_pipeline(run, stages=["train", "harvest", "dynamics"]))
    out = json.loads((run.dynamics_dir / "dynamics.json").read_text())
    lay = json.loads((run.data_dir / "layout.json").read_text())
    r1_pos, last = lay["roles"]["r1"][1] - 1, lay["answer_pos"]
    assert lay["position_names"][last] == "last" and lay["position_names"][r1_pos] == "r1"
    for p in out["checkpoints"]:
        assert set(p["logit_lens"]) == {"labels", "n_prompts", "bridge@r1", "bridge@last", "answer@last"}
        assert {pos for r in p["probes"].values() for pos in r} <= {"r1", "last"} and any(r for r in p["probes"].values())
        assert {"peak@r1", "peak@last"} <= set(p["patching"])
        assert p["patching"]["peak"]["position"] not in lay["position_names"][slice(*lay["roles"]["head"])]
        assert set(p["saes"]["blocks.1.hook_resid_pre"]) >= {"bridge@r1", "bridge@last", "answer@last"}
    assert out["targets"]["n_patch_pairs_same_first_token"] >= 0

    # the final checkpoint's logit lens, recomputed from every test_id two-hop row (n_prompts covers them all)
    ds, vocab = load_task(run.data_dir)
    rows = [r for r in ds["test_id"] if r["hop"] == 2]
    toks = torch.tensor([r["input_ids"] for r in rows])
    assert all(vocab.decode([r["input_ids"][r1_pos]]).strip() == vocab.relation_name(r["r1"]) for r in rows)  # r1's token
    bridge = torch.tensor([vocab.answer_token_ids(r["bridge"])[0] for r in rows])
    answer = torch.tensor([r["answer_ids"][0] for r in rows])
    model = load_model(run.model_dir)
    final = out["checkpoints"][-1]
    assert final["step"] == run.cfg.train.steps and final["logit_lens"]["n_prompts"] == len(rows)

    def ranks(logits, target):
        return (logits > logits.gather(-1, target[:, None])).sum(-1).float()

    with torch.no_grad():
        logits, cache = model.run_with_cache(toks)
        embedded = model.unembed(model.ln_final(cache["blocks.0.hook_resid_pre"][:, r1_pos]))  # layer 0: embeddings alone
    for key, layer, rk in (("bridge@r1", -1, ranks(logits[:, r1_pos], bridge)), ("bridge@r1", 0, ranks(embedded, bridge)),
                           ("answer@last", -1, ranks(logits[:, last], answer))):
        assert final["logit_lens"][key]["median_rank"][layer] == pytest.approx(rk.median().item())
        assert final["logit_lens"][key]["top1"][layer] == pytest.approx((rk == 0).float().mean().item())
    # the patching metric: the clean prompts' first-token logit difference at `last`, from the whole-answer pairs
    from sae_ooc.circuits.pairs import make_pairs

    whole = make_pairs(ds, vocab, "test_id", run.cfg.dynamics.patch_pairs, run.cfg.dynamics.seed)
    one = whole.subset(whole.cont_is_answer)  # one row a pair (the rows teacher-force t2's tokens)
    with torch.no_grad():
        lg = model(one.clean[:, : len(lay["position_names"])])[:, last]
    rows = torch.arange(len(one))
    diff = (lg[rows, one.answer_ids[:, 0]] - lg[rows, one.answer_corrupt_ids[:, 0]]).mean().item()
    assert final["patching"]["n_pairs"] == len(one) and final["patching"]["clean_logit_diff"] == pytest.approx(diff, abs=1e-5)

    doc = build_report(run)  # the report's dynamics section names the layout's positions
    text = "\n".join(doc.lines)
    assert "bridge probe at last" in text and "first token of its name" in text and "head entity's tokens left out" in text


def test_dynamics_das_switch_is_the_variables_stages(harvested_run, tmp_path):
    """On one model and the same pairs, the per-checkpoint DAS switch rate and residual patch of `sae-ooc dynamics` are the
    variables stage's numbers (one implementation: sae_ooc.causal's pairs, `row.das_unit`, `control.switch_only`), the
    held-out prefixes being train-sae's split that dynamics recomputes from the cache."""
    from circuit_fixtures import HOOKS, mark_stages, topk_sae

    from sae_ooc.activations.cache import ActivationCache, heldout_mask
    from sae_ooc.causal.pairs import HELD
    from sae_ooc.causal.result import VariablesResult
    from sae_ooc.causal.variables import prefixes_at
    from sae_ooc.dynamics.control import bridge_control, control_setup
    from sae_ooc.io import save_tensors, write_json
    from sae_ooc.saes.store import METRICS_FILE, eval_rows

    hook = HOOKS[1]
    run = copy_run(harvested_run, tmp_path / "run", (
        "causal.only_correct=false", "causal.heldout_splits=[train,valid_id,test_id]", "causal.das_steps=5", "causal.das_batch=64",
        "causal.ranks=[4]", "causal.feature_counts=[1]", "causal.random_draws=2", "causal.probe_steps=10", "causal.bootstrap=20",
        "causal.erase_rank=4", f"causal.hooks=[{hook}]", "causal.variables=[]"))
    run.check_and_save_config()
    d = load_model(run.model_dir, "cpu").cfg.d_model
    topk_sae(hook, d, seed=0).save_model(run.saes_dir / hook)
    write_json(run.sae_eval_dir / hook / METRICS_FILE, {"feature_labels": []})
    cache = ActivationCache(run.activations_dir)
    held = heldout_mask(cache.tokens(), run.cfg.sae.eval_fraction, run.cfg.sae.seed)  # what dynamics computes
    save_tensors(eval_rows(run.saes_dir), {"rows": held.nonzero().squeeze(1)})  # what train-sae would write
    mark_stages(run, ("train-sae", "eval-sae"))
    assert run_stage(run, "variables").finished
    res = VariablesResult.load(run.variables_dir)
    row = res.rows[0]

    ds, vocab = load_task(run.data_dir)
    setup = control_setup(ds, vocab, run.cfg.task, run.cfg.causal, prefixes_at(cache.tokens(), held, vocab.layout.index("r1")),
                          run.cfg.causal.das_steps, 10**9)
    P = setup.ctx.pairs[HELD]
    assert torch.stack([P.head, P.r1, P.r2, P.b, P.b2, P.donor[:, 0], P.donor[:, 1]], 1).tolist() == res.heldout_pairs
    got = bridge_control(load_model(run.model_dir, "cpu").eval(), setup, [hook], 4, 2)[hook]
    assert got["n"] == row.units["das_rank4"].n == len(res.heldout_pairs) > 0
    assert got["resid_patch"] == pytest.approx(row.units["resid_patch"].switch)
    assert got["das"] == pytest.approx(row.units["das_rank4"].switch)
    assert got["das_ci95"] == pytest.approx(row.units["das_rank4"].ci95)
    assert got["das_logit_change"] == pytest.approx(row.units["das_rank4"].logit_change, abs=1e-4)
    assert 0 <= got["random"] <= 1
    # at the answer position: the variables stage's bridge@answer search (its hooks, seeds and pairs), rank by rank
    from sae_ooc.dynamics.answer_control import answer_control

    setup_v = control_setup(ds, vocab, run.cfg.task, run.cfg.causal, prefixes_at(cache.tokens(), held, vocab.layout.index("r1")),
                            run.cfg.causal.das_steps, 10**9, keep_valid=True)
    ans = answer_control(load_model(run.model_dir, "cpu").eval(), setup_v, 4)
    search = res.circuit.answer_das
    assert set(ans) == set(search) and any(a["das"] is not None for a in ans.values())
    for h, a in ans.items():
        assert a["valid_resid_patch"] == pytest.approx(search[h].valid_resid_patch)
        assert a["das"] == (pytest.approx(search[h].heldout_switch["4"]) if "4" in search[h].heldout_switch else None)
        assert a["n"] == len(res.heldout_pairs) and 0 <= a["resid_patch"] <= 1
