"""Edit one fact at a time with ROME's rank-one update of an MLP's W_out, at every layer: does the edit reach the two-hop facts? (RUN/edit/).

Per layer: efficacy, propagation to every two-hop prompt (h, r1, *), specificity (share unchanged and KL), the reverse fact
(reversal family); and causal tracing of each fact, correlated with edit success. Settings: the `edit` config section.
"""

from sae_ooc.commands import files_written, verb
from sae_ooc.viz.text import fmt as num


def summarize(run, result) -> str:
    from sae_ooc.interventions.edit_result import EditResult  # no torch there

    e = EditResult.load(run.edit_dir)
    st = e.settings
    lines = [f"edit: {verb(result)} {files_written(run, 'edit')}: {st.n_edits} facts edited alone at each of layers "
             f"{', '.join(str(x) for x in st.layers)} (key at {st.position})"]
    for r in e.by_layer:
        held = r.propagation_heldout
        lines.append(f"  layer {r.layer}: efficacy {num(r.efficacy.share)} (in-sample), propagation {num(r.propagation.share)}"
                     + (f" ({num(held.share)} on {held.n} two-hop prompts held out of training)" if held else "") + ", "
                     f"specificity same head {num(r.specificity_same_head.share)} / unrelated atomic "
                     f"{num(r.specificity_atomic.share)} / unrelated two-hop {num(r.specificity_two_hop.share)}"
                     + (f", reverse {num(r.reverse.share)}" if r.reverse and r.reverse.share is not None else ""))
    for key, c in e.localization.correlation.items():
        lines.append(f"  causal tracing vs {key}: Pearson {num(c.pearson.value)}, Spearman {num(c.spearman.value)} "
                     f"over {c.n_points} (fact, layer) points")
    return "\n".join(lines)
