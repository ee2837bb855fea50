"""Variable nodes: SAE features grouped by the task variable they carry, patched and ablated as one node.

A circuit of individual features cannot be faithful over many pairs when every head, bridge and answer value has
its own features (50 features cannot cover 100 values). The mechanism is stated at the level of variables (head
entity -> bridge at r1 -> bridge at r2 -> answer), so here a node is a *group* of features at one (hook, position):

    variable   every feature whose ground-truth label (eval-sae, `sae_ooc.saes.features.load_feature_labels`) is
               variable V at position p, at hook H: id `bridge@r1@blocks.1.hook_resid_pre`. A feature has one
               label (its best), so it is in exactly one group; the group lives at the labelled position only (a
               feature labelled at r1 that fires at r2 makes no claim there: at r2 it is unlabelled);
    remainder  every other feature at (H, p): id `rest@r1@...`;
    error      the SAE error term at (H, p): id `err@r1@...`.
Every node of the spliced model is in exactly one group, so keeping every group is the model.

Patching a group (clean -> corrupted, as the attribution stage does for one node) sets all its members at once to
their values on the corrupted prompt. Ablating a group sets its members in the ablation's scope
(`sae_ooc.circuits.ablation`: active on the clean prompt, and for resample and corrupt ablation also those active on
the prompt the values come from; the error term always) to their ablation value and holds the others at their value
on the clean prompt, 0, so no ablation switches on a feature the prompt does not use (mean ablation of value-specific
features otherwise feeds every prompt a little of every value). A circuit of groups is then a keep mask over the
nodes: kept = members of the circuit's groups (`ablated_metric` adds everything outside the scope).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sae_ooc.circuits.nodes import Node
from sae_ooc.circuits.pairs import Pairs
from sae_ooc.circuits.spliced import NodeMask, NodeValues, Spliced
from sae_ooc.errors import UserError
from sae_ooc.saes.prefixes import VARIABLES
from sae_ooc.tasks.data import POSITION_ROLES

REMAINDER, ERROR = "rest", "err"  # the name part of remainder and error group ids


@dataclass(frozen=True)
class Group:
    kind: str  # one of sae_ooc.config.VARIABLE_KINDS: variable, remainder, error
    name: str  # the variable (head, r1, r2, bridge, answer), REMAINDER or ERROR
    hook: str
    pos: int
    members: tuple[int, ...] = ()  # feature indices at (hook, pos); () for the error node
    positions: tuple[str, ...] = field(default=POSITION_ROLES, compare=False, repr=False)  # the task's position names

    @property
    def id(self) -> str:
        return group_id(self.name, self.pos, self.hook, self.positions)

    @property
    def role(self) -> str:
        return self.positions[self.pos]

    @property
    def size(self) -> int:
        """Nodes in the group: its features, or 1 for the error node."""
        return 1 if self.kind == "error" else len(self.members)

    def nodes(self) -> list[Node]:
        return [Node(self.hook, self.pos, None)] if self.kind == "error" else [Node(self.hook, self.pos, i) for i in self.members]


def group_id(name: str, pos: int, hook: str, positions: tuple[str, ...] = POSITION_ROLES) -> str:
    """`bridge@r1@blocks.1.hook_resid_pre`: the variable, the position's role, the hook."""
    return f"{name}@{positions[pos]}@{hook}"


