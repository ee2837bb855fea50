"""Attribution methods against the project's own batched exact patching, on the same pairs in the same process.

    python benchmarks/bench_attribution.py --run runs/default     # a run with a trained model and SAEs
    python benchmarks/bench_attribution.py                        # synthetic: default-config sizes, random weights

Exact patching (the default method) runs one patched row per (pair, node) whose corrupted value differs from its
clean value, `--exact-batch` rows per forward pass; atp is one forward and backward pass on the clean prompts plus
one forward pass on the corrupted ones; ig `--ig-steps` of them per hook; atp_verified is atp plus exact patching of
each pair's `--verify-top` nodes by |atp|. Every method is timed here (best of `--repeats`) on the same pairs, and
each speed-up is against the exact patching timed alongside. Quality is what the attribute stage's validation
reports (`sae_ooc.circuits.validation`): per pair, recall of exact's top-10 and top-50 nodes in the method's own top
k, and Spearman with exact on the nodes the method did not patch exactly itself. A secondary column extrapolates
exact patching run as one forward pass per changed node from the time of one such pass; it is not measured end to
end. Appends the result to results/benchmarks.md under its own heading.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_ooc.circuits.methods import node_effects  # noqa: E402
from sae_ooc.circuits.pairs import make_pairs  # noqa: E402
from sae_ooc.circuits.spliced import Spliced, load_spliced  # noqa: E402
from sae_ooc.circuits.validation import (  # noqa: E402
    APPROXIMATIONS,
    single_patch_seconds,
    validate_methods,
)
from sae_ooc.config import load_config  # noqa: E402

HEADING = "## Attribution: approximations vs batched exact patching (bench_attribution.py)"


def synthetic(seed: int = 0):
    """Default-config sizes (4 layers, d_model 64, TopK SAEs with d_sae 256, k 8 on every resid_pre + the
    last resid_post), random weights."""
    from sae_lens import TopKSAE, TopKSAEConfig

    from sae_ooc.models.hooked import build_model
    from sae_ooc.tasks.data import generate

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
    from sae_ooc.rundir import RunDir
    from sae_ooc.tasks.data import load_task

    run = RunDir.open(path, device=device)
    ds, vocab = load_task(run.data_dir)
    return load_spliced(run), ds, vocab, f"run {path} (config {run.cfg.name})"


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="run directory with a trained model and SAEs (default: synthetic)")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--split", default="all")
    ap.add_argument("--exact-batch", type=int, default=4096)
    ap.add_argument("--ig-steps", type=int, default=10)
    ap.add_argument("--verify-top", type=int, default=96, help="atp_verified: nodes per pair re-scored by exact patching")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)")
    ap.add_argument("--no-append", action="store_true", help="only print, do not append to results/benchmarks.md")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    load = os.getloadavg()  # the machine is shared: timings are only comparable at similar load
    sp, ds, vocab, what = from_run(args.run, args.device) if args.run else synthetic()
    pairs = make_pairs(ds, vocab, args.split, args.pairs, seed=0)
    kw = {"batch_size": len(pairs), "ig_steps": args.ig_steps, "exact_batch_size": args.exact_batch, "progress": False,
          "verify_top": args.verify_top}
    report, flat = validate_methods(sp, pairs, "logit_diff", args.ig_steps, args.exact_batch, len(pairs), trust_spearman=0.9,
                                    trust_recall=0.9, verify_top=args.verify_top)
    times = {m: best_time(lambda m=m: node_effects(sp, pairs, m, "logit_diff", **kw), args.repeats) for m in ("exact",) + APPROXIMATIONS}
    n_nodes = int(flat["exact"].shape[1])  # nodes per prompt: every feature and error node at every (hook, position)
    n_changed = report["n_changed_nodes"]
    t_one = single_patch_seconds(sp, pairs)
    lines = [
        f"setup: {what}; hooks {len(sp.hooks)}, d_sae {sorted(set(sp.d_sae.values()))}; {len(pairs)} pairs; device {args.device}; "
        f"{torch.get_num_threads()} CPU threads ({platform.processor() or platform.machine()}); load average before "
        f"{load[0]:.1f}, after {os.getloadavg()[0]:.1f}",
        f"nodes per prompt: {n_nodes}; changed (pair, node) effects, i.e. rows exact patching runs: {n_changed}",
        f"exact, batched (the baseline): {times['exact'] * 1000:.1f} ms ({n_changed} patched rows in batches of {args.exact_batch}), best of {args.repeats}",
    ]
    for m in APPROXIMATIONS:
        r = report["methods"][m]
        lines.append(
            f"{m}: {times[m] * 1000:.1f} ms, {times['exact'] / times[m]:.1f}x batched exact; per pair (mean, min): recall of exact's top 10 "
            f"{_num(r['recall_top10'])} ({_num(r['recall_top10_min'])}), top 50 {_num(r['recall_top50'])} ({_num(r['recall_top50_min'])}); "
            f"Spearman on the nodes it did not patch exactly {_num(r['spearman_not_exact'])} ({_num(r['spearman_not_exact_min'])}, "
            f"{r['n_not_exact_mean']:.0f} nodes per pair); trusted (both means >= 0.9): {'yes' if r['trusted'] else 'no'}")
    lines.append(
        f"secondary, extrapolated: exact as one forward pass per changed node ({t_one * 1000:.2f} ms per pass, measured on 50 passes) would "
        f"take ~{t_one * n_changed:.1f} s; against that " + ", ".join(f"{m} {t_one * n_changed / times[m]:.0f}x" for m in APPROXIMATIONS)
        + f", batched exact {t_one * n_changed / times['exact']:.0f}x")
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
