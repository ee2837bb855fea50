"""The `analyze` section: the classic mechanistic views of the trained model (sae_ooc.analyses)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.registry import NAMES
from sae_ooc.sections.check import check as _check
from sae_ooc.sections.circuits import ATTRIBUTION_METRICS

ANALYSIS_NAMES = NAMES["analysis"]  # the one list (sae_ooc.registry), each registered in sae_ooc.analyses.analyze (ANALYSES)


@dataclass
class AnalyzeConfig:
    n_prompts: int = 200  # held-out test_id two-hop prompts (seeded sample) every average is taken over
    seed: int = 0  # the prompt sample, the corrupted partners, the tracing noise and the probes
    metric: str = "logit_diff"  # patching metric: logit_diff (t2 - t2') | logprob | ce, as attribution.metric
    example_prompts: int = 3  # prompts whose attention patterns are drawn one by one
    mover_min_attention: float = 0.3  # a head moves r1 -> r2 only if r2 attends to r1 at least this much (mean)
    mover_min_effect: float = 0.1  # ... and patching its output at r2 recovers at least this share of the clean-corrupt gap
    noise_scale: float = 3.0  # causal tracing: noise std in units of the head-entity embeddings' std (ROME: 3)
    noise_samples: int = 10  # noise draws per prompt
    window: int = 2  # causal tracing of MLP / attention outputs: layers restored at once, centred (ROME: 10 of 48)
    probe_steps: int = 100  # probes: full-batch Adam steps (sae_ooc.saes.probes); 150 or 300 steps gain <= 0.02 accuracy at 1.5-3x the time
    probe_lr: float = 0.05
    probe_weight_decay: float = 1e-4
    probe_max_select: int = 2000  # selection prefixes per position the probes are fit on (seeded subsample)
    n_controls: int = 1  # random-init models and label shufflings beside every probe
    batch_size: int = 8192  # rows per batched forward pass
    threads: int = 1  # torch threads (0 = torch's default)

    def validate(self, where: str) -> None:
        _check(self.n_prompts >= 2, where, "analyze.n_prompts", "must be at least 2")
        _check(self.metric in ATTRIBUTION_METRICS, where, "analyze.metric", f"must be one of {', '.join(ATTRIBUTION_METRICS)}")
        _check(self.example_prompts >= 1, where, "analyze.example_prompts", "must be at least 1")
        _check(0 <= self.mover_min_attention <= 1, where, "analyze.mover_min_attention", "must be in [0, 1]")
        _check(self.mover_min_effect >= 0, where, "analyze.mover_min_effect", "must be >= 0")
        _check(self.noise_scale > 0, where, "analyze.noise_scale", "must be > 0")
        _check(self.noise_samples >= 1, where, "analyze.noise_samples", "must be at least 1")
        _check(self.window >= 1, where, "analyze.window", "must be at least 1")
        _check(self.probe_steps >= 1 and self.probe_lr > 0, where, "analyze.probe_steps", "probe_steps must be >= 1 and probe_lr > 0")
        _check(self.probe_weight_decay >= 0, where, "analyze.probe_weight_decay", "must be >= 0")
        _check(self.probe_max_select >= 10, where, "analyze.probe_max_select", "must be at least 10")
        _check(self.n_controls >= 1, where, "analyze.n_controls", "must be at least 1: every probe is shown beside its controls")
        _check(self.batch_size >= 1, where, "analyze.batch_size", "must be at least 1")
        _check(self.threads >= 0, where, "analyze.threads", "must be >= 0 (0 = torch's default)")
