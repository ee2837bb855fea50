"""Stage `attribute`: rank every SAE node by its patching effect on the A→C answer.

Setup. A clean two-hop prompt (h, r1, r2) with answer t2 is paired with a corrupted prompt (h', r1, r2)
whose bridge and answer both differ (t2'); (h', r1, r2) is a known two-hop fact of any split. The metric
is logit(t2) - logit(t2') at the answer position (or log p(t2), or cross-entropy). The model runs with
every SAE spliced in with its error term (`sae_ooc.circuits.spliced`), so every feature and every error term at
every (hook, position) is a node.

The effect of a node is m(clean run with that node set to its corrupted value) - m(clean run):
  exact  one patched forward pass per (pair, node); nodes whose clean and corrupted values are equal
         have effect exactly 0 and are skipped, the rest run as big batches of patched rows.
  atp    attribution patching: gradient at the clean run times (corrupted - clean).
  ig     integrated gradients: the gradient averaged over `ig_steps` points on the straight line from
         the clean to the corrupted values of one hook's nodes, times (corrupted - clean).
  atp_verified  atp for every node, then exact patching of each pair's `verify_top` nodes with the
         largest |atp| (atp as a cheap filter, exact patching as the judge of what it keeps).

Outputs (RUN/attribution/):
  node_effects.safetensors  `effects.<hook>` [n_pos, d_sae + 1] mean over pairs (last column: error
                            node), `per_prompt.<hook>` [n_pairs, n_pos, d_sae + 1], the pairs
                            (`pairs.*`) and their metrics (`metric.clean`, `metric.corrupt`).
  node_effects.json         the top nodes with mean and per-prompt effects.
  validation.json (+ validation.png/.svg) with --validate: atp and ig against exact patching.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from sae_ooc.circuits.spliced import (
    NodeValues,
    RowPatches,
    Spliced,
    node_id,
    task_metric,
)
from sae_ooc.errors import UserError
from sae_ooc.io import read_json, save_tensors, sha256_file, sha256_json, write_json
from sae_ooc.stats import pearson, spearman
from sae_ooc.tasks.data import POSITION_ROLES, SEQ_LEN, load_task

STAGE = "attribute"
EFFECTS_FILE = "node_effects.safetensors"
EFFECTS_JSON = "node_effects.json"
VALIDATION_FILE = "validation.json"
PAIR_SPLITS = ("train", "test_id", "test_ood")


# prompt pairs -------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """Clean/corrupted A→C prompts; `answer` is t2 and `answer_corrupt` t2'."""

    clean: torch.Tensor  # [n, 3]
    corrupt: torch.Tensor  # [n, 3]
    answer_pos: torch.Tensor  # [n]
    answer: torch.Tensor
    answer_corrupt: torch.Tensor
    bridge: torch.Tensor
    bridge_corrupt: torch.Tensor

    def __len__(self) -> int:
        return int(self.answer.shape[0])

    def subset(self, idx) -> "Pairs":
        return Pairs(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def batches(self, size: int):
        for i in range(0, len(self), size):
            yield self.subset(slice(i, i + size))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {f"pairs.{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "Pairs":
        return cls(**{f.name: t[f"pairs.{f.name}"] for f in fields(cls)})

    def metric(self, logits: torch.Tensor, kind: str, corrupt: bool = False) -> torch.Tensor:
        target, foil = (self.answer_corrupt, self.answer) if corrupt else (self.answer, self.answer_corrupt)
        return task_metric(logits, self.answer_pos.to(logits.device), target.to(logits.device), foil.to(logits.device), kind)


def two_hop_facts(ds) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
    """{(r1, r2): [(h, bridge, answer), ...]} over the two-hop facts of every split."""
    facts: dict[tuple[int, int], set] = {}
    for split in PAIR_SPLITS:
        d = ds[split]
        for h, r1, r2, b, t, hop in zip(d["head"], d["r1"], d["r2"], d["bridge"], d["answer"], d["hop"]):
            if hop == 2:
                facts.setdefault((r1, r2), set()).add((h, b, t))
    return {k: sorted(v) for k, v in facts.items()}


def make_pairs(ds, vocab, split: str, n: int, seed: int, model=None, only_correct: bool = False, device: str = "cpu") -> Pairs:
    """Up to `n` clean/corrupted pairs from the two-hop prompts of `split` ('all' = every split),
    deterministic in `seed`. With `only_correct`, only clean prompts `model` answers correctly."""
    splits = PAIR_SPLITS if split == "all" else (split,)
    facts = two_hop_facts(ds)
    rows = []
    for s in splits:
        d = ds[s]
        rows += [(h, r1, r2, b, t) for h, r1, r2, b, t, hop in zip(d["head"], d["r1"], d["r2"], d["bridge"], d["answer"], d["hop"]) if hop == 2]
    if not rows:
        raise UserError(f"split '{split}' has no two-hop prompts to attribute; set attribution.split to one of train, test_id, test_ood, all")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    correct = _correct_mask(model, rows, device) if only_correct and model is not None else None
    chosen = []
    for i in order:
        h, r1, r2, b, t = rows[i]
        if correct is not None and not correct[i]:
            continue
        cands = [c for c in facts.get((r1, r2), []) if c[1] != b and c[2] != t]
        if not cands:
            continue
        h2, b2, t2 = cands[int(rng.integers(len(cands)))]
        chosen.append((h, r1, r2, b, t, h2, b2, t2))
        if len(chosen) == n:
            break
    if not chosen:
        why = " the model answers correctly" if correct is not None else ""
        raise UserError(
            f"no usable A→C prompt pairs in split '{split}' (need clean prompts{why} with a known fact (h', r1, r2) whose bridge and "
            f"answer differ); try --set attribution.split=all or --set attribution.only_correct=false"
        )
    c = torch.tensor(chosen, dtype=torch.long)
    return Pairs(
        clean=c[:, [0, 1, 2]], corrupt=c[:, [5, 1, 2]], answer_pos=torch.full((len(c),), 2, dtype=torch.long),
        answer=c[:, 4], answer_corrupt=c[:, 7], bridge=c[:, 3], bridge_corrupt=c[:, 6],
    )


@torch.no_grad()
def _correct_mask(model, rows, device: str, batch: int = 8192) -> np.ndarray:
    tokens = torch.tensor([r[:3] for r in rows], dtype=torch.long)
    answers = torch.tensor([r[4] for r in rows], dtype=torch.long)
    preds = torch.cat([model(tokens[i : i + batch].to(device))[:, -1].argmax(-1).cpu() for i in range(0, len(tokens), batch)])
    return (preds == answers).numpy()


# node effects ---------------------------------------------------------------------------------------
def _empty(sp: Spliced, n: int) -> dict[str, torch.Tensor]:
    P = SEQ_LEN
    return {h: torch.zeros(n, P, sp.d_sae[h] + 1) for h in sp.hooks}


def _deltas(clean: NodeValues, corr: NodeValues, h: str) -> tuple[torch.Tensor, torch.Tensor]:
    return corr.acts[h] - clean.acts[h], corr.errs[h] - clean.errs[h]


def effects_atp(sp: Spliced, pairs: Pairs, metric: str) -> dict[str, torch.Tensor]:
    """Attribution patching: one forward and backward pass on the clean prompts, one forward pass on the corrupted."""
    logits, leaves, _ = sp.run_leaves(pairs.clean)
    pairs.metric(logits, metric).sum().backward()
    _, corr = sp.cache(pairs.corrupt)
    out = {}
    for h in sp.hooks:
        da, de = corr.acts[h] - leaves.acts[h].detach(), corr.errs[h] - leaves.errs[h].detach()
        out[h] = torch.cat([leaves.acts[h].grad * da, (leaves.errs[h].grad * de).sum(-1, keepdim=True)], -1).cpu()
    return out


def effects_ig(sp: Spliced, pairs: Pairs, metric: str, steps: int = 10) -> dict[str, torch.Tensor]:
    """Integrated gradients, one hook at a time: its nodes move from clean to corrupted (midpoint rule)
    while the other spliced layers pass the gradient straight through."""
    _, clean = sp.cache(pairs.clean)
    _, corr = sp.cache(pairs.corrupt)
    B = len(pairs)
    alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).repeat_interleave(B).to(sp.device)[:, None, None]
    rep = pairs.subset(torch.arange(B).repeat(steps))
    out = {}
    for h in sp.hooks:
        da, de = _deltas(clean, corr, h)
        fa = (clean.acts[h].repeat(steps, 1, 1) + alphas * da.repeat(steps, 1, 1)).requires_grad_(True)
        fe = (clean.errs[h].repeat(steps, 1, 1) + alphas * de.repeat(steps, 1, 1)).requires_grad_(True)
        logits, _ = sp.run_straight_through(rep.clean, {h: (fa, fe)})
        rep.metric(logits, metric).sum().backward()
        ga = fa.grad.view(steps, B, *fa.shape[1:]).mean(0)
        ge = fe.grad.view(steps, B, *fe.shape[1:]).mean(0)
        out[h] = torch.cat([ga * da, (ge * de).sum(-1, keepdim=True)], -1).cpu()
    return out


def _changed_jobs(sp: Spliced, clean: NodeValues, corr: NodeValues) -> torch.Tensor:
    """[n_jobs, 4] rows (hook index, pair, pos, feature or -1 for the error node) of every node whose
    corrupted value differs from its clean value (the others have effect exactly 0)."""
    jobs = []
    for hi, h in enumerate(sp.hooks):
        b, p, i = (corr.acts[h] != clean.acts[h]).nonzero(as_tuple=True)
        jobs.append(torch.stack([torch.full_like(b, hi), b, p, i], 1).cpu())
        b, p = (corr.errs[h] != clean.errs[h]).any(-1).nonzero(as_tuple=True)
        jobs.append(torch.stack([torch.full_like(b, hi), b, p, torch.full_like(b, -1)], 1).cpu())
    return torch.cat(jobs)


def _job_columns(sp: Spliced, jobs: torch.Tensor):
    """Per hook: (hook, row mask of its jobs, pair, pos, column in the [.., d_sae + 1] effect tensors)."""
    for hi, h in enumerate(sp.hooks):
        sel = jobs[:, 0] == hi
        yield h, sel, jobs[sel, 1], jobs[sel, 2], torch.where(jobs[sel, 3] >= 0, jobs[sel, 3], sp.d_sae[h])


@torch.no_grad()
def _patch_jobs(sp: Spliced, pairs: Pairs, jobs: torch.Tensor, clean: NodeValues, corr: NodeValues, m_clean: torch.Tensor,
                metric: str, out: dict[str, torch.Tensor], chunk: int, progress: bool) -> None:
    """out[hook][pair, pos, feature] = exact effect of each job, `chunk` patched clean rows at a time."""
    fast = sp.decode_is_stateless
    for start in tqdm(range(0, len(jobs), chunk), desc="exact patching", unit="batch", disable=not progress, leave=False):
        job = jobs[start : start + chunk]
        sub = pairs.subset(job[:, 1])
        logits = sp.run_deltas(sub.clean, _deltas_of(sp, job, clean, corr)) if fast else sp.run_patched(sub.clean, _patches_of(sp, job, corr))
        m = sub.metric(logits, metric).cpu()
        for h, sel, b, p, col in _job_columns(sp, job):
            out[h][b, p, col] = m[sel] - m_clean[b]


@torch.no_grad()
def effects_exact(sp: Spliced, pairs: Pairs, metric: str, chunk: int = 4096, progress: bool = False) -> dict[str, torch.Tensor]:
    """Exact activation patching of every node whose corrupted value differs from its clean value
    (the others have effect exactly 0), as batches of `chunk` patched clean rows."""
    logits, clean = sp.cache(pairs.clean)
    _, corr = sp.cache(pairs.corrupt)
    m_clean = pairs.metric(logits, metric).cpu()
    out = _empty(sp, len(pairs))
    _patch_jobs(sp, pairs, _changed_jobs(sp, clean, corr), clean, corr, m_clean, metric, out, chunk, progress)
    return out


def effects_atp_verified(sp: Spliced, pairs: Pairs, metric: str, verify_top: int, chunk: int = 4096,
                         progress: bool = False) -> dict[str, torch.Tensor]:
    """atp for every node, then exact patching of each pair's `verify_top` nodes with the largest |atp|
    effect, whose atp estimate is replaced by the exact effect (AtP as a filter, exact patching as the
    judge: a node atp overrates is corrected; one it underrates below the shortlist keeps its atp value)."""
    out = effects_atp(sp, pairs, metric)
    with torch.no_grad():
        logits, clean = sp.cache(pairs.clean)
        _, corr = sp.cache(pairs.corrupt)
        m_clean = pairs.metric(logits, metric).cpu()
        jobs = _changed_jobs(sp, clean, corr)
        score = torch.zeros(len(jobs))
        for h, sel, b, p, col in _job_columns(sp, jobs):
            score[sel] = out[h][b, p, col].abs()
        # each pair's top `verify_top` jobs by |atp|: sort by (pair, -score), keep the first k of each pair
        order = torch.argsort(-score, stable=True)
        order = order[torch.argsort(jobs[order, 1], stable=True)]
        pair_of = jobs[order, 1]
        first = torch.searchsorted(pair_of, pair_of, right=False)
        rank = torch.arange(len(order)) - first
        chosen = jobs[order[rank < verify_top]]
        _patch_jobs(sp, pairs, chosen, clean, corr, m_clean, metric, out, chunk, progress)
    return out


def _patches_of(sp: Spliced, job: torch.Tensor, corr: NodeValues) -> RowPatches:
    """Row r of the batch patches node job[r] = (hook index, pair, pos, feature or -1) to its corrupted value."""
    patches = RowPatches()
    rows = torch.arange(len(job))
    for hi, h in enumerate(sp.hooks):
        sel = job[:, 0] == hi
        feat, err = sel & (job[:, 3] >= 0), sel & (job[:, 3] < 0)
        if feat.any():
            b, p, i = job[feat, 1], job[feat, 2], job[feat, 3]
            patches.add_feats(h, rows[feat], p, i, corr.acts[h][b, p, i].cpu())
        if err.any():
            b, p = job[err, 1], job[err, 2]
            patches.add_errs(h, rows[err], p, corr.errs[h][b, p].cpu())
    return patches


def _deltas_of(sp: Spliced, job: torch.Tensor, clean: NodeValues, corr: NodeValues) -> dict:
    """The same patches as _patches_of, as vectors added to the original model's activations."""
    deltas = {}
    rows = torch.arange(len(job))
    for hi, h in enumerate(sp.hooks):
        sel = job[:, 0] == hi
        feat, err = sel & (job[:, 3] >= 0), sel & (job[:, 3] < 0)
        parts = []
        if feat.any():
            b, p, i = job[feat, 1], job[feat, 2], job[feat, 3]
            dev = clean.acts[h].device
            vec = sp.feature_deltas(h, clean.acts[h][b.to(dev), p.to(dev)], i, corr.acts[h][b.to(dev), p.to(dev), i.to(dev)])
            parts.append((rows[feat], p, vec))
        if err.any():
            b, p = job[err, 1], job[err, 2]
            dev = clean.errs[h].device
            parts.append((rows[err], p, corr.errs[h][b.to(dev), p.to(dev)] - clean.errs[h][b.to(dev), p.to(dev)]))
        if parts:
            deltas[h] = tuple(torch.cat([q[k].to(parts[0][2].device) if k == 2 else q[k] for q in parts]) for k in range(3))
    return deltas


def node_effects(sp: Spliced, pairs: Pairs, method: str, metric: str, batch_size: int = 256, ig_steps: int = 10,
                 exact_batch_size: int = 4096, progress: bool = True, verify_top: int = 96) -> dict[str, torch.Tensor]:
    """Per-pair effects {hook: [n_pairs, n_pos, d_sae + 1]} of every node, by `method`."""
    parts = []
    batches = list(pairs.batches(batch_size))
    for b in tqdm(batches, desc=f"attribute ({method})", unit="batch", disable=not progress or len(batches) < 2):
        if method == "atp":
            parts.append(effects_atp(sp, b, metric))
        elif method == "ig":
            parts.append(effects_ig(sp, b, metric, ig_steps))
        elif method == "exact":
            parts.append(effects_exact(sp, b, metric, exact_batch_size, progress=progress))
        elif method == "atp_verified":
            parts.append(effects_atp_verified(sp, b, metric, verify_top, exact_batch_size, progress=progress))
        else:
            raise UserError(f"unknown attribution method '{method}'; use one of exact, atp, ig, atp_verified")
    return {h: torch.cat([p[h] for p in parts]) for h in sp.hooks}


@torch.no_grad()
def pair_metrics(sp: Spliced, pairs: Pairs, metric: str, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The metric on the clean and on the corrupted prompts (both against t2 vs t2')."""
    clean, corrupt = [], []
    for b in pairs.batches(batch_size):
        clean.append(b.metric(sp.model(b.clean.to(sp.device)), metric).cpu())
        corrupt.append(b.metric(sp.model(b.corrupt.to(sp.device)), metric).cpu())
    return torch.cat(clean), torch.cat(corrupt)


# files ----------------------------------------------------------------------------------------------
@dataclass
class NodeEffects:
    hooks: list[str]
    d_sae: dict[str, int]
    method: str
    metric: str
    per_prompt: dict[str, torch.Tensor]  # hook -> [n, P, d_sae + 1]
    pairs: Pairs
    metric_clean: torch.Tensor
    metric_corrupt: torch.Tensor

    @property
    def mean(self) -> dict[str, torch.Tensor]:
        return {h: e.mean(0) for h, e in self.per_prompt.items()}

    def ranked(self) -> list[tuple[str, int, int | None, float]]:
        """Every node with a nonzero mean effect as (hook, pos, feature or None, mean effect), largest |effect| first."""
        out = []
        for h, m in self.mean.items():
            p, i = m.nonzero(as_tuple=True)
            for pp, ii, v in zip(p.tolist(), i.tolist(), m[p, i].tolist()):
                out.append((h, pp, None if ii == self.d_sae[h] else ii, v))
        return sorted(out, key=lambda r: (-abs(r[3]), self.hooks.index(r[0]), r[1], -1 if r[2] is None else r[2]))


def save_node_effects(path: Path, ne: NodeEffects) -> None:
    tensors = {f"effects.{h}": e for h, e in ne.mean.items()}
    tensors.update({f"per_prompt.{h}": e for h, e in ne.per_prompt.items()})
    tensors.update(ne.pairs.to_tensors())
    tensors["metric.clean"], tensors["metric.corrupt"] = ne.metric_clean, ne.metric_corrupt
    meta = {"hooks": ne.hooks, "d_sae": ne.d_sae, "method": ne.method, "metric": ne.metric, "positions": list(POSITION_ROLES),
            "layout": "effects.<hook>: [n_pos, d_sae + 1], last column = SAE error node; per_prompt.<hook>: [n_pairs, n_pos, d_sae + 1]"}
    save_tensors(path, tensors, metadata={"sae_ooc": json.dumps(meta)})


def load_node_effects(path: Path) -> NodeEffects:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no node effects at {path}; run `sae-ooc attribute --run {path.parent.parent}` first")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["sae_ooc"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    return NodeEffects(
        hooks=meta["hooks"], d_sae={h: int(v) for h, v in meta["d_sae"].items()}, method=meta["method"], metric=meta["metric"],
        per_prompt={h: t[f"per_prompt.{h}"] for h in meta["hooks"]}, pairs=Pairs.from_tensors(t),
        metric_clean=t["metric.clean"], metric_corrupt=t["metric.corrupt"],
    )


def effects_summary(ne: NodeEffects, vocab, top: int) -> dict:
    ranked = ne.ranked()
    nodes = []
    for rank, (h, p, i, v) in enumerate(ranked[:top]):
        col = ne.d_sae[h] if i is None else i
        pp = ne.per_prompt[h][:, p, col]
        nodes.append({
            "rank": rank + 1, "node": node_id(h, p, i), "hook": h, "position": p, "role": POSITION_ROLES[p],
            "feature": "error" if i is None else i, "mean_effect": v, "std_effect": float(pp.std()) if len(pp) > 1 else 0.0,
            "per_prompt": [round(x, 6) for x in pp.tolist()],
        })
    total = ne.metric_corrupt - ne.metric_clean
    return {
        "method": ne.method, "metric": ne.metric, "n_pairs": len(ne.pairs), "hooks": ne.hooks, "positions": list(POSITION_ROLES),
        "metric_clean_mean": float(ne.metric_clean.mean()), "metric_corrupt_mean": float(ne.metric_corrupt.mean()),
        "total_effect_mean": float(total.mean()),
        "sum_of_node_effects_mean": float(sum(e.sum((1, 2)) for e in ne.per_prompt.values()).mean()),
        "n_nonzero_nodes": len(ranked),
        "pairs": [{"clean": vocab.decode(c), "corrupt": vocab.decode(k), "answer": vocab.name(int(a)), "answer_corrupt": vocab.name(int(a2))}
                  for c, k, a, a2 in zip(ne.pairs.clean, ne.pairs.corrupt, ne.pairs.answer, ne.pairs.answer_corrupt)],
        "nodes": nodes,
    }


# validation -------------------------------------------------------------------------------------------
def compare_effects(exact: np.ndarray, approx: np.ndarray, top: int = 50) -> dict:
    """How well `approx` ranks nodes like `exact` (1-d arrays over the same active nodes)."""
    order_e = np.argsort(-np.abs(exact), kind="stable")
    order_a = np.argsort(-np.abs(approx), kind="stable")
    top_idx = order_e[:top]
    res = {
        "spearman_all": spearman(exact, approx), "pearson_all": pearson(exact, approx),
        f"spearman_top{top}": spearman(exact[top_idx], approx[top_idx]),
        "max_abs_error": float(np.abs(exact - approx).max()) if len(exact) else 0.0,
    }
    for k in (10, top):
        k2 = min(k, len(exact))
        res[f"top{k}_overlap"] = len(set(order_e[:k2]) & set(order_a[:k2])) / max(k2, 1)
    return res


APPROXIMATIONS = ("atp", "ig", "atp_verified")


def validate_methods(sp: Spliced, pairs: Pairs, metric: str, ig_steps: int, exact_batch_size: int, batch_size: int,
                     trust: float, top: int = 50, verify_top: int = 96) -> tuple[dict, dict[str, np.ndarray]]:
    """Compare atp, ig and atp_verified with exact patching on `pairs`: mean effects over the pairs, over
    every node that changes between clean and corrupted in any pair."""
    timing, eff = {}, {}
    for method in ("exact",) + APPROXIMATIONS:
        t0 = time.perf_counter()
        eff[method] = node_effects(sp, pairs, method, metric, batch_size, ig_steps, exact_batch_size, progress=False, verify_top=verify_top)
        timing[method] = time.perf_counter() - t0
    active = _active_mask(sp, pairs, batch_size)
    flat = {m: torch.cat([e[h].mean(0)[active[h]] for h in sp.hooks]).numpy() for m, e in eff.items()}
    flat_pp = {m: torch.cat([e[h][:, active[h]].flatten() for h in sp.hooks]).numpy() for m, e in eff.items()}
    report = {"n_pairs": len(pairs), "n_active_nodes": int(len(flat["exact"])), "top": top, "trust_spearman": trust,
              "timing_s": timing, "verify_top": verify_top, "methods": {}}
    for m in APPROXIMATIONS:
        r = compare_effects(flat["exact"], flat[m], top)
        r["spearman_per_prompt"] = spearman(flat_pp["exact"], flat_pp[m])
        r["trusted"] = bool(r[f"spearman_top{top}"] >= trust)
        report["methods"][m] = r
    return report, flat


@torch.no_grad()
def _active_mask(sp: Spliced, pairs: Pairs, batch_size: int) -> dict[str, torch.Tensor]:
    """{hook: [P, d_sae + 1] bool}: nodes whose clean and corrupted values differ in some pair."""
    act = {h: torch.zeros(SEQ_LEN, sp.d_sae[h] + 1, dtype=torch.bool) for h in sp.hooks}
    for b in pairs.batches(batch_size):
        _, clean = sp.cache(b.clean)
        _, corr = sp.cache(b.corrupt)
        for h in sp.hooks:
            act[h][:, :-1] |= (corr.acts[h] != clean.acts[h]).any(0).cpu()
            act[h][:, -1] |= (corr.errs[h] != clean.errs[h]).any(-1).any(0).cpu()
    return act


def plot_validation(flat: dict[str, np.ndarray], report: dict, stem: Path) -> None:
    from sae_ooc.viz.plots import plt, save_figure

    methods = [m for m in APPROXIMATIONS if m in report["methods"]]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 4.2), squeeze=False)
    x = flat["exact"]
    lim = float(np.abs(np.concatenate(list(flat.values()))).max() or 1.0) * 1.05
    for ax, m in zip(axes[0], methods):
        r = report["methods"][m]
        ax.scatter(x, flat[m], s=8, alpha=0.6)
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("exact patching effect")
        ax.set_ylabel(f"{m} estimate")
        top = report["top"]
        ax.set_title(f"{m}: Spearman {r['spearman_all']:.3f} (top {top}: {r[f'spearman_top{top}']:.3f})", fontsize=9)
    fig.suptitle(f"Node effects on {report['n_pairs']} pairs, {report['n_active_nodes']} active nodes", fontsize=10)
    save_figure(fig, stem)


