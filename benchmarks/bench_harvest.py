"""Harvest throughput against a bare forward pass, and peak memory at 1x and 10x tokens.

Throughput: `harvest_activations` (forward with hooks, gather non-pad positions, shard buffers, atomic
writes with sha256) against `model(tokens)` over the same sequences in the same batches; repeats are
interleaved so machine load hits both alike. Memory: the same harvest at 1x and 10x tokens (the task's
sequences tiled), each in a fresh subprocess, comparing ru_maxrss.

    python benchmarks/bench_harvest.py [--config configs/default.yaml] [--repeats 3] [--scale 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_ooc.config import load_config  # noqa: E402
from sae_ooc.tasks.data import SPLITS, SplitTensors, generate  # noqa: E402
from sae_ooc.activations.harvest import harvest_activations  # noqa: E402
from sae_ooc.models.hooked import build_model  # noqa: E402


def task_tensors(cfg, scale: int = 1) -> dict[str, SplitTensors]:
    from sae_ooc.tasks.data import split_tensors

    ds, vocab = generate(cfg.task)
    out = {}
    for s in SPLITS:
        st = split_tensors(ds[s], vocab)
        out[s] = SplitTensors(*(t.repeat(scale, *([1] * (t.dim() - 1))) for t in (st.tokens, st.answer_pos, st.answer, st.bridge, st.hop)))
    return out, vocab


def bare_forward(model, splits, batch_size: int) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        for st in splits.values():
            for s in range(0, len(st), batch_size):
                model(st.tokens[s : s + batch_size])
    return time.perf_counter() - t


def harvest_time(model, splits, hc, out: Path) -> float:
    t = time.perf_counter()
    harvest_activations(model, splits, out, "bench", hooks=hc.hooks, shard_tokens=hc.shard_tokens, batch_size=hc.batch_size, dtype=hc.dtype, force=True)
    return time.perf_counter() - t


def child(config: str | None, scale: int) -> None:
    """Harvest `scale` x the task's tokens; print peak RSS (KiB) and the token count as JSON."""
    cfg = load_config(config)
    splits, vocab = task_tensors(cfg, scale)
    model = build_model(cfg.model, vocab, seed=0)
    with tempfile.TemporaryDirectory() as d:
        m = harvest_activations(model, splits, Path(d) / "acts", "bench", hooks=cfg.harvest.hooks, shard_tokens=cfg.harvest.shard_tokens,
                                batch_size=cfg.harvest.batch_size, dtype=cfg.harvest.dtype)
        print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "n_tokens": m["n_tokens"],
                          "bytes_on_disk": sum(p.stat().st_size for p in Path(d).rglob("*.safetensors"))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None, help="experiment YAML (default: built-in defaults)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=int, default=10, help="token multiple for the memory comparison")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = load_config(args.config)
    hc = cfg.harvest
    if hc.threads > 0:
        torch.set_num_threads(hc.threads)  # as the harvest stage does
    if args.child:
        child(args.config, args.child)
        return
    splits, vocab = task_tensors(cfg)
    model = build_model(cfg.model, vocab, seed=0).eval()
    n_tokens = sum(int((st.answer_pos + 1).sum()) for st in splits.values())
    bare, harv = [], []
    with tempfile.TemporaryDirectory() as d:
        bare_forward(model, splits, hc.batch_size)  # warm-up
        for _ in range(args.repeats):
            bare.append(bare_forward(model, splits, hc.batch_size))
            harv.append(harvest_time(model, splits, hc, Path(d) / "acts"))
    tb, th = statistics.median(bare), statistics.median(harv)
    print(f"harvest: {n_tokens} tokens, {cfg.model.n_layers} layers, d_model {cfg.model.d_model}, hooks "
          f"{len(hc.hooks) or cfg.model.n_layers + 1}, batch {hc.batch_size} sequences, shard {hc.shard_tokens} tokens, {hc.dtype}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"  bare forward   {n_tokens / tb:12.0f} tok/s  ({tb * 1000:.1f} ms)")
    print(f"  harvest        {n_tokens / th:12.0f} tok/s  ({th * 1000:.1f} ms)")
    print(f"  throughput ratio harvest / bare forward = {tb / th:.2f}  (target >= 0.7)")

    rss = {}
    for scale in (1, args.scale):
        cmd = [sys.executable, __file__, "--child", str(scale)] + (["--config", args.config] if args.config else [])
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rss[scale] = json.loads(r.stdout.strip().splitlines()[-1])
    a, b = rss[1], rss[args.scale]
    print(f"  peak RSS  1x: {a['maxrss_kib'] / 1024:.0f} MiB for {a['n_tokens']} tokens ({a['bytes_on_disk'] / 2**20:.0f} MiB cached)")
    print(f"  peak RSS {args.scale}x: {b['maxrss_kib'] / 1024:.0f} MiB for {b['n_tokens']} tokens ({b['bytes_on_disk'] / 2**20:.0f} MiB cached)")
    print(f"  peak RSS ratio {args.scale}x / 1x = {b['maxrss_kib'] / a['maxrss_kib']:.2f}  (target <= 1.2)")


if __name__ == "__main__":
    main()
