"""Train the toy HookedTransformer from scratch on RUN/data into RUN/model (resumes from the last checkpoint)."""

from sae_ooc.commands import verb


def summarize(run, result) -> str:
    if not result.finished:
        return f"train: stopped early; rerun to resume from the last checkpoint in {run.model_dir / 'checkpoints'}"
    from sae_ooc.io import read_json
    from sae_ooc.models.train import FINAL_METRICS_FILE

    m = read_json(run.model_dir / FINAL_METRICS_FILE)
    acc, maj = m["accuracy"], m["majority_rate"]
    return (f"train: {verb(result, 'trained')} {run.model_dir}/ (model.safetensors, config.json, metrics.jsonl, final_metrics.json, "
            f"checkpoints/, accuracy.png/.svg): test_id {acc['test_id']:.3f} (majority {maj['test_id']:.3f}), "
            f"atomic {acc['atomic_test']:.3f}, ood {acc['test_ood']:.3f} after {m['steps']} steps, {m['minutes']:.2f} min")
