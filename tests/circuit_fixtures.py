"""Small runs for the attribution / circuit / export / query tests, built without the train and SAE stages:
a tiny model (optionally a few optimiser steps) and SAELens SAEs made directly and saved the SAELens way."""

from __future__ import annotations

from pathlib import Path

import torch
from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_ooc.config import load_config
from sae_ooc.io import write_json
from sae_ooc.models.hooked import build_model, save_model
from sae_ooc.pipeline import outputs_digest, record_outputs, run_stage
from sae_ooc.rundir import RunDir
from sae_ooc.saes.store import METRICS_FILE
from sae_ooc.stages import get_stage
from sae_ooc.tasks.data import SEQ_LEN, load_task, split_tensors

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]


def topk_sae(hook: str, d_in: int, d_sae: int = 48, k: int = 6, seed: int = 0) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    sae.cfg.metadata.hook_name = hook
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    return sae


def linear_sae(hook: str, d_in: int, d_sae: int = 24, seed: int = 0) -> StandardSAE:
    """A ReLU SAE whose pre-activations are all far above 0: every feature always on, so it is affine."""
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    sae.cfg.metadata.hook_name = hook
    with torch.no_grad():
        sae.b_enc.fill_(20.0)
        sae.W_dec.mul_(0.3)
    return sae


def train_a_little(model, ds, vocab, steps: int, lr: float = 3e-3) -> None:
    st = split_tensors(ds["train"], vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rows = torch.arange(len(st))
    for _ in range(steps):
        logits = model(st.tokens)[rows, st.answer_pos]
        loss = torch.nn.functional.cross_entropy(logits, st.answer)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def mark_stages(run: RunDir, names) -> None:
    """Record stages as done in RUN/stages.json with the outputs they have now, as if the pipeline had run them."""
    for name in names:
        outputs = record_outputs(run, get_stage(name))
        run.record(name, {"fingerprint": "fixture", "digest": outputs_digest(outputs), "outputs": outputs, "info": {}})


def make_run(tmp_path: Path, *, saes: dict | None = None, train_steps: int = 0, overrides=(), model=None, labels: dict | None = None) -> RunDir:
    """RUN with data, a saved model, SAEs saved under RUN/saes/<hook>/ and their feature labels under
    RUN/sae_eval/<hook>/, the stages that made them recorded as done.

    `saes`: {hook: SAE} (default: random TopK SAEs on HOOKS; {}: none, so train-sae is not done);
    `labels`: {hook: feature_labels list}."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["attribution.only_correct=false", "attribution.n_pairs=12", *overrides])
    run = RunDir(tmp_path / "run", cfg)
    run.check_and_save_config()
    run_stage(run, "data")
    ds, vocab = load_task(run.data_dir)
    if model is None:
        model = build_model(cfg.model, vocab, seed=0)
        if train_steps:
            train_a_little(model, ds, vocab, train_steps)
    save_model(model, run.model_dir)
    d = model.cfg.d_model
    saes = saes if saes is not None else {h: topk_sae(h, d, seed=i) for i, h in enumerate(HOOKS)}
    for h, sae in saes.items():
        sae.save_model(run.saes_dir / h)
        write_json(run.sae_eval_dir / h / METRICS_FILE, {"feature_labels": (labels or {}).get(h, [])})
    mark_stages(run, ("train", "train-sae", "eval-sae") if saes else ("train",))
    return run


def linear_model(vocab, n_layers: int = 2, d_model: int = 16, seed: int = 0) -> HookedTransformer:
    """Attention-only, no normalisation, W_Q = W_K = 0 (uniform causal attention): the logits are an
    affine function of any residual-stream activation, so every metric difference is linear in it."""
    kwargs = dict(n_layers=n_layers, d_model=d_model, n_heads=2, d_head=d_model // 2, d_vocab=vocab.d_vocab, d_vocab_out=vocab.d_vocab,
                  n_ctx=SEQ_LEN, attn_only=True, normalization_type=None, positional_embedding_type="standard", seed=seed,
                  default_prepend_bos=False)
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    with torch.no_grad():
        for b in model.blocks:
            b.attn.W_Q.zero_()
            b.attn.W_K.zero_()
            b.attn.b_Q.zero_()
            b.attn.b_K.zero_()
    model.sae_ooc_config_kwargs = kwargs
    model.eval()
    return model
