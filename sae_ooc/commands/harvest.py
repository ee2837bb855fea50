"""Cache residual-stream activations of RUN/model over the task splits into RUN/activations (resumable).

Hooks, splits, shard size, batch size and dtype come from the config's `harvest` section; the default
hooks are every layer's hook_resid_pre plus the last layer's hook_resid_post.
"""

from sae_ooc.commands import files_written, verb

RESUMABLE = True  # a rerun continues from its checkpoints (sae_ooc.cli.interrupted_hint)


def summarize(run, result) -> str:
    if not result.finished:
        return f"harvest: stopped early; rerun to resume from the shards in {run.activations_dir}"
    # torch-free (sae_ooc.activations.cache imports torch, too slow for a skipped stage)
    from sae_ooc.activations.manifest import CacheManifest

    m = CacheManifest.load(run.activations_dir)
    return (f"harvest: {verb(result)} {files_written(run, 'harvest')}: {m.n_tokens} tokens x {len(m.hooks)} hooks "
            f"(d_model {m.d_model}, {m.dtype}, {result.info['n_shards']} shard(s) per hook)")
