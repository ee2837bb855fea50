"""How many threads torch may use inside a stage."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
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


def cpu_workers(workers: int, tasks: int, device: str = "cpu") -> int:
    """Processes for `tasks` independent pieces of a stage: `workers` (a config's NOT_HASHED setting), at most one per
    task and per CPU core this process may use; 1 off the CPU (one accelerator: the pieces would queue on it anyway)."""
    if device != "cpu" or tasks < 2:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(workers, tasks, cores))


def worker_pool(n: int) -> ProcessPoolExecutor:
    """`n` fresh interpreters (spawn: no torch thread pool forked mid-use) for stage pieces that are independent; each
    piece computes exactly what it would in the stage's own process (same code, same inputs, same thread count)."""
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
