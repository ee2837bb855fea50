"""Sections of attribution, feature circuits and variable circuits."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_ooc.registry import NAMES
from sae_ooc.sections.check import NOT_HASHED
from sae_ooc.sections.check import check as _check


ATTRIBUTION_METHODS = NAMES["attribution.method"]  # the one list (sae_ooc.registry), registered in sae_ooc.circuits.methods
ATTRIBUTION_METRICS = ("logit_diff", "logprob", "ce")
# atomic_test: the trained facts, whose rows are the analysed prompts where the question is one fact (the reversal
# family's trained direction (a, r) -> b); a two-hop task has no analysed prompt there and says so
ATTRIBUTION_SPLITS = ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable", "atomic_test", "all")
ABLATIONS = NAMES["ablation"]  # the one list (sae_ooc.registry), registered in sae_ooc.circuits.ablation


@dataclass
class AttributionConfig:
    method: str = "exact"  # exact | atp | ig | atp_verified: how node effects are estimated (exact is affordable at this model size)
    metric: str = "logit_diff"  # logit_diff: logit(t2) - logit(t2') | logprob: log p(t2) | ce: -log p(t2)
    split: str = "test_id"  # where the clean A→C prompts come from: train | valid_id | test_id | test_ood_sys | test_unanswerable | all
    n_pairs: int = 128  # clean/corrupted prompt pairs (fewer if the split has fewer usable prompts)
    only_correct: bool = True  # use only clean prompts the model answers correctly
    ig_steps: int = 10
    verify_top: int = 96  # atp_verified: nodes per pair (largest |atp|) whose effect is recomputed by exact patching
    batch_size: int = 256  # prompt pairs per forward/backward pass
    exact_batch_size: int = 4096  # patched forward passes per batch for exact patching
    validate_pairs: int = 16  # --validate: pairs on which atp and ig are compared with exact patching
    trust_recall: float = 0.9  # trusted (sae_ooc.circuits.validation): mean per-pair recall of exact's top 50 >= this, and
    trust_spearman: float = 0.9  # mean per-pair Spearman with exact on the nodes it did not patch exactly itself >= this
    top_json: int = 100  # nodes listed in node_effects.json
    threads: int = 1  # torch threads (0 = torch's default); see train.threads
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(self.method in ATTRIBUTION_METHODS, where, "attribution.method", f"must be one of {', '.join(ATTRIBUTION_METHODS)}")
        _check(self.metric in ATTRIBUTION_METRICS, where, "attribution.metric", f"must be one of {', '.join(ATTRIBUTION_METRICS)}")
        _check(self.split in ATTRIBUTION_SPLITS, where, "attribution.split", f"must be one of {', '.join(ATTRIBUTION_SPLITS)}")
        _check(self.n_pairs >= 1, where, "attribution.n_pairs", "must be at least 1")
        _check(self.ig_steps >= 1, where, "attribution.ig_steps", "must be at least 1")
        _check(self.verify_top >= 1, where, "attribution.verify_top", "must be at least 1")
        _check(self.batch_size >= 1 and self.exact_batch_size >= 1, where, "attribution.batch_size", "batch sizes must be at least 1")
        _check(self.validate_pairs >= 1, where, "attribution.validate_pairs", "must be at least 1")
        _check(-1 <= self.trust_spearman <= 1, where, "attribution.trust_spearman", "must be in [-1, 1]")
        _check(0 <= self.trust_recall <= 1, where, "attribution.trust_recall", "must be in [0, 1]")
        _check(self.top_json >= 1, where, "attribution.top_json", "must be at least 1")
        _check(self.threads >= 0, where, "attribution.threads", "must be >= 0 (0 = torch's default)")


@dataclass
class CircuitConfig:
    top_n: int = 50  # feature nodes kept: the top N by |mean effect| (used when node_threshold is 0)
    node_threshold: float = 0.0  # > 0: keep feature nodes with |mean effect| >= this instead of the top N
    errors: str = "threshold"  # error nodes kept: threshold (same |effect| cut as the features) | all | none
    ablation: str = "mean"  # nodes outside the circuit set to: mean | zero | resample | corrupt (their value on the corrupted prompt)
    mean_examples: int = 4096  # two-hop train prompts averaged for mean ablation (and drawn from for resampling)
    curve_sizes: list[int] = field(default_factory=lambda: list(range(0, 51)) + [75, 100, 150, 200, 300])  # circuit sizes of the faithfulness curve
    # exact: the gradient method (Marks et al.) proposes the edges, exact edge patching weighs each (gradient weights agreed at
    # Pearson 0.36 on the default run); gradient: gradient weights, `edge_check` of them checked against exact on 32 pairs
    edge_weights: str = "exact"
    edge_check: int = 24  # edges checked against exact edge patching (gradient), or listed in the check (exact)
    edge_counts: list[int] = field(default_factory=lambda: [5, 10, 20, 50])  # top-edge ablation sizes
    # ablations the edge test also runs besides circuit.ablation (each costs as much again: half the circuit stage's time)
    edge_extra_ablations: list[str] = field(default_factory=list)
    random_edge_sets: int = 100  # random edge sets per size, from the candidate edges outside the top set (its percentile among them)
    edge_pool_nodes: int = 200  # candidate edges: those the gradient method proposes among this many top feature nodes (+ errors)
    prune_ablation: str = "zero"  # per-prompt circuits by backward elimination under this ablation: zero | corrupt | mean | resample | none
    prune_pairs: int = 32  # pairs pruned: the first of the selection pairs
    prune_step: float = 0.02  # each round lowers the per-prompt node budget by this fraction (smaller: slower, finds smaller circuits)
    inactive_tolerance: float = 0.05  # max mean |metric change| from ablating the inactive features, / |m(M) - m(∅)|
    # share of the attribution pairs held out, by whole head entities: circuits are chosen on the rest (selection), scored on these (Pairs.split)
    heldout_fraction: float = 0.5
    threads: int = 1  # torch threads (0 = torch's default); see train.threads
    # 2: the per-prompt pruning runs in a second process beside the rest of the stage (1: in the stage's process, in
    # turn); the numbers are the same either way
    workers: int = field(default=2, metadata=NOT_HASHED)
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(self.top_n >= 0, where, "circuit.top_n", "must be >= 0")
        _check(self.node_threshold >= 0, where, "circuit.node_threshold", "must be >= 0 (0 = use circuit.top_n)")
        _check(self.errors in ("threshold", "all", "none"), where, "circuit.errors", "must be one of threshold, all, none")
        _check(self.ablation in ABLATIONS, where, "circuit.ablation", f"must be one of {', '.join(ABLATIONS)}")
        _check(self.mean_examples >= 1, where, "circuit.mean_examples", "must be at least 1")
        _check(all(n >= 0 for n in self.curve_sizes), where, "circuit.curve_sizes", "sizes must be >= 0")
        _check(self.edge_weights in ("exact", "gradient"), where, "circuit.edge_weights", "must be one of exact, gradient")
        _check(self.edge_check >= 0, where, "circuit.edge_check", "must be >= 0")
        _check(all(n >= 1 for n in self.edge_counts), where, "circuit.edge_counts", "counts must be at least 1")
        _check(all(k in ABLATIONS for k in self.edge_extra_ablations), where, "circuit.edge_extra_ablations",
               f"must be a list of {', '.join(ABLATIONS)}")
        _check(self.random_edge_sets >= 1, where, "circuit.random_edge_sets", "must be at least 1")
        _check(self.edge_pool_nodes >= 1, where, "circuit.edge_pool_nodes", "must be at least 1")
        _check(self.inactive_tolerance >= 0, where, "circuit.inactive_tolerance", "must be >= 0")
        _check(self.prune_ablation in ABLATIONS + ("none",), where, "circuit.prune_ablation", f"must be one of {', '.join(ABLATIONS)}, none")
        _check(self.prune_pairs >= 1, where, "circuit.prune_pairs", "must be at least 1")
        _check(self.workers >= 1, where, "circuit.workers", "must be at least 1 (1 = no second process)")
        _check(0 < self.prune_step < 1, where, "circuit.prune_step", "must be in (0, 1)")
        _check(0 < self.heldout_fraction < 1, where, "circuit.heldout_fraction", "must be in (0, 1)")
        _check(self.threads >= 0, where, "circuit.threads", "must be >= 0 (0 = torch's default)")


VARIABLE_KINDS = ("variable", "remainder", "error")  # the kinds of variable nodes (sae_ooc.circuits.variables)
VARIABLE_INTERVENTIONS = ("ablation", "patching")


@dataclass
class VariablesConfig:
    """Stage variable-circuit: SAE features grouped into variable nodes by their ground-truth label (the pairs and
    their selection/held-out split, mean_examples and the ablations' seed come from the circuit section)."""

    kinds: list[str] = field(default_factory=lambda: list(VARIABLE_KINDS))  # group kinds the circuit may use
    ablation: str = "mean"  # the ablation the circuit is chosen under (faithfulness is reported under every kind)
    # what a group's importance (its ranking on the selection pairs, its drawn effect) and its edges measure: ablation =
    # ablating it (under `ablation`); patching = patching it clean -> corrupted, which misses what the pair holds fixed
    # (r1, r2): on the default run that ranking never passed faithfulness 0.1 under mean ablation within 30 groups
    intervention: str = "ablation"
    target: float = 0.8  # the circuit: the fewest top groups in that ranking reaching this faithfulness on the selection pairs
    max_groups: int = 30  # ... trying at most this many (none reaching: the most faithful of these sizes)
    random_draws: int = 32  # control circuits of random features in groups of the same sizes at the same places
    bootstrap: int = 1000  # resamples of the pairs for the 95% interval of a faithfulness
    threads: int = 1  # torch threads (0 = torch's default); see train.threads: 2 threads made this stage ~5x slower on a busy machine
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(bool(self.kinds) and all(k in VARIABLE_KINDS for k in self.kinds), where, "variables.kinds",
               f"must be a non-empty list of {', '.join(VARIABLE_KINDS)}")
        _check(self.ablation in ABLATIONS, where, "variables.ablation", f"must be one of {', '.join(ABLATIONS)}")
        _check(self.intervention in VARIABLE_INTERVENTIONS, where, "variables.intervention", f"must be one of {', '.join(VARIABLE_INTERVENTIONS)}")
        _check(0 < self.target <= 1, where, "variables.target", "must be in (0, 1]")
        _check(self.max_groups >= 1, where, "variables.max_groups", "must be at least 1")
        _check(self.random_draws >= 20, where, "variables.random_draws", "must be at least 20 (the controls' spread needs them)")
        _check(self.bootstrap >= 1, where, "variables.bootstrap", "must be at least 1")
        _check(self.threads >= 0, where, "variables.threads", "must be >= 0 (0 = torch's default)")
