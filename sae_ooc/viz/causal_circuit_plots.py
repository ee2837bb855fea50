"""Figure of stage `variables`, section 2: the circuit of causal variables as a graph. Inputs (head, r1, r2 tokens) feed
the units of the high-level model (bridge@r1, bridge@answer, r2 at the answer position), each box naming its hook, rank
and held-out IIA beside the residual patch there; the title gives the faithfulness of the circuit with no remainder."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.viz.plots import fail_soft, plt, save_figure

# (x, y) of each node of the high-level model
PLACES = {"head": (0, 2), "r1": (0, 1), "r2": (0, 0), "bridge@r1": (1, 1.5), "bridge@answer": (2, 1.1), "r2@answer": (2, -0.1),
          "answer": (3, 0.5)}
EDGES = (("head", "bridge@r1"), ("r1", "bridge@r1"), ("bridge@r1", "bridge@answer"), ("r2", "r2@answer"),
         ("bridge@answer", "answer"), ("r2@answer", "answer"))


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _short(hook: str | None) -> str:
    return "" if hook is None else hook.replace("blocks.", "L").replace(".hook_", " ")


@fail_soft
def plot_causal_circuit(circuit: dict, stem: Path) -> list[Path]:
    if circuit.get("status") != "ok":
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, f"circuit of causal variables not built: {circuit.get('status')}", ha="center", va="center", fontsize=9)
        ax.axis("off")
        return save_figure(fig, stem)
    nodes = circuit["nodes"]
    faith = (circuit.get("faithfulness") or {}).get("circuit") or {}
    text = {"head": "head", "r1": "r1", "r2": "r2", "answer": "answer\nt(bridge, r2)"}
    for key, nd in nodes.items():
        text[key] = (f"{key}\n{_short(nd['hook'])} rank {nd['rank']}\nIIA {_pct(nd['unit']['switch'])} "
                     f"(patch {_pct(nd['resid_patch']['switch'])},\nrandom {_pct(nd['random'].get('switch'))})")
        if (nd.get("other_r2") or {}).get("n"):
            text[key] += f"\ndonor asking another r2: {_pct(nd['other_r2']['unit']['switch'])}"
    r2rank = (circuit.get("faithfulness") or {}).get("r2_rank") or {}
    h2 = (nodes.get("bridge@answer") or {}).get("hook")
    text["r2@answer"] = f"r2@answer\n{_short(h2)} rank {r2rank.get(h2, '?')}\n(class-mean span)"
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for a, b in EDGES:
        (x0, y0), (x1, y1) = PLACES[a], PLACES[b]
        ax.annotate("", xy=(x1 - 0.28, y1), xytext=(x0 + 0.28, y0), arrowprops=dict(arrowstyle="->", color="gray"))
    for key, (x, y) in PLACES.items():
        unit = key in nodes
        missing = key == "bridge@answer" and key not in nodes
        ax.text(x, y, text.get(key, key + "\n(no unit)"), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", fc="lightblue" if unit else ("mistyrose" if missing else "whitesmoke"), ec="gray"))
    u = faith.get("unit") or {}
    rnd = faith.get("random") or {}
    f = u.get("faithfulness")
    ax.set_title(f"circuit of causal variables, no remainder nodes: keeps {_pct(u.get('kept'))} of held-out answers, "
                 f"faithfulness {f:.2f}" if u.get("kept") is not None and f is not None else "circuit of causal variables (faithfulness not measured)", fontsize=9)
    if rnd:
        ax.text(1.5, -0.55, f"random subspaces of the same ranks keep {_pct(rnd.get('kept'))}; full mean ablation keeps "
                f"{_pct((faith.get('full_mean_ablation') or {}).get('kept'))}; n = {circuit.get('n_heldout')} held-out pairs",
                ha="center", fontsize=8)
    ax.set_xlim(-0.5, 3.5)
    ax.set_ylim(-0.8, 2.5)
    ax.axis("off")
    return save_figure(fig, stem)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def causal_circuit_dot(circuit: dict) -> str:
    """The same graph in Graphviz DOT (the export stage's text format): each node labelled as in the figure."""
    lines = ["digraph causal_circuit {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    if circuit.get("status") == "ok":
        nodes = circuit["nodes"]
        r2rank = (circuit.get("faithfulness") or {}).get("r2_rank") or {}
        h2 = (nodes.get("bridge@answer") or {}).get("hook")
        for key in PLACES:
            if key in nodes:
                nd = nodes[key]
                label = f"{key}\n{nd['hook']} rank {nd['rank']}\nIIA {_pct(nd['unit']['switch'])} (held-out)"
            elif key == "r2@answer":
                label = f"r2@answer\n{h2} rank {r2rank.get(h2, '?')}"
            else:
                label = key if key not in ("bridge@answer", "bridge@r1") else f"{key}\n(no unit)"
            lines.append(f"  {_q(key)} [label={_q(label)}];")
        lines += [f"  {_q(a)} -> {_q(b)};" for a, b in EDGES]
        u = ((circuit.get("faithfulness") or {}).get("circuit") or {}).get("unit") or {}
        kept = _pct(u.get("kept"))
        lines.append(f"  label={_q('no remainder nodes: keeps ' + kept + ' of held-out answers')};")
    else:
        lines.append(f"  label={_q('not built: ' + str(circuit.get('status')))};")
    return "\n".join(lines + ["}"]) + "\n"


def causal_circuit_html(circuit: dict, svg: str) -> str:
    """A self-contained page: the figure's SVG inline and the DOT source below it (no external links)."""
    import html

    body = svg[svg.index("<svg"):] if "<svg" in svg else "<p>figure not drawn</p>"
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>circuit of causal variables</title></head><body>\n"
            f"{body}\n<pre>{html.escape(causal_circuit_dot(circuit))}</pre>\n</body></html>\n")
