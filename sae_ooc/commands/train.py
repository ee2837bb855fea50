"""Train the toy HookedTransformer from scratch on RUN/data into RUN/model (resumes from the last checkpoint)."""

from sae_ooc.io import read_json
from sae_ooc.models.train import FINAL_METRICS_FILE, run_train


def add_arguments(p) -> None:
    pass


def main(run, args) -> int:
    run.check_and_save_config(force=args.force)
    done = run_train(run, force=args.force)
    m = read_json(run.model_dir / FINAL_METRICS_FILE)
    acc, maj = m["accuracy"], m["majority_rate"]
    print(
        f"train: {'trained' if done else 'unchanged, skipped'} {run.model_dir}: test_id {acc['test_id']:.3f} "
        f"(majority {maj['test_id']:.3f}), atomic {acc['atomic_test']:.3f}, ood {acc['test_ood']:.3f} "
        f"after {m['steps']} steps, {m['minutes']:.2f} min"
    )
    return 0
