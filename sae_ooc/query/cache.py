"""The once-per-run cache behind `sae-ooc query`: RUN/query_cache/features.safetensors.

Describing a feature needs its largest activations over every task prompt: a pass of the spliced model over
the whole task, which was most of what a query cost. That pass is made once, for every feature of every hook
(sae_ooc.saes.features.FeatureStats, with the task's prompts and ground truth), and saved under a key: the
sha256 of every file it was computed from (task data, model, SAEs) and of the cache's format. A cache whose key
differs or that does not load is rebuilt; one that cannot be written (a run directory the user may only read)
is used for this query only. Labels are not cached: eval-sae's JSON files are small, and reading them each time
shows a rerun of eval-sae at once.

RUN/query_cache/ belongs to no stage: the pipeline checks that each stage's folder stays as the stage left it,
so the query writes only here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors import SafetensorError, safe_open

from sae_ooc.io import save_tensors, sha256_json
from sae_ooc.saes.features import (
    DESCRIBE_EXAMPLES,
    PROMOTED_TOKENS,
    Examples,
    FeatureStats,
    entity_tokens,
)
from sae_ooc.query.index import CACHE_DIR, inputs_key

CACHE_FILE = "features.safetensors"
FORMAT = 2  # bump when what is cached or how it is computed changes


def cache_path(run) -> Path:
    return run.root / CACHE_DIR / CACHE_FILE


def cache_key(run) -> str:
    """What the cached statistics depend on: the content of the task data, the model and every SAE."""
    return sha256_json({"format": FORMAT, "examples": DESCRIBE_EXAMPLES, "promoted": PROMOTED_TOKENS, "inputs": inputs_key(run)})


def load_cache(path: Path, key: str) -> tuple[Examples, FeatureStats] | None:
    """The cached statistics, or None when the file is missing, damaged or was computed from other inputs."""
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            t = {k: f.get_tensor(k) for k in f.keys()}
        return Examples.from_tensors(t), FeatureStats.from_tensors(t)
    except (OSError, SafetensorError, KeyError, ValueError, TypeError):  # any unreadable cache is rebuilt, never an error
        return None


def feature_cache(run, sp, ds, vocab) -> tuple[Examples, FeatureStats]:
    """The task's prompts and every feature's statistics for `run` (spliced model `sp`): from the cache when its
    key matches, else computed (tens of seconds on the default run) and saved."""
    path, key = cache_path(run), cache_key(run)
    cached = load_cache(path, key)
    if cached is not None:
        return cached
    print(f"query: describing every SAE feature once for this run (cached in {path})", file=sys.stderr)
    examples = Examples.from_dataset(ds, vocab)
    stats = FeatureStats.compute(sp, examples, {h: list(range(sp.d_sae[h])) for h in sp.hooks}, entity_tokens(vocab))
    try:
        save_tensors(path, {**examples.tensors(), **stats.tensors()}, metadata={"key": key})
    except OSError as e:
        print(f"query: could not save the cache {path} ({e.strerror or e}); the next query computes it again", file=sys.stderr)
    return examples, stats
