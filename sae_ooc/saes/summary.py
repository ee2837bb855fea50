"""The SAE evaluation in words and pictures: RUN/sae_eval/summary.md (reconstruction per position, spliced-in task
metrics, every alignment number beside its controls, where the bridge entity becomes readable, targets) with its
alignment heatmaps, and eval-sae's line per SAE."""

from __future__ import annotations

from pathlib import Path

from sae_ooc.io import write_text
from sae_ooc.saes.dead import DEAD_ON
from sae_ooc.saes.prefixes import VARIABLES
from sae_ooc.saes.probes import wilson
from sae_ooc.saes.store import SUMMARY_FILE, hook_sort_key
from sae_ooc.viz.sae_plots import plot_alignment_heatmap
from sae_ooc.viz.text import fmt as _fmt

POSITIONS = ("head", "r1", "r2")
ALIGN_POSITIONS = POSITIONS + ("r3",)  # alignment rows by position name: a three-hop question's r3 too (absent ones skipped)
# heatmap panels: (key into a cell, title); the probe ones are held-out exact-value accuracies
PROBE_PANELS = (("trained", "trained model"), ("random_model", "random-init models (mean)"), ("step0", "step-0 checkpoint"),
                ("shuffled", "shuffled labels (mean)"))
FEATURE_PANELS = (("features", "one SAE feature"), ("features_shuffled", "one feature, shuffled labels (mean)"))


def _pct(x) -> str:
    return _fmt(x, ".0%")


def _best_bridge(al: dict) -> str:
    rows = [v for v in al.values() if v["variable"] == "bridge"]
    if not rows:
        return "n/a"
    best = max(rows, key=lambda v: v["probe"]["heldout_acc"] or 0.0)
    p = best["probe"]
    return (f"probe {_fmt(p['heldout_acc'], '.2f')} at {best['position']} on {p['n_heldout']} held-out prefixes "
            f"(controls <= {_fmt(p['control_max_acc'], '.2f')})")


