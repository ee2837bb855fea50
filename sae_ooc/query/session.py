"""`sae-ooc query --run RUN "e12 r3 r7"`: what the spliced model does on one prompt.

The compact view (default): the prompt, the true answer and bridge when the prompt is a fact of the task, the
model's top answers, then per hook the features that move the target answer's logit most, with their labels.
`--full`: per hook and position, the top features by activation and by attribution, each with its
top-activating task prompts and the answers its decoder promotes. `--json`: every number of both.

Attribution here has no corrupted prompt: it is activation x gradient of the target's logit (to first order,
what the feature adds to that logit: switching it off lowers the logit by about that much, on this one prompt), with the gradient of the original model (spliced
layers pass it straight through). The target is the model's top answer unless --target names another. The SAE
error node of each (hook, position) is reported too. Feature descriptions come from a once-per-run cache
(sae_ooc.query.cache) and labels from eval-sae (RUN/sae_eval/); each feature's page in RUN/browse/ is named when
`sae-ooc browse` has written it.
"""

from __future__ import annotations

import json
import sys

import torch
from safetensors import SafetensorError, safe_open

from sae_ooc.circuits.spliced import load_spliced
from sae_ooc.io import save_tensors, write_json
from sae_ooc.saes.features import describe, load_feature_labels
from sae_ooc.tasks.data import POSITION_ROLES, SPLITS, load_task
from sae_ooc.browse.paths import site_page
from sae_ooc.query.cache import feature_cache
from sae_ooc.query.index import INDEX_TOP, index_key, index_paths
from sae_ooc.query.result import QueryResult
from sae_ooc.query.view import ATTRIBUTION, POS, format_query, parse_prompt, parse_target  # noqa: F401  (format_query: the CLI's)

def _rank(probs: torch.Tensor, token: int) -> dict:
    return {"prob": float(probs[token]), "rank": int((probs > probs[token]).sum()) + 1}


def ground_truth(examples, vocab, ids: list[int], probs: torch.Tensor) -> dict | None:
    """The answer and bridge of the prompt when it is a fact of the task, with the model's rank and probability of each."""
    e = examples.find(ids)
    if e is None:
        return None
    answer, bridge = int(examples.answer[e]), int(examples.bridge[e])
    return {"split": SPLITS[int(examples.split[e])], "answer": vocab.name(answer), "answer_model": _rank(probs, answer),  # (first) tokens
            "bridge": vocab.name(bridge) if bridge >= 0 else None, "bridge_model": _rank(probs, bridge) if bridge >= 0 else None}


