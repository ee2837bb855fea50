"""What the task reads from a local Hugging Face checkpoint directory: its tokenizer (`task.natural.tokenizer: pretrained`)
and where to put a checkpoint that is missing. models/pretrained.py loads the same directory's weights and imports
these from here (tasks sit below models; the task never imports models)."""

from __future__ import annotations

from pathlib import Path


def where_to_put(path: Path, hub: str = "gpt2") -> str:
    return (f"put the checkpoint (config.json + model.safetensors or pytorch_model.bin) in {path}, e.g. from "
            f"`huggingface-cli download {hub} --local-dir {path}` on a machine with network")


def load_tokenizer(path: str | Path):
    """The checkpoint's tokenizer, or None when the directory has none."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        return None
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        from sae_ooc.errors import UserError

        raise UserError(f"the tokenizer in {path} is unreadable ({type(exc).__name__}: {exc}); download the "
                        f"checkpoint's tokenizer files again") from None
