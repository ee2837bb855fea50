"""Stage `report`: one Markdown page over every stage's outputs, each number with the intervention
that produced it and the command that reproduces it.

Written to RUN/REPORT.md. With `out` (`sae-ooc report --out results/`, or the pipeline on the default run
directory), the report, the metric tables, the figures and the circuit diagrams are copied there too, under
stable names, so the committed results/ folder is always the output of one run. No other stage writes
outside the run directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sae_ooc.errors import UserError
from sae_ooc.io import read_json, write_text


def _load(path: Path):
    return read_json(path) if Path(path).exists() else None


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _f(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _cmd(run, stage: str, extra: str = "") -> str:
    cfg = f" --config configs/{run.cfg.name}.yaml" if (Path("configs") / f"{run.cfg.name}.yaml").exists() else ""
    return f"`sae-ooc {stage}{cfg} --run {run.root}{extra}`"


def _task_section(run, lines: list[str], figures: list[Path]) -> None:
    t = run.cfg.task
    info = (run.stage_record("data") or {}).get("info", {})
    sizes = info.get("sizes", {})
    lines += [
        "## 1. Task",
        "",
        f"Family `{t.family}`: {t.n_entities} entities, {t.n_relations} relations, {t.facts_per_entity} atomic facts "
        f"`(h, r) → t` per entity; two-hop facts `(h, r1, r2) → t2` through a bridge `b` with `(h, r1) → b`, `(b, r2) → t2`. "
        f"phi = {t.phi} inferred facts per atomic fact in train; {_pct(t.ood_fraction)} of atomic facts held out (test_ood); seed {t.seed}.",
        "",
        "| split | examples | majority-answer rate |",
        "|---|---|---|",
    ]
    for s, n in sizes.items():
        lines.append(f"| {s} | {n} | {_f(info.get('majority_rate', {}).get(s))} |")
    lines += ["", f"Reproduce: {_cmd(run, 'data')}", ""]


def _train_section(run, lines: list[str], figures: list[Path]) -> None:
    fm = _load(run.model_dir / "final_metrics.json")
    lines += ["## 2. Model: does it compose A→C?", ""]
    if fm is None:
        lines += ["Not run yet: `sae-ooc train`.", ""]
        return
    m = run.cfg.model
    acc, maj = fm["accuracy"], fm["majority_rate"]
    lines += [
        f"A {m.n_layers}-layer HookedTransformer (d_model {m.d_model}, {m.n_heads} heads, d_mlp {m.d_mlp}) trained from scratch "
        f"for {fm['steps']} steps in {fm['minutes']:.2f} minutes (on the machine that made this report). Accuracy on every example "
        f"of each split (the saved model, reloaded, gives the same numbers):",
        "",
        "| split | accuracy | majority-answer rate |",
        "|---|---|---|",
    ]
    for s in acc:
        lines.append(f"| {s} | {_f(acc[s])} | {_f(maj[s])} |")
    reach = []
    for th in ("0.5", "0.9"):
        step, mins = fm.get(f"test_id_{th}_step"), fm.get(f"test_id_{th}_minutes")
        reach.append(f"test_id ≥ {th} at step {step} ({_f(mins, '.2f')} min)" if step is not None else f"test_id never reached {th}")
    lines += ["", "; ".join(reach) + ".", ""]
    verdict = acc["test_id"] >= 0.9 and acc["atomic_test"] >= 0.99
    lines += [
        f"**Out-of-context composition: {'yes' if verdict else 'not at the 0.90 bar'}** — test_id (two-hop facts never seen, "
        f"both of whose atomic facts were seen) {_f(acc['test_id'])} vs a majority rate of {_f(maj['test_id'])}; "
        f"test_ood (a held-out atomic fact) {_f(acc['test_ood'])}.",
        "",
        "![accuracy](accuracy.png)",
        "",
        f"Reproduce: {_cmd(run, 'train')}",
        "",
    ]
    figures += [run.model_dir / "accuracy.png", run.model_dir / "accuracy.svg"]


def _sae_section(run, lines: list[str], figures: list[Path]) -> None:
    lines += ["## 3. SAEs per layer", ""]
    ev = run.sae_eval_dir
    if not (ev / "summary.md").exists():
        lines += ["Not run yet: `sae-ooc train-sae` and `sae-ooc eval-sae`.", ""]
        return
    rows = []
    for d in sorted(p for p in ev.iterdir() if (p / "metrics.json").exists()):
        trained = _load(run.saes_dir / d.name / "metrics.json") or {}  # train-sae's record: architecture, width
        mj = read_json(d / "metrics.json")
        rec, task = mj.get("reconstruction", {}), mj.get("task", {})
        tid = task.get("splits", {}).get("test_id", {})
        rows.append((d.name, trained.get("architecture"), trained.get("d_sae"), rec, tid, task))
    lines += [
        "Reconstruction on held-out sequences; task metrics with the SAE **spliced in** (the intervention: the SAE's "
        "reconstruction replaces the activation at its hook). Loss recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean) on test_id.",
        "",
        "| hook | arch | d_sae | explained var. | L0 | dead | test_id acc clean → SAE | loss recovered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for hook, arch, d_sae, rec, tid, task in rows:
        lines.append(
            f"| `{hook}` | {arch} | {d_sae} | {_f(rec.get('explained_variance'))} | {_f(rec.get('l0'), '.1f')} | "
            f"{_pct(rec.get('dead_fraction'))} | {_f(tid.get('acc_clean'))} → {_f(tid.get('acc_sae'))} | {_f(task.get('loss_recovered'))} |"
        )
    ok = [
        (rec.get("explained_variance", 0) >= 0.95 and rec.get("l0", 1e9) <= 16 and rec.get("dead_fraction", 1) < 0.05
         and abs((tid.get("acc_clean") or 0) - (tid.get("acc_sae") or 0)) <= 0.02)
        for _, _, _, rec, tid, _ in rows
    ]
    lines += ["", f"Targets (EV ≥ 0.95 at L0 ≤ 16, dead < 5%, spliced test_id within 2 points): met at {sum(ok)} of {len(ok)} hooks.", ""]
    summary = (ev / "summary.md").read_text()
    bridge = [ln for ln in summary.splitlines() if ln.startswith("**Bridge entity**") or ln.startswith("Probe's best")]
    if bridge:
        lines += ["**Where the bridge entity becomes readable** (one SAE feature vs a linear probe on the raw stream, "
                  "AUROC ≥ 0.9 per bridge value, held-out tokens):", ""] + [ln for ln in bridge] + [""]
    if (ev / "alignment_bridge.png").exists():
        lines += ["![bridge alignment](alignment_bridge.png)", ""]
        for var in ("head", "r1", "r2", "bridge", "answer"):
            for ext in ("png", "svg"):
                figures.append(ev / f"alignment_{var}.{ext}")
    lines += ["Full per-variable tables: [sae_summary.md](sae_summary.md).", "",
              f"Reproduce: {_cmd(run, 'harvest')}, then {_cmd(run, 'train-sae')}, then {_cmd(run, 'eval-sae')}", ""]


def _attribution_section(run, lines: list[str], figures: list[Path]) -> None:
    lines += ["## 4. Which features carry the A→C answer", ""]
    ne = _load(run.attribution_dir / "node_effects.json")
    if ne is None:
        lines += ["Not run yet: `sae-ooc attribute`.", ""]
        return
    lines += [
        f"Node effects by `{ne['method']}` on {ne['n_pairs']} clean/corrupted pairs (corruption: a different head entity whose bridge "
        f"and answer both differ). Metric `{ne['metric']}`: clean {ne['metric_clean_mean']:.3f}, corrupted {ne['metric_corrupt_mean']:.3f}.",
        "",
    ]
    val = _load(run.attribution_dir / "validation.json")
    if val is None:
        lines += ["The approximation has **not** been validated against exact patching in this run "
                  f"({_cmd(run, 'attribute', ' --validate --force')}); treat its ranking as unverified.", ""]
    else:
        top = val["top"]
        lines += [f"Validation against exact activation patching on {val['n_pairs']} pairs ({val['n_active_nodes']} active nodes):", "",
                  f"| method | Spearman, all active | Spearman, top {top} | top-10 overlap | trusted |", "|---|---|---|---|---|"]
        for m, r in val["methods"].items():
            lines.append(f"| {m} | {_f(r['spearman_all'])} | {_f(r[f'spearman_top{top}'])} | {_f(r['top10_overlap'], '.2f')} | "
                         f"{'yes' if r['trusted'] else 'no'} |")
        lines += [""]
        if (run.attribution_dir / "validation.png").exists():
            figures += [run.attribution_dir / "validation.png", run.attribution_dir / "validation.svg"]
            lines += ["![validation](validation.png)", ""]
    lines += ["Reproduce: " + _cmd(run, "attribute", " --validate"), ""]


def _landmarks(rounds: list[dict], marks=(300, 200, 150, 100, 75, 50, 35, 25, 15, 10, 5, 0)) -> set[int]:
    """For each mark, the largest per-prompt feature count at or below it (one row per mark in the table)."""
    counts = sorted({r["max_features"] for r in rounds}, reverse=True)
    out = {counts[0]} if counts else set()
    for m in marks:
        c = next((c for c in counts if c <= m), None)
        if c is not None:
            out.add(c)
    return out


def _circuit_section(run, lines: list[str], figures: list[Path]) -> None:
    lines += ["## 5. The circuit", ""]
    faith = _load(run.circuit_dir / "faithfulness.json")
    circ = _load(run.circuit_dir / "circuit.json")
    if faith is None or circ is None:
        lines += ["Not run yet: `sae-ooc circuit`.", ""]
        return
    tgt = faith.get("target", {})
    lines += [
        f"{faith['n_feature_nodes']} feature nodes and {faith['n_error_nodes']} error nodes; everything outside the circuit "
        f"{faith['ablation']}-ablated (the intervention). Metric `{faith['metric']}` over {faith['n_pairs']} pairs: "
        f"full model {faith['m_full']:.3f}, everything ablated {faith['m_empty']:.3f}, circuit only {faith['m_circuit']:.3f}.",
        "",
        f"- **Faithfulness** (m(C) − m(∅)) / (m(M) − m(∅)) = **{faith['faithfulness']:.3f}**",
        f"- **Completeness** (circuit ablated, rest kept; low is good) = {faith['completeness']:.3f}",
        f"- Target faithfulness ≥ {tgt.get('faithfulness', 0.8)} with ≤ {tgt.get('max_feature_nodes', 50)} feature nodes, this circuit "
        f"({faith['ablation']} ablation): "
        + ("**met**" if tgt.get("met") else "**not met**")
        + (f" (first reached at {tgt['min_feature_nodes_reaching']} feature nodes)" if tgt.get("min_feature_nodes_reaching") else ""),
    ]
    pr = faith.get("pruned_per_prompt")
    if pr:
        ok = pr.get("faithfulness_within_max") is not None and pr["faithfulness_within_max"] >= pr["target"]
        lines.append(f"- Same target, per-prompt circuits by backward elimination ({pr['ablation']} ablation, {pr['n_pairs']} pairs, below): "
                     + ("**met**" if ok else "**not met**")
                     + f" (faithfulness {_f(pr.get('faithfulness_within_max'))} with ≤ {pr['max_features']} feature nodes per prompt)")
    lines += [""]
    by = faith.get("by_ablation") or {}
    cap = tgt.get("max_feature_nodes", 50)
    if by:
        lines += ["Faithfulness under each ablation (aggregate: one circuit for all pairs, top nodes by |mean effect|; per-prompt: "
                  "each pair its own top nodes by |effect|, both ranked by the clean → corrupted patching effects above). *Complete* is the circuit of every node active on the prompt (features "
                  "with a nonzero activation, all error terms): kept whole it is the model, so an ablation under which it scores far "
                  "below 1 changes the answer through the features the prompt does not use, and circuits measured under it say little.", "",
                  f"| ablation | m(∅) | complete | aggregate, {cap} features | per-prompt, {cap} features "
                  "| per-prompt, first size reaching 0.8 |", "|---|---|---|---|---|---|"]
        for kind, cv in by.items():
            at = cv["sizes"].index(cap) if cap in cv["sizes"] else None
            lines.append(f"| {kind} | {_f(cv['m_empty'])} | {_f(cv.get('faithfulness_active_nodes'))} | "
                         f"{_f(cv['faithfulness'][at]) if at is not None else '–'} | "
                         f"{_f(cv['faithfulness_per_prompt_circuits'][at]) if at is not None else '–'} | "
                         f"{cv.get('min_features_reaching_target_per_prompt') or 'not within ' + str(max(cv['sizes']))} |")
        lines += [""]
    if pr:
        first = pr["rounds"][0]
        lines += [f"**Smallest faithful circuits per prompt** (backward elimination under {pr['ablation']} ablation on {pr['n_pairs']} pairs, "
                  f"starting from the {first['mean_features']:.0f} active features and {first['mean_errors']:.0f} error terms of a prompt "
                  f"(faithfulness {_f(first['faithfulness'])}) and dropping, round by round, the nodes without which its metric stays closest "
                  "to the model's; each round measured by ablation; greedy, so these sizes are upper bounds): "
                  f"faithfulness {_f(pr.get('faithfulness_within_max'))} with at most {pr['max_features']} feature nodes per prompt; "
                  + (f"≥ {pr['target']} down to {pr['min_features_reaching_target']} feature nodes per prompt."
                     if pr.get("min_features_reaching_target") is not None else f"never ≥ {pr['target']} after the first round."), ""]
        lines += ["| feature nodes per prompt (at most) | mean | error nodes (mean) | faithfulness |", "|---|---|---|---|"]
        shown = [r for r in pr["rounds"] if r["max_features"] in _landmarks(pr["rounds"])]
        for r in shown:
            lines.append(f"| {r['max_features']} | {r['mean_features']:.1f} | {r['mean_errors']:.1f} | {_f(r['faithfulness'])} |")
        lines += [""]
    edges = faith.get("edges", {})
    if edges.get("ablation"):
        by_kind = edges.get("ablation_by_kind") or {faith["ablation"]: edges["ablation"]}
        lines += [f"{edges['n_edges']} edges. Edges checked by ablating them (drop in the metric; the circuit's top edges by |weight| vs "
                  "random edges of the same count; an ablated edge feeds its target the ablated value of its source along the direct path):", "",
                  "| ablation | edges ablated | top edges | random edges (mean ± sd) | random drawn from | top hurts more |",
                  "|---|---|---|---|---|---|"]
        for kind, rows in by_kind.items():
            for r in rows:
                lines.append(f"| {kind} | {r['k']} | {_f(r['top_edges_drop'])} | {_f(r['random_edges_drop_mean'])} ± "
                             f"{_f(r['random_edges_drop_std'])} | {r.get('random_pool', 'other edges')} | {'yes' if r['top_hurts_more'] else 'no'} |")
        lines += [""]
    ec = edges.get("exact_check")
    if ec and edges.get("weights") == "exact":
        lines += [f"Edge weights: exact edge patching of every edge the gradient method (Marks et al. 2024) proposes. The gradient "
                  f"weights agree with them at Pearson {_f(ec.get('pearson'))}, Spearman {_f(ec.get('spearman'))} over all "
                  f"{ec.get('n_edges')} edges and {ec.get('n_pairs')} pairs.", ""]
    elif ec:
        lines += [f"Gradient edge weights vs exact edge patching on {ec.get('n_edges')} sampled edges: Pearson {_f(ec.get('pearson'))}, "
                  f"Spearman {_f(ec.get('spearman'))}.", ""]
    lines += ["![faithfulness curve](faithfulness_curve.png)", "", "Top nodes:", "",
              "| node | position | effect | description |", "|---|---|---|---|"]
    for n in sorted(circ["nodes"], key=lambda n: -abs(n.get("effect", 0)))[:15]:
        lines.append(f"| `{n['id']}` | {n.get('role')} | {n.get('effect', 0):+.3f} | {(n.get('description') or '').replace('|', '/')} |")
    lines += ["", "![circuit](circuit.png)", "",
              "Interactive version: [circuit.html](circuit.html) (self-contained; hover a node for its top activations and promoted tokens).", ""]
    ex = _load(run.circuit_dir / "prompt_circuit.json")
    if ex is not None:
        m, sc = ex["metadata"], ex["scores"]
        nf = sum(n["type"] == "feature" for n in ex["nodes"])
        lines += [f"**One prompt's circuit.** The pruned circuit of the first pair, `{m['prompt']}` → {m['answer']} (bridge {m['bridge']}; "
                  f"corrupted `{m['corrupted_prompt']}` → {m['corrupted_answer']}): {nf} feature and {len(ex['nodes']) - nf} error nodes, "
                  f"faithfulness {_f(sc['faithfulness'])} on this pair under {m['ablation']} ablation; {len(ex['edges'])} edges weighed by "
                  "exact edge patching on this pair. Node size and colour: the node's clean → corrupted patching effect on this pair."
                  + (" Read it with the metric in mind: logit(t2) − logit(t2') only asks the model to prefer t2 over t2', a tail of "
                     "another bridge, so a circuit can pass without carrying r2 (here: "
                     f"{sum(n['role'] == 'r2' for n in ex['nodes'])} nodes at r2, "
                     f"{sum(n['role'] == 'r2' and n['hook_index'] < len(m['hooks']) - 2 for n in ex['nodes'])} of them before the last two "
                     "hooks); `--set attribution.metric=logprob` asks for t2 itself." if m["metric"] == "logit_diff" else ""), "",
                  "![one prompt's circuit](prompt_circuit.png)", "",
                  "Interactive version: [prompt_circuit.html](prompt_circuit.html).", ""]
    lines += [f"Reproduce: {_cmd(run, 'circuit')}, then {_cmd(run, 'export')}", ""]
    figures += [run.circuit_dir / "faithfulness_curve.png", run.circuit_dir / "faithfulness_curve.svg"]


def build_report(run) -> tuple[str, list[Path]]:
    """The report's Markdown and the figure files it refers to."""
    if not run.stages_file.exists():
        raise UserError(f"nothing has been run in {run.root}; run `sae-ooc pipeline --run {run.root}` first")
    lines = [f"# sae_ooc report: `{run.cfg.name}`", "",
             "Every number below comes from the run directory's files; each claim about the model comes from an intervention "
             "(evaluation of the trained model, SAE splicing, activation patching, ablation) named next to it.", ""]
    figures: list[Path] = []
    _task_section(run, lines, figures)
    _train_section(run, lines, figures)
    _sae_section(run, lines, figures)
    _attribution_section(run, lines, figures)
    _circuit_section(run, lines, figures)
    lines += ["## Reproduce everything", "", f"`sae-ooc pipeline --config configs/{run.cfg.name}.yaml`", ""]
    return "\n".join(lines), figures


