"""Cache residual-stream activations of RUN/model over the task splits into RUN/activations (resumable).

Hooks, splits, shard size, batch size and dtype come from the config's `harvest` section; the default
hooks are every layer's hook_resid_pre plus the last layer's hook_resid_post.
"""

from sae_ooc.commands import verb


def summarize(run, result) -> str:
    if not result.finished:
        return f"harvest: stopped early; rerun to resume from the shards in {run.activations_dir}"
    from sae_ooc.activations.cache import open_cache

    cache = open_cache(run.activations_dir)
    return (f"harvest: {verb(result)} {run.activations_dir}/ (manifest.json, tokens.safetensors, <hook_name>/shard_*.safetensors): "
            f"{cache.n_tokens} tokens x {len(cache.hooks)} hooks (d_model {cache.d_model}, {cache.manifest['dtype']}, "
            f"{cache.n_shards} shard(s) per hook)")
