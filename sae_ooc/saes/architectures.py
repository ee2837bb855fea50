"""The SAE architectures train-sae can train: one registration each, on top of SAELens's own registry.

As in SAELens (`sae_lens/saes/topk_sae.py`: a config class per architecture; `sae_lens/registry.py`), each
architecture is a config class here (`ArchitectureConfig`: its own fields, its sparsity field for sweeps) registered
under SAELens's name, whose `get_sae_training_class(name)` gives its TrainingSAE and TrainingSAEConfig classes; an
architecture SAELens lacks registers its own pair (`training=`). Adding one is a config class with `@architecture(...)`
here plus its name in `sae_ooc.registry.NAMES["sae.architecture"]` (the one list, torch-free: config validation reads
it too); this module checks at import that every listed name is registered.

Importing this module imports neither torch nor sae_lens (train_sae.py's --help lists the names from here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from sae_ooc.config import SaeConfig
from sae_ooc.errors import UserError
from sae_ooc.sections.saes import TOPK_FAMILY
from sae_ooc.registry import Registry


@dataclass(frozen=True)
class ArchitectureConfig:
    """The settings one architecture reads (SAELens: the fields its TrainingSAEConfig adds to the common ones), one
    class per architecture. `from_sae` takes them from the flat `sae` section, so the YAML keeps every architecture's
    keys side by side (`sae.k`, `sae.l1_coefficient`, ...) and old configs load unchanged; `training_fields` is what
    goes into the TrainingSAEConfig."""

    sparsity: ClassVar[str] = "l1_coefficient"  # the `sae` field a sae.sweep_l1_coefficient sweep varies

    @classmethod
    def from_sae(cls, p: SaeConfig, d_sae: int, k: int) -> ArchitectureConfig:
        return cls(**{f.name: getattr(p, f.name) for f in dataclasses.fields(cls)})

    def training_fields(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Architecture:
    name: str  # the registry's key; SAELens's name unless `training` is given
    config: type[ArchitectureConfig]
    # (TrainingSAE class, TrainingSAEConfig class) of an architecture SAELens lacks; None: SAELens's registry has them
    training: tuple[type, type] | None = None

    @property
    def sparsity(self) -> str:
        return self.config.sparsity

    def fields(self, p: SaeConfig, d_sae: int, k: int) -> dict:
        """The architecture's own TrainingSAEConfig fields for an SAE d_sae wide with k active (where it has a k)."""
        return self.config.from_sae(p, d_sae, k).training_fields()

    def training_classes(self) -> tuple[type, type]:
        """(TrainingSAE class, TrainingSAEConfig class) for this architecture: its own, or SAELens's."""
        if self.training is not None:
            return self.training
        from sae_lens.registry import get_sae_training_class

        return get_sae_training_class(self.name)


ARCHITECTURES: Registry[Architecture] = Registry("sae.architecture")


def architecture(name: str, training: tuple[type, type] | None = None):
    """Register the config class it decorates as architecture `name` (SAELens's training classes unless `training`)."""

    def deco(config: type[ArchitectureConfig]):
        ARCHITECTURES.register(name)(Architecture(name, config, training))
        return config

    return deco


# one class per architecture, registered in the order of sae_ooc.registry.NAMES (--help lists them so)
@architecture("standard")
@dataclass(frozen=True)
class StandardConfig(ArchitectureConfig):
    l1_coefficient: float


@architecture("topk")
@dataclass(frozen=True)
class TopKConfig(ArchitectureConfig):
    k: int  # the hook's k (sae.k_by_hook over sae.k), at most d_sae
    aux_loss_coefficient: float
    rescale_acts_by_decoder_norm: bool

    @classmethod
    def from_sae(cls, p: SaeConfig, d_sae: int, k: int) -> TopKConfig:
        return cls(**{**{f.name: getattr(p, f.name) for f in dataclasses.fields(cls)}, "k": k})


@architecture("batchtopk")
@dataclass(frozen=True)
class BatchTopKConfig(TopKConfig):
    pass


@architecture("jumprelu")
@dataclass(frozen=True)
class JumpReLUConfig(ArchitectureConfig):
    sparsity: ClassVar[str] = "l0_coefficient"
    l0_coefficient: float


@architecture("gated")
@dataclass(frozen=True)
class GatedConfig(StandardConfig):
    pass


@architecture("matryoshka_batchtopk")
@dataclass(frozen=True)
class MatryoshkaBatchTopKConfig(TopKConfig):
    matryoshka_widths: list[int]  # the nested widths, d_sae last

    @classmethod
    def from_sae(cls, p: SaeConfig, d_sae: int, k: int) -> MatryoshkaBatchTopKConfig:
        widths = sorted(set(w for w in p.matryoshka_widths if w < d_sae)) or sorted(set(w for w in (d_sae // 8, d_sae // 4, d_sae // 2) if w > 0))
        return cls(k=k, aux_loss_coefficient=p.aux_loss_coefficient, rescale_acts_by_decoder_norm=p.rescale_acts_by_decoder_norm,
                   matryoshka_widths=widths + [d_sae])


ARCHITECTURES.check()  # every name of the one list (sae_ooc.registry.NAMES) is registered above


# sizes -----------------------------------------------------------------------------------------
def resolved_d_sae(p: SaeConfig, d_in: int, hook_name: str | None = None) -> int:
    if hook_name is not None and hook_name in p.d_sae_by_hook:
        return p.d_sae_by_hook[hook_name]
    return p.d_sae if p.d_sae > 0 else p.expansion_factor * d_in


def resolved_k(p: SaeConfig, hook_name: str | None = None) -> int:
    return p.k_by_hook.get(hook_name, p.k)


def training_sae_config(p: SaeConfig, d_in: int, hook_name: str, model_hash: str | None, device: str = "cpu"):
    """The SAELens TrainingSAEConfig of `p.architecture` for an SAE on `hook_name` (d_in wide)."""
    arch = ARCHITECTURES.get(p.architecture)
    d_sae = resolved_d_sae(p, d_in, hook_name)
    k = resolved_k(p, hook_name)
    if p.architecture in TOPK_FAMILY and k > d_sae:  # known only here when d_sae is expansion_factor * d_in
        raise UserError(f"sae.k {k} is more than d_sae {d_sae} at {hook_name}: every feature would fire; choose k <= {d_sae}")
    k = min(k, d_sae)  # the other architectures ignore k
    cfg = arch.training_classes()[1](d_in=d_in, d_sae=d_sae, dtype="float32", device=device,
                                     normalize_activations=p.normalize_activations, **arch.fields(p, d_sae, k))
    cfg.metadata.hook_name = hook_name
    cfg.metadata.model_name = f"sae_ooc:{model_hash[:12]}" if model_hash else "sae_ooc"
    cfg.metadata.context_size = 3
    cfg.metadata.prepend_bos = False
    return cfg


def training_sae(p: SaeConfig, d_in: int, hook_name: str, model_hash: str | None, device: str = "cpu"):
    """A freshly initialised SAELens TrainingSAE (weights from torch's global generator)."""
    return ARCHITECTURES.get(p.architecture).training_classes()[0](training_sae_config(p, d_in, hook_name, model_hash, device))
