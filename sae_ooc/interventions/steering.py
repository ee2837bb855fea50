"""Feature steering with the SAE spliced in, and its baselines, each written as the change it makes to the residual stream.

With every SAE spliced in with its error term (sae_ooc.circuits.spliced), changing the features of one hook at one
position moves that hook's output by decode(f') - decode(f) and leaves every other spliced layer the identity (their
error terms absorb what they do not reconstruct), so an intervention is a vector added to the residual at (hook,
position) of the original model: `Spliced.run_deltas`'s identity, which the tests check against the spliced model.

Interventions, per prompt with bridge b and counterfactual bridge b':
- features: the features labelled bridge=b switched off (0) and those labelled bridge=b' switched on at their typical
  activation (their mean where active on train prompts); b' = b switches nothing (the identity, exactly);
- random: as many random unlabelled features switched off (among the active ones) and on (at their typical activation),
  the change rescaled to the norm of the feature steering's change on that prompt;
- residual patch: the whole residual at (hook, position) taken from a donor prompt whose bridge is b' (or, as a
  control, another prompt whose bridge is b).
"""

from __future__ import annotations

import torch

from sae_ooc.interventions.facts import mean_ci, share
from sae_ooc.interventions.prompts import Answers, matches, read_batched


def bridge_feature_matrix(hook_labels: dict[int, list[dict]], position: str, entity_of: dict[str, int], n_entities: int,
                          d_sae: int) -> torch.Tensor:
    """[n_entities, d_sae] bool: feature f is labelled bridge=e at `position` (eval-sae's labels of one hook)."""
    return label_matrix(hook_labels, "bridge", position, entity_of, n_entities, d_sae)


def label_matrix(hook_labels: dict[int, list[dict]], variable: str, position: str, value_of: dict[str, int], n_values: int,
                 d_sae: int) -> torch.Tensor:
    """[n_values, d_sae] bool: feature f is labelled `variable`=v at `position` (eval-sae's labels of one hook; `value_of`
    maps a label's value name to its id)."""
    m = torch.zeros(n_values, d_sae, dtype=torch.bool)
    for f, labs in hook_labels.items():
        for lab in labs:
            e = value_of.get(str(lab.get("value")))
            if lab.get("variable") == variable and lab.get("position") == position and e is not None and e < n_values and f < d_sae:
                m[e, f] = True
    return m


def typical_activation(acts: torch.Tensor) -> torch.Tensor:
    """[d_sae]: each feature's mean activation where it is active (0 for a feature never active)."""
    on = acts > 0
    return (acts * on).sum(0) / on.sum(0).clamp(min=1)


@torch.no_grad()
def decode_delta(sae, f: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """decode(new) - decode(f), row by row ([n, d_in]); exactly 0 where new == f."""
    return sae.decode(new) - sae.decode(f)


def switched(f: torch.Tensor, off: torch.Tensor, on: torch.Tensor, typical: torch.Tensor) -> torch.Tensor:
    """f with the `off` features set to 0 and the `on` features set to their typical activation."""
    new = f.masked_fill(off, 0.0)
    return torch.where(on, typical.to(f.dtype).expand_as(f), new)


def steering_masks(M: torch.Tensor, b: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(off, on) [n, d_sae]: bridge=b features not labelled b' go off, bridge=b' features not labelled b go on
    (b' = b: nothing changes)."""
    Mb, Mb2 = M[b], M[b2]
    return Mb & ~Mb2, Mb2 & ~Mb


def random_masks(f: torch.Tensor, n_off: torch.Tensor, n_on: torch.Tensor, labelled: torch.Tensor, typical: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, n_off random active and n_on random silent features (none labelled bridge; `on` only among features with
    a typical activation), chosen uniformly."""

    def pick(cand: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        score = torch.rand(cand.shape, generator=gen).masked_fill(~cand.cpu(), -1.0)
        order = score.argsort(dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(cand.shape[1]).expand_as(order).contiguous())
        return ((rank < count.cpu()[:, None]) & cand.cpu()).to(cand.device)

    active = f > 0
    off = pick(active & ~labelled, n_off)
    on = pick(~active & ~labelled & (typical > 0), n_on)
    return off, on


def matched_norm(delta: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`delta` rescaled row by row to the norm of `ref` (rows of zero norm stay 0)."""
    n = delta.norm(dim=-1, keepdim=True)
    return torch.where(n > 0, delta * ref.norm(dim=-1, keepdim=True) / n.clamp(min=1e-12), torch.zeros_like(delta))


def delta_hooks(hook: str, pos: int, delta: torch.Tensor | None):
    """`hooks_for(slice)` adding delta[i] to `hook` at position `pos` of row i (nothing when delta is None)."""

    def hooks_for(sl):
        if delta is None:
            return []
        d = delta[sl]

        def add(x, hook=None, d=d):
            x = x.clone()
            x[:, pos] += d.to(x.device, x.dtype)
            return x

        return [(hook, add)]

    return hooks_for


def answers_with_delta(model, tokens: torch.Tensor, answer_pos: torch.Tensor, hook: str, pos: int, delta: torch.Tensor | None,
                       batch: int = 4096, answer_len: int = 1, targets: torch.Tensor | None = None) -> Answers:
    """The model's answers (sae_ooc.interventions.prompts.Answers) with delta[i] added to `hook` at position `pos` of row i."""
    return read_batched(model, tokens, answer_pos, answer_len, batch, delta_hooks(hook, pos, delta), targets)


def logits_with_delta(model, tokens: torch.Tensor, answer_pos: torch.Tensor, hook: str, pos: int, delta: torch.Tensor | None,
                      batch: int = 4096) -> torch.Tensor:
    """[n, d_vocab] answer-position logits of the model with delta[i] added to `hook` at position `pos` of row i."""
    return answers_with_delta(model, tokens, answer_pos, hook, pos, delta, batch).first


def outcome(out: Answers, consistent: torch.Tensor, original: torch.Tensor, clean: Answers) -> dict:
    """Shares of prompts answering t(b', r2) (consistent), t(b, r2) (unchanged) or something else (whole answers,
    `consistent` / `original` [n, answer_len] tokens), and the logit of the consistent answer's first token (and its change
    from the unsteered model), each with a 95% interval over prompts; with multi-token answers also the consistent answer's
    log-probability (`out.logprob`, teacher forced) and its change."""
    rows = torch.arange(len(out.first))
    cons, same = matches(out.greedy, consistent), matches(out.greedy, original)
    c0 = consistent[:, 0]
    lc = out.first[rows, c0]
    res = {"consistent": share(cons), "unchanged": share(same), "other": share(~cons & ~same),
           "consistent_logit": mean_ci(lc), "consistent_logit_change": mean_ci(lc - clean.first[rows, c0]),
           "max_abs_logit_change": float((out.first - clean.first).abs().max()) if len(out.first) else 0.0}
    if out.logprob is not None:
        res["consistent_logprob"] = mean_ci(out.logprob)
        res["consistent_logprob_change"] = mean_ci(out.logprob - clean.logprob)
    return res
