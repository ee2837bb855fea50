"""Train one SAELens SAE per hook on RUN/activations into RUN/saes/<hook_name>/ (resumable; sweeps if configured).

Architecture, size, sparsity, learning rate and token budget come from the config's `sae` section, e.g.
--set sae.architecture=batchtopk --set sae.k=16 --set sae.d_sae=512; a non-empty sae.sweep_k (or
sweep_l1_coefficient / sweep_d_sae) also trains one SAE per value and draws Pareto plots in RUN/saes/sweep/.
"""

from sae_ooc.saes.train import run_train_sae


def add_arguments(p) -> None:
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (SAELens's logger; off by default)")


def main(run, args) -> int:
    run.check_and_save_config(force=False)
    done = run_train_sae(run, force=args.force, wandb=getattr(args, "wandb", False))
    if not done:
        print(f"train-sae: unchanged, skipped {run.saes_dir}")
    return 0
