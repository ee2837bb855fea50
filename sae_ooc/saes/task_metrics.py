"""Spliced-in task metrics: how much of the model's task skill survives an SAE replacing the activation at its hook."""

from __future__ import annotations

from pathlib import Path

import torch

from sae_ooc.errors import UserError
from sae_ooc.models.evaluate import evaluate
from sae_ooc.models.hooked import load_model
from sae_ooc.saes.reconstruction import finite
from sae_ooc.tasks.data import SPLITS, load_task, split_tensors


class TaskEvaluator:
    """Answer cross-entropy and accuracy of the model: clean, with an SAE spliced in, and with the hook zeroed.

    loss_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean): 1 when the SAE is as good as the real
    activations, 0 when it is as bad as deleting them.
    """

    def __init__(self, model, tensors: dict, device: str = "cpu"):
        self.model, self.tensors, self.device = model, tensors, device
        self._clean: dict[str, dict] = {}
        self._zero: dict[tuple[str, str], dict] = {}

    @classmethod
    def from_dirs(cls, model_dir: Path, data_dir: Path, device: str = "cpu", splits=None) -> "TaskEvaluator":
        ds, vocab = load_task(data_dir)
        tensors = {s: split_tensors(ds[s], vocab.pad_id) for s in (splits or SPLITS)}
        return cls(load_model(model_dir, device, sae_transformer=True), tensors, device)

    @classmethod
    def from_run(cls, run, device: str = "cpu") -> "TaskEvaluator":
        return cls.from_dirs(run.model_dir, run.data_dir, device)

    def _eval(self, split: str) -> dict:
        return evaluate(self.model, self.tensors[split], device=self.device)

    def clean(self, split: str) -> dict:
        if split not in self._clean:
            self._clean[split] = self._eval(split)
        return self._clean[split]

    def zero(self, hook_name: str, split: str) -> dict:
        if (hook_name, split) not in self._zero:
            with self.model.hooks(fwd_hooks=[(hook_name, lambda act, hook: torch.zeros_like(act))]):
                self._zero[(hook_name, split)] = self._eval(split)
        return self._zero[(hook_name, split)]

    def with_sae(self, sae, split: str, use_error_term: bool = False) -> dict:
        with self.model.saes(saes=[sae], use_error_term=use_error_term):
            return self._eval(split)

    def evaluate(self, sae, splits=None, use_error_term: bool = False) -> dict:
        hook = sae.cfg.metadata.hook_name
        if hook not in self.model.hook_dict:
            raise UserError(f"SAE hook '{hook}' is not a hook of the model; valid residual hooks: "
                            f"{', '.join(h for h in self.model.hook_dict if 'resid' in h)}")
        out = {}
        for s in splits or list(self.tensors):
            c, z, w = self.clean(s), self.zero(hook, s), self.with_sae(sae, s, use_error_term)
            denom = z["loss"] - c["loss"]
            out[s] = {
                "n": c["n"], "acc_clean": c["acc"], "acc_sae": w["acc"], "acc_zero": z["acc"],
                "loss_clean": c["loss"], "loss_sae": w["loss"], "loss_zero": z["loss"],
                "loss_recovered": finite((z["loss"] - w["loss"]) / denom) if abs(denom) > 1e-12 else None,
            }
        head = out.get("test_id") or next(iter(out.values()))
        return {"splits": out, "loss_recovered": head["loss_recovered"], "acc_drop_test_id": finite(head["acc_clean"] - head["acc_sae"])}


def test_id_evaluator(model_dir: Path, data_dir: Path, device: str = "cpu"):
    """`sae -> task metrics on test_id`, what a sweep records per SAE for its loss-recovered Pareto front."""
    te = TaskEvaluator.from_dirs(model_dir, data_dir, device=device)
    return lambda sae: te.evaluate(sae, splits=("test_id",))
