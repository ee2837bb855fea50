"""Section `causal` of stage `variables`: where a task variable lives, found and judged by interchange interventions."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_ooc.sections.check import check as _check

# splits of analysed questions (the ID heads': they compose); atomic_test: the reversal family's trained direction (a, r) -> b,
# one-fact questions of its layout (a two-hop task has no question there)
CAUSAL_SPLITS = ("train", "valid_id", "test_id", "atomic_test")
# the planted variables besides the bridge at r1, each at its own position (`bridge@answer`: the bridge at the answer position)
VARIABLE_NAMES = ("head", "r1", "r2", "bridge@answer", "answer")
# a three-hop question's too (the threehop family: sae_ooc.causal.planted.specs; a two-hop task refuses them)
THREEHOP_VARIABLE_NAMES = ("r3", "bridge@r2", "bridge2@r2", "bridge2@answer")


@dataclass
class CausalConfig:
    """Stage variables: score candidate units of the bridge at r1 (SAE features, the SAE code, class means, DAS subspaces)
    by interchange interventions on held-out prefixes, beside the residual patch above and random units below."""

    hooks: list[str] = field(default_factory=list)  # residual hooks (empty = every one with an SAE but the last layer's output, which nothing reads)
    heldout_splits: list[str] = field(default_factory=lambda: ["test_id"])  # two-hop questions scored (held-out prefixes only)
    fit_splits: list[str] = field(default_factory=lambda: ["train", "valid_id", "test_id"])  # questions the units are fit on (fit prefixes only)
    valid_fraction: float = 0.2  # share of the fit prefixes kept aside to choose DAS's rank
    feature_counts: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  # top-n SAE features exchanged
    ranks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])  # ranks of the class-mean projections and DAS
    das_steps: int = 60  # Adam steps per DAS subspace (batched interchange on cached activations, model run from the hook on)
    das_batch: int = 256
    das_lr: float = 0.01
    das_pairs_per_prompt: int = 2  # seeded donors per fit question, redrawn per step from this pool
    erase_rank: int = 16  # rank of the erased unit (LEACE, mean projection, random subspace)
    probe_steps: int = 100  # the refitted probe of b after erasure
    random_draws: int = 5  # draws of each random reference (spread reported)
    bootstrap: int = 1000  # resamples over head entities for the 95% intervals
    variables: list[str] = field(default_factory=lambda: list(VARIABLE_NAMES))  # the other planted variables scored like the bridge (sae_ooc.causal.planted)
    variable_hooks: list[str] = field(default_factory=list)  # their hooks (empty = the bridge's hooks, every layer's hook_resid_mid and the last layer's output)
    variable_ranks: list[int] = field(default_factory=lambda: [4, 16])  # their DAS ranks (the class-mean projections use `ranks`)
    variable_patch_min: float = 0.1  # their DAS is trained only where the residual patch switches this share of fit-valid pairs (elsewhere there is nothing to find)
    variable_fit_pairs: int = 2000  # at most this many fit pairs per variable (DAS's training set, seeded)
    circuit_patch_min: float = 0.5  # the circuit's bridge@answer unit is fitted at hooks whose residual patch at the answer position switches this share of fit-valid pairs
    only_correct: bool = True  # interchange only questions the model answers correctly
    batch_size: int = 4096
    threads: int = 1  # torch threads (0 = torch's default)
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(all(h.startswith("blocks.") and h.split(".")[-1] in ("hook_resid_pre", "hook_resid_post") for h in self.hooks),
               where, "causal.hooks", "must be residual hook names such as blocks.2.hook_resid_pre (or empty for every hook with an SAE)")
        # no SAE is trained at hook_resid_mid, but the residual patch, class means, DAS and random units need none
        _check(all(h.startswith("blocks.") and h.split(".")[-1] in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
                   for h in self.variable_hooks), where, "causal.variable_hooks",
               "must be residual hook names such as blocks.2.hook_resid_pre or blocks.2.hook_resid_mid (or empty for the bridge's hooks, every layer's hook_resid_mid and the last layer's output)")
        _check(all(v in VARIABLE_NAMES + THREEHOP_VARIABLE_NAMES for v in self.variables), where, "causal.variables",
               f"must be a list of {', '.join(VARIABLE_NAMES + THREEHOP_VARIABLE_NAMES)} (or empty for the bridge at r1 alone)")
        _check(all(r >= 1 for r in self.variable_ranks), where, "causal.variable_ranks", "must be a list of ranks >= 1")
        _check(0 <= self.variable_patch_min <= 1, where, "causal.variable_patch_min", "must be in [0, 1]")
        _check(self.variable_fit_pairs >= 1, where, "causal.variable_fit_pairs", "must be at least 1")
        for key in ("heldout_splits", "fit_splits"):
            v = getattr(self, key)
            _check(bool(v) and all(s in CAUSAL_SPLITS for s in v), where, f"causal.{key}",
                   f"must be a non-empty list of {', '.join(CAUSAL_SPLITS)}")
        _check(0 < self.valid_fraction < 1, where, "causal.valid_fraction", "must be in (0, 1)")
        _check(bool(self.feature_counts) and all(n >= 1 for n in self.feature_counts), where, "causal.feature_counts",
               "must be a non-empty list of counts >= 1")
        _check(bool(self.ranks) and all(r >= 1 for r in self.ranks), where, "causal.ranks", "must be a non-empty list of ranks >= 1")
        _check(0 <= self.circuit_patch_min <= 1, where, "causal.circuit_patch_min", "must be in [0, 1]")
        _check(self.das_steps >= 1, where, "causal.das_steps", "must be at least 1")
        _check(self.das_batch >= 1, where, "causal.das_batch", "must be at least 1")
        _check(self.das_lr > 0, where, "causal.das_lr", "must be > 0")
        _check(self.das_pairs_per_prompt >= 1, where, "causal.das_pairs_per_prompt", "must be at least 1")
        _check(self.erase_rank >= 1, where, "causal.erase_rank", "must be at least 1")
        _check(self.probe_steps >= 1, where, "causal.probe_steps", "must be at least 1")
        _check(self.random_draws >= 2, where, "causal.random_draws", "must be at least 2 (the spread needs them)")
        _check(self.bootstrap >= 1, where, "causal.bootstrap", "must be at least 1")
        _check(self.batch_size >= 1, where, "causal.batch_size", "must be at least 1")
        _check(self.threads >= 0, where, "causal.threads", "must be >= 0 (0 = torch's default)")
