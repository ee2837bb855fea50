"""Spliced-in task metrics: how much of the model's task skill survives an SAE replacing the activation at its hook."""

from __future__ import annotations

from pathlib import Path

import torch

from sae_ooc.errors import UserError
from sae_ooc.models.evaluate import evaluate
from sae_ooc.models.hooked import load_model
from sae_ooc.saes.reconstruction import finite
from sae_ooc.tasks.data import SPLITS, load_task, split_tensors

# where a headline number is read: test_id is reported, valid_id is what anything that *chooses* by a task
# metric reads (a sweep's choice of SAE, a threshold); both are written when the task has them
REPORT_SPLIT, CHOOSE_SPLIT = "test_id", "valid_id"


class TaskEvaluator:
    """Answer cross-entropy and accuracy of the model: clean, with an SAE spliced in, and with the hook zeroed.

    loss_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean): 1 when the SAE is as good as the real
    activations, 0 when it is as bad as deleting them. With `train_prefixes` (the token prefixes the SAE was
    trained on), each split is also scored on its prompts whose whole prompt - the prefix that determines the
    answer-position activation - the SAE never saw (`heldout_prefixes`); the SAE still sees the earlier
    positions, whose shorter prefixes may be in its training rows.
    """

    def __init__(self, model, tensors: dict, device: str = "cpu", train_prefixes: set[tuple[int, ...]] | None = None):
        self.model, self.tensors, self.device = model, dict(tensors), device
        self.heldout: list[str] = []
        if train_prefixes is not None:
            for s, st in tensors.items():
                keep = [i for i, (t, p) in enumerate(zip(st.tokens.tolist(), st.answer_pos.tolist())) if tuple(t[: p + 1]) not in train_prefixes]
                if keep:
                    self.tensors[f"{s}@heldout"] = st.subset(torch.tensor(keep))
                    self.heldout.append(s)
        self._clean: dict[str, dict] = {}
        self._zero: dict[tuple[str, str], dict] = {}

    @classmethod
    def from_dirs(cls, model_dir: Path, data_dir: Path, device: str = "cpu", splits=None, train_prefixes=None) -> "TaskEvaluator":
        ds, vocab = load_task(data_dir)
        tensors = {s: split_tensors(ds[s], vocab) for s in (splits or SPLITS) if s in ds}
        return cls(load_model(model_dir, device, sae_transformer=True), tensors, device, train_prefixes)

    @classmethod
    def from_run(cls, run, device: str = "cpu", train_prefixes=None) -> "TaskEvaluator":
        return cls.from_dirs(run.model_dir, run.data_dir, device, train_prefixes=train_prefixes)

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

    def _compare(self, sae, hook: str, split: str, use_error_term: bool) -> dict:
        c, z, w = self.clean(split), self.zero(hook, split), self.with_sae(sae, split, use_error_term)
        denom = z["loss"] - c["loss"]
        return {
            "n": c["n"], "acc_clean": c["acc"], "acc_sae": w["acc"], "acc_zero": z["acc"],
            "loss_clean": c["loss"], "loss_sae": w["loss"], "loss_zero": z["loss"],
            "loss_recovered": finite((z["loss"] - w["loss"]) / denom) if abs(denom) > 1e-12 else None,
        }

    def evaluate(self, sae, splits=None, use_error_term: bool = False) -> dict:
        """{"splits": per split, "heldout_prefixes": per split on prompts the SAE never saw whole (with
        `train_prefixes`), "loss_recovered" and "acc_drop_test_id" on test_id, "loss_recovered_valid_id"}."""
        hook = sae.cfg.metadata.hook_name
        if hook not in self.model.hook_dict:
            raise UserError(f"SAE hook '{hook}' is not a hook of the model; valid residual hooks: "
                            f"{', '.join(h for h in self.model.hook_dict if 'resid' in h)}")
        wanted = list(splits or [s for s in self.tensors if "@" not in s])
        out = {s: self._compare(sae, hook, s, use_error_term) for s in wanted}
        head = out.get(REPORT_SPLIT) or next(iter(out.values()))
        res = {"splits": out, "loss_recovered": head["loss_recovered"], "acc_drop_test_id": finite(head["acc_clean"] - head["acc_sae"]),
               "loss_recovered_valid_id": out[CHOOSE_SPLIT]["loss_recovered"] if CHOOSE_SPLIT in out else None}
        if self.heldout:
            res["heldout_prefixes"] = {s: self._compare(sae, hook, f"{s}@heldout", use_error_term) for s in self.heldout if s in wanted}
        return res


def task_evaluator(model_dir: Path, data_dir: Path, device: str = "cpu"):
    """`sae -> task metrics on test_id and valid_id`, what a sweep records per SAE for its loss-recovered Pareto
    front (valid_id, when the task has it, is the number to choose an SAE by; test_id is only reported)."""
    te = TaskEvaluator.from_dirs(model_dir, data_dir, device=device, splits=(REPORT_SPLIT, CHOOSE_SPLIT))
    return lambda sae: te.evaluate(sae)
