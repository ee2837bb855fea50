"""Cache residual-stream activations of RUN/model over the task splits into RUN/activations (resumable).

Hooks, splits, shard size, batch size and dtype come from the config's `harvest` section; the default
hooks are every layer's hook_resid_pre plus the last layer's hook_resid_post.
"""

from sae_ooc.commands import files_written, verb

RESUMABLE = True  # a rerun continues from its checkpoints (sae_ooc.cli.interrupted_hint)


def summarize(run, result) -> str:
    if not result.finished:
        return f"harvest: stopped early; rerun to resume from the shards in {run.activations_dir}"
    from sae_ooc.io import read_json

    # the manifest read as plain JSON: sae_ooc.activations.cache (its MANIFEST) imports torch, too slow for a skipped stage
    m = read_json(run.activations_dir / "manifest.json")
    return (f"harvest: {verb(result)} {files_written(run, 'harvest')}: {m['n_tokens']} tokens x {len(m['hooks'])} hooks "
            f"(d_model {m['d_model']}, {m['dtype']}, {result.info['n_shards']} shard(s) per hook)")