# the stage ------------------------------------------------------------------------------------------
def saes_fingerprint(saes_root: Path) -> dict[str, str]:
    """sha256 of every file of every saved SAE: the SAEs' identity, whichever stage wrote them."""
    root = Path(saes_root)
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".json", ".safetensors")
            and p.name != "metrics.json" and "checkpoints" not in p.parts}


def load_spliced(run, device: str | None = None) -> Spliced:
    from sae_ooc.models.hooked import load_model
    from sae_ooc.saes.store import load_saes

    device = device or getattr(run, "device", "cpu")
    return Spliced(load_model(run.model_dir, device), load_saes(run.saes_dir, device))


def _fingerprint(run) -> str:
    a = run.cfg.attribution
    keys = ("method", "metric", "split", "n_pairs", "only_correct", "ig_steps", "top_json", "seed")
    if a.method == "atp_verified":
        keys += ("verify_top",)
    return run.stage_fingerprint((), ("train",), extra={"attribution": {k: getattr(a, k) for k in keys}, "saes": saes_fingerprint(run.saes_dir)})


def run_attribute(run, force: bool = False, validate: bool = False, device: str | None = None) -> bool:
    """Stage `attribute`. Returns False when the node effects were up to date (validation still runs if asked)."""
    a = run.cfg.attribution
    out = run.attribution_dir
    fp = _fingerprint(run)
    sp = None
    done = not force and run.is_done(STAGE, fp) and (out / EFFECTS_FILE).exists()
    if not done:
        sp = load_spliced(run, device)
        ds, vocab = load_task(run.data_dir)
        pairs = make_pairs(ds, vocab, a.split, a.n_pairs, a.seed, sp.model, a.only_correct, sp.device)
        t0 = time.perf_counter()
        per_prompt = node_effects(sp, pairs, a.method, a.metric, a.batch_size, a.ig_steps, a.exact_batch_size, verify_top=a.verify_top)
        seconds = time.perf_counter() - t0
        m_clean, m_corrupt = pair_metrics(sp, pairs, a.metric)
        ne = NodeEffects(sp.hooks, sp.d_sae, a.method, a.metric, per_prompt, pairs, m_clean, m_corrupt)
        save_node_effects(out / EFFECTS_FILE, ne)
        summary = effects_summary(ne, vocab, a.top_json)
        summary["seconds"] = seconds
        write_json(out / EFFECTS_JSON, summary)
        run.mark_done(STAGE, fp, method=a.method, n_pairs=len(pairs), seconds=round(seconds, 3),
                      metric_clean=summary["metric_clean_mean"], total_effect=summary["total_effect_mean"])
    vfp = sha256_json({"effects": fp, "pairs": a.validate_pairs, "trust": a.trust_spearman, "batch": a.batch_size, "verify_top": a.verify_top})
    if validate and (force or not done or _read_fingerprint(out / VALIDATION_FILE) != vfp):
        sp = sp or load_spliced(run, device)
        ne = load_node_effects(out / EFFECTS_FILE)
        sample = ne.pairs.subset(slice(0, a.validate_pairs))
        report, flat = validate_methods(sp, sample, a.metric, a.ig_steps, a.exact_batch_size, a.batch_size, a.trust_spearman,
                                        verify_top=a.verify_top)
        report["fingerprint"] = vfp
        plot_validation(flat, report, out / "validation")
        write_json(out / VALIDATION_FILE, report)
    return not done


def _read_fingerprint(path: Path) -> str | None:
    try:
        return read_json(path).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