def _recon_table(per_hook: dict, hooks: list[str]) -> list[str]:
    lines = ["## Reconstruction (held-out prefixes, one row per distinct prefix)", "",
             "Pooled explained variance shares one mean over positions, so the between-position variance inflates its "
             f"denominator; the per-position columns are the stricter numbers. Dead: {DEAD_ON}.", "",
             "| hook | arch | d_sae | EV pooled | EV head (n) | EV r1 (n) | EV r2 (n) | FVU | MSE | L0 | dead | dense | prefixes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for h in hooks:
        m = per_hook[h]
        r = m["reconstruction"]
        bp = r.get("by_position", {})
        ev = " | ".join(f"{_fmt(bp[p]['explained_variance'])} ({bp[p]['n_tokens']})" if p in bp else "n/a" for p in POSITIONS)
        lines.append(f"| {h} | {m.get('architecture', '?')} | {m.get('d_sae', '?')} | {_fmt(r['explained_variance'])} | {ev} | "
                     f"{_fmt(r['fvu'])} | {_fmt(r['mse'], '.4g')} | {r['l0']:.2f} | {_dead(r, m.get('d_sae'))} | {r['dense_fraction']:.1%} | "
                     f"{r['n_tokens']} |")
    return lines


def _task_table(per_hook: dict, hooks: list[str]) -> list[str]:
    lines = ["", "## Spliced-in task metrics", "",
             "Accuracy clean → with the SAE replacing the activation at its hook; loss recovered = (CE_zero - CE_sae) / "
             "(CE_zero - CE_clean). test_id is reported, valid_id is what a choice reads. *Unseen*: the prompts whose whole "
             "prompt (the prefix at the answer position) the SAE never saw.", "",
             "| hook | test_id acc | loss recovered test_id | valid_id acc | loss recovered valid_id | test_id unseen acc (n) | "
             "loss recovered unseen | train acc SAE | test_ood_sys acc SAE | atomic acc SAE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for h in hooks:
        t = per_hook[h].get("task", {})
        s, ho = t.get("splits", {}), t.get("heldout_prefixes", {}).get("test_id", {})
        acc = lambda d: f"{_fmt(d.get('acc_clean'))} → {_fmt(d.get('acc_sae'))}" if d else "n/a"  # noqa: E731
        lines.append(f"| {h} | {acc(s.get('test_id'))} | {_fmt(t.get('loss_recovered'))} | {acc(s.get('valid_id'))} | "
                     f"{_fmt(t.get('loss_recovered_valid_id'))} | {acc(ho)} ({ho.get('n', 0)}) | {_fmt(ho.get('loss_recovered'))} | "
                     f"{_fmt(s.get('train', {}).get('acc_sae'))} | {_fmt(s.get('test_ood_sys', {}).get('acc_sae'))} | "
                     f"{_fmt(s.get('atomic_test', {}).get('acc_sae'))} |")
    return lines


def _probe_cell(p: dict) -> str:
    ci = p.get("heldout_ci95") or [None, None]
    verdict = " **>controls**" if p.get("above_controls") else ""
    return (f"{_fmt(p['heldout_acc'], '.2f')} [{_fmt(ci[0], '.2f')}, {_fmt(ci[1], '.2f')}] · rand {_fmt(p['random_model_acc'], '.2f')} · "
            f"step0 {_fmt(p.get('step0_acc'), '.2f')} · shuf {_fmt(p['shuffled_acc'], '.2f')} · maj {_fmt(p['majority_acc'], '.2f')} "
            f"(n={p['n_heldout']}){verdict}")


def share_above_controls(f: dict, n_values: int) -> bool:
    """The share of values one feature detects (what the cells show) clearly above the shuffled-label search: the
    lower end of its 95% Wilson interval over `n_values` values clears the upper end of the best shuffled run's. A
    share of 0 never passes. (features.above_controls tests the mean AUROC instead, which a cell showing 0.00 can pass.)"""
    runs = [x for x in (f.get("shuffled_frac_detected_runs") or [f.get("shuffled_frac_detected")]) if x is not None]
    if f.get("frac_detected") is None or not runs or not n_values:
        return False
    return wilson(f["frac_detected"], n_values)[0] > wilson(max(runs), n_values)[1]


def _feature_cell(a: dict) -> str:
    f = a.get("features")
    if not f:
        return "–"
    verdict = " **>shuffled**" if share_above_controls(f, a["n_values"]) else ""
    return (f"{_pct(f['frac_detected'])} (AUROC {f['mean_auroc']:.2f}±{f['sd_auroc_over_values']:.2f}) · shuf "
            f"{_pct(f['shuffled_frac_detected'])} ({f['shuffled_mean_auroc']:.2f}) (n={a['n_values']}){verdict}")


def _grid(per_hook: dict, hooks: list[str], var: str) -> dict:
    grid = {}
    for h in hooks:
        for pos in ALIGN_POSITIONS:
            a = per_hook[h].get("alignment", {}).get(f"{var}@{pos}")
            if a is None:
                continue
            p, f = a["probe"], a.get("features") or {}
            grid[(h, pos)] = {"trained": p["heldout_acc"], "random_model": p["random_model_acc"], "step0": p.get("step0_acc"),
                              "shuffled": p["shuffled_acc"], "features": f.get("frac_detected"), "features_shuffled": f.get("shuffled_frac_detected"),
                              "trained_mark": "*" if p.get("above_controls") else "",
                              "features_mark": "*" if share_above_controls(f, a.get("n_values", 0)) else ""}
    return grid


def _alignment_tables(per_hook: dict, hooks: list[str], out_dir: Path, threshold: float) -> tuple[list[str], list[str]]:
    lines = ["", "## Alignment on held-out prefixes, beside its controls", "",
             "Probe: exact-value accuracy of a linear probe fit on the selection prefixes, on the held-out prefixes, with its "
             "95% Wilson interval; beside it the same probe on untrained models of the same architecture (rand, mean over "
             "seeds), on the step-0 checkpoint (when the run kept one), on shuffled selection labels (shuf), and always "
             "answering the most common selection value (maj). **>controls**: the interval's lower end clears the best "
             f"control's upper end. Feature: share of values whose best feature (chosen on the selection prefixes) reaches "
             f"AUROC >= {threshold} on the held-out ones, mean ± sd AUROC over values, and the same search on shuffled labels; "
             "**>shuffled** (* in the figures): that share's 95% Wilson interval over the values clears the best shuffled "
             "search's.", ""]
    figs = []
    for var in VARIABLES:
        grid = _grid(per_hook, hooks, var)
        if not grid:
            continue
        lines += [f"### {var}", "", "| hook | position | probe (held-out) and controls | single feature (held-out) and control |", "|---|---|---|---|"]
        for h in hooks:
            for pos in ALIGN_POSITIONS:
                a = per_hook[h].get("alignment", {}).get(f"{var}@{pos}")
                if a is not None:
                    lines.append(f"| {h} | {pos} | {_probe_cell(a['probe'])} | {_feature_cell(a)} |")
        lines.append("")
        panels = [pp for pp in PROBE_PANELS if any(c.get(pp[0]) is not None for c in grid.values())]
        plot_alignment_heatmap(grid, hooks, list(POSITIONS) + [p for p in ALIGN_POSITIONS[3:] if any(k[1] == p for k in grid)], Path(out_dir) / f"alignment_{var}", variable=var,
                               panels=panels + list(FEATURE_PANELS), threshold=threshold)
        figs.append(f"alignment_{var}.png")
    return lines, figs


def _bridge_section(per_hook: dict, hooks: list[str]) -> list[str]:
    bridge = [(h, a) for h in hooks for a in per_hook[h].get("alignment", {}).values() if a["variable"] == "bridge"]
    if not bridge:
        return []
    lines = ["## Bridge entity", ""]
    first = next((f"`{h}` at {a['position']}" for h, a in bridge if a["probe"].get("above_controls")), None)
    lines.append(f"First place (layer order) where a probe reads the exact bridge from held-out prefixes clearly above every "
                 f"control: {first or 'nowhere'}.")
    for h, a in bridge:
        p = a["probe"]
        if a["position"] == "r1" and p.get("n_heldout_known") is not None:
            lines.append(f"- `{h}` at r1: held-out (head, r1) prefixes whose atomic fact the model was trained on: "
                         f"{_fmt(p['heldout_acc_known'], '.2f')} (n={p['n_heldout_known']}; random-init {_fmt(p['random_model_acc_known'], '.2f')}, "
                         f"shuffled {_fmt(p['shuffled_acc_known'], '.2f')}); whose first hop no model could know: "
                         f"{_fmt(p['heldout_acc_unknown'], '.2f')} (n={p['n_heldout_unknown']}).")
    return lines + [""]


def _targets(per_hook: dict, hooks: list[str]) -> list[str]:
    lines = ["## Targets (default experiment goals)", "",
             "| hook | EV >= 0.95 at L0 <= 16 (pooled) | dead < 5% | test_id acc within 2 points of clean |", "|---|---|---|---|"]
    ok = lambda c: "yes" if c else "no"  # noqa: E731
    for h in hooks:
        r, t = per_hook[h]["reconstruction"], per_hook[h].get("task", {}).get("splits", {}).get("test_id")
        drop = None if t is None else t["acc_clean"] - t["acc_sae"]
        lines.append(f"| {h} | {ok((r['explained_variance'] or 0) >= 0.95 and r['l0'] <= 16)} ({_fmt(r['explained_variance'])} at {r['l0']:.1f}) | "
                     f"{ok(r['dead_fraction'] < 0.05)} ({r['dead_fraction']:.1%}) | "
                     f"{'n/a' if drop is None else ok(drop <= 0.02) + f' ({-drop * 100:+.1f} points)'} |")
    return lines


def write_summary(per_hook: dict[str, dict], out_dir: Path, threshold: float) -> Path:
    """`out_dir`/summary.md and the alignment heatmaps `out_dir`/alignment_<variable>.png/.svg."""
    hooks = sorted(per_hook, key=hook_sort_key)
    lines = ["# SAEs: reconstruction, spliced-in task metrics, ground-truth alignment", "",
             "Every number is measured on held-out *prefixes*: at each position a share of the distinct token prefixes that "
             "determine the activation there was held out of SAE training, probe fitting and feature selection, and each "
             "distinct prefix counts once. Numbers on the selection prefixes are marked in-sample.", ""]
    lines += _recon_table(per_hook, hooks) + _task_table(per_hook, hooks)
    align, figs = _alignment_tables(per_hook, hooks, out_dir, threshold)
    lines += align + _bridge_section(per_hook, hooks) + _targets(per_hook, hooks)
    lines += ["", "Figures: " + (", ".join(figs) or "none"), ""]
    path = Path(out_dir) / SUMMARY_FILE
    write_text(path, "\n".join(lines))
    return path


def _dead(r: dict, d_sae) -> str:
    """n/d_sae (percent) of dead features (`DEAD_ON`)."""
    return f"{r['n_dead']}/{d_sae} ({r['dead_fraction']:.1%})" if "n_dead" in r and d_sae else f"{r['dead_fraction']:.1%}"


def eval_line(hook_name: str, res: dict) -> str:
    """eval-sae's console line for one SAE."""
    r, t = res["reconstruction"], res["task"]["splits"]["test_id"]
    return (f"eval-sae: {hook_name}: EV {_fmt(r['explained_variance'])} L0 {r['l0']:.1f} dead {r['n_dead']} ({r['dead_fraction']:.1%}, {DEAD_ON}) | test_id acc "
            f"{t['acc_clean']:.3f} -> {t['acc_sae']:.3f}, loss recovered {_fmt(t['loss_recovered'])} | bridge "
            f"{_best_bridge(res['alignment'])}")
