"""`sae-ooc query --run RUN "e12 r3 r7"`: what the spliced model does on one prompt.

The compact view (default): the prompt, the true answer and bridge when the prompt is a fact of the task, the
model's top answers, then per hook the features that move the target answer's logit most, with their labels.
`--full`: per hook and position, the top features by activation and by attribution, each with its
top-activating task prompts and the answers its decoder promotes. `--json`: every number of both.

Attribution here has no corrupted prompt: it is activation x gradient of the target's logit (to first order,
what the feature adds to that logit: switching it off lowers the logit by about that much, on this one prompt), with the gradient of the original model (spliced
layers pass it straight through). The target is the model's top answer unless --target names another. The SAE
error node of each (hook, position) is reported too. Feature descriptions come from a once-per-run cache
(sae_ooc.viz.query_cache) and labels from eval-sae (RUN/sae_eval/); each feature's page in RUN/browse/ is named when
`sae-ooc browse` has written it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from sae_ooc.circuits.spliced import load_spliced
from sae_ooc.errors import UserError
from sae_ooc.saes.features import describe, load_feature_labels
from sae_ooc.tasks.data import POSITION_ROLES, SPLITS, load_task
from sae_ooc.viz.browse.paths import site_page
from sae_ooc.viz.query_cache import feature_cache

POS = "pos:"  # positions are written pos:head, pos:r1, pos:r2, never to be read as relation tokens r1, r2
ATTRIBUTION = "activation x d logit(target) / d activation"


def parse_prompt(vocab, prompt: str) -> list[int]:
    """Token ids of a task-shaped prompt: an entity, then one or two relations."""
    ids = vocab.encode(prompt)
    E, R = vocab.n_entities, vocab.n_relations
    if len(ids) < 2 or ids[0] >= E or not all(E <= i < E + R for i in ids[1:]):
        raise UserError(f"prompt {prompt!r} is not a task prompt: write an entity then one or two relations, e.g. 'e12 r3' (atomic) "
                        f"or 'e12 r3 r7' (two-hop); entities are e0..e{E - 1}, relations r0..r{R - 1}")
    return ids


def parse_target(vocab, target: str) -> int:
    """The token id of --target, which must be an entity: every answer of the task is one."""
    E = vocab.n_entities
    entities = vocab.names[:E]
    if target in entities:
        return entities.index(target)
    kind = "a relation" if target in vocab.names[E : E + vocab.n_relations] else "not an entity of this task"
    close = difflib.get_close_matches(target, entities, n=3, cutoff=0.4)
    raise UserError(f"--target {target!r} is {kind}; the target is the answer to attribute to, one entity e0..e{E - 1}"
                    + (f"; did you mean {', '.join(close)}?" if close else ""))


def _rank(probs: torch.Tensor, token: int) -> dict:
    return {"prob": float(probs[token]), "rank": int((probs > probs[token]).sum()) + 1}


def ground_truth(examples, vocab, ids: list[int], probs: torch.Tensor) -> dict | None:
    """The answer and bridge of the prompt when it is a fact of the task, with the model's rank and probability of each."""
    e = examples.find(ids)
    if e is None:
        return None
    answer, bridge = int(examples.answer[e]), int(examples.bridge[e])
    return {"split": SPLITS[int(examples.split[e])], "answer": vocab.name(answer), "answer_model": _rank(probs, answer),
            "bridge": vocab.name(bridge) if bridge >= 0 else None, "bridge_model": _rank(probs, bridge) if bridge >= 0 else None}