def attribute_batch(sp, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> dict:
    """For prompts of one length [B, L]: answer probabilities at the last position, the target (the top answer unless
    given) and per hook the feature activations and activation x gradient of the target's logit. Prompts do not
    interact (causal attention within each row), so one backward pass of the summed logits gives every prompt's own
    gradient."""
    last = tokens.shape[1] - 1
    logits, leaves, _ = sp.run_leaves(tokens.to(sp.device))
    probs = torch.softmax(logits[:, last].detach().float(), -1).cpu()
    targets = probs.argmax(-1) if targets is None else targets
    logits[torch.arange(len(tokens)), last, targets.to(logits.device)].sum().backward()
    out = {"probs": probs, "targets": targets, "acts": {}, "attr": {}, "err_attr": {}, "err_norm": {}}
    for h in sp.hooks:
        a = leaves.acts[h].detach()
        out["acts"][h], out["attr"][h] = a.cpu(), (a * leaves.acts[h].grad).cpu()
        out["err_attr"][h] = (leaves.errs[h].detach() * leaves.errs[h].grad).sum(-1).cpu()
        out["err_norm"][h] = leaves.errs[h].detach().norm(dim=-1).cpu()
    return out


class QuerySession:
    """The run's task, spliced model, feature statistics and labels, loaded once: each `query` after that costs one
    forward and backward pass (`sae-ooc serve` keeps one for the life of the server). With `index`, also builds the
    run's prompt index (sae_ooc.query.index) when it is missing or stale, so that later compact queries need no torch."""

    def __init__(self, run, index: bool = True, check: tuple[str, str | None] | None = None):
        self.run = run
        self.ds, self.vocab = load_task(run.data_dir)
        if check is not None:  # (prompt, target) of a one-off query: refused before the model is loaded
            parse_prompt(self.vocab, check[0])
            if check[1] is not None:
                parse_target(self.vocab, check[1])
        self.sp = load_spliced(run)
        self.examples, self.stats = feature_cache(run, self.sp, self.ds, self.vocab)
        self.labels = load_feature_labels(run.sae_eval_dir)
        if index:
            ensure_index(run, self.sp, self.examples, self.stats, self.labels, self.vocab)

    def query(self, prompt: str, target: str | None = None, top: int = 3, n_examples: int = 3) -> QueryResult:
        """What the spliced model does on `prompt` (see the module docstring)."""
        run, vocab, sp, examples = self.run, self.vocab, self.sp, self.examples
        ids = parse_prompt(vocab, prompt)
        target_id = parse_target(vocab, target) if target is not None else None
        b = attribute_batch(sp, torch.tensor([ids], dtype=torch.long), None if target_id is None else torch.tensor([target_id]))
        probs = b["probs"][0]
        p, i = probs.topk(min(top, len(probs)))
        answers = [{"token": vocab.name(int(t)), "prob": float(q)} for t, q in zip(i, p)]
        source = "--target" if target_id is not None else "the model's top answer"
        target_id = int(b["targets"][0])

        rows, per_hook = [], []
        roles = prompt_roles(vocab, len(ids))
        for h in sp.hooks:
            a, attr, err_attr = b["acts"][h][0], b["attr"][h][0], b["err_attr"][h][0]
            for pos in range(len(ids)):
                rows.append(position_row(h, pos, vocab.name(ids[pos]), a[pos], attr[pos], top, float(err_attr[pos]), float(b["err_norm"][h][0, pos]), roles))
            per_hook.append({"hook": h, "feature_attribution": float(attr.sum()), "error_attribution": float(err_attr.sum()),
                             "features": top_features(h, ids, vocab, a, attr, top)})
        for it in [it for r in rows for it in r["by_activation"] + r["by_attribution"]] + [it for r in per_hook for it in r["features"]]:
            d = describe(self.stats, self.labels, examples, vocab, it["hook"], it["feature"], n_examples, POS)
            it.update({k: d[k] for k in ("label", "description", "top_activations", "promoted")})
            page = site_page(run.root, it["hook"], it["feature"])  # the feature's page when `sae-ooc browse` has run
            it["page"] = str(page) if page is not None else None
        # built as plain dicts (what the batch code fills in), typed once here in that key order
        return QueryResult.from_json({
            "prompt": vocab.decode(ids), "tokens": [vocab.name(i) for i in ids], "roles": [f"{POS}{r}" for r in roles],
            "truth": ground_truth(examples, vocab, ids, probs), "target": vocab.name(target_id), "target_source": source,
            "target_prob": float(probs[target_id]), "attribution": ATTRIBUTION, "answers": answers, "per_hook": per_hook, "hooks": rows})


def query(run, prompt: str, target: str | None = None, top: int = 3, n_examples: int = 3) -> QueryResult:
    """What the spliced model of `run` (on `run.device`) does on `prompt`: a QuerySession used once. The prompt and
    target are read before the model is loaded, so a bad one is refused at once."""
    return QuerySession(run, check=(prompt, target)).query(prompt, target, top, n_examples)


def ensure_index(run, sp, examples, stats, labels, vocab, batch: int = 512) -> None:
    """Build RUN/query_cache's prompt index (sae_ooc.query.index) unless a current one is there: every distinct
    task prompt in batches of one length, the same numbers as `query` (a test checks it)."""
    path, desc_path = index_paths(run)
    key = index_key(run)
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") == key and desc_path.is_file():
                return
    except (OSError, SafetensorError):
        pass
    n = len(examples.tokens)
    print(f"query: indexing the {n} prompts of the task once for this run (cached in {path})", file=sys.stderr)
    k = min(INDEX_TOP, vocab.d_vocab)
    cols: dict[str, list] = {}
    wanted: dict[str, set[int]] = {h: set() for h in sp.hooks}
    for L in sorted(set(examples.lengths.tolist())):
        rows = (examples.lengths == L).nonzero().squeeze(1)
        for chunk in rows.split(batch):
            b = attribute_batch(sp, examples.tokens[chunk, :L])
            probs = b["probs"]
            p, i = probs.topk(k, dim=-1)
            ans, br = examples.answer[chunk], examples.bridge[chunk]
            part = {"row": chunk, "answer_ids": i, "answer_probs": p, "split": examples.split[chunk], "answer": ans, "bridge": br,
                    "answer_prob": probs.gather(1, ans[:, None])[:, 0], "answer_rank": _ranks(probs, ans),
                    "bridge_prob": probs.gather(1, br.clamp(min=0)[:, None])[:, 0], "bridge_rank": _ranks(probs, br.clamp(min=0))}
            for j, h in enumerate(sp.hooks):
                attr, acts = b["attr"][h].flatten(1), b["acts"][h].flatten(1)
                v, idx = attr.abs().topk(min(k, attr.shape[1]), dim=-1)
                part.update({f"h{j}.idx": idx, f"h{j}.act": acts.gather(1, idx), f"h{j}.attr": attr.gather(1, idx),
                             f"h{j}.attr_sum": attr.sum(1), f"h{j}.err_sum": b["err_attr"][h].sum(1),
                             f"h{j}.d_sae": torch.full((len(chunk),), sp.d_sae[h])})
                wanted[h].update((idx[v > 0] % sp.d_sae[h]).tolist())
            for name, x in part.items():
                cols.setdefault(name, []).append(x)
    order = torch.cat(cols.pop("row")).argsort()  # back to the examples' order
    tensors = {name: torch.cat(x)[order].contiguous() for name, x in cols.items()}
    tokens = examples.tokens.clone()
    tokens[torch.arange(tokens.shape[1])[None, :] >= examples.lengths[:, None]] = -1  # padding written as -1
    tensors["tokens"] = tokens
    features = {h: {str(f): [d["label"], d["description"]] for f in sorted(fs) for d in [describe(stats, labels, examples, vocab, h, f, 0, POS)]}
                for h, fs in wanted.items()}
    try:
        write_json(desc_path, {"key": key, "features": features})
        save_tensors(path, tensors, metadata={"key": key, "hooks": json.dumps(list(sp.hooks))})
    except OSError as e:
        print(f"query: could not save the prompt index {path} ({e.strerror or e}); the next query computes it again", file=sys.stderr)


def _ranks(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return (probs > probs.gather(1, tokens[:, None])).sum(1) + 1


def prompt_roles(vocab, length: int) -> list[str]:
    """The role of each position of a prompt of `length` tokens (the task's layout)."""
    return [vocab.layout.role_at(p, length) for p in range(length)]


def _item(h: str, f: int, pos: int, act: float, attr: float, roles) -> dict:
    return {"hook": h, "feature": f, "position": pos, "role": roles[pos], "activation": act, "attribution": attr}


def position_row(h: str, pos: int, token: str, a: torch.Tensor, attr: torch.Tensor, top: int, err_attr: float, err_norm: float,
                 roles=POSITION_ROLES) -> dict:
    """The top features at one (hook, position): by activation (> 0) and by |attribution| (!= 0)."""
    k = min(top, a.shape[-1])
    act_v, act_i = a.topk(k)
    at_v, at_i = attr.abs().topk(k)
    return {"hook": h, "position": pos, "role": roles[pos], "token": token, "n_active": int((a > 0).sum()),
            "by_activation": [_item(h, int(f), pos, float(v), float(attr[f]), roles) for f, v in zip(act_i, act_v) if v > 0],
            "by_attribution": [_item(h, int(f), pos, float(a[f]), float(attr[f]), roles) for f, v in zip(at_i, at_v) if v > 0],
            "error_attribution": err_attr, "error_norm": err_norm}


def top_features(h: str, ids: list[int], vocab, a: torch.Tensor, attr: torch.Tensor, top: int) -> list[dict]:
    """The `top` (position, feature) nodes of hook `h` with the largest |attribution| (!= 0), over every position."""
    flat = attr.abs().flatten()
    v, i = flat.topk(min(top, len(flat)))
    d = attr.shape[-1]
    roles = prompt_roles(vocab, len(ids))
    return [{**_item(h, int(j) % d, int(j) // d, float(a.flatten()[j]), float(attr.flatten()[j]), roles), "token": vocab.name(ids[int(j) // d])}
            for j, x in zip(i, v) if x > 0]
