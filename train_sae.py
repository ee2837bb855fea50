#!/usr/bin/env python
"""Train a SAELens SAE on one hook of any sae_ooc activation cache, standalone.

    python train_sae.py --activations RUN/activations --hook blocks.1.hook_resid_pre --out DIR \\
        [--architecture topk] [--d-sae 512 | --expansion-factor 8] [--k 8] [--l1-coefficient 5] [--lr 1e-3] \\
        [--training-tokens 4000000] [--batch-size 2048] [--sweep-k 4,8,16,32] [--wandb]

The SAE lands in DIR (cfg.json + sae_weights.safetensors, loadable with sae_lens.SAE.load_from_disk)
with metrics.json, train_log.jsonl and curves.png/.svg; rerunning after an interruption resumes from the
last checkpoint. With a sweep list, DIR/<hook>/<param>_<value>/ holds one SAE per value and
DIR/pareto_<hook with _ for .>.png the L0-vs-FVU (and, when RUN/model and RUN/data sit next to the cache, L0-vs-loss
recovered) fronts. Defaults come from the `sae` config section (or --config FILE's).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from sae_ooc.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _list(tp):
    return lambda s: [tp(v) for v in s.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="train_sae.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, required=True, help="an activation cache directory (with manifest.json)")
    p.add_argument("--hook", required=True, help="hook name in the cache, e.g. blocks.1.hook_resid_pre")
    p.add_argument("--out", type=Path, required=True, help="output directory for the SAE (or the sweep)")
    p.add_argument("--config", type=Path, default=None, help="take defaults from this experiment YAML's `sae` section")
    p.add_argument("--architecture", choices=["standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk"])
    p.add_argument("--d-sae", type=int, help="number of features (0 = expansion factor x d_in)")
    p.add_argument("--expansion-factor", type=int)
    p.add_argument("--k", type=int, help="active features per token (topk, batchtopk, matryoshka_batchtopk)")
    p.add_argument("--l1-coefficient", type=float, help="sparsity coefficient (standard, gated)")
    p.add_argument("--l0-coefficient", type=float, help="sparsity coefficient (jumprelu)")
    p.add_argument("--aux-loss-coefficient", type=float, help="AuxK dead-feature loss (topk family)")
    p.add_argument("--lr", type=float)
    p.add_argument("--training-tokens", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dead-feature-window", type=int)
    p.add_argument("--eval-fraction", type=float, help="share of sequences held out for evaluation")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (0 = torch default; 1 is fastest at small d_in on a busy machine)")
    p.add_argument("--sweep-k", type=_list(int), help="comma-separated k values: one SAE each + Pareto plot")
    p.add_argument("--sweep-l1-coefficient", type=_list(float), help="comma-separated sparsity coefficients")
    p.add_argument("--sweep-d-sae", type=_list(int), help="comma-separated d_sae values")
    p.add_argument("--device", default="cpu")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (off by default)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def sae_params(args):
    from sae_ooc.config import load_config

    cfg = load_config(args.config)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k in {f.name for f in dataclasses.fields(cfg.sae)}}
    if "d_sae" in overrides or "expansion_factor" in overrides:
        overrides["d_sae_by_hook"] = {}  # a width given on the command line wins over the config's per-hook widths
    if "k" in overrides:
        overrides["k_by_hook"] = {}
    p = dataclasses.replace(cfg.sae, **overrides)
    p.validate("train_sae.py arguments")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"train_sae.py: error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    from sae_ooc.activations.cache import open_cache
    from sae_ooc.saes.train import pareto_stem, sweep_spec, train_sae, train_sweep

    p = sae_params(args)
    cache = open_cache(args.activations)
    cache.check_hook(args.hook)
    if sweep_spec(p) is not None:
        points = train_sweep(cache, args.hook, args.out, p, device=args.device, task_eval=_task_eval(args.activations, cache, args.device))
        for pt in points:
            print(f"{args.hook} {pt['param']}={pt['value']}: L0 {pt['l0']:.1f}  FVU {pt['fvu']:.4f}  loss recovered {pt.get('loss_recovered')}")
        print(f"Pareto plot: {pareto_stem(args.out, args.hook).with_suffix('.png')}")
        return 0
    m = train_sae(cache, args.hook, args.out, p, device=args.device, wandb=args.wandb)
    r = m["reconstruction"]
    print(f"{args.hook}: EV {r['explained_variance']:.4f}  FVU {r['fvu']:.4f}  L0 {r['l0']:.2f}  dead {r['dead_fraction']:.1%}  "
          f"dense {r['dense_fraction']:.1%}  ({m['training']['tokens_per_s']:.0f} tok/s) -> {args.out}")
    return 0


def _task_eval(activations: Path, cache, device: str):
    """Spliced-in task metrics when the cache sits in a run directory next to the model it came from."""
    from sae_ooc.models.hooked import MODEL_FILE, model_hash
    from sae_ooc.saes.evaluate import TaskEvaluator

    run_root = Path(activations).resolve().parent
    if not (run_root / "model" / MODEL_FILE).exists() or not (run_root / "data" / "vocab.json").exists():
        return None
    if model_hash(run_root / "model") != cache.model_hash:
        return None
    te = TaskEvaluator.from_dirs(run_root / "model", run_root / "data", device=device)
    return lambda sae: te.evaluate(sae, splits=("test_id",))


if __name__ == "__main__":
    sys.exit(main())
