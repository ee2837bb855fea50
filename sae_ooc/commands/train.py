"""Train the model into RUN/model: the toy from scratch, or fine-tune a pretrained checkpoint (model.source); resumes from the last checkpoint."""

from sae_ooc.commands import files_written, verb

RESUMABLE = True  # a rerun continues from its checkpoints (sae_ooc.cli.interrupted_hint)


def summarize(run, result) -> str:
    if not result.finished:
        return f"train: stopped early; rerun to resume from the last checkpoint in {run.model_dir / 'checkpoints'}"
    m = result.info  # what run_train recorded in RUN/stages.json: no model code to import for a skipped stage
    maj = m["majority_rate"]
    stop = f"stopped early on {m['stop_split']}" if m["stopped_early"] else "ran every step"
    done = "trained"
    if m.get("source") == "pretrained":
        done = f"fine-tuned {m['name']} ({'MLP weights only' if m['trainable'] == 'mlp' else 'all weights'}) into"
    return (f"train: {verb(result, done)} {files_written(run, 'train')}: valid_id {m['valid_id_acc']:.3f} "
            f"(majority {maj['valid_id']:.3f}), test_id {m['test_id_acc']:.3f} (majority {maj['test_id']:.3f}), "
            f"atomic {m['atomic_test_acc']:.3f}, ood_sys {m['test_ood_sys_acc']:.3f}, unanswerable {m['test_unanswerable_acc']:.3f} after {m['steps']} steps ({stop}), {m['minutes']:.2f} min")
