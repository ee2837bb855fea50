"""Section of the `dynamics` command: what is measured on each training checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_ooc.sections.check import check as _check


@dataclass
class DynamicsConfig:
    # extra checkpoints replayed (deterministically, from the nearest saved one) across the window in which valid_id
    # accuracy rises, where the log-spaced schedule is coarse; 0 = only the checkpoints train saved
    dense_checkpoints: int = 4
    # and more still where the curves move: inside the rise window, a replayed checkpoint wherever two consecutive ones are
    # more than this factor of steps apart (geometrically spaced; 0 = none). The default run had none between 328 and 751
    dense_max_ratio: float = 1.5
    # the rise window: from the last evaluation with valid_id below rise_low of its way from its first to its best
    # value, to the first at or above rise_high; the marked moment is the first at or above half way
    rise_low: float = 0.1
    rise_high: float = 0.9
    n_prompts: int = 256  # test_id two-hop prompts for the logit lens (a seeded sample)
    patch_pairs: int = 32  # clean/corrupted test_id pairs for the resid_pre patching heatmap
    sae_hooks: list[str] = field(default_factory=list)  # empty = blocks.L.hook_resid_pre for L = 1 .. n_layers - 1
    # SAEs per checkpoint: the run's `sae` settings with this many training tokens (0 = no SAEs)
    sae_training_tokens: int = 65536  # 128 steps of the default sae.batch_size: the default run, 17 checkpoints, ~15 min on a busy 2-core CPU
    # is the bridge at r1 used? per checkpoint, a DAS subspace of this rank (the variables stage's, sae_ooc.causal) fitted on
    # the fit prefixes and scored by interchange on the held-out ones, beside the residual patch and random subspaces; 0 = off
    das_rank: int = 16
    das_hooks: list[str] = field(default_factory=list)  # empty = blocks.L.hook_resid_pre for L = 1 .. n_layers - 1
    das_steps: int = 30  # Adam steps per checkpoint and hook (from the class means' principal directions; causal.das_batch, das_lr)
    das_fit_pairs: int = 4096  # at most this many fit pairs (a seeded sample) per checkpoint
    n_controls: int = 1  # shuffled-label probes (and feature searches) per number, in place of sae_eval.n_controls: dozens of checkpoints
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(self.dense_checkpoints >= 0, where, "dynamics.dense_checkpoints", "must be >= 0")
        _check(0 < self.rise_low < self.rise_high < 1, where, "dynamics.rise_low",
               "dynamics.rise_low and dynamics.rise_high must satisfy 0 < rise_low < rise_high < 1")
        _check(self.n_prompts >= 1, where, "dynamics.n_prompts", "must be at least 1")
        _check(self.patch_pairs >= 1, where, "dynamics.patch_pairs", "must be at least 1")
        _check(self.dense_max_ratio == 0 or self.dense_max_ratio > 1, where, "dynamics.dense_max_ratio",
               "must be 0 (no gap filling) or > 1 (the largest ratio of consecutive checkpoint steps in the rise window)")
        _check(self.das_rank >= 0, where, "dynamics.das_rank", "must be >= 0 (0 = no DAS per checkpoint)")
        _check(all(h.startswith("blocks.") and h.split(".")[-1] in ("hook_resid_pre", "hook_resid_post") for h in self.das_hooks),
               where, "dynamics.das_hooks", "must be residual hook names such as blocks.1.hook_resid_pre (or empty)")
        _check(self.das_steps >= 1, where, "dynamics.das_steps", "must be at least 1")
        _check(self.das_fit_pairs >= 1, where, "dynamics.das_fit_pairs", "must be at least 1")
        _check(self.n_controls >= 1, where, "dynamics.n_controls", "must be at least 1")
        _check(self.sae_training_tokens >= 0, where, "dynamics.sae_training_tokens", "must be >= 0 (0 = no SAEs per checkpoint)")
