"""Control models for the alignment probes: what a probe reads from a model that learned nothing.

A probe that decodes the bridge entity from held-out prefixes of the trained model means something only if it does
not from the same architecture with random weights (`sae_eval.n_controls` seeds) nor from the trained model's own
initialisation (the step-0 checkpoint RUN/model/checkpoints/step_0, when the train stage wrote one). Their
activations are computed here on exactly the prefixes of `sae_ooc.saes.prefixes` - no SAE is involved.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sae_ooc.models.hooked import CONFIG_FILE, MODEL_FILE, load_model
from sae_ooc.models.source import random_model
from sae_ooc.saes.prefixes import PositionSlice
from sae_ooc.tasks.data import load_task

RANDOM_SEED0 = 10_000  # random-model control i is random_model(seed=RANDOM_SEED0 + i): far from any training seed
STEP0 = Path("checkpoints") / "step_0"  # under RUN/model

# {hook: {position index: (activations at the selection prefixes, at the held-out prefixes)}}
Acts = dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]]


def control_models(run, n_random: int) -> dict[str, list]:
    """{"random_model": n_random untrained models of the run's architecture, "step0": [the step-0 checkpoint] or []}."""
    _, vocab = load_task(run.data_dir)
    seeds = [RANDOM_SEED0 + i for i in range(n_random)]
    out = {"random_model": [random_model(run, vocab, seed=s, device=run.device).eval() for s in seeds], "step0": []}
    step0 = run.model_dir / STEP0
    if (step0 / MODEL_FILE).is_file() and (step0 / CONFIG_FILE).is_file():
        out["step0"] = [load_model(step0, device=run.device)]
    return out


@torch.no_grad()
def prefix_activations(model, slices: list[PositionSlice], hooks: list[str], batch: int = 4096) -> Acts:
    """The activations of `model` at `hooks` at the last token of every selection and held-out prefix."""
    out: Acts = {h: {} for h in hooks}
    device = next(model.parameters()).device
    for sl in slices:
        toks = torch.cat([sl.tokens_sel, sl.tokens_ev])
        parts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
        for s in range(0, len(toks), batch):
            _, cache = model.run_with_cache(toks[s : s + batch].to(device), names_filter=hooks, return_type=None)
            for h in hooks:
                parts[h].append(cache[h][:, sl.pos].float().cpu())
        for h in hooks:
            x = torch.cat(parts[h])
            out[h][sl.pos] = (x[: len(sl.sel)], x[len(sl.sel) :])
    return out


def control_activations(run, slices: list[PositionSlice], hooks: list[str], n_random: int) -> dict[str, list[Acts]]:
    """{"random_model": [Acts per seed], "step0": [Acts] or []}."""
    return {kind: [prefix_activations(m, slices, hooks) for m in models] for kind, models in control_models(run, n_random).items()}
