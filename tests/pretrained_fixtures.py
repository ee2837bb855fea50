"""Tiny random Hugging Face checkpoints (GPT-2, GPT-NeoX/Pythia) and a byte-level BPE tokenizer, saved as checkpoint
directories the way `huggingface-cli download` leaves them: for tests/test_pretrained.py and tests/test_finetune.py."""

from __future__ import annotations

import torch

VOCAB = 100  # >= the tiny toy task's 17 token ids, so a toy task fine-tunes these models too
SENTENCES = [
    "The mentor of Alice is Bob.",
    "Bob's mentor is Carol.",
    "The teacher of Dave is Erin, and Erin lives in Paris.",
    "Who is the mentor of the mentor of Alice?",
] * 4


def gpt2(n_ctx: bool = False, vocab: int = VOCAB, positions: int = 32):
    from transformers import GPT2Config, GPT2LMHeadModel

    extra = {"n_ctx": positions} if n_ctx else {}  # hub GPT-2 configs carry n_ctx; ones built by transformers 5 do not
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab, n_positions=positions,
                                      bos_token_id=0, eos_token_id=0, **extra)).eval()


def neox(vocab: int = VOCAB):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                            rotary_pct=0.25, intermediate_size=128, vocab_size=vocab,
                                            max_position_embeddings=32, bos_token_id=0, eos_token_id=0)).eval()


def bpe_tokenizer(sentences=SENTENCES, vocab: int = VOCAB):
    """A byte-level BPE trained on a few sentences, its alphabet limited to theirs so ids fit the tiny vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=[]))
    assert tok.get_vocab_size() <= vocab
    return tok


def save_tokenizer(directory, tok=None):
    """Save `tok` (default: `bpe_tokenizer()`) as a Hugging Face tokenizer directory (tokenizer.json + configs)."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok or bpe_tokenizer(), eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(directory)


def save_checkpoint(directory, hf_model, tokenizer: bool = True):
    """`hf_model` (safetensors) and, with `tokenizer`, the BPE tokenizer into `directory`; returns the directory."""
    hf_model.save_pretrained(directory)
    if tokenizer:
        save_tokenizer(directory)
    return directory
