"""Sections of the activation harvest, SAE training and SAE evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_ooc.sections.model import TASK_SPLITS
from sae_ooc.registry import NAMES
from sae_ooc.sections.check import NOT_HASHED
from sae_ooc.sections.check import check as _check


HARVEST_DTYPES = ("float32", "float16", "bfloat16")
SAE_ARCHITECTURES = NAMES["sae.architecture"]  # the one list (sae_ooc.registry): SAELens names, registered in sae_ooc.saes.architectures
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka_batchtopk")  # k active features per token


@dataclass
class HarvestConfig:
    hooks: list[str] = field(default_factory=list)  # empty = every layer's hook_resid_pre + the last layer's hook_resid_post
    splits: list[str] = field(default_factory=lambda: list(TASK_SPLITS))
    shard_tokens: int = 16384  # tokens per shard file; also the bound on what the harvest holds in memory per hook
    batch_size: int = 1024  # sequences per forward pass
    dtype: str = "float32"  # float32 | float16 | bfloat16
    threads: int = 1  # torch threads for the forward passes (0 = torch's default); see train.threads

    def validate(self, where: str) -> None:
        bad = [s for s in self.splits if s not in TASK_SPLITS]
        _check(not bad and len(self.splits) > 0, where, "harvest.splits", f"must be a non-empty list of {', '.join(TASK_SPLITS)} (got {bad or 'nothing'})")
        _check(all(h.startswith("blocks.") or h.startswith("hook_") for h in self.hooks), where, "harvest.hooks",
               "must be TransformerLens hook names such as blocks.1.hook_resid_pre (or empty for the default set)")
        _check(self.shard_tokens >= 1, where, "harvest.shard_tokens", "must be at least 1")
        _check(self.batch_size >= 1, where, "harvest.batch_size", "must be at least 1")
        _check(self.dtype in HARVEST_DTYPES, where, "harvest.dtype", f"must be one of {', '.join(HARVEST_DTYPES)}")
        _check(self.threads >= 0, where, "harvest.threads", "must be >= 0 (0 = torch's default)")


@dataclass
class SaeConfig:
    architecture: str = "topk"  # one of SAE_ARCHITECTURES
    d_sae: int = 0  # 0 = expansion_factor * d_in
    expansion_factor: int = 16
    # per-hook d_sae and k (a d_sae, expansion_factor or k written in a later layer of the config, e.g. --set, replaces
    # them: PER_HOOK below): the embedding stream holds only ~120 distinct (token, position) vectors; 128 features
    # with 3 active reconstruct it (EV 0.9998, none dead) and keep each token to a few features, which is what lets
    # per-prompt circuits shrink (faithfulness >= 0.8 down to ~41 features, against 64 with k 16 of 256)
    d_sae_by_hook: dict[str, int] = field(default_factory=lambda: {"blocks.0.hook_resid_pre": 128})
    k: int = 16  # topk, batchtopk, matryoshka_batchtopk: active features per token
    k_by_hook: dict[str, int] = field(default_factory=lambda: {"blocks.0.hook_resid_pre": 3})
    l1_coefficient: float = 5.0  # standard, gated
    l0_coefficient: float = 1.0  # jumprelu
    aux_loss_coefficient: float = 4.0  # topk family: AuxK loss that revives dead features
    # topk family: select and scale features as if decoder rows had unit norm (SAELens's default). Off here: at
    # d_in 64 those [batch, d_sae] products cost as much as the matmuls, and without them no feature died
    rescale_acts_by_decoder_norm: bool = False
    matryoshka_widths: list[int] = field(default_factory=list)  # empty = d_sae/8, d_sae/4, d_sae/2, d_sae
    lr: float = 3e-3
    lr_warm_up_steps: int = 0
    lr_decay_fraction: float = 0.2  # final share of the steps over which the lr decays linearly to 0
    training_tokens: int = 2_000_000  # ~60 passes over the default task's ~29k training tokens
    batch_size: int = 512  # more, smaller steps beat fewer large ones on this small, repetitive data
    dead_feature_window: int = 10  # steps without firing before a feature counts as dead (and gets the AuxK loss)
    normalize_activations: str = "expected_average_only_in"  # or none
    hooks: list[str] = field(default_factory=list)  # empty = every hook in the activation cache
    eval_fraction: float = 0.15  # share of the distinct token prefixes at each position held out of SAE training, for evaluation
    n_checkpoints: int = 2
    log_every: int = 25  # steps between lines of RUN/saes/<hook>/train_log.jsonl
    threads: int = 1  # torch threads for SAE training and evaluation (0 = torch's default); at d_in 64 one thread is fastest on a busy 2-core machine
    # processes training hooks side by side (each with sae.threads torch threads; at most one per CPU core and per hook;
    # 1 = one after the other in the stage's process). Every SAE is seeded on its own, so the SAEs are the same either way
    workers: int = field(default=2, metadata=NOT_HASHED)
    sweep_k: list[int] = field(default_factory=list)  # non-empty: also train one SAE per value (Pareto plots)
    sweep_l1_coefficient: list[float] = field(default_factory=list)  # the sparsity coefficient (l0 for jumprelu)
    sweep_d_sae: list[int] = field(default_factory=list)
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(self.architecture in SAE_ARCHITECTURES, where, "sae.architecture", f"must be one of {', '.join(SAE_ARCHITECTURES)}")
        _check(self.d_sae >= 0, where, "sae.d_sae", "must be >= 0 (0 means expansion_factor * d_in)")
        _check(self.expansion_factor >= 1, where, "sae.expansion_factor", "must be at least 1")
        _check(all(isinstance(v, int) and v >= 1 for v in self.d_sae_by_hook.values()), where, "sae.d_sae_by_hook",
               "must map hook names to positive integers")
        _check(self.k >= 1, where, "sae.k", "must be at least 1")
        _check(all(isinstance(v, int) and v >= 1 for v in self.k_by_hook.values()), where, "sae.k_by_hook",
               "must map hook names to positive integers")
        if self.architecture in TOPK_FAMILY:  # more active features than features: every one fires, and L0 is not k
            widths = {h: self.d_sae_by_hook.get(h, self.d_sae) for h in {*self.k_by_hook, *self.d_sae_by_hook}} | {None: self.d_sae}
            for h, width in widths.items():
                k = self.k_by_hook.get(h, self.k) if h is not None else self.k
                _check(not width or k <= width, where, "sae.k" if h is None or h not in self.k_by_hook else "sae.k_by_hook",
                       f"k {k} is more than d_sae {width}{f' at {h}' if h else ''}; choose k <= d_sae")
        _check(self.l1_coefficient >= 0 and self.l0_coefficient >= 0, where, "sae.l1_coefficient", "sparsity coefficients must be >= 0")
        _check(self.aux_loss_coefficient >= 0, where, "sae.aux_loss_coefficient", "must be >= 0")
        _check(self.lr > 0, where, "sae.lr", "must be > 0")
        _check(self.lr_warm_up_steps >= 0, where, "sae.lr_warm_up_steps", "must be >= 0")
        _check(0 <= self.lr_decay_fraction < 1, where, "sae.lr_decay_fraction", "must be in [0, 1)")
        _check(self.batch_size >= 1, where, "sae.batch_size", "must be at least 1")
        _check(self.training_tokens >= self.batch_size, where, "sae.training_tokens", f"must be at least sae.batch_size ({self.batch_size})")
        _check(self.dead_feature_window >= 1, where, "sae.dead_feature_window", "must be at least 1")
        _check(self.normalize_activations in ("none", "expected_average_only_in"), where, "sae.normalize_activations",
               "must be none or expected_average_only_in")
        _check(0 < self.eval_fraction < 1, where, "sae.eval_fraction", "must be in (0, 1)")
        _check(self.n_checkpoints >= 0, where, "sae.n_checkpoints", "must be >= 0")
        _check(self.log_every >= 1, where, "sae.log_every", "must be at least 1")
        _check(self.threads >= 0, where, "sae.threads", "must be >= 0 (0 = torch's default)")
        _check(self.workers >= 1, where, "sae.workers", "must be at least 1 (1 = train the hooks one after the other)")
        sweeps = [n for n in ("sweep_k", "sweep_l1_coefficient", "sweep_d_sae") if getattr(self, n)]
        _check(len(sweeps) <= 1, where, "sae.sweep_k", f"set at most one of sae.sweep_k, sae.sweep_l1_coefficient, sae.sweep_d_sae (got {', '.join(sweeps)})")
        _check(all(v >= 1 for v in self.sweep_k + self.sweep_d_sae), where, "sae.sweep_k", "sweep values of k and d_sae must be at least 1")
        _check(all(w >= 1 for w in self.matryoshka_widths), where, "sae.matryoshka_widths", "widths must be positive")


# A width or k written in one layer of the config (the YAML file over the built-in defaults, then --set or train_sae.py's
# options over the file) replaces the per-hook values of the layers below it, unless that same layer writes per-hook
# values too. Without this, `--set sae.d_sae=512` left the embedding hook at the default's 128 while train_sae.py
# --d-sae applied to every hook: one rule, here, for every entry point (sae_ooc.config.load_config applies it).
PER_HOOK = {"d_sae": "d_sae_by_hook", "expansion_factor": "d_sae_by_hook", "k": "k_by_hook"}


def per_hook_yields(layer: dict, data: dict) -> None:
    """Clear, in the merged raw config `data`, the per-hook maps that a global value written in `layer` overrides."""
    sae = layer.get("sae")
    if not isinstance(sae, dict) or not isinstance(data.get("sae"), dict):
        return
    for key, per_hook in PER_HOOK.items():
        if key in sae and per_hook not in sae:
            data["sae"][per_hook] = {}


SAE_EVAL_POSITIONS = ("roles", "all")
SAE_EVAL_PROBES = ("lda", "logistic")


@dataclass
class SaeEvalConfig:
    auroc_threshold: float = 0.9  # a value counts as detected when one feature (or the probe) reaches this AUROC
    label_min_precision: float = 0.5  # a feature is labelled with a value only if this share of the tokens it fires on carry it
    dense_threshold: float = 0.1  # a feature active on more than this share of held-out tokens is dense
    min_positives: int = 3  # a value is scored when it labels this many distinct selection prefixes and one held-out prefix
    max_select_tokens: int = 20000  # selection prefixes per position used to pick each value's best feature and fit the probe
    # the alignment probes: lda = closed-form linear discriminant analysis (sae_ooc.saes.probes.lda_probes), shrinkage
    # probe_shrinkage; logistic = multinomial logistic regression, probe_steps full-batch Adam steps (~160x slower)
    probe: str = "lda"
    probe_shrinkage: float = 0.001
    probe_steps: int = 300
    probe_lr: float = 0.05
    probe_weight_decay: float = 1e-4
    n_controls: int = 3  # untrained models (seeds 10000, ...) and label shufflings beside every alignment number (sae_ooc.saes.probes)
    # where features are labelled and probes fit (also analyze's probes): roles = the last token of each role span of the
    # analysed prompt (head, r1, r2, and a natural task's last); all = every token of it (the toy: the same positions)
    positions: str = "roles"
    # the field's standard metrics on the planted variables (sae_ooc.saes.standard_metrics): SAEBench's k-sparse probing
    # at these k, its feature absorption (the costly part: an L1 probe and up to 10 sparse probes per value), sae_lens.synthetic's MCC
    standard_metrics: bool = True
    sparse_probing_k: list[int] = field(default_factory=lambda: [1, 2, 5])  # SAEBench's default k_values
    absorption: bool = True
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(0.5 <= self.auroc_threshold <= 1, where, "sae_eval.auroc_threshold", "must be in [0.5, 1]")
        _check(0 <= self.label_min_precision <= 1, where, "sae_eval.label_min_precision", "must be in [0, 1]")
        _check(0 < self.dense_threshold <= 1, where, "sae_eval.dense_threshold", "must be in (0, 1]")
        _check(self.min_positives >= 1, where, "sae_eval.min_positives", "must be at least 1")
        _check(self.max_select_tokens >= 10, where, "sae_eval.max_select_tokens", "must be at least 10")
        _check(self.probe_steps >= 1 and self.probe_lr > 0, where, "sae_eval.probe_steps", "probe_steps must be >= 1 and probe_lr > 0")
        _check(self.probe in SAE_EVAL_PROBES, where, "sae_eval.probe", f"must be one of {', '.join(SAE_EVAL_PROBES)}")
        _check(0 <= self.probe_shrinkage <= 1, where, "sae_eval.probe_shrinkage", "must be in [0, 1]")
        _check(self.n_controls >= 1, where, "sae_eval.n_controls", "must be at least 1: every alignment number is shown beside its controls")
        _check(len(self.sparse_probing_k) > 0 and all(k >= 1 for k in self.sparse_probing_k), where, "sae_eval.sparse_probing_k",
               "must be a non-empty list of positive integers, such as [1, 2, 5]")
        _check(self.positions in SAE_EVAL_POSITIONS, where, "sae_eval.positions", f"must be one of {', '.join(SAE_EVAL_POSITIONS)}")
