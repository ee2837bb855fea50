"""Direct logit attribution of the answer (and of answer - corrupted answer) at r2 to every head, every MLP and the
embeddings, with TransformerLens's `ActivationCache` tools: `stack_head_results` and `decompose_resid` give the
components, `logit_attrs` scales them by the final layer norm's cached scale and projects them on the answer's
(or answer - t2') unembedding direction. The attribution runs on a copy of the model with ln_final's weight and
bias folded into W_U and b_U (`process_weights_(fold_ln=True)`, the same function), so that the components plus
b_O sum exactly to the logit minus b_U; `check` records that sum against the model's own logits.
"""

from __future__ import annotations

import copy

import torch

from sae_ooc.analyses.common import ANSWER_POS
from sae_ooc.circuits.pairs import Pairs


def folded(model):
    """A copy of `model` with its layer norms' weights folded into the next linear maps (outputs unchanged)."""
    if model.cfg.normalization_type not in ("LN", "RMS"):
        return model
    m = copy.deepcopy(model)
    m.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    return m


@torch.no_grad()
def dla(model, pairs: Pairs, answer_pos: int = ANSWER_POS) -> dict:
    """Mean (and std) direct logit attribution per component over the clean prompts, at the answer position."""
    ANSWER_POS = answer_pos
    model = folded(model)
    device = next(model.parameters()).device
    logits, cache = model.run_with_cache(pairs.clean.to(device))
    heads, head_labels = cache.stack_head_results(layer=-1, pos_slice=ANSWER_POS, return_labels=True)  # [L*H, n, d]
    parts, part_labels = cache.decompose_resid(layer=-1, mode="all", pos_slice=ANSWER_POS, return_labels=True)
    keep = [i for i, lab in enumerate(part_labels) if not lab.endswith("_attn_out")]  # heads replace the attention layers
    stack = torch.cat([heads, parts[keep]])
    labels = head_labels + [part_labels[i] for i in keep]
    bias = sum(cache[f"blocks.{l}.hook_attn_out"][:, ANSWER_POS] - cache[f"blocks.{l}.attn.hook_result"][:, ANSWER_POS].sum(1)
               for l in range(model.cfg.n_layers))  # b_O of every layer
    stack = torch.cat([stack, bias[None]])
    labels.append("attn_bias")
    ans, cor = pairs.answer.to(device), pairs.answer_corrupt.to(device)
    attr = cache.logit_attrs(stack, tokens=ans, pos_slice=ANSWER_POS).float().cpu()  # [C, n]
    diff = cache.logit_attrs(stack, tokens=ans, incorrect_tokens=cor, pos_slice=ANSWER_POS).float().cpu()
    rows = torch.arange(len(pairs))
    lg = logits[:, ANSWER_POS].float().cpu()
    b_u = model.b_U.float().cpu()
    actual = lg[rows, pairs.answer] - b_u[pairs.answer]
    actual_diff = actual - (lg[rows, pairs.answer_corrupt] - b_u[pairs.answer_corrupt])
    comps = []
    for i, lab in enumerate(labels):
        comps.append({"component": lab, "answer": float(attr[i].mean()), "answer_std": float(attr[i].std()) if len(pairs) > 1 else 0.0,
                      "answer_minus_corrupt": float(diff[i].mean()),
                      "answer_minus_corrupt_std": float(diff[i].std()) if len(pairs) > 1 else 0.0})
    L, H = model.cfg.n_layers, model.cfg.n_heads
    return {
        "n_prompts": len(pairs), "components": comps,
        "heads_answer": attr[: L * H].mean(1).view(L, H).tolist(), "heads_diff": diff[: L * H].mean(1).view(L, H).tolist(),
        "mlps_answer": [c["answer"] for c in comps if c["component"].endswith("_mlp_out")],
        "mlps_diff": [c["answer_minus_corrupt"] for c in comps if c["component"].endswith("_mlp_out")],
        # the components' sum against the (folded) model's own logit minus b_U: equal up to float error
        "check": {"sum_answer": float(attr.sum(0).mean()), "logit_answer_minus_bU": float(actual.mean()),
                  "sum_diff": float(diff.sum(0).mean()), "logit_diff_minus_bU": float(actual_diff.mean())},
    }
