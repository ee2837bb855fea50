"""SAE training throughput: our pipeline (SAELens SAETrainer fed by CacheBatches) vs a minimal TopK loop.

Both train a TopK SAE of the same size (d_in, d_sae, k, batch) on the same cached activations for the same
number of steps. Ours is the `fit` time of `train_sae` (activation-norm estimate, SAELens's train step with
its AuxK loss, dead-feature bookkeeping and grad clipping, our streaming provider and JSONL logging); the
reference is the plainest loop: encode, top-k, decode, MSE, backward, Adam, on a tensor already in memory.
Also prints the share of the machine's dense-matmul FLOP rate (measured here, same thread count) reached.
SAELens's TopK rescales activations by decoder norms and adds its AuxK loss whenever a feature is dead, so
the loop is timed with both (same objective as ours) and ours is timed without both (same objective as
the plain loop).
Repeats are interleaved so machine load hits both alike.

    python benchmarks/bench_sae.py [--config configs/default.yaml] [--steps 300] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_ooc.activations.cache import heldout_mask, open_cache  # noqa: E402
from sae_ooc.config import load_config  # noqa: E402
from sae_ooc.activations.harvest import harvest_activations  # noqa: E402
from sae_ooc.models.hooked import build_model  # noqa: E402
from sae_ooc.saes.architectures import resolved_d_sae  # noqa: E402
from sae_ooc.saes.trainer import train_sae  # noqa: E402

HOOK = "blocks.1.hook_resid_pre"


def _cache(cfg, root: Path):
    """The task's activations at HOOK from a freshly initialised model of the configured size."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_harvest import task_tensors

    splits, vocab = task_tensors(cfg)
    model = build_model(cfg.model, vocab, seed=0).eval()
    harvest_activations(model, splits, root, "bench", hooks=[HOOK], shard_tokens=cfg.harvest.shard_tokens, batch_size=cfg.harvest.batch_size)
    return open_cache(root)


def ours(cache, p, out: Path) -> float:
    m = train_sae(cache, HOOK, out, p, resume=False)
    return m["training"]["seconds"]


