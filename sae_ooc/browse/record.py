"""One feature's data (a `FeatureRecord`): what its page shows, its JSON file holds and its index row sums up."""

from __future__ import annotations

import torch

from sae_ooc.activations.cache import ROLES
from sae_ooc.saes.features import label_text
from sae_ooc.saes.dead import dead_on_heldout_prefixes
from sae_ooc.saes.cache_stats import N_BINS, HookStats
from sae_ooc.browse.context import Context
from sae_ooc.records import opt
from sae_ooc.browse.feature_record import EffectAt, Example, FeatureRecord, HeldoutHistogram, LogitTable, PageLabel, PositionStat

N_LOGITS = 10
LOGIT_BINS = 20


def _r(x: float, nd: int = 6) -> float:
    return round(float(x.detach() if isinstance(x, torch.Tensor) else x), nd)


def seq_rows(ctx: Context, row: int) -> list[int]:
    """The cache rows of every token of row `row`'s prompt (a prompt's rows are consecutive in the cache)."""
    p = ctx.prompts
    start = row - int(p.pos[row])
    return list(range(start, start + int((p.tokens[row] >= 0).sum())))


def _example(ctx: Context, row: int, act: float, values: dict) -> Example:
    p = ctx.prompts
    ids = [int(t) for t in p.tokens[row] if t >= 0]
    name = ctx.vocab.name
    return Example(row=row, tokens=[name(t) for t in ids], position=int(p.pos[row]), activation=_r(act, 4),
                   values=[_r(values.get(r, 0.0), 4) for r in seq_rows(ctx, row)],
                   answer=name(int(p.answer[row])) if p.answer[row] >= 0 else None, model_answer=name(int(p.model_answer[row])),
                   model_prob=_r(p.model_prob[row], 3), split=ctx.split_names.get(int(p.split[row]), str(int(p.split[row]))))


def logit_table(logits: torch.Tensor | None, names: list[str]) -> LogitTable | None:
    """Top promoted / suppressed tokens of one feature (sae-dashboard's pos_str/pos_values, neg_str/neg_values)
    and the histogram of its effect on every token of the vocabulary."""
    if logits is None:
        return None
    k = min(N_LOGITS, len(logits))
    pv, pi = logits.topk(k)
    nv, ni = (-logits).topk(k)
    lo, hi = float(logits.min()), float(logits.max())
    heights = torch.histc(logits.float(), LOGIT_BINS, lo, hi) if hi > lo else torch.tensor([float(len(logits))])
    width = (hi - lo) / len(heights) if hi > lo else 0.0
    return LogitTable(pos_str=[names[i] for i in pi.tolist()], pos_values=[_r(v, 4) for v in pv.tolist()],
                      neg_str=[names[i] for i in ni.tolist()], neg_values=[_r(-v, 4) for v in nv.tolist()],
                      hist_heights=[int(h) for h in heights.tolist()], hist_values=[_r(lo + (i + 0.5) * width, 4) for i in range(len(heights))])


def example_rows(st: HookStats, j: int) -> list[tuple[int, float]]:
    """(row, activation) of column j's top examples, then of its random sample (largest first)."""
    top = [(int(r), v) for v, r in zip(st.top_val[:, j].tolist(), st.top_row[:, j].tolist()) if r >= 0 and v > 0]
    sample = sorted(((int(r), v) for k_, r, v in zip(st.rand_key[:, j].tolist(), st.rand_row[:, j].tolist(), st.rand_val[:, j].tolist())
                     if k_ >= 0 and r >= 0 and v > 0), key=lambda t: -t[1])
    return top, sample


def feature_record(ctx: Context, hook: str, st: HookStats, j: int, feature: int, logits: torch.Tensor | None, dense_threshold: float,
                   values: dict) -> FeatureRecord:
    """Everything about feature `feature` of `hook` (column j of the stats slice `st`); `values`: {cache row: its activation} for
    the rows of its examples' prompts."""
    n, c = st.n_tokens, int(st.count[j])
    total = float(st.total[j])
    by_pos = [PositionStat(position=ctx.positions[q], n_tokens=int(st.pos_n[q]), frac_nonzero=_r(int(st.pos_count[q, j]) / max(int(st.pos_n[q]), 1)),
                           mean_activation=_r(float(st.pos_total[q, j]) / int(st.pos_count[q, j])) if st.pos_count[q, j] > 0 else None)
              for q in range(len(st.pos_n))]
    width = float(st.held_max[j]) / N_BINS
    hist = HeldoutHistogram(n_prefixes=st.held_n, n_active=int(st.held_count[j]), max=_r(st.held_max[j]),
                            bar_heights=[int(h) for h in st.hist[j].tolist()], bar_values=[_r((i + 0.5) * width, 4) for i in range(N_BINS)],
                            bin_width=_r(width))
    top, sample = example_rows(st, j)
    labels = [PageLabel.from_json({**lab, "text": label_text(lab)}) for lab in ctx.labels.get(hook, {}).get(feature, [])]
    eff = ctx.effects.get(hook)
    em = ctx.effects_meta
    effect_positions = list((opt(em.positions) if em else None) or ROLES)
    effects = None if eff is None or feature >= eff.shape[1] - 1 else [EffectAt(position=effect_positions[q], effect=_r(eff[q, feature]))
                                                                          for q in range(eff.shape[0])]
    return FeatureRecord(
        hook=hook, feature=feature, n_tokens=n, n_active=c, frac_nonzero=_r(c / max(n, 1)),
        mean_activation=_r(total / c) if c else 0.0, mean_activation_all_tokens=_r(total / max(n, 1)), max_activation=_r(st.max[j]),
        dead=bool(dead_on_heldout_prefixes(st.held_count[j])), dense=c / max(n, 1) > dense_threshold, dense_threshold=dense_threshold, by_position=by_pos,
        heldout_histogram=hist, top_activations=[_example(ctx, r, v, values) for r, v in top],
        random_activations=[_example(ctx, r, v, values) for r, v in sample],
        logits=logit_table(logits, ctx.vocab.names), labels=labels,
        alignment=ctx.alignment.get(hook, {}).get(feature, []),
        node_effects=effects, effects_metric=em.metric if em else None, effects_method=em.method if em else None,
        circuits=ctx.appearances.get((hook, feature), []), variable_nodes=ctx.members.get((hook, feature), []),
    )


def index_row(rec: FeatureRecord) -> list:
    """The feature's row in the index: [feature, density, mean act, max act, fires most at, label, variable, label position,
    AUROC, node effect (largest |mean effect| over positions), its position, dead, dense, circuits]."""
    pos = max(rec.by_position, key=lambda p: p.frac_nonzero * p.n_tokens).position if rec.n_active else ""
    lab = rec.labels[0] if rec.labels else None
    eff = max(rec.node_effects or [], key=lambda e: abs(e.effect), default=None)
    eff = eff if eff is not None and eff.effect != 0 else None  # exactly 0: never active on the pairs
    return [rec.feature, rec.frac_nonzero, round(rec.mean_activation, 4), round(rec.max_activation, 4), pos,
            lab.text if lab else "", lab.variable if lab else "", lab.position if lab else "",
            lab.auroc if lab else None, round(eff.effect, 4) if eff else None, eff.position if eff else "",
            int(rec.dead), int(rec.dense), len({a.circuit for a in rec.circuits}) + (1 if rec.variable_nodes else 0)]
