"""Linear probes per layer and position for the planted variables (head, bridge, answer): the supervised baseline
beside the SAE features, with eval-sae's machinery (`saes.prefixes`, `saes.probes`, `saes.controls`).

Rows are distinct token prefixes of the activation cache, split as train-sae splits them (`heldout_mask` with
sae.eval_fraction and sae.seed): each probe is fit on the selection prefixes and scored on the held-out ones, beside
the same probe on untrained models of the same architecture (and the step-0 checkpoint when saved) and on shuffled
selection labels. `chance` is the accuracy of guessing by the selection labels' frequencies.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from sae_ooc.saes.prefixes import PositionSlice
from sae_ooc.saes.probes import probe_table

VARIABLES = ("head", "bridge", "answer")


def chance(y_sel: torch.Tensor, y_ev: torch.Tensor) -> float | None:
    """Expected accuracy of a guess drawn from the selection label frequencies, on the held-out labels."""
    ys, ye = y_sel[y_sel >= 0], y_ev[y_ev >= 0]
    if len(ys) == 0 or len(ye) == 0:
        return None
    n = int(max(ys.max(), ye.max())) + 1
    return float((torch.bincount(ys, minlength=n).double() / len(ys) * torch.bincount(ye, minlength=n).double() / len(ye)).sum())


def probe_settings(acfg) -> SimpleNamespace:
    """What `saes.probes.probe_table` reads, from the analyze section."""
    return SimpleNamespace(probe_steps=acfg.probe_steps, probe_lr=acfg.probe_lr, probe_weight_decay=acfg.probe_weight_decay,
                           seed=acfg.seed, n_controls=acfg.n_controls)


def probes(read, hooks: list[str], slices: list[PositionSlice], controls: dict, settings, progress=None) -> dict:
    """`read(hook, rows)` -> activations of cache rows; `controls`: {kind: [Acts]} (saes.controls.control_activations).

    Returns {"hooks", "positions", var: {"heldout_acc": [hook][pos], "random_model_acc", "shuffled_acc", "step0_acc",
    "chance", "majority_acc", "above_controls", "n_heldout", "n_select", "ci95"}}; None where the variable is
    undetermined at that position."""
    positions = [sl.name for sl in slices]
    keys = ("heldout_acc", "heldout_ci95", "random_model_acc", "shuffled_acc", "step0_acc", "majority_acc", "chance",
            "above_controls", "n_heldout", "n_select", "n_classes", "control_max_acc")
    out = {"hooks": hooks, "positions": positions, "n_controls": settings.n_controls,
           **{v: {k: [[None] * len(slices) for _ in hooks] for k in keys} for v in VARIABLES}}
    for i, h in enumerate(hooks):
        for j, sl in enumerate(slices):
            labels = {v: sl.labels[v] for v in VARIABLES if (sl.labels[v][0] >= 0).any() and (sl.labels[v][1] >= 0).any()}
            if labels:
                ctrl = {kind: [acts[h][sl.pos] for acts in runs] for kind, runs in controls.items() if runs}
                table, _ = probe_table(read(h, sl.sel), read(h, sl.ev), labels, sl.known_ev, ctrl, settings)
                for v, rec in table.items():
                    cell = {**rec, "chance": chance(*labels[v]), "step0_acc": rec.get("step0_acc")}
                    for k in keys:
                        out[v][k][i][j] = cell.get(k)
            if progress is not None:
                progress()
    return out
