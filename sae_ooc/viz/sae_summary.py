"""The SAE evaluation in words and pictures: RUN/sae_eval/summary.md (a table over layers, alignment tables, where
the bridge entity becomes readable, targets) with its alignment heatmaps, and eval-sae's line per SAE."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.io import write_text
from sae_ooc.saes.alignment import VARIABLES
from sae_ooc.saes.store import SUMMARY_FILE, hook_sort_key
from sae_ooc.viz.sae_plots import plot_alignment_heatmap


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _best_bridge(al: dict) -> str:
    best = max((v for v in al.values() if v["variable"] == "bridge"), key=lambda v: v["frac_detected_features"], default=None)
    if best is None:
        return "n/a"
    return f"{best['frac_detected_features']:.0%} of values by one feature at {best['position']} (probe {best['frac_detected_probe']:.0%})"


def write_summary(per_hook: dict[str, dict], out_dir: Path, threshold: float) -> Path:
    """`out_dir`/summary.md (a table over layers + alignment tables) and the alignment heatmaps `out_dir`/alignment_<variable>."""
    hooks = sorted(per_hook, key=hook_sort_key)
    lines = ["# SAEs: reconstruction, spliced-in task metrics, ground-truth alignment", "",
             "Reconstruction on held-out sequences; task metrics with the SAE replacing the activation at its hook "
             "(loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), on test_id).", "",
             "| hook | arch | d_sae | EV | FVU | MSE | L0 | dead | dense | test_id acc clean | test_id acc SAE | loss recovered | train acc SAE | test_ood acc SAE | atomic acc SAE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for h in hooks:
        m = per_hook[h]
        r = m["reconstruction"]
        t = m.get("task", {}).get("splits", {})
        acc = lambda s, k="acc_sae": _fmt(t.get(s, {}).get(k))  # noqa: E731
        lines.append(f"| {h} | {m.get('architecture', '?')} | {m.get('d_sae', '?')} | {_fmt(r['explained_variance'])} | {_fmt(r['fvu'])} | "
                     f"{_fmt(r['mse'], '.4g')} | {r['l0']:.2f} | {r['dead_fraction']:.1%} | {r['dense_fraction']:.1%} | "
                     f"{acc('test_id', 'acc_clean')} | {acc('test_id')} | {_fmt(m.get('task', {}).get('loss_recovered'))} | "
                     f"{acc('train')} | {acc('test_ood')} | {acc('atomic_test')} |")
    positions = ["head", "r1", "r2"]
    figs = []
    for var in VARIABLES:
        lines += ["", f"## {var}: share of values detected with AUROC >= {threshold} (held-out), one SAE feature / linear probe "
                  "(probe acc: the probe's exact-value accuracy)", "",
                  "| hook | " + " | ".join(positions) + " |", "|---|" + "---|" * len(positions)]
        grid = {}
        for h in hooks:
            cells = []
            for pos in positions:
                a = per_hook[h].get("alignment", {}).get(f"{var}@{pos}")
                if a is None:
                    cells.append("–")
                    continue
                grid[(h, pos)] = {"features": a["frac_detected_features"], "probe_accuracy": a.get("probe_accuracy")}
                cells.append(f"{a['frac_detected_features']:.0%} / {a['frac_detected_probe']:.0%} (n={a['n_values']}, probe acc {a.get('probe_accuracy', float('nan')):.2f})")
            lines.append(f"| {h} | " + " | ".join(cells) + " |")
        if grid:
            plot_alignment_heatmap(grid, hooks, positions, Path(out_dir) / f"alignment_{var}", variable=var, threshold=threshold)
            figs.append(f"alignment_{var}.png")
    bridge = [(h, a) for h in hooks for a in per_hook[h].get("alignment", {}).values() if a["variable"] == "bridge"]
    if bridge:
        h, a = max(bridge, key=lambda x: (x[1]["frac_detected_features"], x[1]["mean_auroc_features"]))
        lines += ["", f"**Bridge entity**: best read out at `{h}`, position {a['position']}: one feature detects "
                  f"{a['frac_detected_features']:.0%} of {a['n_values']} bridge values (mean AUROC {a['mean_auroc_features']:.3f}); "
                  f"linear probe {a['frac_detected_probe']:.0%} (mean AUROC {a['mean_auroc_probe']:.3f}, exact-value accuracy {a.get('probe_accuracy', float('nan')):.2f})."]
        hp = max(bridge, key=lambda x: x[1].get("probe_accuracy", 0.0))
        lines.append(f"Raw stream: the probe decodes the exact bridge best at `{hp[0]}`, position {hp[1]['position']} "
                     f"(accuracy {hp[1].get('probe_accuracy', float('nan')):.2f}).")
        first_f = next((f"`{h}` at {a['position']}" for h, a in bridge if a["frac_detected_features"] >= 0.8), "nowhere")
        first_p = next((f"`{h}` at {a['position']}" for h, a in bridge if a.get("probe_accuracy", 0.0) >= 0.9), "nowhere")
        lines.append(f"First readable (layer order): by single features (>= 80% of values) {first_f}; by the probe "
                     f"(exact-value accuracy >= 0.9) {first_p}.")
    lines += ["", "## Targets (default experiment goals)", "",
              "| hook | EV >= 0.95 at L0 <= 16 | dead < 5% | test_id acc within 2 points of clean |", "|---|---|---|---|"]
    ok = lambda c: "yes" if c else "no"  # noqa: E731
    for h in hooks:
        r, t = per_hook[h]["reconstruction"], per_hook[h].get("task", {}).get("splits", {}).get("test_id")
        drop = None if t is None else t["acc_clean"] - t["acc_sae"]
        lines.append(f"| {h} | {ok((r['explained_variance'] or 0) >= 0.95 and r['l0'] <= 16)} ({_fmt(r['explained_variance'])} at {r['l0']:.1f}) | "
                     f"{ok(r['dead_fraction'] < 0.05)} ({r['dead_fraction']:.1%}) | "
                     f"{'n/a' if drop is None else ok(drop <= 0.02) + f' ({-drop * 100:+.1f} points)'} |")
    lines += ["", "Figures: " + ", ".join(figs), ""]
    path = Path(out_dir) / SUMMARY_FILE
    write_text(path, "\n".join(lines))
    return path


def eval_line(hook_name: str, res: dict) -> str:
    """eval-sae's console line for one SAE."""
    r, t = res["reconstruction"], res["task"]["splits"]["test_id"]
    return (f"eval-sae: {hook_name}: EV {r['explained_variance']:.3f} L0 {r['l0']:.1f} dead {r['dead_fraction']:.1%} | test_id acc "
            f"{t['acc_clean']:.3f} -> {t['acc_sae']:.3f}, loss recovered {_fmt(t['loss_recovered'])} | bridge "
            f"{_best_bridge(res['alignment'])}")
