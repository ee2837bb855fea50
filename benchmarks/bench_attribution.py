"""Attribution patching (atp) over every node against exact patching of every node, on the same pairs.

    python benchmarks/bench_attribution.py --run runs/default     # a run with a trained model and SAEs
    python benchmarks/bench_attribution.py                        # synthetic: default-config sizes, random weights

Exact patching runs one patched forward pass per (pair, node) whose corrupted value differs from its
clean value (every other node has effect exactly 0), batched `--exact-batch` rows at a time; atp is one
forward and backward pass on the clean prompts plus one forward pass on the corrupted ones. Prints the
timings, the speed-up and the Spearman correlation of the mean effects over all active nodes and over the
top 50 (by |exact effect|), and appends them to results/benchmarks.md under its own heading.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_ooc.circuits.attribution import compare_effects, make_pairs, node_effects  # noqa: E402
from sae_ooc.config import load_config  # noqa: E402
from sae_ooc.circuits.spliced import Spliced  # noqa: E402

HEADING = "## Attribution: atp vs exact patching of every node (bench_attribution.py)"


def synthetic(seed: int = 0):
    """Default-config sizes (4 layers, d_model 64, TopK SAEs with d_sae 256, k 8 on every resid_pre + the
    last resid_post), random weights."""
    from sae_lens import TopKSAE, TopKSAEConfig

    from sae_ooc.tasks.data import generate
    from sae_ooc.models.hooked import build_model

    cfg = load_config(None)
    ds, vocab = generate(cfg.task)
    model = build_model(cfg.model, vocab, seed)
    L, d = cfg.model.n_layers, cfg.model.d_model
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
    torch.manual_seed(seed)
    saes = {}
    for h in hooks:
        sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=4 * d, k=8))
        sae.cfg.metadata.hook_name = h
        saes[h] = sae
    return Spliced(model, saes), ds, vocab, "synthetic (default-config sizes, random weights)"


def from_run(path: Path, device: str):
    from sae_ooc.circuits.attribution import load_spliced
    from sae_ooc.tasks.data import load_task
    from sae_ooc.rundir import RunDir

    cfg = load_config(path / "config.yaml")
    run = RunDir(path, cfg)
    ds, vocab = load_task(run.data_dir)
    return load_spliced(run, device), ds, vocab, f"run {path} (config {cfg.name})"


@torch.no_grad()
def single_patch_seconds(sp, pairs, n: int = 50) -> float:
    """Seconds for one patched forward pass of a single prompt (error node of the middle hook)."""
    h = sp.hooks[len(sp.hooks) // 2]
    one = pairs.subset([0])
    vec = torch.zeros(1, sp.d_in[h])
    sp.run_deltas(one.clean, {h: (torch.tensor([0]), torch.tensor([0]), vec)})
    t0 = time.perf_counter()
    for _ in range(n):
        sp.run_deltas(one.clean, {h: (torch.tensor([0]), torch.tensor([0]), vec)})
    return (time.perf_counter() - t0) / n


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="run directory with a trained model and SAEs (default: synthetic)")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--split", default="all")
    ap.add_argument("--exact-batch", type=int, default=4096)
    ap.add_argument("--verify-top", type=int, default=96, help="atp_verified: nodes per pair re-scored by exact patching")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)")
    ap.add_argument("--no-append", action="store_true", help="only print, do not append to results/benchmarks.md")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    sp, ds, vocab, what = from_run(args.run, args.device) if args.run else synthetic()
    pairs = make_pairs(ds, vocab, args.split, args.pairs, seed=0)
    torch.set_grad_enabled(True)
    t_atp, atp = timed(lambda: node_effects(sp, pairs, "atp", "logit_diff", batch_size=len(pairs), progress=False), args.repeats)
    t_exact, exact = timed(lambda: node_effects(sp, pairs, "exact", "logit_diff", batch_size=len(pairs), exact_batch_size=args.exact_batch,
                                                progress=False), max(1, args.repeats - 1))
    t_ver, ver = timed(lambda: node_effects(sp, pairs, "atp_verified", "logit_diff", batch_size=len(pairs), exact_batch_size=args.exact_batch,
                                            progress=False, verify_top=args.verify_top), args.repeats)
    n_nodes = sum(e[0].numel() for e in exact.values())  # nodes per prompt: every feature and error at every (hook, position)
    patched = int(sum((e != 0).sum() for e in exact.values()))
    t_one = single_patch_seconds(sp, pairs)
    active = {h: (exact[h] != 0).any(0) for h in sp.hooks}
    flat_e = torch.cat([exact[h].mean(0)[active[h]] for h in sp.hooks]).numpy()
    flat_a = torch.cat([atp[h].mean(0)[active[h]] for h in sp.hooks]).numpy()
    cmp = compare_effects(flat_e, flat_a, 50)
    cmp_v = compare_effects(flat_e, torch.cat([ver[h].mean(0)[active[h]] for h in sp.hooks]).numpy(), 50)
    speedup = t_exact / t_atp
    n_verified = min(args.verify_top, patched // max(len(pairs), 1) + 1) * len(pairs)

    def verdict(fast: float, c: dict) -> str:
        return "met" if fast >= 100 and c["spearman_top50"] >= 0.9 else "NOT met"
    lines = [
        f"setup: {what}; hooks {len(sp.hooks)}, d_sae {sorted(set(sp.d_sae.values()))}; {len(pairs)} pairs; device {args.device}; "
        f"{torch.get_num_threads()} CPU threads ({platform.processor() or platform.machine()})",
        f"nodes per prompt: {n_nodes}; patched forward rows for exact: {patched} (nodes whose clean and corrupted values differ)",
        f"atp:   {t_atp * 1000:9.1f} ms  (1 forward + 1 backward on clean, 1 forward on corrupted)",
        f"exact: {t_exact * 1000:9.1f} ms  ({patched} patched rows in batches of {args.exact_batch})",
        f"exact, one forward pass per node (not batched; {t_one * 1000:.2f} ms per pass measured on 50 passes): "
        f"~{t_one * patched:.1f} s for the {patched} changed nodes, ~{t_one * n_nodes * len(pairs):.0f} s for all {n_nodes} nodes x {len(pairs)} pairs; "
        f"atp is {t_one * patched / t_atp:.0f}x / {t_one * n_nodes * len(pairs) / t_atp:.0f}x faster than those",
        f"speed-up atp vs batched exact: {speedup:.0f}x; Spearman over {len(flat_e)} active nodes {cmp['spearman_all']:.3f}, "
        f"over the top 50 {cmp['spearman_top50']:.3f}; top-10 overlap {cmp['top10_overlap']:.2f}, top-50 overlap {cmp['top50_overlap']:.2f}",
        f"target for atp (>= 100x at Spearman >= 0.9 over the top 50): vs batched exact {verdict(speedup, cmp)}, "
        f"vs one pass per changed node {verdict(t_one * patched / t_atp, cmp)}",
        f"atp_verified (atp, then exact patching of each pair's top {args.verify_top} nodes by |atp|, <= {n_verified} patched rows): "
        f"{t_ver * 1000:.1f} ms; {t_exact / t_ver:.1f}x faster than batched exact, {t_one * patched / t_ver:.0f}x / "
        f"{t_one * n_nodes * len(pairs) / t_ver:.0f}x faster than one pass per changed node / per node; Spearman over the top 50 "
        f"{cmp_v['spearman_top50']:.3f}, over all active {cmp_v['spearman_all']:.3f}; top-10 overlap {cmp_v['top10_overlap']:.2f}, "
        f"top-50 overlap {cmp_v['top50_overlap']:.2f}; target vs batched exact {verdict(t_exact / t_ver, cmp_v)}, "
        f"vs one pass per changed node {verdict(t_one * patched / t_ver, cmp_v)}",
    ]
    print("\n".join(lines))
    if not args.no_append:
        cmd = "python benchmarks/bench_attribution.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        append(ROOT / "results" / "benchmarks.md", cmd, lines)
    return 0


def append(path: Path, cmd: str, lines: list[str]) -> None:
    """Add this result under our heading, keeping whatever else the file holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    entry = f"\n`{cmd}` ({datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}):\n\n" + "".join(f"- {ln}\n" for ln in lines)
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n"
    start = text.index(HEADING) + len(HEADING)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt < 0 else nxt
    text = text[:end].rstrip("\n") + "\n" + entry + ("\n" + text[end:].lstrip("\n") if nxt >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