def query(run, prompt: str, target: str | None = None, top: int = 3, n_examples: int = 3) -> dict:
    """What the spliced model of `run` (on `run.device`) does on `prompt` (see the module docstring)."""
    ds, vocab = load_task(run.data_dir)
    ids = parse_prompt(vocab, prompt)
    target_id = parse_target(vocab, target) if target is not None else None
    sp = load_spliced(run)
    examples, stats = feature_cache(run, sp, ds, vocab)
    tokens = torch.tensor([ids], dtype=torch.long)
    last = len(ids) - 1
    logits, leaves, _ = sp.run_leaves(tokens)
    probs = torch.softmax(logits[0, last].detach().float(), -1).cpu()
    p, i = probs.topk(min(top, len(probs)))
    answers = [{"token": vocab.name(int(t)), "prob": float(q)} for t, q in zip(i, p)]
    source = "--target" if target_id is not None else "the model's top answer"
    target_id = int(i[0]) if target_id is None else target_id
    logits[0, last, target_id].backward()

    rows, per_hook = [], []
    for h in sp.hooks:
        a, g = leaves.acts[h][0].detach().cpu(), leaves.acts[h].grad[0].cpu()
        attr = a * g
        err_attr = (leaves.errs[h][0].detach() * leaves.errs[h].grad[0]).sum(-1).cpu()
        for pos in range(len(ids)):
            rows.append(position_row(h, pos, vocab.name(ids[pos]), a[pos], attr[pos], top, float(err_attr[pos]),
                                     float(leaves.errs[h][0, pos].detach().norm())))
        per_hook.append({"hook": h, "feature_attribution": float(attr.sum()), "error_attribution": float(err_attr.sum()),
                         "features": top_features(h, ids, vocab, a, attr, top)})
    labels = load_feature_labels(run.sae_eval_dir)
    for it in [it for r in rows for it in r["by_activation"] + r["by_attribution"]] + [it for r in per_hook for it in r["features"]]:
        d = describe(stats, labels, examples, vocab, it["hook"], it["feature"], n_examples, POS)
        it.update({k: d[k] for k in ("label", "description", "top_activations", "promoted")})
        page = site_page(run.root, it["hook"], it["feature"])  # the feature's page when `sae-ooc browse` has run
        it["page"] = str(page) if page is not None else None
    return {"prompt": vocab.decode(ids), "roles": [f"{POS}{r}" for r in POSITION_ROLES[: len(ids)]],
            "truth": ground_truth(examples, vocab, ids, probs), "target": vocab.name(target_id), "target_source": source,
            "target_prob": float(probs[target_id]), "attribution": ATTRIBUTION, "answers": answers, "per_hook": per_hook, "hooks": rows}


def _item(h: str, f: int, pos: int, act: float, attr: float) -> dict:
    return {"hook": h, "feature": f, "position": pos, "role": POSITION_ROLES[pos], "activation": act, "attribution": attr}


def position_row(h: str, pos: int, token: str, a: torch.Tensor, attr: torch.Tensor, top: int, err_attr: float, err_norm: float) -> dict:
    """The top features at one (hook, position): by activation (> 0) and by |attribution| (!= 0)."""
    k = min(top, a.shape[-1])
    act_v, act_i = a.topk(k)
    at_v, at_i = attr.abs().topk(k)
    return {"hook": h, "position": pos, "role": POSITION_ROLES[pos], "token": token, "n_active": int((a > 0).sum()),
            "by_activation": [_item(h, int(f), pos, float(v), float(attr[f])) for f, v in zip(act_i, act_v) if v > 0],
            "by_attribution": [_item(h, int(f), pos, float(a[f]), float(attr[f])) for f, v in zip(at_i, at_v) if v > 0],
            "error_attribution": err_attr, "error_norm": err_norm}


