"""The text every circuit drawing shows for a node (PNG/SVG, HTML, DOT), and the captions of the drawings.

A node is drawn in the row of its hook and the column of the position it is measured at, and its title
always names that position (`L1 pre #411 @r2`). A feature's ground-truth label comes from the SAE evaluation
and names the position where it was found (`head=e23@head`); when that is not the node's own position the
caption says so (`labelled at head: head=e23`) instead of showing a label that contradicts the column.
Imports nothing heavy.
"""

from __future__ import annotations

import textwrap

from sae_ooc.viz.text import fmt


def sink_id(circuit: dict) -> str:
    """The id of the metric node that edges into the output point to: the circuit's own `metadata.sink.id`
    (sae_ooc.circuits.nodes.SINK in every saved circuit; the drawing code reads no circuits module)."""
    return circuit["metadata"]["sink"]["id"]

CAPTION_CHARS = 26  # wrap width of a node's caption; long labels wrap, never truncate


def short_hook(hook: str) -> str:
    """blocks.1.hook_resid_pre -> L1 pre."""
    parts = hook.split(".")
    name = parts[-1].replace("hook_", "").replace("resid_", "")
    return f"L{parts[1]} {name}" if len(parts) > 2 and parts[1].isdigit() else hook


def node_title(n: dict) -> str:
    """Hook, what the node is, and the position it is measured at: `L0 pre #3 @head`, `L1 pre error @r1`; a node
    of another type (e.g. a ground-truth variable of a variable-level circuit) shows its label or id."""
    if n.get("type") == "error":
        what = "error"
    elif n.get("type") == "feature" and n.get("feature") is not None:
        what = f"#{n['feature']}"
    else:
        what = str(n.get("name") or n.get("label") or n["id"].split("@")[0])
    return f"{short_hook(n['hook'])} {what} @{n['role']}"


def node_caption(n: dict, positions: list[str] | None = None) -> str:
    """The ground-truth label at the node's own position where there is one, else where the label was found,
    else the short description; error nodes say what they are."""
    if n.get("type") == "error":
        return "SAE error: what the SAE does not reconstruct"
    here = [lab for lab in n.get("labels") or [] if lab.get("position") == n["role"]]
    if here:
        return here[0].get("text") or n.get("label") or ""
    label = n.get("label")
    if label and n.get("type") == "feature":
        text, _, pos = label.rpartition("@")
        pos = pos.removeprefix("pos:")  # label_text's prefix that tells a position from a relation token
        if text and pos != n["role"] and (positions is None or pos in positions):
            return f"labelled at {pos}: {text}"
        return label
    return n.get("description") or label or ""


def node_lines(n: dict, positions: list[str] | None = None, width: int = CAPTION_CHARS) -> list[str]:
    """Title, wrapped caption, and effect: the lines of a node's box."""
    return [node_title(n), *wrap(node_caption(n, positions), width), f"effect {n['effect']:+.3g}"]


def wrap(text: str, width: int = CAPTION_CHARS) -> list[str]:
    """Lines of about `width` characters, broken at spaces; a word is split only when longer than twice `width`
    (labels such as `bridge=e12@r1` stay whole)."""
    lines = textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)
    return [line[i: i + 2 * width] for line in lines for i in range(0, len(line), 2 * width)]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def is_one_prompt(meta: dict) -> bool:
    return meta.get("n_pairs") == 1


def heading(meta: dict) -> str:
    """What the circuit is of: the prompt and its answer for one prompt's circuit, else the config and its pairs."""
    if is_one_prompt(meta):
        prompt = meta.get("prompt") or meta.get("example_prompt", "?")
        corrupt = f" (corrupted: {meta['corrupted_prompt']!r} -> {meta['corrupted_answer']})" if meta.get("corrupted_prompt") else ""
        return f"{meta.get('config', '')}: circuit of the prompt {prompt!r} -> {meta.get('answer') or meta.get('example_answer', '?')}{corrupt}"
    if meta.get("n_heldout_pairs"):
        return (f"{meta.get('config', '')}: circuit chosen on {plural(int(meta.get('n_pairs', 0)), 'selection pair')}, "
                f"scored on {plural(int(meta['n_heldout_pairs']), 'held-out pair')}")
    return f"{meta.get('config', '')}: circuit over {plural(int(meta.get('n_pairs', 0)), 'pair')}"


def effect_name(meta: dict) -> str:
    if is_one_prompt(meta):
        return "effect on this prompt"
    return "mean effect" + (f" over the {meta['effects_over']}" if meta.get("effects_over") else "")


def _heldout(circuit: dict) -> bool:
    return circuit.get("scores", {}).get("pairs") == "heldout" or "held-out" in str(circuit["metadata"].get("values_on", ""))


def score_text(circuit: dict) -> str:
    """The faithfulness numbers of a circuit, each labelled with the pairs it was measured on: held-out, or
    in-sample (the pairs, or the prompt, the circuit was chosen on); controls labelled as such."""
    meta, s = circuit["metadata"], circuit.get("scores", {})
    if is_one_prompt(meta):
        where = "in-sample: measured on the prompt it was pruned on"
    elif _heldout(circuit):
        where = f"on {plural(int(s.get('n_pairs') or meta.get('n_heldout_pairs') or meta.get('n_pairs', 0)), 'held-out pair')}"
    else:
        where = f"in-sample: measured on the {plural(int(meta.get('n_pairs', 0)), 'pair')} the nodes were chosen on"
    ci = s.get("faithfulness_ci95")
    parts = [f"faithfulness {fmt(s.get('faithfulness'))}" + (f" (95% CI {fmt(ci[0])} to {fmt(ci[1])})" if ci else "") + f" {where}"]
    if "completeness" in s:
        parts.append(f"completeness {fmt(s['completeness'])}")
    for k, v in s.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("faithfulness", "completeness", "n_pairs"):
            if "selection" in k or "in_sample" in k:
                parts.append(f"{k.replace('_', ' ')} {v:.3f} (in-sample)")
            elif "random" in k:
                parts.append(f"{k.replace('_', ' ')} {v:.3f} (control)")
            elif "heldout" in k:
                parts.append(f"{k.replace('_', ' ')} {v:.3f}")
    return "; ".join(parts)
