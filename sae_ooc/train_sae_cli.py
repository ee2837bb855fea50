"""Train a SAELens SAE on one hook (or several) of any sae_ooc activation cache, standalone.

    python train_sae.py --activations RUN/activations --hook blocks.1.hook_resid_pre --out DIR \\
        [--architecture topk] [--d-sae 512 | --expansion-factor 8] [--k 8] [--l1-coefficient 5] [--lr 1e-3] \\
        [--training-tokens 4000000] [--batch-size 2048] [--sweep-k 4,8,16,32] [--wandb]

The SAE lands in DIR (cfg.json + sae_weights.safetensors, loadable with sae_lens.SAE.load_from_disk)
with metrics.json, train_log.jsonl and curves.png/.svg; rerunning after an interruption resumes from the
last checkpoint, and an SAE already there with the same settings is kept. With --hook given several times,
DIR/<hook>/ holds each. With a sweep list, DIR/<hook>/<param>_<value>/ holds one SAE per value and
DIR/pareto_<hook with _ for .>.png the L0-vs-FVU (and, when RUN/model and RUN/data sit next to the cache,
L0-vs-loss recovered) fronts. Defaults come from the `sae` config section (or --config FILE's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from sae_ooc.cli import Parser, check_device, guarded
from sae_ooc.config import SaeConfig, load_config
from sae_ooc.saes.architectures import ARCHITECTURES
from sae_ooc.saes.standalone import train_standalone

PROG = "train_sae.py"


def _list(tp):
    return lambda s: [tp(v) for v in s.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, required=True, help="an activation cache directory (with manifest.json)")
    p.add_argument("--hook", required=True, action="append",
                   help="hook name in the cache, e.g. blocks.1.hook_resid_pre (repeatable: one SAE per hook in DIR/<hook>/)")
    p.add_argument("--out", type=Path, required=True, help="output directory for the SAE (or the sweep)")
    p.add_argument("--config", type=Path, default=None, help="take defaults from this experiment YAML's `sae` section")
    p.add_argument("--architecture", choices=ARCHITECTURES.names())
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
    p.add_argument("--eval-fraction", type=float, help="share of the distinct token prefixes at each position held out for evaluation")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (0 = torch default; 1 is fastest at small d_in on a busy machine)")
    p.add_argument("--sweep-k", type=_list(int), help="comma-separated k values: one SAE each + Pareto plot")
    p.add_argument("--sweep-l1-coefficient", type=_list(float), help="comma-separated sparsity coefficients")
    p.add_argument("--sweep-d-sae", type=_list(int), help="comma-separated d_sae values")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (off by default)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def sae_params(args) -> SaeConfig:
    """The `sae` config section (built-in or --config's) with the options given on the command line, each applied as
    `--set sae.<option>=<value>` is (the same rule for per-hook widths and k: sae_ooc.sections.saes.PER_HOOK)."""
    names = {f.name for f in dataclasses.fields(SaeConfig)}
    overrides = [f"sae.{k}={json.dumps(v)}" for k, v in vars(args).items() if v is not None and k in names]
    return load_config(args.config, overrides, overrides_from=f"{PROG} arguments").sae


def main(argv: list[str] | None = None) -> int:
    """`python train_sae.py ...`: errors the user can fix print one line and exit 2 (--debug: the traceback)."""
    args = build_parser().parse_args(argv)

    def command() -> int:
        train_standalone(args.activations, args.hook, args.out, sae_params(args), device=check_device(args.device), wandb=args.wandb)
        return 0

    return guarded(PROG, args.debug, command, on_interrupt="interrupted; run the same command again to resume from the last checkpoint")
