"""The no-remainder ablation of the circuit of causal variables (sae_ooc.causal.ablate), against plain TransformerLens
hooks: keeping the whole space changes nothing, keeping nothing is the full mean ablation, keeping a subspace is the
projection written out as a matrix; faithfulness is 1 on the clean run and 0 on the full ablation."""

from __future__ import annotations

import torch

from sae_ooc.causal.ablate import ablated_answers, faithfulness, keep_units_hook, orthonormal
from sae_ooc.causal.units import random_basis
from sae_ooc.interventions.prompts import read_batched
from sae_ooc.models.hooked import load_model
from sae_ooc.tasks.data import load_task

HOOK = "blocks.1.hook_resid_pre"


def _setup(run):
    model = load_model(run.model_dir, "cpu").eval()
    _, vocab = load_task(run.data_dir)
    prompts = [(h, vocab.relation_id(a), vocab.relation_id(b)) for h in range(6) for a, b in ((0, 1), (1, 0))]
    tok = torch.tensor([vocab.question_ids(*p) for p in prompts])
    apos = torch.full((len(tok),), vocab.layout.answer_pos)
    _, cache = model.run_with_cache(tok, names_filter=HOOK)
    return model, tok, apos, cache[HOOK]


def test_keeping_everything_or_nothing(harvested_run):
    model, tok, apos, x = _setup(harvested_run)
    d, width = x.shape[-1], x.shape[1]
    mean = x.mean(0) + 0.3  # any mean: what matters is that it replaces what is not kept
    clean = model(tok)
    ident = model.run_with_hooks(tok, fwd_hooks=[(HOOK, keep_units_hook({p: torch.eye(d) for p in range(width)}, mean))])
    torch.testing.assert_close(ident, clean, atol=1e-4, rtol=1e-4)
    none = model.run_with_hooks(tok, fwd_hooks=[(HOOK, keep_units_hook({}, mean))])
    want = model.run_with_hooks(tok, fwd_hooks=[(HOOK, lambda a, hook: mean[None].expand_as(a).clone())])
    torch.testing.assert_close(none, want)
    assert (none - clean).abs().max() > 1e-2  # the mean is not the clean stream


def test_keeping_a_subspace_is_its_projection(harvested_run):
    model, tok, apos, x = _setup(harvested_run)
    d = x.shape[-1]
    W = random_basis(d, 5, torch.Generator().manual_seed(0))
    mean = x.mean(0)
    P = W.T @ W
    want_x = mean[None].repeat(len(x), 1, 1)
    want_x[:, 1] = x[:, 1] @ P + mean[1] @ (torch.eye(d) - P)
    want = model.run_with_hooks(tok, fwd_hooks=[(HOOK, lambda a, hook: want_x)])
    got = model.run_with_hooks(tok, fwd_hooks=[(HOOK, keep_units_hook({1: W}, mean))])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    out = ablated_answers(model, tok, apos, 1, {HOOK: {1: W}}, {HOOK: mean}, 5)
    torch.testing.assert_close(out.first, want[torch.arange(len(tok)), apos], atol=1e-4, rtol=1e-4)


def test_faithfulness_is_one_clean_and_zero_fully_ablated(harvested_run):
    model, tok, apos, x = _setup(harvested_run)
    clean = read_batched(model, tok, apos, 1, 8)
    full = ablated_answers(model, tok, apos, 1, {HOOK: {}}, {HOOK: x.mean(0)}, 8)
    answer = clean.greedy
    counter = torch.roll(answer, 1, 0)
    keep = (counter != answer)[:, 0]
    answer, counter, clean_k, full_k = answer[keep], counter[keep], clean[keep], full[keep]
    f1 = faithfulness(clean_k, clean_k, full_k, answer, counter)
    assert f1["kept"] == 1.0 and abs(f1["faithfulness"] - 1) < 1e-6
    f0 = faithfulness(full_k, clean_k, full_k, answer, counter)
    assert abs(f0["faithfulness"]) < 1e-6


def test_orthonormal_spans_the_parts():
    g = torch.Generator().manual_seed(1)
    A, B = random_basis(16, 3, g), random_basis(16, 2, g)
    W = orthonormal(A, B, A[:1])  # a repeated direction adds nothing
    assert W.shape == (5, 16)
    torch.testing.assert_close(W @ W.T, torch.eye(5), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((A @ W.T) @ W, A, atol=1e-5, rtol=1e-5)
