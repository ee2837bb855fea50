"""The natural task's tokenizer: a byte-level BPE trained here on the rendered corpus (`tokenizers`), or the
pretrained checkpoint's (model.path), both as a `tokenizers.Tokenizer` written to RUN/data/tokenizer.json.

Byte-level BPE pre-tokenizes GPT-2's way (a word with its leading space, "'s" and punctuation apart) and never
merges across those boundaries, so a name piece " First Last" is tokenized the same wherever it stands; the
renderer still checks every occurrence. Training is deterministic: the same texts give the same merges.
"""

from __future__ import annotations

from pathlib import Path

from sae_ooc.errors import UserError

SPECIAL = "<|endoftext|>"  # BOS of every example and the pad token (id 0), as GPT-2's


class Tok:
    """A tokenizers.Tokenizer with the BOS/pad ids and a cache of piece encodings (pieces repeat a lot)."""

    def __init__(self, tokenizer, bos_id: int | None, pad_id: int, source: str):
        self.tokenizer, self.bos_id, self.pad_id, self.source = tokenizer, bos_id, pad_id, source
        self._cache: dict[str, tuple[int, ...]] = {}

    def ids(self, text: str) -> tuple[int, ...]:
        if text not in self._cache:
            self._cache[text] = tuple(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return self._cache[text]

    def batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    @property
    def bos(self) -> list[int]:
        return [] if self.bos_id is None else [self.bos_id]


def train_bpe(texts: list[str], vocab_size: int) -> Tok:
    """A byte-level BPE (all 256 bytes + merges, at most `vocab_size` tokens) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    special = tokenizer.token_to_id(SPECIAL)
    return Tok(tokenizer, special, special, "bpe")


def pretrained_tokenizer(model_path, hub: str = "gpt2") -> Tok:
    """model.path's tokenizer (its Hugging Face fast tokenizer's backend), BOS = its bos (or eos) token."""
    from tokenizers import Tokenizer

    from sae_ooc.tasks.natural.checkpoint import load_tokenizer, where_to_put

    if not model_path:
        raise UserError("task.natural.tokenizer: pretrained reads the tokenizer of model.path, which is not set; set "
                        "model.path to a Hugging Face checkpoint directory or use task.natural.tokenizer=bpe")
    if not Path(model_path).is_dir():
        what = "is not a directory" if Path(model_path).exists() else "does not exist"
        raise UserError(f"model.path {model_path} {what}, so its tokenizer cannot be read; {where_to_put(Path(model_path), hub)}")
    hf = load_tokenizer(Path(model_path))
    if hf is None or not hasattr(hf, "backend_tokenizer"):
        raise UserError(f"task.natural.tokenizer: pretrained needs a fast tokenizer (tokenizer.json or vocab.json + "
                        f"merges.txt) in {model_path}, which has none; copy the checkpoint's tokenizer files there")
    tokenizer = Tokenizer.from_str(hf.backend_tokenizer.to_str())  # a copy: padding/truncation settings off
    tokenizer.no_padding()
    tokenizer.no_truncation()
    bos = hf.bos_token_id if hf.bos_token_id is not None else hf.eos_token_id
    pad = next((i for i in (hf.pad_token_id, hf.eos_token_id, bos) if i is not None), 0)
    return Tok(tokenizer, bos, pad, "pretrained")
