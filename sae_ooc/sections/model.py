"""Sections of the task, the model and its training."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_ooc.registry import NAMES
from sae_ooc.sections.check import check as _check
from sae_ooc.sections.finetune import FinetuneConfig
from sae_ooc.sections.natural import NaturalConfig


FINETUNE_FAMILIES = ("twohop",)  # the families a fine-tuning run (sae_ooc.tasks.finetune) can teach new facts of
TASK_FAMILIES = NAMES["task.family"]  # the one list (sae_ooc.registry) of the task generators sae_ooc.tasks.data.FAMILIES registers
# the splits every task family writes (sae_ooc.tasks.data.SPLITS)
TASK_SPLITS = ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable", "atomic_test")
TASK_RENDERS = ("toy", "natural")  # one token per entity/relation | natural-language documents (sae_ooc/tasks/natural)
# where the model comes from: trained from scratch, a local Hugging Face checkpoint fine-tuned here, or the model of
# a finished sae_ooc run (model.run) fine-tuned on new facts (task.finetune)
MODEL_SOURCES = ("scratch", "pretrained", "run")
# TransformerLens model names (org prefix dropped, lower case) -> the Hugging Face architecture sae_ooc loads for
# them (models/pretrained.py SUPPORTED); the checkpoint at model.path must have that architecture
PRETRAINED_FAMILIES = (("gpt2", "GPT2LMHeadModel"), ("distilgpt2", "GPT2LMHeadModel"), ("pythia", "GPTNeoXForCausalLM"))
# ModelConfig fields that describe a scratch model's architecture; a pretrained source reads them from the checkpoint
ARCHITECTURE_FIELDS = ("n_layers", "d_model", "n_heads", "d_mlp", "act_fn", "normalization_type", "positional_embeddings",
                       "weight_sharing")
TRAINABLE = ("all", "mlp")


def pretrained_architecture(name: str) -> str | None:
    """The Hugging Face architecture of a TransformerLens model name (gpt2, gpt2-medium, pythia-70m,
    EleutherAI/pythia-160m-deduped, ...), None for a name of a family sae_ooc cannot load."""
    base = name.strip().lower().rsplit("/", 1)[-1]
    return next((arch for prefix, arch in PRETRAINED_FAMILIES if base.startswith(prefix)), None)


def hub_id(name: str) -> str:
    """The Hugging Face hub id to download a TransformerLens model name from (pythia-70m -> EleutherAI/pythia-70m)."""
    name = name.strip()
    return name if "/" in name or not name.lower().startswith("pythia") else f"EleutherAI/{name}"


@dataclass
class TaskConfig:
    # "twohop" (A→B, B→C ⇒ A→C), "reversal" ((a,r)→b ⇒ (b,r⁻¹)→a) or "comparison" ((e,attr)→v ⇒ (e1,attr,e2)→lt/eq/gt)
    family: str = "twohop"
    n_entities: int = 100
    n_relations: int = 10
    facts_per_entity: int = 10  # k: atomic facts (h, r) → t per head entity, each with a distinct r
    phi: float = 8.0  # inferred facts in train / atomic facts in train
    # Wang et al. 2024's OOD atomic facts: trained, but no inferred training fact uses one (test_ood_sys asks the
    # inferred facts made of OOD facts only)
    ood_fraction: float = 0.1  # Wang et al. use 5% of 40,000; 10% of the default 1,000 leaves ~100 test_ood_sys facts
    unanswerable_fraction: float = 0.02  # share of atomic facts never trained (test_unanswerable: inferred facts using one)
    n_values: int = 20  # comparison family: the values v0.. an attribute takes (Wang et al.: 20)
    max_test: int = 2000  # most examples of each held-out split (valid_id + test_id together, test_ood_sys, test_unanswerable)
    reversal_holdout: float = 0.2  # reversal family: share of pairs whose inverse is held out
    # held-out in-distribution facts that go to valid_id (what stopping and tuning read), the rest to test_id (reported only)
    valid_fraction: float = 0.2
    seed: int = 0
    render: str = "toy"  # toy | natural
    natural: NaturalConfig = field(default_factory=NaturalConfig)  # read when render is natural
    # read with model.source: run (a fine-tuning run): the new facts it teaches; the fields above must then be model.run's
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def validate(self, where: str) -> None:
        _check(self.family in TASK_FAMILIES, where, "task.family", f"must be one of {', '.join(TASK_FAMILIES)}")
        _check(self.render in TASK_RENDERS, where, "task.render", f"must be one of {', '.join(TASK_RENDERS)}")
        if self.render == "natural":
            self.natural.validate(where, self.family)
        self.finetune.validate(where)
        _check(self.n_entities >= 4, where, "task.n_entities", "must be at least 4")
        _check(self.n_relations >= 1, where, "task.n_relations", "must be at least 1")
        _check(
            1 <= self.facts_per_entity <= self.n_relations,
            where,
            "task.facts_per_entity",
            f"must be between 1 and task.n_relations ({self.n_relations}): each atomic fact of an entity uses a distinct relation",
        )
        _check(self.phi >= 0, where, "task.phi", "must be >= 0")
        _check(0 <= self.ood_fraction < 1, where, "task.ood_fraction", "must be in [0, 1)")
        _check(0 <= self.unanswerable_fraction < 1 and self.ood_fraction + self.unanswerable_fraction < 1, where,
               "task.unanswerable_fraction", "must be in [0, 1) and, with task.ood_fraction, below 1")
        _check(self.n_values >= 2, where, "task.n_values", "must be at least 2")
        _check(self.max_test >= 2, where, "task.max_test", "must be at least 2 (valid_id and test_id need one example each)")
        _check(0 < self.reversal_holdout < 1, where, "task.reversal_holdout", "must be in (0, 1)")
        _check(0 < self.valid_fraction < 1, where, "task.valid_fraction", "must be in (0, 1)")


@dataclass
class ModelConfig:
    # "scratch": the architecture below, randomly initialised (seed train.seed) and trained on the task.
    # "pretrained": the Hugging Face checkpoint in `path` (GPT-2 or GPT-NeoX/Pythia), loaded through TransformerLens
    # (same hook names) and fine-tuned; its architecture (layers, widths, activation, normalisation, positional
    # embeddings, context, vocabulary) is read from the checkpoint, so the ARCHITECTURE_FIELDS below must keep their
    # defaults (a changed one is an error, not silently ignored)
    source: str = "scratch"
    # pretrained only: the TransformerLens model name (gpt2, gpt2-medium, distilgpt2, pythia-70m, EleutherAI/pythia-160m, ...);
    # names the model and fixes the architecture the checkpoint must have
    name: str = ""
    # pretrained only: the local checkpoint directory (config.json + model.safetensors or pytorch_model.bin, and its
    # tokenizer files), e.g. from `huggingface-cli download gpt2 --local-dir models/gpt2`. A relative path is relative
    # to the directory sae-ooc runs in (like --run and --config): run the commands from the project root
    path: str = ""
    # run only: the directory of a finished sae_ooc run whose model (RUN/model) the train stage fine-tunes on the new
    # facts of task.finetune; its architecture is that model's. Relative to the working directory, like --run
    run: str = ""
    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256  # 0 or less means 4 * d_model
    act_fn: str = "gelu"
    normalization_type: str = "LN"
    positional_embeddings: bool = True
    # a looped model (He et al. 2026): one block's parameters applied n_layers times. Every layer keeps its own
    # modules and hook points (blocks.L.hook_resid_pre, ...); only the parameters are shared
    weight_sharing: bool = False

    def validate(self, where: str) -> None:
        _check(self.n_layers >= 1, where, "model.n_layers", "must be at least 1")
        _check(self.d_model >= 1, where, "model.d_model", "must be at least 1")
        _check(
            self.n_heads >= 1 and self.d_model % self.n_heads == 0,
            where,
            "model.n_heads",
            f"must divide model.d_model ({self.d_model})",
        )
        _check(self.act_fn in ("gelu", "relu", "silu", "gelu_new"), where, "model.act_fn", "must be one of gelu, relu, silu, gelu_new")
        _check(self.normalization_type in ("LN", "LNPre", "RMS", "RMSPre"), where, "model.normalization_type", "must be one of LN, LNPre, RMS, RMSPre")
        _check(self.source in MODEL_SOURCES, where, "model.source", f"must be one of {', '.join(MODEL_SOURCES)}")
        _check(self.source == "run" or not self.run, where, "model.run", "is only read with model.source: run; set model.source: run "
               "to fine-tune that run's model on new facts (task.finetune), or remove model.run")
        if self.source == "run":
            _check(bool(self.run.strip()), where, "model.run", "model.source: run needs the directory of a finished sae_ooc run "
                   "(e.g. --set model.run=runs/default)")
            _check(not self.path and not self.name, where, "model.path", "is not read with model.source: run (the model is "
                   "model.run's); remove model.path and model.name")
            changed = [k for k in ARCHITECTURE_FIELDS if getattr(self, k) != getattr(ModelConfig, k)]
            _check(not changed, where, f"model.{changed[0] if changed else ''}",
                   f"the architecture of a fine-tuned run's model is model.run's; remove {', '.join('model.' + k for k in changed)}")
            return
        if self.source == "scratch":
            _check(not self.path, where, "model.path", "is only read with model.source: pretrained; set model.source: pretrained "
                   "to fine-tune that checkpoint, or remove model.path")
            _check(not self.name, where, "model.name", "is only read with model.source: pretrained; set model.source: pretrained "
                   "(and model.path), or remove model.name")
            return
        _check(bool(self.name.strip()), where, "model.name", "model.source: pretrained needs the TransformerLens model name, "
               "e.g. gpt2 or pythia-70m")
        _check(pretrained_architecture(self.name) is not None, where, "model.name",
               f"{self.name!r} is not a model sae_ooc can load; use a GPT-2 (gpt2, gpt2-medium, distilgpt2, ...) or "
               f"Pythia (pythia-70m, EleutherAI/pythia-160m, ...) name")
        local = f"models/{self.name.strip().rsplit('/', 1)[-1]}"
        _check(bool(self.path.strip()), where, "model.path", "model.source: pretrained needs the local checkpoint directory: "
               f"download it (`huggingface-cli download {hub_id(self.name)} --local-dir {local}` on a machine with network) "
               f"and set model.path: {local}")
        changed = [k for k in ARCHITECTURE_FIELDS if getattr(self, k) != getattr(ModelConfig, k)]
        _check(not changed, where, f"model.{changed[0] if changed else ''}",
               f"the architecture of a pretrained model is read from its checkpoint; remove {', '.join('model.' + k for k in changed)}")


STOP_SPLITS = {"valid_id": "valid_id", "atomic": "atomic_test", "train": "train"}  # train.stop_on -> the split it reads


@dataclass
class TrainConfig:
    steps: int = 9000  # an upper bound: the default run stops early (stop_at_valid_id)
    batch_size: int = 512  # 0 or less means full batch
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine | linear
    warmup_steps: int = 0
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 0.0  # 0 disables clipping
    eval_every: int = 250
    eval_max_examples: int = 2000  # per split, for the periodic evaluation; the final one uses all
    n_checkpoints: int = 12  # log-spaced over the run, plus the final step
    stop_at_valid_id: float = 0.92  # stop early once valid_id (never test_id) accuracy reaches this (0 = never)
    stop_at_atomic: float = 0.99  # ... and atomic_test accuracy reaches this
    threads: int = 1  # torch threads (0 = torch's default); 2 threads are ~40% faster on an idle 2-core machine but ~40x slower when anything else runs
    # which parameters are trained: "all", or "mlp" (every other weight frozen: embeddings, attention, layer norms and
    # unembedding keep their initial or pretrained values; only the MLP weights and biases get gradients and AdamW state)
    trainable: str = "all"
    # what early stopping reads: "valid_id" (valid_id >= stop_at_valid_id and atomic_test >= stop_at_atomic), or
    # "atomic" (atomic_test >= stop_at_atomic alone: a fine-tuning run that teaches new facts stops once they are learned;
    # its two-hop splits are what it measures, never a stopping rule), or "train" (train >= stop_at_atomic alone: the
    # rows it trains on are learned; a natural task's atomic_test asks its facts in held-out paraphrases, so a natural
    # fine-tuning run without replay stops once the new facts' training documents are learned)
    stop_on: str = "valid_id"
    seed: int = 0

    def validate(self, where: str) -> None:
        _check(self.stop_on in STOP_SPLITS, where, "train.stop_on", "must be one of " + ", ".join(STOP_SPLITS))
        _check(self.steps >= 1, where, "train.steps", "must be at least 1")
        _check(self.trainable in TRAINABLE, where, "train.trainable", f"must be one of {', '.join(TRAINABLE)}")
        _check(self.lr > 0, where, "train.lr", "must be > 0")
        _check(self.lr_schedule in ("constant", "cosine", "linear"), where, "train.lr_schedule", "must be one of constant, cosine, linear")
        _check(self.warmup_steps >= 0, where, "train.warmup_steps", "must be >= 0")
        _check(self.weight_decay >= 0, where, "train.weight_decay", "must be >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, where, "train.beta1", "train.beta1 and train.beta2 must be in [0, 1)")
        _check(self.eval_every >= 1, where, "train.eval_every", "must be at least 1")
        _check(self.n_checkpoints >= 0, where, "train.n_checkpoints", "must be >= 0")
        _check(0 <= self.stop_at_valid_id <= 1, where, "train.stop_at_valid_id", "must be in [0, 1]")
        _check(0 <= self.stop_at_atomic <= 1, where, "train.stop_at_atomic", "must be in [0, 1]")
        _check(self.threads >= 0, where, "train.threads", "must be >= 0 (0 = torch's default)")


def check_model_source(task, model: ModelConfig, where: str) -> None:
    """Across sections: a pretrained model reads its checkpoint's token ids, so a natural-language task must be
    tokenized by that checkpoint's tokenizer (task.natural.tokenizer: pretrained), which only a pretrained source has."""
    natural = getattr(task, "natural", None)
    finetune = getattr(task, "finetune", None)
    _check(model.source == "run" or finetune is None or finetune == FinetuneConfig(), where, "task.finetune",
           "is only read by a fine-tuning run (model.source: run with model.run: a finished sae_ooc run); set them, e.g. "
           "--config configs/finetune_toy.yaml --set model.run=runs/default, or remove task.finetune")
    if model.source == "run":  # the tokenizer (natural render) is model.run's, copied from its data
        _check(getattr(task, "family", "twohop") in FINETUNE_FAMILIES, where, "task.family",
               "a fine-tuning run (model.source: run) teaches new facts of the two-hop task; task.family must be one of "
               f"{', '.join(FINETUNE_FAMILIES)}")
        return
    if getattr(task, "render", "toy") != "natural" or natural is None:
        return  # the toy task's token ids are its own symbols (a pretrained model reuses its first embedding rows for them)
    tokenizer = getattr(natural, "tokenizer", None)
    if model.source == "pretrained":
        _check(tokenizer == "pretrained", where, "task.natural.tokenizer",
               "must be pretrained with model.source: pretrained (the model reads its checkpoint's token ids)")
    else:
        _check(tokenizer != "pretrained", where, "task.natural.tokenizer",
               "pretrained reads model.path's tokenizer, which needs model.source: pretrained; use bpe for a scratch model")
