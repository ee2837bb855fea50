"""What `sae-ooc query` prints, and how it reads a prompt and a target, without torch: a query answered from the
run's prompt index (sae_ooc.query.index) never imports it."""

from __future__ import annotations

import difflib
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.query.result import FeatureItem, ModelRank, QueryResult
from sae_ooc.records import opt

POS = "pos:"  # positions are written pos:head, pos:r1, pos:r2, never to be read as relation tokens r1, r2
ATTRIBUTION = "activation x d logit(target) / d activation"


def parse_prompt(vocab, prompt: str) -> list[int]:
    """Token ids of a task-shaped prompt: an entity, then one or two relations (a natural-language task: any text
    its tokenizer reads, within the model's context)."""
    ids = vocab.encode(prompt)
    if vocab.layout.render != "toy":
        return ids
    E, R = vocab.n_entities, vocab.n_relations
    if len(ids) < 2 or ids[0] >= E or not all(E <= i < E + R for i in ids[1:]):
        raise UserError(f"prompt {prompt!r} is not a task prompt: write an entity then one or two relations, e.g. 'e12 r3' (atomic) "
                        f"or 'e12 r3 r7' (two-hop); entities are e0..e{E - 1}, relations r0..r{R - 1}")
    return ids


def parse_target(vocab, target: str) -> int:
    """The token id of --target, which must be an entity: every answer of the task is one (a natural-language task:
    the first token of the entity's name, the token the query attributes)."""
    E = vocab.n_entities
    if vocab.layout.render != "toy":
        names = [vocab.entity_name(e) for e in range(E)]
        if target in names:
            return vocab.answer_token_ids(names.index(target))[0]
        close = difflib.get_close_matches(target, names, n=3, cutoff=0.4)
        raise UserError(f"--target {target!r} is not an entity of this task; give one entity's name, e.g. {names[0]!r}"
                        + (f"; did you mean {', '.join(close)}?" if close else ""))
    entities = vocab.names[:E]
    if target in entities:
        return entities.index(target)
    kind = "a relation" if target in vocab.names[E : E + vocab.n_relations] else "not an entity of this task"
    close = difflib.get_close_matches(target, entities, n=3, cutoff=0.4)
    raise UserError(f"--target {target!r} is {kind}; the target is the answer to attribute to, one entity e0..e{E - 1}"
                    + (f"; did you mean {', '.join(close)}?" if close else ""))


# text views ----------------------------------------------------------------------------------------
LEGEND = ("labels: bridge=e86@pos:r1 = eval-sae found the feature detects bridge e86 at position r1 (held-out AUROC); "
          "on e7@pos:head → e4,e6 = no label: fires most on e7 at position head, its decoder promotes e4, e6")


def _model_view(m: ModelRank) -> str:
    return f"rank {m.rank}, p {m.prob:.3f}"


def header(res: QueryResult) -> list[str]:
    """Prompt, ground truth beside the model's answers, and what the attribution is of."""
    toks = res.tokens or res.prompt.split()
    t = res.truth
    if t is None:
        truth = "not a fact of the task: no ground truth"
    else:
        truth = f"answer {t.answer} (model: {_model_view(t.answer_model)})"
        if t.bridge is not None:
            truth += f", bridge {t.bridge} (model: {_model_view(t.bridge_model)})"
        truth += f"; a {t.split} fact"
    return [f"prompt  {res.prompt}   ({', '.join(f'{r} {tok}' for r, tok in zip(res.roles, toks))})",
            f"truth   {truth}",
            "model   " + ", ".join(f"{a.token} {a.prob:.3f}" for a in res.answers),
            f"features by attribution to logit({res.target}), {res.target_source} (p {res.target_prob:.3f}): "
            "attr = activation × gradient, what the feature adds to that logit to first order, on this prompt only"]


def _feature_line(it: FeatureItem, where: str = "") -> str:
    return f"  {where}#{it.feature:<5} attr {it.attribution:+7.3f}  act {it.activation:7.3f}  {opt(it.description) or ''}"


def compact_view(res: QueryResult) -> list[str]:
    """Per hook, the features that move the target's logit most, over all positions."""
    lines = []
    for r in res.per_hook:
        lines.append(f"{r.hook}   (attr of all its features {r.feature_attribution:+.3f}, of its SAE error {r.error_attribution:+.3f})")
        for it in r.features:
            lines.append(_feature_line(it, f"{POS}{it.role:<5} {it.token:<4} "))
        pages = [it.page for it in r.features if opt(it.page)]
        if pages:  # one line: the folder once, then each page's file name
            lines.append(f"  pages: {Path(pages[0]).parent}/{{{','.join(Path(p).name for p in pages)}}}")
        if not r.features:
            lines.append("  (no active feature here reaches the answer: every attribution is 0)")
    return lines


def full_view(res: QueryResult) -> list[str]:
    """Per hook and position, the top features by activation and by attribution, with examples and promoted answers."""
    lines = []
    for r in opt(res.hooks, []):
        lines.append(f"\n{r.hook} @ {POS}{r.role} ({r.token}): {r.n_active} features active; "
                     f"SAE error attr {r.error_attribution:+.3f}, norm {r.error_norm:.3f}")
        for title, items in (("by activation", r.by_activation), ("by attribution", r.by_attribution)):
            lines.append(f"  {title}:")
            for it in items:
                ex = "; ".join(f"{t.prompt}@{POS}{t.role} {t.activation:.2f}" for t in opt(it.top_activations) or [])
                prom = ", ".join(p.token for p in opt(it.promoted) or [])
                lines.append("  " + _feature_line(it))
                lines.append("           " + (f"top: {ex} | " if ex else "") + f"promotes: {prom or '-'}")
                if opt(it.page):
                    lines.append(f"           page: {it.page}")
            if not items:
                lines.append("    (no feature active)" if r.n_active == 0 else
                             f"    (none of the {r.n_active} active features reaches the answer: every attribution is 0)")
    return lines


def format_query(res: QueryResult, full: bool = False) -> str:
    body = full_view(res) if full else compact_view(res)
    more = "" if full else "; --full: every position with examples"
    return "\n".join(header(res) + body + ["", LEGEND + more + "; --json: every number"])
