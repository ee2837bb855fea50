"""Build, save and load the HookedTransformer we analyse.

A saved model is `model.safetensors` (the state dict) plus `config.json` (the keyword arguments of
HookedTransformerConfig), so `HookedTransformer(HookedTransformerConfig(**json.load(f)))` and
`load_state_dict` give it back with no sae_ooc code.

A weight-shared (looped) model (`model.weight_sharing`, He et al. 2026) is a HookedTransformer whose blocks are
distinct modules (each keeps its own hook points, `blocks.L.hook_resid_pre`, ...) holding the *same* Parameter
objects as block 0 (`tie_blocks`). Its state dict is saved with every layer's (identical) copy, so the plain
recipe above still gives a model computing the same function; `sharing.json` beside it tells `load_model` to tie
the blocks again, so training or fine-tuning the reloaded model keeps one block.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_ooc.config import ModelConfig
from sae_ooc.errors import UserError, unreadable
from sae_ooc.io import load_tensors, save_tensors, sha256_file, write_json
from sae_ooc.tasks.data import Vocab

from sae_ooc.models.files import CONFIG_FILE, MODEL_FILE, SHARING_FILE  # noqa: F401  (re-exported)


def hooked_config_kwargs(mcfg: ModelConfig, vocab: Vocab, seed: int) -> dict:
    return dict(
        n_layers=mcfg.n_layers,
        d_model=mcfg.d_model,
        n_heads=mcfg.n_heads,
        d_head=mcfg.d_model // mcfg.n_heads,
        d_mlp=mcfg.d_mlp if mcfg.d_mlp > 0 else 4 * mcfg.d_model,
        d_vocab=vocab.d_vocab,
        d_vocab_out=vocab.d_vocab,
        n_ctx=vocab.layout.seq_len,
        act_fn=mcfg.act_fn,
        normalization_type=mcfg.normalization_type,
        positional_embedding_type="standard" if mcfg.positional_embeddings else "rotary",
        seed=seed,
        default_prepend_bos=False,
    )


def tie_blocks(model: HookedTransformer) -> HookedTransformer:
    """Make every block use block 0's Parameter objects (in place): one block applied n_layers times.

    The modules stay distinct, so each layer keeps its own hook points and TransformerLens names; the parameters
    are the same objects, so `model.parameters()` yields each once and an optimizer updates one block.
    """
    first = model.blocks[0]
    shared = dict(first.named_parameters())
    for block in model.blocks[1:]:
        for name in list(dict(block.named_parameters())):
            owner_path, _, pname = name.rpartition(".")
            owner = block.get_submodule(owner_path) if owner_path else block
            setattr(owner, pname, shared[name])  # nn.Module.__setattr__ registers the shared Parameter
    return model


def is_weight_shared(model: HookedTransformer) -> bool:
    blocks = model.blocks
    return len(blocks) > 1 and all(p is q for b in blocks[1:] for p, q in zip(b.parameters(), blocks[0].parameters()))


def build_model(mcfg: ModelConfig, vocab: Vocab, seed: int, device: str = "cpu") -> HookedTransformer:
    kwargs = hooked_config_kwargs(mcfg, vocab, seed)
    torch.manual_seed(seed)
    model = HookedTransformer(HookedTransformerConfig(**kwargs, device=device))
    if mcfg.weight_sharing:
        tie_blocks(model)
    model.sae_ooc_config_kwargs = kwargs  # what save_model writes; HookedTransformerConfig has derived fields too
    return model


def save_model(model: HookedTransformer, out_dir: Path, config_kwargs: dict | None = None) -> None:
    out_dir = Path(out_dir)
    kwargs = config_kwargs or getattr(model, "sae_ooc_config_kwargs", None)
    if kwargs is None:
        raise ValueError("save_model needs the HookedTransformerConfig kwargs (build the model with build_model)")
    shared = is_weight_shared(model)
    # safetensors refuses tensors that share memory: a tied model saves each layer's copy (the file then loads untied too)
    save_tensors(out_dir / MODEL_FILE, {k: v.clone() if shared else v for k, v in model.state_dict().items()})
    write_json(out_dir / CONFIG_FILE, kwargs)
    if shared:
        write_json(out_dir / SHARING_FILE, {"weight_sharing": "blocks"})
    else:
        (out_dir / SHARING_FILE).unlink(missing_ok=True)


def _saved_kwargs(model_dir: Path) -> dict:
    """config.json's HookedTransformerConfig keyword arguments; an unreadable file is one line naming the rebuild."""
    try:
        return json.loads((model_dir / CONFIG_FILE).read_text())
    except ValueError as e:
        raise unreadable(model_dir / CONFIG_FILE, e, f"sae-ooc train --run {model_dir.parent} --force") from None


