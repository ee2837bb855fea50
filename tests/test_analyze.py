"""The `analyze` stage: every analysis runs on the tiny run, and each is checked on a case with a known answer."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import patching as tl_patching

from conftest import copy_run, rendered_figures
from sae_ooc.analyses.back_patching import back_patch
from sae_ooc.analyses.common import sample_prompts
from sae_ooc.analyses.patching import patching
from sae_ooc.analyses.probes import chance, probes
from sae_ooc.analyses.analyze import ANALYSES
from sae_ooc.analyses.tracing import causal_trace
from sae_ooc.cli import main as cli_main
from sae_ooc.config import ANALYSIS_NAMES, ConfigError, load_config
from sae_ooc.models.hooked import load_model
from sae_ooc.pipeline import run_stage
from sae_ooc.saes.prefixes import PositionSlice
from sae_ooc.tasks.data import load_task


@pytest.fixture(scope="module")
def analyzed(harvested_run, tmp_path_factory):
    run = copy_run(harvested_run, tmp_path_factory.mktemp("analyze") / "run", ["analyze.n_prompts=12", "analyze.noise_samples=4"])
    with rendered_figures():  # test_every_analysis_writes_json_png_svg reads them
        result = run_stage(run, "analyze")
    assert result.ran and result.finished
    return run


def test_every_analysis_writes_json_png_svg(analyzed):
    ANALYSES.check()
    assert set(ANALYSES.names()) == set(ANALYSIS_NAMES)
    for name in ANALYSIS_NAMES:
        d = json.loads((analyzed.analyze_dir / f"{name}.json").read_text())
        assert d["analysis"] == name and d["n_sample"] == 12
        assert mpimg.imread(analyzed.analyze_dir / f"{name}.png").shape[2] in (3, 4)  # loads back as an image
        assert (analyzed.analyze_dir / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    ll = json.loads((analyzed.analyze_dir / "logit-lens.json").read_text())
    assert len(ll["states"]) == analyzed.cfg.model.n_layers + 1 and all(0 <= p <= 1 for row in ll["answer"]["prob"] for p in row)
    d = json.loads((analyzed.analyze_dir / "dla.json").read_text())["check"]  # components + b_O sum to the logit minus b_U
    assert d["sum_answer"] == pytest.approx(d["logit_answer_minus_bU"], abs=1e-3)
    assert d["sum_diff"] == pytest.approx(d["logit_diff_minus_bU"], abs=1e-3)
    # a rerun with nothing changed is skipped; one analysis alone (current: only with --force) reruns only that one and
    # keeps the others, and then the pipeline's `all` finds every analysis current (issue 19: it reran all seven)
    assert not run_stage(analyzed, "analyze").ran and not run_stage(analyzed, "analyze", names="dla").ran
    r = run_stage(analyzed, "analyze", force=True, names="dla")
    assert r.ran and r.info["analyses"] == ["dla"] and (analyzed.analyze_dir / "probes.json").is_file()
    assert not run_stage(analyzed, "analyze", names="all").ran
    from sae_ooc.commands.analyze import summarize

    line = summarize(analyzed, r)  # names the files written now, not the other analyses' older ones
    assert "wrote" in line and "dla.{json,png,svg}" in line and "probes" not in line, line


def test_patching_agrees_with_transformer_lens(harvested_run):
    model = load_model(harvested_run.model_dir)
    ds, vocab = load_task(harvested_run.data_dir)
    pairs = sample_prompts(ds, vocab, 10, seed=3).pairs
    ours = patching(model, pairs, "logit_diff", batch_size=7)  # batches that cut through the blocks of sites
    _, cache = model.run_with_cache(pairs.clean)

    def metric(logits):
        return pairs.metric(logits, "logit_diff").mean()

    ref = tl_patching.get_act_patch_resid_pre(model, pairs.corrupt, cache, metric)
    torch.testing.assert_close(torch.tensor(ours["resid_pre"]["raw"]), ref.cpu(), atol=1e-4, rtol=1e-4)
    ref = tl_patching.get_act_patch_attn_head_out_by_pos(model, pairs.corrupt, cache, metric)  # [layer, pos, head]
    torch.testing.assert_close(torch.tensor(ours["z"]["raw"]), ref.cpu(), atol=1e-4, rtol=1e-4)
    ref = tl_patching.get_act_patch_attn_head_pattern_by_pos(model, pairs.corrupt, cache, metric)  # [layer, head, dest]
    torch.testing.assert_close(torch.tensor(ours["pattern"]["raw"]).permute(0, 2, 1), ref.cpu(), atol=1e-4, rtol=1e-4)
    assert ours["resid_pre"]["normalised"][0][0] == pytest.approx(1.0)  # the whole clean embedding at the head: clean
    # dynamics' resid_pre heatmap is this patching too: against TransformerLens's, normalised by the clean/corrupted metric
    from sae_ooc.dynamics.measures import resid_patching

    ref = tl_patching.get_act_patch_resid_pre(model, pairs.corrupt, cache, metric).cpu()
    clean, corrupt = float(metric(model(pairs.clean))), float(metric(model(pairs.corrupt)))
    dyn = resid_patching(model, pairs, {1: "r1", 2: "r2"}, ("head", "r1", "r2"), range(0, 1))
    assert dyn["clean_logit_diff"] == pytest.approx(clean, abs=1e-5) and dyn["corrupt_logit_diff"] == pytest.approx(corrupt, abs=1e-5)
    torch.testing.assert_close(torch.tensor(dyn["normalised"]), (ref - corrupt) / (clean - corrupt), atol=1e-4, rtol=1e-4)


def copy_head_model(V: int = 10) -> HookedTransformer:
    """Two attention-only layers; layer 0 does nothing, layer 1's one head attends from every position to position 0
    and copies its token, which the unembedding reads: the answer is the first token, whatever follows it."""
    D = 2 * V + 3
    cfg = HookedTransformerConfig(n_layers=2, d_model=D, n_ctx=3, d_head=V, n_heads=1, d_vocab=V, attn_only=True,
                                  normalization_type=None, positional_embedding_type="standard", default_prepend_bos=False)
    m = HookedTransformer(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.embed.W_E[:, :V] = torch.eye(V)
        m.pos_embed.W_pos[:, V : V + 3] = torch.eye(3)
        a = m.blocks[1].attn
        a.b_Q[0, 0] = 30.0
        a.W_K[0, V, 0] = 30.0  # the key of position 0 matches the constant query
        a.W_V[0, :V, :] = torch.eye(V)
        a.W_O[0, :, V + 3 :] = torch.eye(V)
        m.unembed.W_U[V + 3 :, :] = 20 * torch.eye(V)
    return m.eval()


def test_causal_tracing_finds_the_position_the_answer_depends_on():
    model = copy_head_model()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 10, (16, 3), generator=g)
    answer = tokens[:, 0]
    tr = causal_trace(model, tokens, answer, torch.full((16,), 2), subject_pos=0, noise_scale=3.0, samples=10, window=1, seed=0)
    assert tr["p_clean"] > 0.99 and tr["total_effect"] > 0.3  # the noise does hurt
    te = tr["total_effect"]
    for layer in range(2):  # restoring the head position's stream restores everything; the other positions nothing
        assert tr["resid"][layer][0] == pytest.approx(te, abs=1e-5)
        assert max(abs(v) for v in tr["resid"][layer][1:]) < 1e-5
    assert tr["attn"][1][2] == pytest.approx(te, abs=1e-5)  # the copying head's output at the answer position
    assert abs(tr["attn"][0][2]) < 1e-5 and abs(tr["attn"][1][1]) < 1e-5


def test_probe_on_shuffled_labels_is_at_chance():
    g = torch.Generator().manual_seed(0)
    n, k, d = 600, 8, 16
    y = torch.randint(0, k, (2 * n,), generator=g)
    x = torch.nn.functional.one_hot(y, d).float() * 3 + torch.randn(2 * n, d, generator=g) * 0.5  # linearly decodable
    sl = PositionSlice(2, "r2", torch.arange(n), torch.arange(n, 2 * n), {"bridge": (y[:n], y[n:]), "head": (y[:n] * 0 - 1, y[n:] * 0 - 1),
                       "answer": (y[:n] * 0 - 1, y[n:] * 0 - 1)}, None, torch.zeros(n, 3, dtype=torch.long), torch.zeros(n, 3, dtype=torch.long))
    settings = type("S", (), {"probe_steps": 150, "probe_lr": 0.05, "probe_weight_decay": 1e-4, "seed": 0, "n_controls": 3})
    out = probes(lambda h, rows: x[rows], ["h"], [sl], {}, settings)
    b = out["bridge"]
    assert b["heldout_acc"][0][0] > 0.95 and b["above_controls"][0][0]
    c = chance(y[:n], y[n:])
    assert abs(b["shuffled_acc"][0][0] - c) < 3 * (c * (1 - c) / n) ** 0.5 + 0.02
    assert out["head"]["heldout_acc"][0][0] is None  # no labelled rows: no probe


def test_back_patching_a_state_into_itself_changes_nothing(harvested_run):
    model = load_model(harvested_run.model_dir)
    ds, vocab = load_task(harvested_run.data_dir)
    pairs = sample_prompts(ds, vocab, 10, seed=1).pairs
    L = model.cfg.n_layers
    same = [(p, s, s) for p in ("r1", "r2") for s in range(L)]
    base, fixed, logits = back_patch(model, pairs.clean, pairs.answer, pairs.answer_pos, same, batch_size=7)
    ref = model(pairs.clean)[torch.arange(len(pairs)), pairs.answer_pos]
    for c in range(len(same)):
        torch.testing.assert_close(logits[c], ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(fixed[c], base)
    _, _, moved = back_patch(model, pairs.clean, pairs.answer, pairs.answer_pos, [("r1", L, 0)])
    assert not torch.allclose(moved[0], ref)  # a later state into layer 0 does change the output


def test_analyze_cli_errors_are_one_line(harvested_run, capsys):
    assert cli_main(["analyze", "nonsense", "--run", str(harvested_run.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown analysis 'nonsense'" in err and "\n" not in err
    with pytest.raises(ConfigError, match="analyze.metric"):
        load_config(None, ["analyze.metric=accuracy"])
