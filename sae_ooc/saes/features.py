"""What an SAE feature is about: its ground-truth label, its top-activating task prompts, and the
answer tokens its decoder direction promotes.

Labels come from the SAE evaluation (stage eval-sae: `RUN/sae_eval/<hook>/metrics.json`, key `feature_labels`:
the task variable - head, r1, r2, bridge or answer - and value a feature detects, with its AUROC). Promoted
tokens follow the direct path from the decoder direction to the unembedding: the direction is
carried into the residual stream (through W_O or W_out for hook_z and MLP hooks), centred and scaled
like ln_final does on average over the task prompts, and multiplied by W_U; only entity tokens count,
since every answer is an entity.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from sae_ooc.io import read_json
from sae_ooc.saes.store import METRICS_FILE
from sae_ooc.tasks.data import POSITION_ROLES

EXAMPLE_SPLITS = ("train", "test_id", "test_ood")


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


def label_text(lab: dict) -> str:
    """'bridge=e12@r1' for the bridge entity e12 detected at position r1 (the position always shows: a
    feature labelled at one position may fire at others, where the label makes no claim)."""
    var, val, pos = lab.get("variable", "?"), lab.get("value", "?"), lab.get("position")
    return f"{var}={val}" + (f"@{pos}" if pos else "")


def task_examples(ds, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every distinct prompt of the train and test splits, right-padded to 3: (tokens [N, 3], lengths [N])."""
    seen, rows = set(), []
    for s in EXAMPLE_SPLITS:
        for ids in ds[s]["input_ids"]:
            t = tuple(ids)
            if t not in seen:
                seen.add(t)
                rows.append(t)
    lengths = torch.tensor([len(r) for r in rows])
    tokens = torch.tensor([list(r) + [pad_id] * (3 - len(r)) for r in rows], dtype=torch.long)
    return tokens, lengths


@torch.no_grad()
def top_activations(sp, tokens: torch.Tensor, lengths: torch.Tensor, wanted: dict[str, list[int]], k: int = 5,
                    batch: int = 4096) -> dict[tuple[str, int], list[tuple[int, int, float]]]:
    """{(hook, feature): [(example, position, activation), ...]}: the k largest activations over the
    examples (padding excluded), largest first; only activations > 0."""
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
    out = {}
    for h, feats in wanted.items():
        if h not in best:
            continue
        v, idx = best[h]
        for c, f in enumerate(feats):
            out[(h, f)] = [(int(ix) // P, int(ix) % P, float(val)) for val, ix in zip(v[:, c].tolist(), idx[:, c].tolist()) if val > 0]
    return out


@torch.no_grad()
def final_scale(model, tokens: torch.Tensor) -> float:
    """Mean ln_final scale on `tokens` (1.0 without a final normalisation)."""
    if "ln_final.hook_scale" not in model.hook_dict:
        return 1.0
    _, cache = model.run_with_cache(tokens[:4096].to(model.cfg.device), names_filter="ln_final.hook_scale")
    return float(cache["ln_final.hook_scale"].mean())


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
def promoted_tokens(sp, hook: str, feats: list[int], n_entities: int, k: int = 5, scale: float = 1.0) -> dict[int, list[tuple[int, float]]]:
    """{feature: [(entity id, logit contribution per unit activation), ...]} along the direct path."""
    model = sp.base
    d = to_residual(model, hook, sp.saes[hook].W_dec[feats].float())
    if d is None or not feats:
        return {}
    if model.cfg.normalization_type in ("LN", "LNPre"):
        d = d - d.mean(-1, keepdim=True)
    w = getattr(model.ln_final, "w", None)
    if w is not None:
        d = d * w
    logits = (d / scale) @ model.W_U[:, :n_entities]
    v, i = logits.topk(min(k, n_entities), dim=-1)
    return {f: list(zip(i[r].tolist(), v[r].tolist())) for r, f in enumerate(feats)}


def describe_features(sp, ds, vocab, sae_eval_dir, wanted: dict[str, list[int]], k_examples: int = 5, k_tokens: int = 5) -> dict[tuple[str, int], dict]:
    """{(hook, feature): {label, labels, description, top_activations, promoted}}; labels from `sae_eval_dir` (RUN/sae_eval)."""
    wanted = {h: sorted(set(f)) for h, f in wanted.items() if f}
    labels = load_feature_labels(sae_eval_dir)
    tokens, lengths = task_examples(ds, vocab.pad_id)
    tops = top_activations(sp, tokens, lengths, wanted, k_examples)
    scale = final_scale(sp.base, tokens)
    out = {}
    for h, feats in wanted.items():
        prom = promoted_tokens(sp, h, feats, vocab.n_entities, k_tokens, scale)
        for f in feats:
            labs = labels.get(h, {}).get(f, [])
            acts = [{"prompt": vocab.decode(tokens[e, : lengths[e]]), "position": p, "role": POSITION_ROLES[p],
                     "token": vocab.name(int(tokens[e, p])), "activation": round(a, 4)} for e, p, a in tops.get((h, f), [])]
            promoted = [{"token": vocab.name(t), "score": round(s, 4)} for t, s in prom.get(f, [])]
            out[(h, f)] = {
                "label": label_text(labs[0]) if labs else None,
                "labels": [{**lab, "text": label_text(lab)} for lab in labs],
                "description": short_description(labs, acts, promoted),
                "top_activations": acts,
                "promoted": promoted,
            }
    return out


def short_description(labs: list[dict], acts: list[dict], promoted: list[dict]) -> str:
    """The label where the SAE evaluation found one, else what it fires on and what it promotes."""
    if labs:
        lab = labs[0]
        auroc = lab.get("auroc")
        return label_text(lab) + (f" (AUROC {float(auroc):.2f})" if auroc is not None else "")
    if not acts and not promoted:
        return "inactive on the task prompts"
    common = Counter(f"{a['token']}@{a['role']}" for a in acts).most_common(2)
    on = "on " + ",".join(t for t, _ in common) if acts else "inactive"
    return on + (" → " + ",".join(p["token"] for p in promoted[:3]) if promoted else "")


def describe_nodes(sp, ds, vocab, sae_eval_dir, nodes, k_examples: int = 5, k_tokens: int = 5) -> dict[str, dict]:
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
