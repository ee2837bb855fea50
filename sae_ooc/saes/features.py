"""What an SAE feature is about: its ground-truth label, its top-activating task prompts, and the
answer tokens its decoder direction promotes.

Labels come from the SAE evaluation (stage eval-sae: `RUN/sae_eval/<hook>/metrics.json`, key `feature_labels`:
the task variable - head, r1, r2, bridge or answer - and value a feature detects, with its AUROC). Promoted
tokens follow the direct path from the decoder direction to the unembedding: the direction is
carried into the residual stream (through W_O or W_out for hook_z and MLP hooks), centred and scaled
like ln_final does on average over the task prompts, and multiplied by W_U; only entity tokens count,
since every answer is an entity.

A feature's description is read from its DESCRIBE_EXAMPLES largest activations whatever number of them is
shown, so it never changes with how many examples a view asks for. `FeatureStats` holds those activations
and promoted tokens as tensors, for a few features (the circuit's nodes) or every feature of every hook
(`sae-ooc query` caches them once per run: sae_ooc.query.cache).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sae_ooc.activations.answers import final_scale
from sae_ooc.io import read_json
from sae_ooc.saes.store import METRICS_FILE
from sae_ooc.tasks.data import SPLITS, first_tokens
from sae_ooc.tasks.rows import columns

DESCRIBE_EXAMPLES = 10  # top activations a description is read from (and the most a view can show)
PROMOTED_TOKENS = 5


def load_feature_labels(sae_eval_dir: str | Path) -> dict[str, dict[int, list[dict]]]:
    """{hook: {feature: [label, ...]}}, best AUROC first, from eval-sae's outputs in `sae_eval_dir` (a run's
    `run.sae_eval_dir`, RUN/sae_eval/); empty where the SAE evaluation has not run."""
    out: dict[str, dict[int, list[dict]]] = {}
    root = Path(sae_eval_dir)
    for path in sorted(root.glob(f"*/{METRICS_FILE}")) if root.is_dir() else []:
        try:
            labels = read_json(path).get("feature_labels") or []
        except (ValueError, AttributeError):
            continue
        per: dict[int, list[dict]] = {}
        for lab in labels:
            if isinstance(lab, dict) and "feature" in lab:
                per.setdefault(int(lab["feature"]), []).append(lab)
        for v in per.values():
            v.sort(key=lambda lab: -float(lab.get("auroc") or 0.0))
        out[path.parent.name] = per
    return out


def label_text(lab: dict, pos_prefix: str = "") -> str:
    """'bridge=e12@r1' for the bridge entity e12 detected at position r1 (the position always shows: a
    feature labelled at one position may fire at others, where the label makes no claim). `pos_prefix`
    ('pos:') tells positions from relation tokens where both are on screen: 'r1=r3@pos:r1'."""
    var, val, pos = lab.get("variable", "?"), lab.get("value", "?"), lab.get("position")
    return f"{var}={val}" + (f"@{pos_prefix}{pos}" if pos else "")


@dataclass
class Examples:
    """Every distinct prompt of the task (train first, then the held-out splits), right-padded to the longest
    (at least the layout's prompt length),
    with its ground truth: answer, bridge (-1 for atomic facts) and the first split it is in."""

    tokens: torch.Tensor  # [N, W]
    lengths: torch.Tensor  # [N]
    answer: torch.Tensor  # [N] the answer (the first token of its name in a natural-language task)
    bridge: torch.Tensor  # [N] the bridge, -1 for none (likewise)
    split: torch.Tensor  # [N], index into SPLITS

    @classmethod
    def from_dataset(cls, ds, vocab) -> "Examples":
        seen, rows = set(), []
        for s, name in enumerate(SPLITS):
            d = ds[name]
            for ids, a, b in zip(*columns(d, "input_ids", "answer", "bridge")):
                if tuple(ids) not in seen:
                    seen.add(tuple(ids))
                    rows.append((list(ids), len(ids), a, b, s))
        ids, lengths, answer, bridge, split = zip(*rows) if rows else ((),) * 5
        W = max([vocab.layout.n_pos] + [len(r) for r in ids])
        tokens = torch.tensor([r + [vocab.pad_id] * (W - len(r)) for r in ids], dtype=torch.long).reshape(-1, W)
        lengths, answer, bridge, split = (torch.tensor(c, dtype=torch.long) for c in (lengths, answer, bridge, split))
        # what the model's logits are read against: the names' first tokens
        return cls(tokens, lengths, first_tokens(vocab, answer), first_tokens(vocab, bridge), split)

    def find(self, ids: list[int]) -> int | None:
        """The row of prompt `ids`, None when it is not a prompt of the task."""
        if len(ids) > self.tokens.shape[1]:
            return None
        row = torch.tensor(ids + [-1] * (self.tokens.shape[1] - len(ids)))
        hit = ((self.tokens == row) | (row < 0)).all(1) & (self.lengths == len(ids))
        return int(hit.nonzero()[0]) if hit.any() else None

    def prompt(self, vocab, e: int) -> str:
        return vocab.decode(self.tokens[e, : self.lengths[e]])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"examples.{k}": getattr(self, k) for k in ("tokens", "lengths", "answer", "bridge", "split")}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "Examples":
        return cls(*(t[f"examples.{k}"] for k in ("tokens", "lengths", "answer", "bridge", "split")))


@torch.no_grad()
def top_activations(sp, tokens: torch.Tensor, lengths: torch.Tensor, wanted: dict[str, list[int]], k: int = 5,
                    batch: int = 4096) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{hook: (values [k, F], flat indices [k, F])} for the features `wanted[hook]` (F of them, in that order):
    the k largest activations over the examples (padding excluded), largest first; a flat index is
    example * W + position (W = tokens.shape[1])."""
    best: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    P = tokens.shape[1]
    for s in range(0, len(tokens), batch):
        _, vals = sp.cache(tokens[s : s + batch])
        valid = (torch.arange(P)[None] < lengths[s : s + batch, None]).to(sp.device)
        for h, feats in wanted.items():
            if not feats:
                continue
            a = vals.acts[h][:, :, feats].masked_fill(~valid[..., None], float("-inf")).reshape(-1, len(feats))
            flat_idx = torch.arange(a.shape[0], device=a.device) + s * P
            v, i = a.topk(min(k, a.shape[0]), dim=0)
            idx = flat_idx[i]
            if h in best:
                v, j = torch.cat([best[h][0], v]).topk(min(k, len(best[h][0]) + len(v)), dim=0)
                idx = torch.cat([best[h][1], idx]).gather(0, j)
            best[h] = (v, idx)
    return {h: (v.cpu(), i.cpu()) for h, (v, i) in best.items()}


@torch.no_grad()
def to_residual(model, hook: str, directions: torch.Tensor) -> torch.Tensor | None:
    """Directions at `hook` as residual-stream directions, or None where there is no linear route."""
    parts = hook.split(".")
    last = parts[-1]
    if last in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "hook_embed", "hook_pos_embed"):
        return directions
    layer = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
    if layer is None:
        return None
    block = model.blocks[layer]
    if last == "hook_z":
        W_O = block.attn.W_O  # [n_heads, d_head, d_model]
        return torch.einsum("fhd,hdm->fm", directions.reshape(len(directions), *W_O.shape[:2]), W_O)
    if last in ("hook_post",) and parts[-2] == "mlp":
        return directions @ block.mlp.W_out
    return None