def top_features(h: str, ids: list[int], vocab, a: torch.Tensor, attr: torch.Tensor, top: int) -> list[dict]:
    """The `top` (position, feature) nodes of hook `h` with the largest |attribution| (!= 0), over every position."""
    flat = attr.abs().flatten()
    v, i = flat.topk(min(top, len(flat)))
    d = attr.shape[-1]
    return [{**_item(h, int(j) % d, int(j) // d, float(a.flatten()[j]), float(attr.flatten()[j])), "token": vocab.name(ids[int(j) // d])}
            for j, x in zip(i, v) if x > 0]


# text views ----------------------------------------------------------------------------------------
LEGEND = ("labels: bridge=e86@pos:r1 = eval-sae found the feature detects bridge e86 at position r1 (held-out AUROC); "
          "on e7@pos:head → e4,e6 = no label: fires most on e7 at position head, its decoder promotes e4, e6")


def _model_view(m: dict) -> str:
    return f"rank {m['rank']}, p {m['prob']:.3f}"


def header(res: dict) -> list[str]:
    """Prompt, ground truth beside the model's answers, and what the attribution is of."""
    toks = res["prompt"].split()
    t = res["truth"]
    if t is None:
        truth = "not a fact of the task: no ground truth"
    else:
        truth = f"answer {t['answer']} (model: {_model_view(t['answer_model'])})"
        if t["bridge"] is not None:
            truth += f", bridge {t['bridge']} (model: {_model_view(t['bridge_model'])})"
        truth += f"; a {t['split']} fact"
    return [f"prompt  {res['prompt']}   ({', '.join(f'{r} {tok}' for r, tok in zip(res['roles'], toks))})",
            f"truth   {truth}",
            "model   " + ", ".join(f"{a['token']} {a['prob']:.3f}" for a in res["answers"]),
            f"features by attribution to logit({res['target']}), {res['target_source']} (p {res['target_prob']:.3f}): "
            "attr = activation × gradient, what the feature adds to that logit to first order, on this prompt only"]


def _feature_line(it: dict, where: str = "") -> str:
    return f"  {where}#{it['feature']:<5} attr {it['attribution']:+7.3f}  act {it['activation']:7.3f}  {it.get('description') or ''}"


def compact_view(res: dict) -> list[str]:
    """Per hook, the features that move the target's logit most, over all positions."""
    lines = []
    for r in res["per_hook"]:
        lines.append(f"{r['hook']}   (attr of all its features {r['feature_attribution']:+.3f}, of its SAE error {r['error_attribution']:+.3f})")
        for it in r["features"]:
            lines.append(_feature_line(it, f"{POS}{it['role']:<5} {it['token']:<4} "))
        pages = [it["page"] for it in r["features"] if it.get("page")]
        if pages:  # one line: the folder once, then each page's file name
            lines.append(f"  pages: {Path(pages[0]).parent}/{{{','.join(Path(p).name for p in pages)}}}")
        if not r["features"]:
            lines.append("  (no active feature here reaches the answer: every attribution is 0)")
    return lines


def full_view(res: dict) -> list[str]:
    """Per hook and position, the top features by activation and by attribution, with examples and promoted answers."""
    lines = []
    for r in res["hooks"]:
        lines.append(f"\n{r['hook']} @ {POS}{r['role']} ({r['token']}): {r['n_active']} features active; "
                     f"SAE error attr {r['error_attribution']:+.3f}, norm {r['error_norm']:.3f}")
        for title, key in (("by activation", "by_activation"), ("by attribution", "by_attribution")):
            lines.append(f"  {title}:")
            for it in r[key]:
                ex = "; ".join(f"{t['prompt']}@{POS}{t['role']} {t['activation']:.2f}" for t in it.get("top_activations") or [])
                prom = ", ".join(p["token"] for p in it.get("promoted") or [])
                lines.append("  " + _feature_line(it))
                lines.append("           " + (f"top: {ex} | " if ex else "") + f"promotes: {prom or '-'}")
                if it.get("page"):
                    lines.append(f"           page: {it['page']}")
            if not r[key]:
                lines.append("    (no feature active)" if r["n_active"] == 0 else
                             f"    (none of the {r['n_active']} active features reaches the answer: every attribution is 0)")
    return lines


def format_query(res: dict, full: bool = False) -> str:
    body = full_view(res) if full else compact_view(res)
    more = "" if full else "; --full: every position with examples"
    return "\n".join(header(res) + body + ["", LEGEND + more + "; --json: every number"])
