"""Atomic file writes and hashing: nothing half-written ever lands under its final name."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported only by the functions that move tensors: the CLI starts without it
    import torch


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which races with writer threads


def follow_umask(path: Path) -> Path:
    """Give a file another library wrote (SAELens writes its weights 0600 through a temporary file) the mode a
    plain `open()` would: 0666 less the user's umask."""
    os.chmod(path, 0o666 & ~_UMASK)
    return Path(path)


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # named by the file meant, not the random temporary name (read-only run, full disk)
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        follow_umask(tmp_path)  # mkstemp makes 0600; a shared run must stay readable to colleagues
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def write_text(path: Path, text: str, only_if_changed: bool = False) -> Path:
    """`only_if_changed`: leave a file that already holds `text` untouched (no write, same mtime)."""
    if only_if_changed:
        try:
            if Path(path).read_text() == text:
                return Path(path)
        except (OSError, UnicodeDecodeError):
            pass
    return _atomic(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any, only_if_changed: bool = False) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", only_if_changed)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_tensors(path: Path, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _atomic(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def load_tensors(path: Path, device: str = "cpu") -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    return load_file(str(path), device=device)


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and fsync, so a crash loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a crash: everything before it is good
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
