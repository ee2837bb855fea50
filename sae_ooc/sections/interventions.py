"""Sections of the interventions that test the circuit story: feature steering (`steer`) and fact editing (`edit`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_ooc.sections.check import check as _check

STEER_POSITIONS = ("head", "r1", "r2", "last")  # roles of the two-hop question (the last token of each: vocab.layout.index);
# last: the token before the answer, a role of natural-language tasks only (the toy reads the answer at r2)
STEER_SPLITS = ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable")
EDIT_POSITIONS = ("head", "r1")  # roles of an atomic prompt (h, r) the key can be read at (the last token of the role)


@dataclass
class SteerConfig:
    """Stage steer: make the model think the bridge is b' by switching the SAE's bridge=b features off and the
    bridge=b' ones on (feature labels from eval-sae), beside its baselines."""

    hooks: list[str] = field(default_factory=list)  # hooks steered (empty = every hook with an SAE)
    positions: list[str] = field(default_factory=lambda: ["r1", "r2"])  # positions steered (labels are per position)
    split: str = "test_id"  # the held-out two-hop prompts steered (reported only; nothing is chosen on them)
    only_correct: bool = True  # steer only prompts the model answers correctly (else "unchanged" means nothing)
    max_prompts: int = 2048  # seeded sample of the split's prompts
    random_draws: int = 10  # draws of the random-feature control (same counts, matched norm)
    typical_examples: int = 8192  # train prompts a feature's typical activation (mean where active) is measured on
    batch_size: int = 4096
    threads: int = 1  # torch threads (0 = torch's default); see train.threads
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(all(h.startswith("blocks.") for h in self.hooks), where, "steer.hooks",
               "must be TransformerLens hook names such as blocks.1.hook_resid_pre (or empty for every hook with an SAE)")
        _check(bool(self.positions) and all(p in STEER_POSITIONS for p in self.positions), where, "steer.positions",
               f"must be a non-empty list of {', '.join(STEER_POSITIONS)}")
        _check(self.split in STEER_SPLITS, where, "steer.split", f"must be one of {', '.join(STEER_SPLITS)}")
        _check(self.max_prompts >= 1, where, "steer.max_prompts", "must be at least 1")
        _check(self.random_draws >= 2, where, "steer.random_draws", "must be at least 2 (the control's spread needs them)")
        _check(self.typical_examples >= 1, where, "steer.typical_examples", "must be at least 1")
        _check(self.batch_size >= 1, where, "steer.batch_size", "must be at least 1")
        _check(self.threads >= 0, where, "steer.threads", "must be >= 0 (0 = torch's default)")


@dataclass
class EditConfig:
    """Stage edit: ROME's rank-one edit of one MLP's W_out, (h, r1) -> b' instead of b, at every layer, measured for
    efficacy, propagation to the two-hop facts, specificity and (reversal family) the reverse fact; and causal tracing."""

    n_edits: int = 64  # atomic facts edited (seeded sample of the train facts the model answers correctly), each alone
    layers: list[int] = field(default_factory=list)  # layers edited (empty = every layer)
    position: str = "r1"  # where the key is read: r1 (the relation; the toy atomic prompt's last token) | head (the subject's last token)
    value_steps: int = 60  # Adam steps optimising the value (what the MLP must output for the model to say b')
    value_lr: float = 0.1
    clamp_norm: float = 4.0  # the value's change is at most this times the residual stream's norm after the layer (ROME: clamp_norm_factor)
    weight_decay: float = 0.01  # on |change|^2 / |that residual|^2 (ROME's v_weight_decay)
    covariance_examples: int = 8192  # train prompts whose MLP keys (every position) estimate E[k k^T]
    ridge: float = 1e-3  # added to the key covariance, times its mean eigenvalue
    specificity_prompts: int = 64  # unrelated atomic facts and two-hop prompts checked per edit (each)
    trace_samples: int = 10  # noise samples per fact in causal tracing
    trace_noise: float = 3.0  # noise std on the head entity's embedding, times the entity embeddings' std (ROME)
    bootstrap: int = 1000  # resamples of the edited facts for the correlations' 95% intervals
    batch_size: int = 4096
    threads: int = 1
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(self.n_edits >= 1, where, "edit.n_edits", "must be at least 1")
        _check(all(isinstance(x, int) and x >= 0 for x in self.layers), where, "edit.layers", "must be layer indices >= 0 (or empty for every layer)")
        _check(self.position in EDIT_POSITIONS, where, "edit.position", f"must be one of {', '.join(EDIT_POSITIONS)}")
        _check(self.value_steps >= 1, where, "edit.value_steps", "must be at least 1")
        _check(self.value_lr > 0, where, "edit.value_lr", "must be > 0")
        _check(self.clamp_norm > 0, where, "edit.clamp_norm", "must be > 0")
        _check(self.weight_decay >= 0, where, "edit.weight_decay", "must be >= 0")
        _check(self.covariance_examples >= 1, where, "edit.covariance_examples", "must be at least 1")
        _check(self.ridge >= 0, where, "edit.ridge", "must be >= 0")
        _check(self.specificity_prompts >= 1, where, "edit.specificity_prompts", "must be at least 1")
        _check(self.trace_samples >= 1, where, "edit.trace_samples", "must be at least 1")
        _check(self.trace_noise > 0, where, "edit.trace_noise", "must be > 0")
        _check(self.bootstrap >= 1, where, "edit.bootstrap", "must be at least 1")
        _check(self.batch_size >= 1, where, "edit.batch_size", "must be at least 1")
        _check(self.threads >= 0, where, "edit.threads", "must be >= 0 (0 = torch's default)")