def _run_links(run, text: str, figures: list[Path]) -> str:
    """The report links files by bare name (as they lie in results/); in RUN/REPORT.md point them at the run's own files."""
    where = {f.name: f for f in figures}
    for name in ("circuit.png", "circuit.html", "prompt_circuit.png", "prompt_circuit.html"):
        where[name] = run.export_dir / name
    where["sae_summary.md"] = run.sae_eval_dir / "summary.md"
    for name, path in where.items():
        rel = path.relative_to(run.root).as_posix() if path.is_relative_to(run.root) else path.as_posix()
        text = text.replace(f"]({name})", f"]({rel})")
    return text


# the export's diagrams that results/ keeps beside the report
DIAGRAMS = tuple(f"{p}circuit.{ext}" for p in ("", "prompt_") for ext in ("png", "svg", "html"))


def run_report(run, force: bool = False, out: Path | None = None) -> dict:
    """Stage `report`: write RUN/REPORT.md (always: it is cheap); with `out`, copy it with its tables, figures and
    the circuit diagrams there."""
    text, figures = build_report(run)
    write_text(run.root / "REPORT.md", _run_links(run, text, figures))
    if out is None:
        return {"out": None, "copied": []}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "REPORT.md", text)
    copies = {f: out / f.name for f in figures if f.exists()}
    copies[run.sae_eval_dir / "summary.md"] = out / "sae_summary.md"
    copies[run.model_dir / "final_metrics.json"] = out / "train_metrics.json"
    copies[run.attribution_dir / "validation.json"] = out / "attribution_validation.json"
    copies[run.circuit_dir / "faithfulness.json"] = out / "faithfulness.json"
    copies.update({run.export_dir / name: out / name for name in DIAGRAMS})
    copied = ["REPORT.md"]
    for src, dst in copies.items():
        if src.exists():
            shutil.copyfile(src, dst)
            copied.append(dst.name)
    return {"out": str(out), "copied": copied}
