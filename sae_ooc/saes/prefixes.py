"""What eval-sae measures alignment on: per position, one cache row per distinct *prefix* on each side of the split.

Under causal attention the activation at a position is a function of the token prefix up to it (the head entity at
`head`, (head, r1) at `r1`, the whole prompt at `r2`), so the SAE's held-out rows are whole prefixes
(`sae_ooc.activations.cache.heldout_mask`): no held-out row has a twin among the rows the SAE was trained on, the
probe was fit on or a feature was chosen on. Identical prefixes are deduplicated (a prompt repeated across splits
counts once), and a variable is labelled on a prefix only where the prefix determines it: every row that carries
the prefix agrees on its value (r1 is undetermined at `head`, the final answer at `r1`, ...). The answer counts only
at answer positions (at `r1` of an atomic fact it is that fact's tail).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_ooc.activations.cache import ActivationCache, distinct_rows, prefix_ids, prefix_tokens
from sae_ooc.records import opt

# every planted variable a task may have (Layout.variables): the threehop family's r3 and bridge2 are cache columns of
# its runs only; a variable without a column is labelled NONE everywhere, so nothing scores it
VARIABLES = ("head", "r1", "r2", "r3", "bridge", "bridge2", "answer")
NONE = -1  # label of a prefix that does not determine the variable
# bridge2 = t(bridge, r2) is a function of the prefix only from r2 on; before it, the agreement of a prefix's few rows
# (a prefix (h, r1) asked with one r2 only) is chance, not determination
DETERMINED_FROM = {"bridge2": "r2"}


@dataclass
class PositionSlice:
    """One position's distinct selection and held-out prefixes (cache rows, one each) and their labels."""

    pos: int
    name: str
    sel: torch.Tensor  # cache rows: one per selection prefix (at most sae_eval.max_select_tokens, seeded subsample)
    ev: torch.Tensor  # cache rows: one per held-out prefix
    labels: dict[str, tuple[torch.Tensor, torch.Tensor]]  # variable -> (label of each sel row, of each ev row); NONE: undetermined
    known_ev: torch.Tensor | None  # per ev row: its first hop (head, r1) is an atomic fact of the train split (None at `head`)
    tokens_sel: torch.Tensor  # [len(sel), pos + 1]: the prefixes themselves, what a control model is run on
    tokens_ev: torch.Tensor


def prefix_labels(tokens: dict[str, torch.Tensor], pid: torch.Tensor, var: str) -> torch.Tensor:
    """Per row, the value of `var` its prefix determines (every labelled row with that prefix agrees), else NONE
    (everywhere when the cache has no column `var`)."""
    if var not in tokens:
        return torch.full_like(pid, NONE, dtype=torch.long)
    y = tokens[var].long()
    valid = y >= 0
    if var == "answer":
        valid &= tokens["is_answer_pos"] == 1
    n = int(pid.max()) + 1 if len(pid) else 0
    big = torch.iinfo(torch.long).max
    lo = torch.full((n,), big, dtype=torch.long).scatter_reduce_(0, pid[valid], y[valid], "amin")
    hi = torch.full((n,), NONE, dtype=torch.long).scatter_reduce_(0, pid[valid], y[valid], "amax")
    return torch.where(lo == hi, lo, NONE)[pid]


def first_hop_known(tokens: dict[str, torch.Tensor], train_code: int | None) -> torch.Tensor:
    """Per row: (head, r1) is an atomic fact the model was trained on (a one-hop prompt of the train split)."""
    head, r1 = tokens["head"].long(), tokens["r1"].long()
    key = head * (int(r1.max()) + 2) + r1 + 1 if len(r1) else head
    if train_code is None:
        return torch.zeros(len(head), dtype=torch.bool)
    atomic = (tokens["split"] == train_code) & (tokens["hop"] == 1) & (tokens["is_answer_pos"] == 1)  # a row per fact
    return torch.isin(key, key[atomic]) & (r1 >= 0)


def _subsample(rows: torch.Tensor, cap: int, seed: int) -> torch.Tensor:
    if len(rows) <= cap:
        return rows
    g = torch.Generator().manual_seed(seed)
    return rows[torch.randperm(len(rows), generator=g)[:cap].sort().values]


def position_slices(cache: ActivationCache, held: torch.Tensor, max_select: int, seed: int,
                    positions: list[int] | None = None) -> list[PositionSlice]:
    """The selection / held-out prefixes of every position that has both (of `positions` only, when given: e.g.
    `layout.positions("roles")`), from the SAE's held-out rows `held`."""
    tok = cache.tokens()
    pid = prefix_ids(tok)
    labels = {v: prefix_labels(tok, pid, v) for v in VARIABLES}
    known = first_hop_known(tok, opt(cache.manifest.split_codes, {}).get("train"))
    out = []
    for p, name in enumerate(cache.roles):
        if positions is not None and p not in positions:
            continue
        at = tok["role"] == p  # the toy task: every row at position p; a natural one: analysed questions' rows only
        sel, ev = distinct_rows(tok, at & ~held, pid), distinct_rows(tok, at & held, pid)
        if len(sel) == 0 or len(ev) == 0:
            continue
        sel = _subsample(sel, max_select, seed)
        early = {v for v, r in DETERMINED_FROM.items() if r in cache.roles and p < cache.roles.index(r)}
        out.append(PositionSlice(p, name, sel, ev, {v: (labels[v][sel], labels[v][ev]) if v not in early else
                                                    (torch.full_like(labels[v][sel], NONE), torch.full_like(labels[v][ev], NONE))
                                                    for v in VARIABLES},
                                 known[ev] if p >= 1 else None, prefix_tokens(tok, sel, p), prefix_tokens(tok, ev, p)))
    return out
