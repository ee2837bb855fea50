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
from sae_ooc.tasks.data import split_tensors
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


def _ridge_codes(x_fit: torch.Tensor, y_fit: torch.Tensor, x_ev: torch.Tensor, codes: torch.Tensor, ridge: float) -> torch.Tensor:
    """Entity predicted for each row of x_ev: ridge regression of the standardised activations onto the unit code of each
    fit row's label, then the entity whose code is nearest (cosine). Regressing onto codes, not classes, lets a probe
    name an entity it never saw as a label: the only way a probe fitted on some b's can read a_r(b) of others, since
    r is a random permutation."""
    mu, sd = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)
    a, b = (x_fit - mu) / sd, (x_ev - mu) / sd
    a1 = torch.cat([a, torch.ones(len(a), 1)], 1).double()
    W = torch.linalg.solve(a1.T @ a1 + ridge * len(a) * torch.eye(a1.shape[1], dtype=torch.double), a1.T @ codes[y_fit].double())
    pred = torch.cat([b, torch.ones(len(b), 1)], 1).double() @ W
    return (torch.nn.functional.normalize(pred, dim=-1) @ codes.double().T).argmax(-1)


@torch.no_grad()
def answer_at_head(models: dict[str, list], ds, vocab, directions: dict[str, list[int]], hooks: list[str], seed: int,
                   ridge: float = 0.1, held_fraction: float = 0.2) -> dict:
    """Is the answer of each direction's one-fact questions (h, r) -> t readable at h's position, and at the answer position?
    (The reversal family: at b's token in (b, r⁻¹), is a there?) Per direction, relation and position, a ridge probe onto
    the trained model's unembedding of the answer (`_ridge_codes`) is fitted on the train split's questions and scored on
    the held-out split's (test_id: the held-out inverses) where the direction has some, else on the train questions of a
    seeded `held_fraction` of head entities. Controls: the same probe on shuffled fit labels (within each relation), on
    random-init models of the architecture (`models["random_model"]`), and chance 1 / n_entities."""
    model = models["trained"][0]
    E = vocab.n_entities
    codes = torch.nn.functional.normalize(model.W_U[:, :E].T.float().cpu(), dim=-1)  # [E, d_model]: toy answers are entity tokens
    lay = vocab.layout
    positions = {"head": lay.index("head"), "answer": lay.answer_pos}
    g = torch.Generator().manual_seed(seed)
    held_heads = set(torch.randperm(E, generator=g)[: max(1, int(round(held_fraction * E)))].tolist())
    out = {"method": "ridge onto the answer's unembedding direction, nearest entity by cosine; per relation, pooled",
           "hooks": hooks, "positions": list(positions), "chance": 1 / E, "directions": {}}
    tr = split_tensors(ds["train"], vocab)
    te = split_tensors(ds["test_id"], vocab)
    for name, rels in directions.items():
        rel = torch.tensor(rels)
        fit = tr.subset(((tr.hop == lay.question_hop) & torch.isin(tr.variable("r1"), rel)).nonzero().squeeze(1))
        ev = te.subset(((te.hop == lay.question_hop) & torch.isin(te.variable("r1"), rel)).nonzero().squeeze(1))
        scored_on = "test_id"
        if len(ev) == 0:  # no held-out questions of this direction: hold out some head entities' questions
            out_h = torch.tensor([int(h) in held_heads for h in fit.variable("head")])
            ev, fit = fit.subset(out_h.nonzero().squeeze(1)), fit.subset((~out_h).nonzero().squeeze(1))
            scored_on = f"train questions of {len(held_heads)} held-out head entities"
        y_fit, y_ev = fit.variable("answer"), ev.variable("answer")
        r_fit, r_ev = fit.variable("r1"), ev.variable("r1")
        shuffled = y_fit.clone()
        for r in rels:
            at = (r_fit == r).nonzero().squeeze(1)
            shuffled[at] = y_fit[at[torch.randperm(len(at), generator=g)]]
        rec = {"scored_on": scored_on, "n_fit": len(fit), "n_heldout": len(ev), "acc": {}, "shuffled_acc": {}, "random_model_acc": {}}
        acts = {kind: [_acts(m, fit.tokens, ev.tokens, hooks) for m in ms] for kind, ms in models.items() if ms}
        for h in hooks:
            for key in ("acc", "shuffled_acc", "random_model_acc"):
                rec[key][h] = {}
            for pname, p in positions.items():
                def score(xf, xe, yf):
                    right = 0
                    for r in rels:
                        f, e = r_fit == r, r_ev == r
                        if f.sum() >= 2 and e.any():
                            right += int((_ridge_codes(xf[f][:, p], yf[f], xe[e][:, p], codes, ridge) == y_ev[e]).sum())
                    return right / len(ev) if len(ev) else None

                xf, xe = acts["trained"][0][h]
                rec["acc"][h][pname] = score(xf, xe, y_fit)
                rec["shuffled_acc"][h][pname] = score(xf, xe, shuffled)
                rnd = [score(*a[h], y_fit) for a in acts.get("random_model", [])]
                rec["random_model_acc"][h][pname] = max(rnd) if rnd and None not in rnd else None
        out["directions"][name] = rec
    return out


def _acts(model, tok_fit: torch.Tensor, tok_ev: torch.Tensor, hooks: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{hook: (fit activations, held-out activations)} [n, seq, d] of `model` (one batch each: a few thousand short rows)."""
    out = {}
    caches = [model.run_with_cache(t.to(model.cfg.device), names_filter=lambda n: n in hooks)[1] for t in (tok_fit, tok_ev)]
    for h in hooks:
        out[h] = tuple(c[h].float().cpu() for c in caches)
    return out
