"""Train one SAELens SAE per hook on RUN/activations into RUN/saes/<hook_name>/ (resumable; sweeps if configured).

Architecture, size, sparsity, learning rate and token budget come from the config's `sae` section, e.g.
--set sae.architecture=batchtopk --set sae.k=16 --set sae.d_sae=512; a non-empty sae.sweep_k (or
sweep_l1_coefficient / sweep_d_sae) also trains one SAE per value and draws Pareto plots in RUN/saes/sweep/.
The same training, outside a run directory: `python train_sae.py --help`.
"""

from sae_ooc.commands import files_written, verb

RESUMABLE = True  # a rerun continues from its checkpoints (sae_ooc.cli.interrupted_hint)


def add_arguments(p) -> None:
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (SAELens's logger; off by default)")


def options(args) -> dict:
    return {"wandb": args.wandb}


def summarize(run, result) -> str:
    if not result.finished:
        return f"train-sae: stopped early; rerun to resume (finished hooks stay, the current one continues from its checkpoint in {run.saes_dir})"
    info = result.info
    per_hook = ", ".join(f"{h} EV {info['explained_variance'][h]:.3f} L0 {info['l0'][h]:.1f}" for h in info["hooks"])
    return f"train-sae: {verb(result, 'trained')} {files_written(run, 'train-sae')}: held-out {per_hook}"