def group_features(labels: dict[str, dict[int, list[dict]]], hooks: list[str], d_sae: dict[str, int],
                   positions: tuple[str, ...] = POSITION_ROLES) -> list[Group]:
    """Every node of the spliced model in exactly one group (see the module docstring), hook by hook in forward
    order, then position, then variable groups (in the order of the task's variables), remainder, error.

    `labels` is load_feature_labels' {hook: {feature: [label, ...]}}, best label first; labels of hooks without an
    SAE here are ignored."""
    order = {v: i for i, v in enumerate(VARIABLES)}
    groups = []
    for h in hooks:
        cells: dict[tuple[int, str], list[int]] = {}
        for f, labs in sorted(labels.get(h, {}).items()):
            lab = labs[0]
            if not 0 <= f < d_sae[h]:
                raise UserError(f"feature {f} labelled at {h} is outside its SAE's {d_sae[h]} features: the labels are from other SAEs; "
                                "rerun `sae-ooc eval-sae` for these SAEs")
            if lab.get("position") not in positions or not lab.get("variable"):
                continue  # no claim about a position of the prompt
            cells.setdefault((positions.index(lab["position"]), str(lab["variable"])), []).append(f)
        for p in range(len(positions)):
            named = sorted(((v, fs) for (q, v), fs in cells.items() if q == p), key=lambda c: (order.get(c[0], len(order)), c[0]))
            groups += [Group("variable", v, h, p, tuple(fs), positions) for v, fs in named]
            taken = {f for _, fs in named for f in fs}
            rest = tuple(f for f in range(d_sae[h]) if f not in taken)
            if rest:
                groups.append(Group("remainder", REMAINDER, h, p, rest, positions))
            groups.append(Group("error", ERROR, h, p, (), positions))
    return groups


def group_masks(sp: Spliced, groups: list[Group]) -> NodeMask:
    """Each group's members as node masks with a leading group dim: acts {hook: [G, P, d_sae]}, errs {hook: [G, P]}."""
    G = len(groups)
    mask = NodeMask({h: torch.zeros(G, sp.n_pos, sp.d_sae[h], dtype=torch.bool) for h in sp.hooks},
                    {h: torch.zeros(G, sp.n_pos, dtype=torch.bool) for h in sp.hooks})
    for g, grp in enumerate(groups):
        if grp.kind == "error":
            mask.errs[grp.hook][g, grp.pos] = True
        else:
            mask.acts[grp.hook][g, grp.pos, list(grp.members)] = True
    return NodeMask({h: m.to(sp.device) for h, m in mask.acts.items()}, {h: m.to(sp.device) for h, m in mask.errs.items()})


def circuit_keep(masks: NodeMask, chosen: list[int]) -> tuple[dict, dict]:
    """Keep masks of the circuit made of groups `chosen` (indices into the masks' groups): their members. Ablation
    (`ablation.ablated_metric`) sets every other node inside its scope to its value and holds the rest at 0."""
    idx = torch.as_tensor(chosen, dtype=torch.long, device=next(iter(masks.acts.values())).device)
    return {h: m[idx].any(0) for h, m in masks.acts.items()}, {h: m[idx].any(0) for h, m in masks.errs.items()}


def active_members(masks: NodeMask, active: tuple[dict, dict], groups: list[Group]) -> torch.Tensor:
    """[n_pairs, n_groups]: how many of each group's members are active on each pair's clean prompt."""
    ka, ke = active
    cols = []
    for g, grp in enumerate(groups):
        if grp.kind == "error":
            cols.append(ke[grp.hook][:, grp.pos].float())
        else:
            cols.append((ka[grp.hook][:, grp.pos] & masks.acts[grp.hook][g, grp.pos]).sum(-1).float())
    return torch.stack(cols, 1)