def saved_config(model_dir: Path) -> HookedTransformerConfig | None:
    """The saved model's architecture as TransformerLens's own config class, without loading its weights; None when the
    train stage has not written it (readers then fall back on the run's config)."""
    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        return None
    kwargs = _saved_kwargs(model_dir)
    try:
        return HookedTransformerConfig(**kwargs)
    except TypeError as e:  # a key TransformerLens does not know
        raise unreadable(model_dir / CONFIG_FILE, e, f"sae-ooc train --run {model_dir.parent} --force") from None


def load_model(model_dir: Path, device: str = "cpu", sae_transformer: bool = False) -> HookedTransformer:
    """The saved model; as a sae_lens.HookedSAETransformer (same weights, SAEs can be spliced in) with `sae_transformer`."""
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_FILE).exists() or not (model_dir / CONFIG_FILE).exists():
        raise UserError(f"no trained model in {model_dir} ({MODEL_FILE} + {CONFIG_FILE}); run `sae-ooc train --run {model_dir.parent}` first")
    rebuild = f"sae-ooc train --run {model_dir.parent} --force"
    kwargs = _saved_kwargs(model_dir)
    try:
        state = load_tensors(model_dir / MODEL_FILE, device=device)
    except Exception as e:  # safetensors raises its own SafetensorError on a truncated file
        raise unreadable(model_dir / MODEL_FILE, e, rebuild) from None
    if sae_transformer:
        from sae_lens import HookedSAETransformer

        model = HookedSAETransformer(HookedTransformerConfig(**kwargs, device=device))
        # strict=False: HookedSAETransformer may carry SAE slots that a plain state dict has no entries for
        model.load_state_dict(state, strict=False)
    else:
        model = HookedTransformer(HookedTransformerConfig(**kwargs, device=device))
        model.load_state_dict(state)
    if (model_dir / SHARING_FILE).is_file():
        tie_blocks(model)  # the saved copies are identical: tying after loading keeps the weights
    model.sae_ooc_config_kwargs = kwargs
    model.eval()
    return model


def model_hash(model_dir: Path) -> str:
    """Identity of a saved model: the sha256 of its weights file."""
    return sha256_file(Path(model_dir) / MODEL_FILE)


def with_new_tokens(model: HookedTransformer, at: int, k: int) -> HookedTransformer:
    """A copy of `model` whose vocabulary has `k` new token ids inserted at id `at` (the ids from `at` on move up by k):
    their embedding rows and unembedding columns (and b_U entries) start at the mean of those of ids 0..at-1 (a fine-tuning
    run's new entities, task.finetune.new_entities: the mean of the old entities, so the new tokens start as an
    "average entity" the model has no fact about)."""
    kwargs = {**model.sae_ooc_config_kwargs, "d_vocab": model.cfg.d_vocab + k, "d_vocab_out": model.cfg.d_vocab_out + k}
    state = {name: t.detach().clone() for name, t in model.state_dict().items()}

    def insert(t: torch.Tensor, dim: int) -> torch.Tensor:
        mean = t.narrow(dim, 0, at).mean(dim, keepdim=True)
        return torch.cat([t.narrow(dim, 0, at), mean.repeat_interleave(k, dim), t.narrow(dim, at, t.shape[dim] - at)], dim)

    state["embed.W_E"] = insert(state["embed.W_E"], 0)
    state["unembed.W_U"] = insert(state["unembed.W_U"], 1)
    state["unembed.b_U"] = insert(state["unembed.b_U"], 0)
    new = HookedTransformer(HookedTransformerConfig(**kwargs, device=model.cfg.device))
    new.load_state_dict(state)
    if is_weight_shared(model):
        tie_blocks(new)
    new.sae_ooc_config_kwargs = kwargs
    return new.train(model.training)
