"""Feature-browser build time: `sae-ooc browse` (one batched pass per SAE, pages streamed in chunks) vs a naive builder
that recomputes each feature on its own (the whole cache encoded once per feature, as a per-feature dashboard does).

Ours is timed whole (context, every SAE's pass, every page, JSON, index and circuit page; no screenshot). The naive
builder is timed on `--sample` features per hook and scaled to every feature (it is linear in the features: each costs
one full pass), and its numbers are checked against ours on those features. Both run on the same machine in one process,
one after the other, with the same torch thread count.

    python benchmarks/bench_browse.py --run runs/default [--sample 16] [--threads 2]

The run needs data, model, activations and saes (eval-sae, attribution and circuits are used when present). It is
only read: the site goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_ooc.rundir import RunDir  # noqa: E402
from sae_ooc.saes.features import direct_logits  # noqa: E402
from sae_ooc.saes.store import load_saes  # noqa: E402
from sae_ooc.browse.context import load_context  # noqa: E402
from sae_ooc.browse.paths import feature_json  # noqa: E402


@torch.no_grad()
def naive_feature(ctx, sae, hook: str, f: int, k: int = 10) -> dict:
    """One feature's page numbers the plain way: encode the whole cache, keep column f."""
    cache = ctx.cache
    a = torch.cat([sae.encode(cache.load_shard(hook, i).float())[:, f] for i in range(cache.n_shards)])
    on = a > 0
    top = torch.where(ctx.first, a, torch.tensor(float("-inf"))).topk(k)
    held = sae.encode(cache.read(hook, ctx.held))[:, f]
    hist = torch.histc(held[held > 0], 24, 0, float(held.max())) if (held > 0).any() else torch.zeros(24)
    lg = direct_logits(ctx.model, hook, sae.W_dec[f : f + 1].float(), ctx.scale)
    return {"frac_nonzero": float(on.float().mean()), "mean": float(a[on].mean()) if on.any() else 0.0, "max": float(a.max()),
            "top": top.values.tolist(), "hist": hist.tolist(), "logits": None if lg is None else lg[0].topk(5).indices.tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/default"))
    p.add_argument("--sample", type=int, default=16, help="features per hook the naive builder is timed on")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = RunDir.open(args.run)
    from sae_ooc.browse.browse import build_site

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = build_site(run, Path(tmp) / "browse", shot=False)
        ours = time.perf_counter() - t0
        n = info["n_features"]
        print(f"ours: {n} features over {len(info['hooks'])} SAEs ({', '.join(str(h['d_sae']) for h in info['hooks'])}) in {ours:.1f} s "
              f"({args.threads} threads; {info['n_tokens']} cached tokens)")
        t0 = time.perf_counter()
        saes = load_saes(run.saes_dir)
        ctx = load_context(run, list(saes), seed=run.cfg.sae_eval.seed)
        setup = time.perf_counter() - t0
        timed, per_feature, worst = 0, 0.0, 0.0
        for h, sae in saes.items():
            feats = torch.linspace(0, sae.cfg.d_sae - 1, min(args.sample, sae.cfg.d_sae)).long().unique().tolist()
            t0 = time.perf_counter()
            res = {f: naive_feature(ctx, sae, h, f) for f in feats}
            per_feature += (time.perf_counter() - t0) / len(feats) * sae.cfg.d_sae
            timed += len(feats)
            for f, r in res.items():  # the naive numbers are ours
                mine = json.loads((Path(tmp) / "browse" / feature_json(h, f)).read_text())
                worst = max(worst, abs(mine["frac_nonzero"] - r["frac_nonzero"]), abs(mine["sae_ooc"]["max_activation"] - r["max"]))
        naive = setup + per_feature
        print(f"naive per-feature recomputation: {naive:.1f} s for {n} features (setup {setup:.1f} s + timed on {timed} features, "
              f"scaled linearly); largest difference from ours in density or max activation: {worst:.2e}")
        print(f"ratio naive / ours: {naive / ours:.1f}x")


if __name__ == "__main__":
    main()