def _where(mask: torch.Tensor, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """t with `values` where `mask` ([R, P] masks of error vectors widen over the vector)."""
    return torch.where(mask[..., None] if mask.dim() < t.dim() else mask, values.to(t.dtype), t)


def patched_run(sp: Spliced, tokens: torch.Tensor, mask: NodeMask, values: NodeValues, record: NodeValues | None = None) -> torch.Tensor:
    """Logits with the nodes in `mask` (per row, [R, P, ...]; hooks it does not name are left alone) set to `values`
    (per row). `record` collects what the hooks it already names computed, before any replacement."""

    def part(name: str):
        def fn(h, t):
            if record is not None and h in getattr(record, name):
                getattr(record, name)[h] = t
            m = getattr(mask, name).get(h)
            return None if m is None else _where(m, getattr(values, name)[h], t)

        return fn

    return sp.run(tokens, acts_fn=part("acts"), err_fn=part("errs"))


def _jobs(n_groups: int, n_pairs: int, max_rows: int):
    """(group index, pair index) rows, `max_rows` at a time."""
    g = torch.arange(n_groups).repeat_interleave(n_pairs)
    b = torch.arange(n_pairs).repeat(n_groups)
    for s in range(0, len(g), max_rows):
        yield g[s : s + max_rows], b[s : s + max_rows]


@torch.no_grad()
def group_effects(sp: Spliced, pairs: Pairs, groups: list[Group], metric: str, max_rows: int = 2048) -> torch.Tensor:
    """[n_pairs, n_groups]: m(clean run with every member of the group at its corrupted value) - m(clean run)."""
    logits, _ = sp.cache(pairs.clean)
    _, corr = sp.cache(pairs.corrupt)
    m_clean = pairs.metric(logits, metric).cpu()
    masks = group_masks(sp, groups)
    out = torch.zeros(len(pairs), len(groups))
    for g, b in _jobs(len(groups), len(pairs), max_rows):
        gd, bd = g.to(sp.device), b.to(sp.device)
        sub = pairs.subset(b)
        logits = patched_run(sp, sub.clean, masks.rows(gd), corr.rows(bd))
        out[b, g] = sub.metric(logits, metric).cpu() - m_clean[b]
    return out


def random_groups(groups: list[Group], chosen: list[int], d_sae: dict[str, int], rng: np.random.Generator) -> tuple[list[Group], float]:
    """The control for circuit `chosen`: as many random features as its feature groups hold at each (hook, position)
    (error groups kept), drawn without replacement from the features *outside* the circuit, at the same (hook,
    position) first; where too few are outside there, the rest at the hook's other positions, then at other hooks.
    A circuit that holds most features at its places (remainder groups) would otherwise be compared with itself.
    Returns the random groups (one per (hook, position) drawn at, errors last) and the share of drawn features at the
    circuit's own places; raises ValueError when the whole model has too few features outside the circuit."""
    picked = [groups[i] for i in chosen]
    inside: dict[tuple[str, int], set[int]] = {}
    for grp in picked:
        if grp.kind != "error":
            inside.setdefault((grp.hook, grp.pos), set()).update(grp.members)
    n_pos = max([g.pos for g in groups] + [0]) + 1
    free = {(h, p): [f for f in range(d_sae[h]) if f not in inside.get((h, p), ())] for h in d_sae for p in range(n_pos)}
    drawn: dict[tuple[str, int], list[int]] = {}
    at_place = total = 0
    for (h, p), members in inside.items():
        need = len(members)
        total += need
        # the cell itself, then the hook's other positions, then the other hooks' cells
        order = [(h, p)] + [(h, q) for q in range(n_pos) if q != p] + [c for c in free if c[0] != h]
        for cell in order:
            if need == 0:
                break
            pool = free[cell]
            k = min(need, len(pool))
            if k:
                take = set(rng.choice(pool, size=k, replace=False).tolist())
                free[cell] = [f for f in pool if f not in take]
                drawn.setdefault(cell, []).extend(take)
                at_place += k if cell == (h, p) else 0
                need -= k
        if need:
            held = sum(len(m) for m in inside.values())
            raise ValueError(f"too few features outside the circuit for a random control: it holds {held} of the "
                             f"{sum(d_sae.values()) * n_pos} (feature, position) nodes, so no random set of its size avoids it")
    positions = next((g.positions for g in picked), POSITION_ROLES)
    out = [Group("remainder", "random", h, p, tuple(sorted(fs)), positions) for (h, p), fs in drawn.items()]
    return out + [g for g in picked if g.kind == "error"], (at_place / total if total else 1.0)
