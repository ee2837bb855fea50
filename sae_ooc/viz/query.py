"""`sae-ooc query --run RUN "e12 r3 r7"`: what the spliced model does on one prompt.

The model's top answers with probabilities, then for each hook and position the top features by
activation and by attribution to the target answer (the prediction, or --target), each with its label,
its top-activating task prompts and the answers its decoder direction promotes.

Attribution here has no corrupted prompt: it is activation x gradient of the target's logit (the
first-order effect of switching the feature off), with the gradient of the original model (spliced
layers pass it straight through). The SAE error node of each (hook, position) is reported too.
"""

from __future__ import annotations

import torch

from sae_ooc.circuits.spliced import load_spliced
from sae_ooc.errors import UserError
from sae_ooc.saes.features import describe_features
from sae_ooc.tasks.data import POSITION_ROLES, load_task


def query(run, prompt: str, target: str | None = None, top: int = 5, n_examples: int = 3) -> dict:
    """What the spliced model of `run` (on `run.device`) does on `prompt` (see the module docstring)."""
    ds, vocab = load_task(run.data_dir)
    ids = vocab.encode(prompt)
    target_id = None
    if target is not None:
        t = vocab.encode(target)
        if len(t) != 1:
            raise UserError(f"--target must be one token such as e40, got {target!r}")
        target_id = t[0]
    sp = load_spliced(run)
    tokens = torch.tensor([ids], dtype=torch.long)
    last = len(ids) - 1
    logits, leaves, _ = sp.run_leaves(tokens)
    probs = torch.softmax(logits[0, last].detach().float(), -1)
    p, i = probs.topk(min(top, len(probs)))
    answers = [{"token": vocab.name(int(t)), "prob": float(q)} for t, q in zip(i, p)]
    if target_id is None:
        target_id = int(i[0])
    logits[0, last, target_id].backward()

    rows, wanted = [], {}
    for h in sp.hooks:
        a, g = leaves.acts[h][0].detach(), leaves.acts[h].grad[0]
        e, ge = leaves.errs[h][0].detach(), leaves.errs[h].grad[0]
        attr = a * g
        for pos in range(len(ids)):
            act_v, act_i = a[pos].topk(min(top, a.shape[-1]))
            by_act = [(int(f), float(v)) for f, v in zip(act_i, act_v) if v > 0]
            at_v, at_i = attr[pos].abs().topk(min(top, a.shape[-1]))
            by_attr = [(int(f), float(attr[pos, f])) for f, v in zip(at_i, at_v) if v > 0]
            wanted.setdefault(h, []).extend(f for f, _ in by_act + by_attr)
            rows.append({"hook": h, "position": pos, "role": POSITION_ROLES[pos], "token": vocab.name(ids[pos]),
                         "by_activation": [{"feature": f, "activation": v, "attribution": float(attr[pos, f])} for f, v in by_act],
                         "by_attribution": [{"feature": f, "activation": float(a[pos, f]), "attribution": v} for f, v in by_attr],
                         "error_attribution": float((e[pos] * ge[pos]).sum()), "error_norm": float(e[pos].norm())})
    desc = describe_features(sp, ds, vocab, run.sae_eval_dir, wanted, k_examples=n_examples)
    for r in rows:
        for item in r["by_activation"] + r["by_attribution"]:
            d = desc.get((r["hook"], item["feature"]), {})
            item.update({k: d.get(k) for k in ("label", "description", "top_activations", "promoted")})
    return {"prompt": vocab.decode(ids), "target": vocab.name(target_id), "target_prob": float(probs[target_id]),
            "attribution": "activation x d logit(target) / d activation", "answers": answers, "hooks": rows}


def format_query(res: dict) -> str:
    lines = [f"prompt: {res['prompt']}", "top answers: " + ", ".join(f"{a['token']} {a['prob']:.3f}" for a in res["answers"]),
             f"attribution to logit({res['target']}) (p={res['target_prob']:.3f}) = {res['attribution']}"]
    for r in res["hooks"]:
        lines.append(f"\n{r['hook']} @ {r['role']} ({r['token']}); SAE error: attribution {r['error_attribution']:+.3f}, norm {r['error_norm']:.3f}")
        for title, key in (("by activation", "by_activation"), ("by attribution", "by_attribution")):
            lines.append(f"  {title}:")
            for it in r[key] or []:
                ex = "; ".join(f"{t['prompt']}@{t['role']} {t['activation']:.2f}" for t in it.get("top_activations") or [])
                prom = ", ".join(p["token"] for p in it.get("promoted") or [])
                lines.append(f"    #{it['feature']:<5} act {it['activation']:7.3f}  attr {it['attribution']:+7.3f}  {it.get('description') or ''}")
                lines.append(f"           top: {ex or '-'} | promotes: {prom or '-'}")
            if not r[key]:
                lines.append("    (none active)")
    return "\n".join(lines)