@torch.no_grad()
def promoted_tokens(sp, hook: str, feats: list[int], entities: int | list[int], k: int = PROMOTED_TOKENS,
                    scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(entity token ids [F, k], logit contribution per unit activation [F, k]) along the direct path; [F, 0]
    where the hook has no linear route to the logits. `entities`: the answer tokens to rank (an int E: tokens
    0..E-1, the toy's entities; a natural-language task: its names' first tokens, `entity_tokens(vocab)`)."""
    logits = direct_logits(sp.base, hook, sp.saes[hook].W_dec[feats].float(), scale) if feats else None
    if logits is None:
        return torch.zeros(len(feats), 0, dtype=torch.long), torch.zeros(len(feats), 0)
    if isinstance(entities, int):
        v, i = logits[:, :entities].topk(min(k, entities), dim=-1)
        return i.cpu(), v.float().cpu()
    cand = torch.tensor(entities, dtype=torch.long, device=logits.device)
    v, i = logits[:, cand].topk(min(k, len(cand)), dim=-1)
    return cand[i].cpu(), v.float().cpu()


def entity_tokens(vocab) -> int | list[int]:
    """What `promoted_tokens` ranks: the toy's entities are tokens 0..E-1; a natural task's, its names' first tokens."""
    if vocab.layout.render == "toy":
        return vocab.n_entities
    return sorted({vocab.answer_token_ids(e)[0] for e in range(vocab.n_entities)})


@torch.no_grad()
def direct_logits(model, hook: str, directions: torch.Tensor, scale: float = 1.0) -> torch.Tensor | None:
    """[F, d_vocab] logit change per unit activation of each direction along the direct path (carried into the
    residual stream, centred and scaled like ln_final on average, times W_U); None where there is no linear route."""
    d = to_residual(model, hook, directions)
    if d is None:
        return None
    if model.cfg.normalization_type in ("LN", "LNPre"):
        d = d - d.mean(-1, keepdim=True)
    w = getattr(model.ln_final, "w", None)
    if w is not None:
        d = d * w
    return (d / scale) @ model.W_U


@dataclass
class FeatureStats:
    """Per hook, for the features `feats[hook]`: their largest activations over the task examples
    (top_val/top_idx [k, F], see top_activations) and the entities their decoder promotes (prom_ids/prom_val [F, T])."""

    feats: dict[str, torch.Tensor]
    top_val: dict[str, torch.Tensor]
    top_idx: dict[str, torch.Tensor]
    prom_ids: dict[str, torch.Tensor]
    prom_val: dict[str, torch.Tensor]
    _col: dict = field(default_factory=dict, repr=False)

    FIELDS = ("feats", "top_val", "top_idx", "prom_ids", "prom_val")

    @classmethod
    def compute(cls, sp, examples: Examples, wanted: dict[str, list[int]], n_entities: int | list[int], k: int = DESCRIBE_EXAMPLES,
                k_tokens: int = PROMOTED_TOKENS) -> "FeatureStats":
        wanted = {h: f for h, f in wanted.items() if f}
        tops = top_activations(sp, examples.tokens, examples.lengths, wanted, k)
        scale = final_scale(sp.base, examples.tokens)
        prom = {h: promoted_tokens(sp, h, f, n_entities, k_tokens, scale) for h, f in wanted.items()}
        return cls({h: torch.tensor(f) for h, f in wanted.items()}, {h: tops[h][0] for h in wanted}, {h: tops[h][1] for h in wanted},
                   {h: p[0] for h, p in prom.items()}, {h: p[1] for h, p in prom.items()})

    def column(self, hook: str, feature: int) -> int | None:
        if hook not in self._col:
            self._col[hook] = {int(f): c for c, f in enumerate(self.feats.get(hook, torch.zeros(0)).tolist())}
        return self._col[hook].get(feature)

    def top(self, hook: str, feature: int, k: int, width: int) -> list[tuple[int, int, float]]:
        """[(example, position, activation), ...]: the feature's k largest activations, those > 0 only (`width`: the
        examples' padded length, which the flat indices count in)."""
        c = self.column(hook, feature)
        if c is None:
            return []
        vals, idx = self.top_val[hook][:k, c].tolist(), self.top_idx[hook][:k, c].tolist()
        return [(i // width, i % width, v) for v, i in zip(vals, idx) if v > 0]

    def promoted(self, hook: str, feature: int) -> list[tuple[int, float]]:
        c = self.column(hook, feature)
        return [] if c is None else list(zip(self.prom_ids[hook][c].tolist(), self.prom_val[hook][c].tolist()))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{h}/{name}": getattr(self, name)[h] for name in self.FIELDS for h in self.feats}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "FeatureStats":
        hooks = [k.rpartition("/")[0] for k in t if k.endswith("/feats")]
        return cls(*({h: t[f"{h}/{name}"] for h in hooks} for name in cls.FIELDS))


def describe(stats: FeatureStats, labels: dict, examples: Examples, vocab, hook: str, feature: int, k_examples: int = 5,
             pos_prefix: str = "") -> dict:
    """{label, labels, description, top_activations, promoted} of one feature; the description is read from
    its DESCRIBE_EXAMPLES largest activations, of which `k_examples` are listed."""
    labs = labels.get(hook, {}).get(feature, [])
    W = examples.tokens.shape[1]
    acts = [{"prompt": examples.prompt(vocab, e), "position": p, "role": vocab.layout.role_at(p, int(examples.lengths[e])),
             "token": vocab.name(int(examples.tokens[e, p])), "activation": round(a, 4)}
            for e, p, a in stats.top(hook, feature, max(k_examples, DESCRIBE_EXAMPLES), W)]
    promoted = [{"token": vocab.name(t), "score": round(s, 4)} for t, s in stats.promoted(hook, feature)]
    return {
        "label": label_text(labs[0], pos_prefix) if labs else None,
        "labels": [{**lab, "text": label_text(lab, pos_prefix)} for lab in labs],
        "description": short_description(labs, acts, promoted, pos_prefix),
        "top_activations": acts[:k_examples],
        "promoted": promoted,
    }


def describe_features(sp, ds, vocab, sae_eval_dir, wanted: dict[str, list[int]], k_examples: int = 5,
                      k_tokens: int = PROMOTED_TOKENS) -> dict[tuple[str, int], dict]:
    """{(hook, feature): {label, labels, description, top_activations, promoted}}; labels from `sae_eval_dir` (RUN/sae_eval)."""
    wanted = {h: sorted(set(f)) for h, f in wanted.items() if f}
    examples = Examples.from_dataset(ds, vocab)
    stats = FeatureStats.compute(sp, examples, wanted, entity_tokens(vocab), max(k_examples, DESCRIBE_EXAMPLES), k_tokens)
    labels = load_feature_labels(sae_eval_dir)
    return {(h, f): describe(stats, labels, examples, vocab, h, f, k_examples) for h, feats in wanted.items() for f in feats}


def short_description(labs: list[dict], acts: list[dict], promoted: list[dict], pos_prefix: str = "") -> str:
    """The label where the SAE evaluation found one, else what it fires on most and what it promotes
    (`acts`: its DESCRIBE_EXAMPLES largest activations, not just those a view shows)."""
    if labs:
        lab = labs[0]
        auroc = lab.get("auroc")
        return label_text(lab, pos_prefix) + (f" (AUROC {float(auroc):.2f})" if auroc is not None else "")
    if not acts and not promoted:
        return "inactive on the task prompts"
    common = Counter(f"{a['token']}@{pos_prefix}{a['role']}" for a in acts).most_common(2)
    on = "on " + ",".join(t for t, _ in common) if acts else "inactive on the task prompts"
    return on + (" → " + ",".join(p["token"] for p in promoted[:3]) if promoted else "")


def describe_nodes(sp, ds, vocab, sae_eval_dir, nodes, k_examples: int = 5, k_tokens: int = PROMOTED_TOKENS) -> dict[str, dict]:
    """{node id: description fields} for circuit nodes (objects with hook, pos, idx, id); error nodes
    get a fixed description."""
    wanted: dict[str, list[int]] = {}
    for n in nodes:
        if n.idx is not None:
            wanted.setdefault(n.hook, []).append(n.idx)
    feats = describe_features(sp, ds, vocab, sae_eval_dir, wanted, k_examples, k_tokens)
    out = {}
    for n in nodes:
        if n.idx is None:
            out[n.id] = {"label": None, "labels": [], "description": "SAE error: what the SAE does not reconstruct", "top_activations": [], "promoted": []}
        else:
            out[n.id] = feats[(n.hook, n.idx)]
    return out
