"""The training data of an SAE: seeded shuffled batches streamed from one hook of the activation cache."""

from __future__ import annotations

import torch

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.errors import UserError


class CacheBatches:
    """Infinite iterator of [batch_size, d_in] float32 batches from one hook of the cache.

    The stream is a pure function of (seed, rows): each epoch visits the shards in a seeded random order,
    `buffer_shards` at a time; the rows of those shards are pooled and permuted, and batches are
    consecutive slices of the concatenated pools. Memory is at most two pools. Starting at sample
    `start` (from a checkpoint) gives exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, cache: ActivationCache, hook_name: str, rows_mask: torch.Tensor, batch_size: int, seed: int,
                 buffer_shards: int = 4, start: int = 0):
        cache.check_hook(hook_name)
        self.cache, self.hook, self.batch_size, self.seed = cache, hook_name, batch_size, seed
        self.buffer_shards = max(1, buffer_shards)
        self.local_rows = []
        for i in range(cache.n_shards):
            a, b = cache.shard_bounds(i)
            self.local_rows.append(rows_mask[a:b].nonzero().squeeze(1))
        self.n_rows = sum(len(r) for r in self.local_rows)
        if self.n_rows == 0:
            raise UserError(f"no training tokens for {hook_name} in {cache.root} (all held out?); lower sae.eval_fraction")
        self.consumed = start
        self._kept: dict[int, torch.Tensor] = {}
        self._groups = self._group_iter()
        self._pool, self._ptr = torch.empty(0, cache.d_model), 0
        skip = start
        while True:  # skip whole pools by their sizes without loading them
            group = next(self._groups)
            size = sum(len(self.local_rows[i]) for i in group[1])
            if skip < size:
                self._pool, self._ptr = self._load(group), skip
                break
            skip -= size

    def _group_iter(self):
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.cache.n_shards, generator=g).tolist()
            for j in range(0, len(order), self.buffer_shards):
                shards = [i for i in order[j : j + self.buffer_shards] if len(self.local_rows[i])]
                if shards:
                    yield (epoch, j), shards
            epoch += 1

    def _shard(self, i: int) -> torch.Tensor:
        if i in self._kept:
            return self._kept[i]
        x = self.cache.load_shard(self.hook, i)[self.local_rows[i]].float()
        if self.cache.n_shards <= self.buffer_shards:
            self._kept[i] = x  # the whole hook fits in one pool: keep it instead of rereading every epoch
        return x

    def _load(self, group) -> torch.Tensor:
        (epoch, j), shards = group
        pool = torch.cat([self._shard(i) for i in shards])
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7919 + j)
        return pool[torch.randperm(len(pool), generator=g)]

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        parts, need = [], self.batch_size
        while need:
            if self._ptr >= len(self._pool):
                self._pool, self._ptr = self._load(next(self._groups)), 0
            take = min(need, len(self._pool) - self._ptr)
            parts.append(self._pool[self._ptr : self._ptr + take])
            self._ptr += take
            need -= take
        self.consumed += self.batch_size
        return parts[0] if len(parts) == 1 else torch.cat(parts)
