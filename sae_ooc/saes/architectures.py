"""The SAE architectures train-sae can train: one registration each, on top of SAELens's own registry.

An architecture's name is SAELens's (`sae_lens.registry.get_sae_training_class(name)` gives its TrainingSAE and
TrainingSAEConfig classes); what a registration adds is how our `SaeConfig` fills the architecture's own fields
of that config class (its sparsity coefficient, k, matryoshka widths) and which `SaeConfig` field a
`sae.sweep_l1_coefficient` sweep varies. Adding an architecture SAELens supports is one `@architecture(...)`
function here plus its name in `sae_ooc.registry.NAMES["sae.architecture"]` (the one list, torch-free: config
validation reads it too); this module checks at import that every listed name is registered.

Importing this module imports neither torch nor sae_lens (train_sae.py's --help lists the names from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sae_ooc.config import SaeConfig
from sae_ooc.errors import UserError
from sae_ooc.sections.saes import TOPK_FAMILY
from sae_ooc.registry import Registry


@dataclass(frozen=True)
class Architecture:
    name: str  # SAELens's name, the key of its training-class registry
    fields: Callable[[SaeConfig, int, int], dict]  # (p, d_sae, k) -> the architecture's own TrainingSAEConfig fields
    sparsity: str = "l1_coefficient"  # the SaeConfig field sae.sweep_l1_coefficient sweeps

    def training_classes(self) -> tuple[type, type]:
        """SAELens's (TrainingSAE class, TrainingSAEConfig class) for this architecture."""
        from sae_lens.registry import get_sae_training_class

        return get_sae_training_class(self.name)


ARCHITECTURES: Registry[Architecture] = Registry("sae.architecture")


def architecture(name: str, sparsity: str = "l1_coefficient"):
    """Register `fields(p, d_sae, k) -> dict` as architecture `name`."""

    def deco(fields: Callable[[SaeConfig, int, int], dict]):
        ARCHITECTURES.register(name)(Architecture(name, fields, sparsity))
        return fields

    return deco


def _topk_fields(p: SaeConfig, k: int) -> dict:
    return dict(k=k, aux_loss_coefficient=p.aux_loss_coefficient, rescale_acts_by_decoder_norm=p.rescale_acts_by_decoder_norm)


@architecture("standard")
def _standard(p: SaeConfig, d_sae: int, k: int) -> dict:
    return dict(l1_coefficient=p.l1_coefficient)


@architecture("topk")
def _topk(p: SaeConfig, d_sae: int, k: int) -> dict:
    return _topk_fields(p, k)


@architecture("batchtopk")
def _batchtopk(p: SaeConfig, d_sae: int, k: int) -> dict:
    return _topk_fields(p, k)


@architecture("jumprelu", sparsity="l0_coefficient")
def _jumprelu(p: SaeConfig, d_sae: int, k: int) -> dict:
    return dict(l0_coefficient=p.l0_coefficient)


@architecture("gated")
def _gated(p: SaeConfig, d_sae: int, k: int) -> dict:
    return dict(l1_coefficient=p.l1_coefficient)


@architecture("matryoshka_batchtopk")
def _matryoshka_batchtopk(p: SaeConfig, d_sae: int, k: int) -> dict:
    widths = sorted(set(w for w in p.matryoshka_widths if w < d_sae)) or sorted(set(w for w in (d_sae // 8, d_sae // 4, d_sae // 2) if w > 0))
    return dict(**_topk_fields(p, k), matryoshka_widths=widths + [d_sae])


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
