"""models/pretrained.py: tiny random GPT-2 and GPT-NeoX checkpoints built here load into a HookedTransformer
that reproduces the Hugging Face logits; bad directories are one-line UserErrors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sae_ooc.errors import UserError
from sae_ooc.models.pretrained import hooked_config_dict, load_pretrained

from pretrained_fixtures import VOCAB, gpt2 as _gpt2, neox as _neox, save_tokenizer as _save_tokenizer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    out = {}
    for name, build in [("gpt2", _gpt2), ("neox", _neox)]:
        hf = build()
        hf.save_pretrained(root / name)  # safetensors by default
        out[name] = (root / name, hf)
    _save_tokenizer(root / "gpt2")
    return out


@pytest.mark.parametrize("name", ["gpt2", "neox"])
def test_logits_match_hugging_face(checkpoints, name):
    path, hf = checkpoints[name]
    assert (path / "model.safetensors").is_file()
    model = load_pretrained(path)
    assert model.cfg.original_architecture == hf.config.architectures[0]
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 20))
    with torch.no_grad():
        expected = hf(ids).logits
        got = model(ids)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # Not a vacuous match: the logits depend on the input.
    assert (expected[0] - expected[1]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["gpt2", "neox"])
def test_hook_names_and_cache(checkpoints, name):
    path, hf = checkpoints[name]
    model = load_pretrained(path)
    for hook in ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern",
                 "blocks.0.mlp.hook_post"]:
        assert hook in model.hook_dict
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
        hidden = hf(ids, output_hidden_states=True).hidden_states
    assert cache["blocks.1.hook_resid_pre"].shape == (2, 12, 32)
    # HF's hidden_states[1] is the input of layer 1: the same residual stream.
    torch.testing.assert_close(cache["blocks.1.hook_resid_pre"], hidden[1], atol=1e-4, rtol=0)


def test_rotary_dim_is_pythia_fraction(checkpoints):
    model = load_pretrained(checkpoints["neox"][0])
    assert model.cfg.positional_embedding_type == "rotary"
    assert model.cfg.rotary_dim == 4  # 0.25 of d_head 16


def test_config_mirrors_transformer_lens(tmp_path, checkpoints):
    """Where TransformerLens's own conversion runs (a GPT-2 config with n_ctx; GPT-NeoX), ours gives its fields."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    _gpt2(n_ctx=True).save_pretrained(tmp_path / "gpt2_nctx")
    for path in [tmp_path / "gpt2_nctx", checkpoints["neox"][0]]:
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        ours = hooked_config_dict(hf_config, hf_config.architectures[0], path.name)
        theirs = get_pretrained_model_config(str(path), fold_ln=False, device="cpu", local_files_only=True)
        for key, value in ours.items():
            assert getattr(theirs, key) == value, key


def test_tokenizer_attached_and_round_trips(checkpoints):
    model = load_pretrained(checkpoints["gpt2"][0])
    assert model.tokenizer is not None
    sentence = "The mentor of Alice is Carol."
    tokens = model.to_tokens(sentence, prepend_bos=False)
    assert tokens.max() < VOCAB
    assert model.to_string(tokens[0]) == sentence
    assert model(sentence).shape[-1] == VOCAB
    assert load_pretrained(checkpoints["neox"][0]).tokenizer is None  # no tokenizer files: none attached


def _one_line_error(path, *words):
    with pytest.raises(UserError) as info:
        load_pretrained(path)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    return message


def test_missing_directory(tmp_path):
    _one_line_error(tmp_path / "nowhere", "does not exist", "config.json", "huggingface-cli download",
                    str(tmp_path / "nowhere"))
    (tmp_path / "file").write_text("x")
    _one_line_error(tmp_path / "file", "not a directory", "huggingface-cli download")


def test_no_config_json(tmp_path):
    (tmp_path / "ckpt").mkdir()
    _one_line_error(tmp_path / "ckpt", "no config.json", "huggingface-cli download")


def test_no_weights(tmp_path, checkpoints):
    (tmp_path / "ckpt").mkdir()
    shutil.copy(checkpoints["gpt2"][0] / "config.json", tmp_path / "ckpt")
    _one_line_error(tmp_path / "ckpt", "no weights", "model.safetensors")


def test_unsupported_architecture(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                 num_key_value_heads=2, intermediate_size=32, vocab_size=VOCAB)
                     ).save_pretrained(tmp_path / "llama")
    _one_line_error(tmp_path / "llama", "LlamaForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM")
    (tmp_path / "foo").mkdir()
    (tmp_path / "foo" / "config.json").write_text(json.dumps({"architectures": ["FooForCausalLM"]}))
    _one_line_error(tmp_path / "foo", "FooForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM")


def test_truncated_weights(tmp_path, checkpoints):
    path = tmp_path / "truncated"
    shutil.copytree(checkpoints["gpt2"][0], path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _one_line_error(path, "unreadable or truncated", "model.safetensors")
