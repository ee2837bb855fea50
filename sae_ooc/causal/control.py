"""Sufficiency: interchange a unit from the donor into the base at (hook, r1) and count answers that follow the donor.

A unit's score on a set of pairs: `switch`, the share answering the counterfactual t(b', r2) exactly (whole answers), with a
95% bootstrap interval resampling head entities (the unit the prefixes were drawn by: the questions of one head share
its r1 states' neighbourhood), `logit_change` of that answer's first token against the clean run, and the edit's cost:
`edit_norm` (mean |delta|) and `rel_norm` (mean |delta| / |x|).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_ooc.causal.units import bootstrap_share
from sae_ooc.interventions.prompts import Answers, matches
from sae_ooc.interventions.steering import answers_with_delta


@dataclass
class Scored:
    """Pairs ready to score: base tokens, their clean answers, the counterfactual answer and the r1 states."""

    tokens: torch.Tensor  # [n, width]
    answer_pos: torch.Tensor  # [n]
    clean: Answers
    consistent: torch.Tensor  # [n, answer_len] tokens of t(b', r2)
    x: torch.Tensor  # [n, d] base r1 state at the hook
    xd: torch.Tensor  # [n, d] donor r1 state at the hook
    heads: torch.Tensor  # [n] base head entities

    def __len__(self) -> int:
        return len(self.tokens)


def switched(model, S: Scored, hook: str, pos: int, delta: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([n] bool: the answer is t(b', r2), [n] that answer's first-token logit change) with delta added at (hook, pos)."""
    out = answers_with_delta(model, S.tokens, S.answer_pos, hook, pos, delta, batch, S.consistent.shape[1])
    rows = torch.arange(len(S))
    c0 = S.consistent[:, 0]
    return matches(out.greedy, S.consistent), out.first[rows, c0] - S.clean.first[rows, c0]


def score(model, S: Scored, hook: str, pos: int, delta: torch.Tensor, batch: int, n_boot: int, seed: int,
          size: int | None = None, kind: str = "") -> dict:
    """A unit's control on the pairs S (see the module docstring)."""
    res = {"kind": kind, "size": size, "n": len(S)}
    if len(S) == 0:
        return res | {"switch": None, "ci95": None, "logit_change": None, "edit_norm": None, "rel_norm": None}
    sw, dl = switched(model, S, hook, pos, delta, batch)
    norm = delta.norm(dim=-1)
    return res | {"switch": float(sw.float().mean()), "ci95": bootstrap_share(sw.float(), S.heads, n_boot, seed),
                  "logit_change": float(dl.mean()), "edit_norm": float(norm.mean()),
                  "rel_norm": float((norm / S.x.norm(dim=-1).clamp(min=1e-12)).mean())}


def switch_only(model, S: Scored, hook: str, pos: int, delta: torch.Tensor, batch: int) -> float | None:
    return float(switched(model, S, hook, pos, delta, batch)[0].float().mean()) if len(S) else None


def spread(draws: list[dict], size: int | None, kind: str) -> dict:
    """The random reference over its draws: the mean of each number, and the switch rate's sd and range."""
    ok = [d for d in draws if d.get("switch") is not None]
    if not ok:
        return {"kind": kind, "size": size, "n": draws[0]["n"] if draws else 0, "switch": None, "n_draws": len(draws)}
    v = np.array([d["switch"] for d in ok])
    out = {"kind": kind, "size": size, "n": ok[0]["n"], "n_draws": len(ok), "switch": float(v.mean()),
           "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()), "max": float(v.max())}
    for k in ("logit_change", "edit_norm", "rel_norm"):
        out[k] = float(np.mean([d[k] for d in ok]))
    return out
