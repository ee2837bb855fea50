"""Time per training step: our `run_train` loop against a minimal hand-written PyTorch loop.

Both train the same HookedTransformer config on the same batches. Ours is timed as the difference of two
`run_train(stop_after_steps=...)` calls (evals and checkpoints pushed out of the way), so setup cancels
and what is left is the marginal cost of a step with everything the loop does per step (batch sampling,
lr schedule, finiteness check, progress bar). Repeats are interleaved so machine load hits both alike.

    python benchmarks/bench_train.py [--config configs/default.yaml] [--steps 150] [--repeats 5] [--set train.threads=0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # bars would only add noise to the timings

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_ooc.config import load_config  # noqa: E402
from sae_ooc.tasks.data import SPLITS, load_task, run_data, split_tensors  # noqa: E402
from sae_ooc.models.hooked import build_model, hooked_config_kwargs  # noqa: E402
from sae_ooc.rundir import RunDir  # noqa: E402
from sae_ooc.threads import torch_threads  # noqa: E402
from sae_ooc.models.evaluate import evaluate_splits  # noqa: E402
from sae_ooc.models.train import BatchSampler, run_train  # noqa: E402


def time_ours(run: RunDir, steps: int) -> float:
    t = time.perf_counter()
    run_train(run, force=True, stop_after_steps=steps)
    return time.perf_counter() - t


def reference_loop(run: RunDir, n_warm: int, n_timed: int) -> float:
    """Seconds per step of the plainest loop: forward, answer-position CE, backward, AdamW step."""
    cfg = run.cfg
    ds, vocab = load_task(run.data_dir)
    st = split_tensors(ds["train"], vocab)
    sampler = BatchSampler(len(st), cfg.train.batch_size, cfg.train.seed)
    batches = []
    for i in range(n_warm + n_timed):
        idx = sampler.indices(i)
        b = st if idx is None else st.subset(idx)
        batches.append((b.tokens, b.answer_pos, b.answer, torch.arange(len(b))))
    torch.manual_seed(cfg.train.seed)
    model = HookedTransformer(HookedTransformerConfig(**hooked_config_kwargs(cfg.model, vocab, cfg.train.seed)))
    tc = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay)
    for i, (tokens, pos, ans, rows) in enumerate(batches):
        if i == n_warm:
            t = time.perf_counter()
        loss = F.cross_entropy(model(tokens)[rows, pos], ans)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / n_timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--steps", type=int, default=150, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. train.threads=0")
    args = ap.parse_args()

    short = 20
    long_ = short + args.steps
    overrides = [f"train.steps={long_ + 1}", "train.eval_every=1000000000", "train.n_checkpoints=0"]
    cfg = load_config(args.config, args.overrides + overrides)
    with tempfile.TemporaryDirectory() as tmp, torch_threads(cfg.train.threads):  # the threads run_train uses
        run = RunDir(Path(tmp) / "bench", cfg)
        run_data(run)
        ds, vocab = load_task(run.data_dir)
        tensors = {s: split_tensors(ds[s], vocab) for s in SPLITS}
        ours, ref, evals = [], [], []
        for _ in range(args.repeats):
            ours.append((time_ours(run, long_) - time_ours(run, short)) / args.steps)
            ref.append(reference_loop(run, n_warm=short, n_timed=args.steps))
            model = build_model(cfg.model, vocab, cfg.train.seed)
            t = time.perf_counter()
            evaluate_splits(model, tensors, max_examples=cfg.train.eval_max_examples)
            evals.append(time.perf_counter() - t)

    # on a shared machine the fastest of the interleaved repeats is the least disturbed estimate
    o, r = min(ours) * 1e3, min(ref) * 1e3
    load = os.getloadavg()
    with torch_threads(cfg.train.threads):
        threads = torch.get_num_threads()
    print(f"config: {args.config} ({cfg.model.n_layers} layers, d_model {cfg.model.d_model}, d_mlp {cfg.model.d_mlp}, "
          f"batch {cfg.train.batch_size if cfg.train.batch_size > 0 else 'full'}); torch threads {threads}; "
          f"load average {load[0]:.2f}")
    print(f"run_train loop : {o:.2f} ms/step best of {len(ours)}, median {statistics.median(ours) * 1e3:.2f}  (repeats: {', '.join(f'{x * 1e3:.2f}' for x in ours)})")
    print(f"hand-written   : {r:.2f} ms/step best of {len(ref)}, median {statistics.median(ref) * 1e3:.2f}  (repeats: {', '.join(f'{x * 1e3:.2f}' for x in ref)})")
    print(f"overhead       : {100 * (o / r - 1):+.1f}% (best), {100 * (statistics.median(ours) / statistics.median(ref) - 1):+.1f}% (median)")
    print(f"one periodic eval (all splits, <= {cfg.train.eval_max_examples} examples each): {statistics.median(evals) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
