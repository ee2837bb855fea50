"""What `sae-ooc dynamics` measures on one checkpoint: held-out bridge probes, the logit lens and resid_pre patching.

Probes use the machinery of eval-sae (`sae_ooc.saes.prefixes`, `sae_ooc.saes.probes`): fit on the selection
prefixes, scored on the held-out prefixes, beside the same probe on shuffled labels. The logit lens is the one of
`analyze logit-lens` (`sae_ooc.analyses.logit_lens.lens_logits`): each layer's residual stream through the model's own
final layer norm (recomputed on that layer's stream) and unembedding, with no tuned lens. Patching is `analyze
patching`'s (`sae_ooc.analyses.patching.patch_all`, TransformerLens's `get_act_patch_resid_pre` batched): clean resid_pre
into the corrupted run.

Positions come from the task's layout (`read_positions`): the bridge is read at r1's last token and at the answer
position, named as the layout names them (the toy's r1 and r2; a natural task's r1 and last). Targets are token ids:
a multi-token name is represented by its first token (as in the model-level analyses).
"""

from __future__ import annotations

import torch

from sae_ooc.analyses.common import answer_prob_rank, normalise
from sae_ooc.analyses.logit_lens import lens_logits
from sae_ooc.analyses.patching import patch_all
from sae_ooc.saes.controls import prefix_activations
from sae_ooc.saes.prefixes import PositionSlice
from sae_ooc.saes.probes import probe_table


def read_positions(layout) -> dict[int, str]:
    """{position: name} of the two positions the bridge is read at: r1's last token, then the answer position
    (the toy's {1: "r1", 2: "r2"}; a natural task's e.g. {4: "r1", 7: "last"})."""
    r1, ans = layout.index("r1"), layout.answer_pos
    return {r1: layout.position_names[r1], ans: layout.position_names[ans]}


def resid_hooks(n_layers: int) -> list[str]:
    """The residual stream entering every layer, then leaving the last one: one per `accumulated_resid` entry."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def bridge_probes(model, slices: list[PositionSlice], hooks: list[str], ecfg, positions: dict[int, str]) -> dict[str, dict[str, dict]]:
    """{hook: {position name: {heldout_acc, shuffled_acc, majority_acc, n_heldout}}}: a bridge probe per hook and each of
    `positions` (`read_positions`)."""
    use = [sl for sl in slices if sl.pos in positions]
    acts = prefix_activations(model, use, hooks)
    out: dict[str, dict[str, dict]] = {h: {} for h in hooks}
    for sl in use:
        y_sel, y_ev = sl.labels["bridge"]
        if len(torch.unique(y_sel[y_sel >= 0])) < 2 or not (y_ev >= 0).any():
            continue
        for h in hooks:
            x_sel, x_ev = acts[h][sl.pos]
            rec = probe_table(x_sel, x_ev, {"bridge": (y_sel, y_ev)}, None, {}, ecfg)[0]["bridge"]
            out[h][positions[sl.pos]] = {k: rec[k] for k in ("heldout_acc", "shuffled_acc", "majority_acc", "n_heldout", "heldout_ci95")}
    return out


def logit_lens(model, tokens: torch.Tensor, bridge: torch.Tensor, answer: torch.Tensor, positions: dict[int, str]) -> dict:
    """Per layer (resid_pre of each block, then the final resid_post) the rank (0 = top) of the bridge token at both
    `positions` (r1, then the answer position) and of the answer token at the answer position among all tokens:
    {"labels", "bridge@r1": {"median_rank", "top1"}: per layer lists, ...} (the toy's keys: bridge@r1, bridge@r2, answer@r2).
    The lens is `analyze logit-lens`'s (`sae_ooc.analyses.logit_lens.lens_logits`), read at the two positions."""
    (p1, n1), (pa, na) = positions.items()
    logits, labels = lens_logits(model, tokens, [p1, pa])  # [L+1, n, 2, V]
    out: dict = {"labels": labels, "n_prompts": int(tokens.shape[0])}
    for name, col, target in ((f"bridge@{n1}", 0, bridge), (f"bridge@{na}", 1, bridge), (f"answer@{na}", 1, answer)):
        ranks = answer_prob_rank(logits[:, :, col], target[None, :])[1].float()  # [L+1, n]
        out[name] = {"median_rank": ranks.median(1).values.tolist(), "top1": (ranks == 0).float().mean(1).tolist()}
    return out


@torch.no_grad()
def resid_patching(model, pairs, positions: dict[int, str], names: tuple[str, ...], head: range) -> dict:
    """Clean resid_pre patched into the corrupted run, per layer and position, on the mean A→C logit difference
    (answer - corrupted answer: `pairs`' answer tokens), normalised so 0 = the corrupted run and 1 = the clean one.
    The peak leaves out the head entity's span `head`, where patching layer 0 replays the whole clean input (1 by
    construction); `names` names every position, `positions` the two with their own peak. The patching is
    `analyze patching`'s (`sae_ooc.analyses.patching.patch_all`), resid_pre only."""
    m_clean, m_corrupt, per = patch_all(model, pairs, ("resid_pre",), "logit_diff")
    m_clean, m_corrupt = float(m_clean.mean()), float(m_corrupt.mean())
    heat = per["resid_pre"].mean(-1)  # [n_layers, pos]
    norm = normalise(heat, m_clean, m_corrupt, eps=1e-6)
    out = {"clean_logit_diff": m_clean, "corrupt_logit_diff": m_corrupt, "n_pairs": len(pairs), "normalised": norm.tolist()}
    cols = [p for p in range(norm.shape[1]) if p not in head]
    body = norm[:, cols]
    if torch.isfinite(body).any():
        flat = torch.nan_to_num(body, nan=-float("inf")).flatten().argmax()
        layer, p = divmod(int(flat), body.shape[1])
        out["peak"] = {"value": float(body[layer, p]), "layer": layer, "position": names[cols[p]]}
        for p_idx, name in positions.items():
            col = norm[:, p_idx]
            out[f"peak@{name}"] = {"value": float(col.max()), "layer": int(col.argmax())}
    return out