def reference(x: torch.Tensor, d_sae: int, k: int, batch: int, steps: int, lr: float, seed: int, auxk_window: int = 0,
              rescale: bool = False) -> float:
    """Seconds for `steps` steps of a minimal TopK SAE loop.

    `rescale` and `auxk_window` > 0 add what SAELens's TopK does by default, so the objective matches ours:
    features are selected and scaled as if decoder rows had unit norm, and features silent for
    `auxk_window` steps get the AuxK loss (their top d_in/2 pre-activations reconstruct the residual).
    """
    g = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    W_dec = (torch.randn(d_sae, d, generator=g) * 0.1).requires_grad_()
    W_enc = W_dec.detach().T.clone().requires_grad_()
    b_enc = torch.zeros(d_sae, requires_grad=True)
    b_dec = torch.zeros(d, requires_grad=True)
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=lr)
    since_fired = torch.zeros(d_sae)
    perm = torch.randperm(len(x), generator=g)
    t = time.perf_counter()
    pos = 0
    for _ in range(steps):
        if pos + batch > len(x):
            perm, pos = torch.randperm(len(x), generator=g), 0
        xb = x[perm[pos : pos + batch]]
        pos += batch
        pre = (xb - b_dec) @ W_enc + b_enc
        norm = W_dec.norm(dim=-1) if rescale else None
        if rescale:
            pre = pre * norm
        top = pre.topk(k, dim=-1, sorted=False)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        recon = (acts / norm if rescale else acts) @ W_dec + b_dec
        loss = ((recon - xb) ** 2).sum(-1).mean()
        if auxk_window:
            with torch.no_grad():
                fired = (acts > 0).any(0)
                since_fired += 1
                since_fired[fired] = 0
            dead = since_fired > auxk_window
            n_dead = int(dead.sum())
            if n_dead:
                k_aux = min(d // 2, n_dead)
                aux_top = torch.where(dead[None], pre, -torch.inf).topk(k_aux, sorted=False)
                aux_acts = torch.zeros_like(pre).scatter(-1, aux_top.indices, aux_top.values)
                aux_recon = (aux_acts / norm if rescale else aux_acts) @ W_dec
                loss = loss + min(n_dead / (d // 2), 1.0) * ((aux_recon - (xb - recon).detach()) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def matmul_flops() -> float:
    """Dense float32 matmul FLOP/s on this machine (best of a few 1024^3 products)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 1024**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: the config's sae.threads)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    threads = cfg.sae.threads if args.threads is None else args.threads
    if threads > 0:
        torch.set_num_threads(threads)
    p = dataclasses.replace(cfg.sae, architecture="topk", training_tokens=args.steps * cfg.sae.batch_size, n_checkpoints=0,
                            threads=threads, sweep_k=[], sweep_l1_coefficient=[], sweep_d_sae=[])
    with tempfile.TemporaryDirectory() as d:
        cache = _cache(cfg, Path(d) / "acts")
        held = heldout_mask(cache.tokens(), p.eval_fraction, p.seed)
        x = cache.read(HOOK, (~held).nonzero().squeeze(1))
        d_sae = resolved_d_sae(p, cache.d_model, HOOK)
        reference(x, d_sae, p.k, p.batch_size, 20, p.lr, 0)  # warm-up
        # ours as configured (TopK + AuxK, + decoder-norm rescaling if on) against a loop with the same objective, and
        # ours stripped to plain TopK (AuxK never runs when no feature counts as dead) against the plainest loop
        plain = dataclasses.replace(p, dead_feature_window=args.steps + 1, rescale_acts_by_decoder_norm=False)
        t_ours, t_plain, t_ref, t_same = [], [], [], []
        for r in range(args.repeats):
            t_ours.append(ours(cache, p, Path(d) / f"sae{r}"))
            t_plain.append(ours(cache, plain, Path(d) / f"plain{r}"))
            t_ref.append(reference(x, d_sae, p.k, p.batch_size, args.steps, p.lr, r))
            t_same.append(reference(x, d_sae, p.k, p.batch_size, args.steps, p.lr, r, auxk_window=p.dead_feature_window,
                                    rescale=p.rescale_acts_by_decoder_norm))
        peak = matmul_flops()
    tokens = args.steps * p.batch_size
    to, tp, tr, ts = (statistics.median(t) for t in (t_ours, t_plain, t_ref, t_same))
    flops_per_token = 6 * 2 * cache.d_model * d_sae  # encoder + decoder matmuls, forward + backward (3x forward)
    print(f"SAE training: TopK d_in {cache.d_model}, d_sae {d_sae}, k {p.k}, batch {p.batch_size}, {args.steps} steps "
          f"({len(x)} cached training tokens); torch threads {torch.get_num_threads()}; median of {args.repeats}")
    extras = ("decoder-norm rescaling + " if p.rescale_acts_by_decoder_norm else "") + f"AuxK, dead window {p.dead_feature_window}"
    print(f"  as configured (TopK + {extras}), against a minimal loop with the same objective:")
    print(f"    ours (SAELens SAETrainer + CacheBatches)  {tokens / to:10.0f} tok/s")
    print(f"    minimal hand-written loop                 {tokens / ts:10.0f} tok/s")
    print(f"    ratio ours / minimal = {ts / to:.2f}  (target >= 0.8)")
    print("  plain TopK (no rescaling, AuxK never triggered):")
    print(f"    ours                                      {tokens / tp:10.0f} tok/s")
    print(f"    minimal hand-written loop                 {tokens / tr:10.0f} tok/s")
    print(f"    ratio ours / minimal = {tr / tp:.2f}  (target >= 0.8)")
    print(f"  ours as configured vs the plain minimal loop: {tr / to:.2f} (the difference is the objective: {extras})")
    rate = lambda t: flops_per_token * tokens / t  # noqa: E731  (encoder + decoder matmul FLOPs only)
    print(f"  dense matmul peak {peak / 1e9:.1f} GFLOP/s (1024^3 float32, same threads); matmul FLOPs reached: ours as configured "
          f"{rate(to) / 1e9:.2f} GFLOP/s = {rate(to) / peak:.1%}, ours plain {rate(tp) / peak:.1%}, minimal plain loop {rate(tr) / peak:.1%}")


if __name__ == "__main__":
    main()
