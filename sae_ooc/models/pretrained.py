"""A local Hugging Face checkpoint directory -> a TransformerLens HookedTransformer (GPT-2 and GPT-NeoX/Pythia).

`HookedTransformer.from_pretrained` (transformer-lens 3.9) only takes official model names and asks the hub for
the config, so it cannot load a directory on a machine without network. This module does the same steps from
the directory: the config fields TransformerLens's `convert_hf_model_config` sets for these two architectures
(mirrored in `hooked_config_dict`, because that function reads `hf_config.n_ctx`, which a GPT2Config built and
saved by transformers 5 lacks) and TransformerLens's own weight conversions (`convert_gpt2_weights` /
`convert_neox_weights`), loaded without folding or centering so the hooked model computes the Hugging Face
model's logits and its weights are the checkpoint's.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from sae_ooc.tasks.natural.checkpoint import load_tokenizer, where_to_put

SUPPORTED = ("GPT2LMHeadModel", "GPTNeoXForCausalLM")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def checkpoint_architecture(path: str | Path, hub: str = "gpt2") -> str:
    """The checkpoint's architecture name (from config.json), after checking the directory is loadable by us.

    `hub`: the hub id the error messages suggest downloading."""
    from sae_ooc.errors import UserError

    path = Path(path)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise UserError(f"pretrained checkpoint {path} {what}; {where_to_put(path, hub)}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"{path} has no config.json, so it is not a Hugging Face checkpoint; {where_to_put(path, hub)}")
    try:
        hf_cfg = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{config_file} is unreadable ({type(exc).__name__}); download the checkpoint again "
                        f"({where_to_put(path, hub)})") from None
    archs = hf_cfg.get("architectures") if isinstance(hf_cfg, dict) else None
    arch = archs[0] if isinstance(archs, list) and archs else None
    if arch not in SUPPORTED:
        raise UserError(f"{path} holds a {arch or 'checkpoint with no `architectures` in config.json'}, which "
                        f"sae_ooc cannot load; use a checkpoint of one of: {', '.join(SUPPORTED)} "
                        f"(e.g. gpt2, EleutherAI/pythia-70m)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{path} has config.json but no weights; {where_to_put(path, hub)}")
    return arch


def hooked_config_dict(hf_config, arch: str, name: str) -> dict:
    """HookedTransformerConfig fields for a GPT-2 / GPT-NeoX Hugging Face config, as TransformerLens sets them.

    Mirrors `convert_hf_model_config` + `get_pretrained_model_config` (transformer-lens 3.9, fold_ln=False);
    tests/test_pretrained.py checks it against them where they run.
    """
    from transformer_lens.utilities.hf_utils import get_rotary_pct_from_config

    if arch == "GPT2LMHeadModel":
        cfg = {
            "d_model": hf_config.n_embd,
            "d_head": hf_config.n_embd // hf_config.n_head,
            "n_heads": hf_config.n_head,
            "d_mlp": hf_config.n_embd * 4,
            "n_layers": hf_config.n_layer,
            # Hub GPT-2 configs carry n_ctx (== n_positions); configs saved by transformers 5 may not.
            "n_ctx": getattr(hf_config, "n_ctx", None) or hf_config.n_positions,
            "eps": hf_config.layer_norm_epsilon,
            "d_vocab": hf_config.vocab_size,
            "act_fn": hf_config.activation_function,
            "use_attn_scale": getattr(hf_config, "scale_attn_weights", True),
            "use_local_attn": False,
            "scale_attn_by_inverse_layer_idx": hf_config.scale_attn_by_inverse_layer_idx,
            "normalization_type": "LN",
            "default_prepend_bos": True,
        }
    else:
        cfg = {
            "d_model": hf_config.hidden_size,
            "d_head": hf_config.hidden_size // hf_config.num_attention_heads,
            "n_heads": hf_config.num_attention_heads,
            "d_mlp": hf_config.intermediate_size,
            "n_layers": hf_config.num_hidden_layers,
            "n_ctx": hf_config.max_position_embeddings,
            "eps": hf_config.layer_norm_eps,
            "d_vocab": hf_config.vocab_size,
            "act_fn": hf_config.hidden_act,
            "use_attn_scale": True,
            "use_local_attn": False,
            "scale_attn_by_inverse_layer_idx": False,
            "parallel_attn_mlp": getattr(hf_config, "use_parallel_residual", True),
            "positional_embedding_type": "rotary",
            "rotary_adjacent_pairs": False,
            "normalization_type": "LN",
            "default_prepend_bos": False,
        }
        cfg["rotary_dim"] = round(get_rotary_pct_from_config(hf_config) * cfg["d_head"])
    cfg.update(original_architecture=arch, model_name=name, init_weights=False, from_checkpoint=False,
               n_devices=1)
    return cfg


def load_pretrained(path: str | Path, device="cpu", name: str | None = None):
    """Load the checkpoint at `path` as a float32 HookedTransformer with TransformerLens's hook names.

    Weights are neither folded nor centered, so logits match the Hugging Face model's; the tokenizer is
    attached when the directory has one. `model.sae_ooc_config_kwargs` holds the JSON-able
    HookedTransformerConfig fields `models.hooked.save_model` writes (no tokenizer name: a saved model is
    rebuilt by `load_model` without its checkpoint directory). `name` (default: the directory's name) is the
    config's model_name.
    """
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_neox_weights
    from transformers import AutoModelForCausalLM

    from sae_ooc.errors import UserError

    path = Path(path)
    arch = checkpoint_architecture(path)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except Exception as exc:  # transformers/safetensors raise many types for a truncated or corrupt file
        raise UserError(f"the weights in {path} are unreadable or truncated ({type(exc).__name__}); download the "
                        f"checkpoint again ({where_to_put(path)})") from None
    hf_model.eval()
    tokenizer = load_tokenizer(path)
    cfg_dict = hooked_config_dict(hf_model.config, arch, name or path.name)
    # Without a tokenizer, a tokenizer_name would make HookedTransformer try to fetch one from the hub.
    cfg = HookedTransformerConfig.from_dict(dict(cfg_dict, device=str(device), dtype=torch.float32,
                                                 tokenizer_name=str(path) if tokenizer is not None else None))
    convert = convert_gpt2_weights if arch == "GPT2LMHeadModel" else convert_neox_weights
    with torch.no_grad():
        state_dict = convert(hf_model, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # HookedTransformer's 4.0 notice; <4 is pinned
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.load_and_process_state_dict(state_dict, fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    model.to(device, print_details=False)
    model.eval()
    model.sae_ooc_config_kwargs = cfg_dict
    return model
