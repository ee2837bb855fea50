"""RUN/activations/manifest.json as a typed object, torch-free: what the harvest stage cached (the model it ran, its
hooks, shards and their sha256, the token table's). `ActivationCache` reads the shards it lists; readers that only need
its facts (compare's shared-prompt check) load it without torch.

    m = CacheManifest.load(run.activations_dir)
    m.n_tokens, m.tokens_sha256, m.shards["blocks.1.hook_resid_pre"][0].file
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_ooc.records import OMIT, Record, StageOutput

MANIFEST = "manifest.json"


@dataclass(kw_only=True)
class ShardEntry(Record):
    """One shard file of one hook."""

    file: str  # inside RUN/activations/<hook_name>/
    n_tokens: int  # rows in it
    sha256: str  # of the file's bytes (checked on read)


@dataclass(kw_only=True)
class CacheManifest(StageOutput):
    """The activation cache of stage `harvest`: every token of every split, one row a token, per hook."""

    FILE = MANIFEST
    STAGE = "harvest"
    FORMAT_NAME = "sae_ooc.activations"
    FORMAT_FIELD = True  # the file always carried its version ("sae_ooc.activations/1")

    format: str  # "sae_ooc.activations/1"
    model_hash: str  # sha256 of the model the activations came from (model/model.safetensors)
    hooks: list[str]  # hook_names cached, in forward order
    d_model: int
    dtype: str  # of the stored activations
    shard_tokens: int  # rows per shard
    splits: list[str]  # the task's splits harvested, in table order
    split_sizes: dict[str, int]  # split -> examples
    n_tokens: int  # rows of every hook's cache (= of the token table)
    roles: list[str] = OMIT  # the name of each prompt position (caches of the toy layout before it was recorded lack it)
    token_columns: list[str]  # columns of the token table (tokens.safetensors)
    split_codes: dict[str, int] = OMIT  # split -> its code in the token table's `split` column (older caches lack it)
    shards: dict[str, list[ShardEntry]]  # hook_name -> its shards in row order
    tokens_file: str  # the token table's file name
    tokens_sha256: str  # of the token table's bytes (two runs with the same one harvested the same prompts)
