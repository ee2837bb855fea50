"""Generate the task (two-hop or reversal) into RUN/data as a datasets DatasetDict plus vocab.json."""

from sae_ooc.tasks.data import run_data


def add_arguments(p) -> None:
    pass


def main(run, args) -> int:
    run.check_and_save_config(force=args.force)
    done = run_data(run, force=args.force)
    info = run._stages()["data"]
    sizes = ", ".join(f"{k}={v}" for k, v in info["sizes"].items())
    print(f"data: {'wrote' if done else 'unchanged, skipped'} {run.data_dir} ({sizes})")
    return 0
