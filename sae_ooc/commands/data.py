"""Generate the task (two-hop or reversal; toy tokens or natural-language text, task.render) into RUN/data as a datasets DatasetDict plus vocab.json, layout.json (and tokenizer.json)."""

from sae_ooc.commands import files_written, verb
from sae_ooc.tasks.data_info import DataInfo


def summarize(run, result) -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in DataInfo.from_json(result.info).sizes.items())
    return f"data: {verb(result)} {files_written(run, 'data')}: DatasetDict {sizes}"
