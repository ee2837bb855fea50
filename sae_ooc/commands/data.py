"""Generate the task (two-hop or reversal) into RUN/data as a datasets DatasetDict plus vocab.json."""

from sae_ooc.commands import files_written, verb


def summarize(run, result) -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in result.info["sizes"].items())
    return f"data: {verb(result)} {files_written(run, 'data')}: DatasetDict {sizes}"
