"""How many threads torch may use inside a stage."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int):
    """Run small-tensor loops on `n` threads: on a busy machine OpenMP's barriers make tiny ops on 2 threads ~100x slower."""
    old = torch.get_num_threads()
    if n <= 0:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
