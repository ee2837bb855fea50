"""Fine-tune the pretrained checkpoint of model.path (model.source: pretrained), or the model of a finished sae_ooc run
(model.source: run, model.run: DIR) on the new facts of task.finetune, on RUN/data into RUN/model (the train stage).

All weights, or only the MLP weights with train.trainable: mlp; the same metrics per split, checkpoints, resuming and
figures as the toy's training, and every later stage reads the result as it reads the toy. Run `sae-ooc data` first
(or `sae-ooc pipeline`, which fine-tunes as its train stage). Weights: `huggingface-cli download gpt2 --local-dir models/gpt2`.
"""

from sae_ooc.errors import UserError

RESUMABLE = True  # a rerun continues from its checkpoints (sae_ooc.cli.interrupted_hint)


def main(run, args) -> int:
    from sae_ooc.commands import run_stage_command
    from sae_ooc.commands import train as train_command

    if run.cfg.model.source == "scratch":
        raise UserError(f"sae-ooc finetune fine-tunes a pretrained model but model.source is scratch; set model.source: pretrained "
                        f"with model.name and model.path (e.g. --config configs/finetune_gpt2.yaml), or model.source: run with "
                        f"model.run (e.g. --config configs/finetune_toy.yaml), or run `sae-ooc train` to train the toy model from scratch")
    return run_stage_command("train", train_command, run, args)
