"""Cache residual-stream activations of RUN/model over the task splits into RUN/activations (resumable).

Hooks, splits, shard size, batch size and dtype come from the config's `harvest` section; the default
hooks are every layer's hook_resid_pre plus the last layer's hook_resid_post.
"""

from sae_ooc.activations.cache import open_cache
from sae_ooc.activations.harvest import run_harvest


def add_arguments(p) -> None:
    pass


def main(run, args) -> int:
    run.check_and_save_config(force=False)
    done = run_harvest(run, force=args.force)
    cache = open_cache(run.activations_dir)
    print(
        f"harvest: {'wrote' if done else 'unchanged, skipped'} {run.activations_dir}: {cache.n_tokens} tokens x "
        f"{len(cache.hooks)} hooks (d_model {cache.d_model}, {cache.manifest['dtype']}, {cache.n_shards} shard(s) per hook)"
    )
    return 0
