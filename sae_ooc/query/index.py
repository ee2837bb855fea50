"""The run's prompt index: `sae-ooc query` on a prompt of the task answered without torch, in well under a second.

Importing torch, TransformerLens and SAELens alone takes ~5 s on a 2-core machine, more than a query may cost. So
the first query of a run computes, in one batched pass, what the compact view shows for *every* distinct prompt of
the task (the model's top answers, the rank of the true answer and bridge, and per hook the features with the largest
|activation x gradient| for the model's top answer) and saves it in RUN/query_cache/ with the description of every
feature it lists. Later compact queries of a task prompt read it with safetensors' numpy loader. The numbers are
those of the live computation (`sae_ooc.query.session.query`, a test checks they agree); anything else (--full, --json,
--target, --top above INDEX_TOP, a prompt that is not a fact of the task) takes the live path.

The index is keyed by the sha256 of every file it was computed from (task data, model, SAEs, eval-sae's labels) and
its format; an index whose key differs is not used (and the next live query rebuilds it).
"""

from __future__ import annotations

import json
from pathlib import Path

from sae_ooc.io import sha256_file, sha256_json
from sae_ooc.models.files import CONFIG_FILE, MODEL_FILE, SHARING_FILE
from sae_ooc.saes.store import SAE_CFG_FILE, SAE_WEIGHTS_FILE, sae_dir, saved_hooks
from sae_ooc.tasks.vocab import Vocab, read_vocab
from sae_ooc.browse.paths import site_page
from sae_ooc.query.result import QueryResult
from sae_ooc.query.view import ATTRIBUTION, POS, parse_prompt

CACHE_DIR = "query_cache"
INDEX_FILE = "prompt_index.safetensors"
DESCRIPTIONS_FILE = "prompt_index_features.json"
INDEX_TOP = 10  # answers and features per hook kept per prompt: --top up to this is answered from the index
FORMAT = 1  # bump when what is indexed or how it is computed changes
SPLIT_NAMES = ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable", "atomic_test")  # = sae_ooc.tasks.data.SPLITS (not imported: torch)


def inputs_key(run, labels: bool = False) -> str:
    """The sha256 of the content of the task data, the model and every SAE (and, with `labels`, eval-sae's label files)."""
    files = [p for p in sorted(Path(run.data_dir).rglob("*")) if p.is_file() and not p.name.startswith(".")]
    files += [run.model_dir / MODEL_FILE, run.model_dir / CONFIG_FILE, run.model_dir / SHARING_FILE]  # (no sharing file: skipped)
    files += [sae_dir(run.saes_dir, h) / f for h in saved_hooks(run.saes_dir) for f in (SAE_CFG_FILE, SAE_WEIGHTS_FILE)]
    if labels and Path(run.sae_eval_dir).is_dir():
        files += sorted(Path(run.sae_eval_dir).glob("*/metrics.json"))
    return sha256_json({"files": {p.relative_to(run.root).as_posix(): sha256_file(p) for p in files if p.is_file()}})


def index_key(run) -> str:
    return sha256_json({"format": FORMAT, "top": INDEX_TOP, "inputs": inputs_key(run, labels=True)})


def index_paths(run) -> tuple[Path, Path]:
    return run.root / CACHE_DIR / INDEX_FILE, run.root / CACHE_DIR / DESCRIPTIONS_FILE


def lookup(run, prompt: str, top: int) -> QueryResult | None:
    """The compact view's result for `prompt` from the index, or None when the index cannot answer it (missing, stale,
    damaged, a prompt that is not in it, `top` above INDEX_TOP). A prompt that is not a task prompt is an error."""
    from safetensors import SafetensorError, safe_open

    path, desc_path = index_paths(run)
    try:
        vocab = read_vocab(run.data_dir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # the live path names the damaged file and the command that rebuilds it
    ids = parse_prompt(vocab, prompt)
    if top > INDEX_TOP or not path.is_file() or not desc_path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("key") != index_key(run):
                return None
            tokens = f.get_tensor("tokens")
            row = [i for i, t in enumerate(tokens.tolist()) if t[: len(ids)] == ids and all(x < 0 for x in t[len(ids):])]
            if not row:
                return None
            e = row[0]
            t = {k: f.get_slice(k)[e] for k in f.keys() if k != "tokens"}
        desc = json.loads(desc_path.read_text())
        if desc.get("key") != meta["key"]:
            return None
        return _result(run.root, vocab, ids, t, json.loads(meta["hooks"]), desc["features"], top)
    except (OSError, SafetensorError, KeyError, ValueError, TypeError, IndexError):  # an unreadable index is never an error
        return None


def _rank(t: dict, name: str) -> dict:
    return {"prob": float(t[f"{name}_prob"]), "rank": int(t[f"{name}_rank"])}


def _result(run_root: Path, vocab: Vocab, ids: list[int], t: dict, hooks: list[str], features: dict, top: int) -> QueryResult:
    """What `sae_ooc.query.session.query` answers, for the compact view (per-position rows are not indexed)."""
    split, bridge = int(t["split"]), int(t["bridge"])
    truth = {"split": SPLIT_NAMES[split], "answer": vocab.name(int(t["answer"])), "answer_model": _rank(t, "answer"),
             "bridge": vocab.name(bridge) if bridge >= 0 else None, "bridge_model": _rank(t, "bridge") if bridge >= 0 else None}
    answers = [{"token": vocab.name(int(i)), "prob": float(p)} for i, p in zip(t["answer_ids"][:top], t["answer_probs"][:top])]
    per_hook = []
    for k, h in enumerate(hooks):
        d = int(t[f"h{k}.d_sae"])
        items = []
        for j, a, at in zip(t[f"h{k}.idx"][:top], t[f"h{k}.act"][:top], t[f"h{k}.attr"][:top]):
            if at == 0:  # the live view lists only nodes whose attribution is not 0
                continue
            f_, pos = int(j) % d, int(j) // d
            label, description = features[h][str(f_)]
            page = site_page(run_root, h, f_)  # the feature's page when `sae-ooc browse` has written it
            items.append({"hook": h, "feature": f_, "position": pos, "role": vocab.layout.role_at(pos, len(ids)), "activation": float(a),
                          "attribution": float(at), "token": vocab.name(ids[pos]), "label": label, "description": description,
                          "page": str(page) if page is not None else None})
        per_hook.append({"hook": h, "feature_attribution": float(t[f"h{k}.attr_sum"]), "error_attribution": float(t[f"h{k}.err_sum"]),
                         "features": items})
    target = answers[0]
    return QueryResult.from_json({"prompt": vocab.decode(ids), "tokens": [vocab.name(i) for i in ids], "roles": [f"{POS}{vocab.layout.role_at(p, len(ids))}" for p in range(len(ids))], "truth": truth,
            "target": target["token"], "target_source": "the model's top answer", "target_prob": target["prob"],
            "attribution": ATTRIBUTION, "answers": answers, "per_hook": per_hook, "from_index": True})
