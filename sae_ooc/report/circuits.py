"""Report sections: which SAE nodes carry the answer (and how far each approximation can be trusted), and
the feature circuit, chosen on selection pairs and scored on held-out pairs."""

from __future__ import annotations

from sae_ooc.circuits.attribute_result import AttributionValidation, NodeEffectsSummary
from sae_ooc.circuits.faithfulness_result import CircuitFaithfulness
from sae_ooc.circuits.graph import CIRCUIT_FILE, PROMPT_CIRCUIT_FILE, CircuitGraph, load_circuit
from sae_ooc.records import opt
from sae_ooc.report.doc import Doc, f3
from sae_ooc.tasks.families import ASKED
from sae_ooc.tasks.layout import load_layout


def _multi_token(run) -> str:
    """What the metric means when answers are several tokens (a natural-language task); '' for one-token answers."""
    n = load_layout(run.data_dir).answer_len
    if n <= 1:
        return ""
    return (f" Answers are {n}-token names: `logit_diff` is then the log-probability difference of the two answers' token "
            "sequences, log p(t2 | prompt) − log p(t2' | prompt), each scored teacher-forced after the prompt; a pair is two "
            "rows (one per answer continuation) whose metrics add up to it, so node positions include the answer's tokens "
            "but its last (`answer.1`, ...) and 'pairs' below count rows.")


def attribution_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("attribution", f"Which features carry the answer of {ASKED[run.cfg.task.family]}")
    ne = doc.load_or_say(NodeEffectsSummary, run.attribution_dir, "`sae-ooc attribute`")
    if ne is None:
        return
    a = run.cfg.attribution
    doc.add(f"Node effects by `{ne.method}` on {ne.n_pairs} clean/corrupted pairs of {a.split} prompts"
            f"{' the model answers correctly' if a.only_correct else ''} (corruption: a different head entity whose answer "
            f"differs, and its bridge where the question has one). Metric `{ne.metric}`: clean {ne.metric_clean_mean:.3f}, corrupted "
            f"{ne.metric_corrupt_mean:.3f}." + _multi_token(run), "")
    val = AttributionValidation.load_if(run.attribution_dir)
    if val is None:
        doc.add("The approximations have **not** been validated against exact patching in this run "
                f"({doc.cmd('attribute', ' --validate --force')}).", "")
    else:
        on = f"{val.n_pairs} validation pairs"
        tr = val.trust
        doc.add(f"Each approximation against exact activation patching, per pair, on {val.n_pairs} pairs, judged only on what it "
                "estimated: recall of exact's top-k nodes in the method's ranking, and Spearman over the nodes the method did *not* "
                "patch exactly (atp_verified patches its shortlist exactly, so comparing it there would grade exact against itself). "
                f"Trusted when recall@50 ≥ {tr.recall_top50} and that Spearman ≥ {tr.spearman_not_exact}. Speed: against "
                "our own batched exact patching, timed in the same run on the same pairs; the one-pass-per-node figure is an "
                "extrapolated estimate.", "",
                "| method | recall top 10 (min) | recall top 50 (min) | Spearman, nodes not patched exactly | × faster than batched exact "
                "| × faster than one pass per node (estimate) | trusted |", "|---|---|---|---|---|---|---|")
        for m, r in val.methods.items():
            rec50 = doc.number(f"attribution.{m}.recall_top50", r.recall_top50, on)
            sp = doc.number(f"attribution.{m}.spearman_not_exact", r.spearman_not_exact, on)
            fast = doc.number(f"attribution.{m}.speedup_vs_batched_exact", r.speedup_vs_batched_exact, "the same pairs, timed in the same run", spec=".1f")
            doc.add(f"| {m} | {f3(r.recall_top10, '.2f')} ({f3(r.recall_top10_min, '.2f')}) | {rec50} "
                    f"({f3(r.recall_top50_min, '.2f')}) | {sp} | "
                    f"{fast} | {f3(r.speedup_vs_one_pass_per_node_estimate, '.0f')} | "
                    f"{'yes' if r.trusted else 'no'} |")
        doc.add("")
        if (run.attribution_dir / "validation.png").exists():
            doc.figure(run.attribution_dir / "validation.png", run.attribution_dir / "validation.svg")
            doc.add("![validation](validation.png)", "")
    doc.add("Reproduce: " + doc.cmd("attribute", " --validate"), "")


def circuit_section(doc: Doc) -> None:
    run = doc.run
    doc.heading("circuit", "The feature circuit")
    faith = CircuitFaithfulness.load_if(run.circuit_dir)
    circ = load_circuit(run) if (run.circuit_dir / CIRCUIT_FILE).exists() else None
    if faith is None or circ is None:
        doc.add("Not run yet: `sae-ooc circuit`.", "")
        return
    held, sel = faith.heldout, faith.selection
    nh, ns = faith.n_heldout_pairs, faith.n_selection_pairs
    on = f"{nh} held-out pairs, {faith.ablation} ablation"
    ci = held.faithfulness_ci95 or [None, None]
    tgt = opt(held.target)
    target_f, target_n = (tgt.faithfulness, tgt.max_feature_nodes) if tgt else (0.8, 50)
    doc.add(
        f"{faith.n_feature_nodes} feature nodes and {faith.n_error_nodes} error nodes, chosen by |mean effect| on {ns} selection "
        f"pairs; every number below (unless marked in-sample) on the other {nh} pairs, never used to choose, whose head entities "
        f"(and so head and r1 activations) no selection pair shares. Everything outside the "
        f"circuit {faith.ablation}-ablated (the intervention), within the ablation's scope: only features active on the clean prompt "
        f"(for resample and corrupt ablation, on either prompt) and error terms are set, so a silent feature is never switched on; metric `{faith.metric}`: full model {held.m_full:.3f}, "
        f"everything ablated {held.m_empty:.3f}, circuit only {held.m_circuit:.3f}.", "",
        f"- **Faithfulness** (m(C) − m(∅)) / (m(M) − m(∅)), held out: **{doc.number('circuit.feature.faithfulness', held.faithfulness, on)}** "
        f"(95% CI over head entities {f3(ci[0])} to {f3(ci[1])}); on the selection pairs: "
        f"{doc.number('circuit.feature.faithfulness_selection', sel.faithfulness, f'{ns} selection pairs', in_sample=True)}",
        f"- **Completeness** (circuit ablated, rest kept; low is good), held out: {f3(held.completeness)}",
        f"- Target faithfulness ≥ {target_f} with ≤ {target_n} feature nodes (held out): "
        + ("**met**" if tgt and tgt.met else "**not met**")
        + (f" (first at {tgt.min_feature_nodes_reaching} feature nodes)" if tgt and tgt.min_feature_nodes_reaching else ""), "",
    )
    _ablation_table(doc, faith, target_n)
    _method_table(doc, faith, on)
    _pruned(doc, faith)
    _edges(doc, faith)
    doc.add("![faithfulness curve](faithfulness_curve.png)", "", "Top nodes (effects on the selection pairs):", "",
            "| node | position | effect | description |", "|---|---|---|---|")
    for n in sorted(circ.nodes, key=lambda n: -abs(n.effect))[:15]:
        doc.add(f"| `{n.id}` | {n.role} | {n.effect:+.3f} | {(opt(n.description) or '').replace('|', '/')} |")
    doc.add("", "![circuit](circuit.png)", "",
            "Interactive version: [circuit.html](circuit.html) (self-contained; hover a node for its top activations and promoted tokens).", "")
    _prompt_circuit(doc)
    doc.add(f"Reproduce: {doc.cmd('circuit')}, then {doc.cmd('export')}", "")
    doc.figure(run.circuit_dir / "faithfulness_curve.png", run.circuit_dir / "faithfulness_curve.svg")


def _ablation_table(doc: Doc, faith: CircuitFaithfulness, cap: int) -> None:
    by = faith.by_ablation
    if not by:
        return
    doc.add("Under each ablation, on held-out pairs. Every ablation sets only the nodes in its *scope*: for mean and zero ablation the "
            "features active on the clean prompt, for resample and corrupt ablation those active on the clean prompt or on the prompt the "
            "values come from (a feature silent on the clean prompt but active on the corrupted one is the signal an interchange moves "
            "in), and every error term. *Scope check*: ablating only the features outside the scope, to their ablation values, must "
            "leave the metric unchanged (within the tolerance); mean ablation fails it (a silent TopK feature set to its mean feeds the "
            "prompt the mean's signal), which is why every number here is restricted to the scope. *can fail: no* marks a pass that was "
            "guaranteed (silent TopK features are 0 under zero ablation, and 0 on both prompts of an interchange). Per-prompt circuits "
            "(each pair its own top nodes) are in-sample.", "",
            f"| ablation | m(∅) | scope check, unrestricted (metric change / range) | valid for features / error terms | aggregate circuit, "
            f"{cap} features | per-prompt circuits, {cap} features (in-sample) |",
            "|---|---|---|---|---|---|")
    for kind, cv in by.items():
        at = cv.sizes.index(cap) if cap in cv.sizes else None
        chk = cv.inactive_check
        verdict = "passes" if chk.passes else "**fails**"
        valid = cv.valid_for
        doc.add(f"| {kind} | {f3(cv.m_empty)} | {verdict} ({f3(chk.relative_change)}; can fail: "
                f"{'yes' if chk.can_fail else 'no'}) | {valid.feature} / {valid.error} | "
                f"{f3(cv.faithfulness[at]) if at is not None else '–'} | "
                f"{f3(cv.faithfulness_per_prompt_circuits_in_sample[at]) if at is not None else '–'} |")
    doc.add("")


def _method_table(doc: Doc, faith: CircuitFaithfulness, on: str) -> None:
    bm = faith.by_method
    if not bm:
        return
    doc.add("The circuit each attribution method would select (same size, chosen on the selection pairs by that method's effects), "
            "scored on the held-out pairs:", "", "| method | faithfulness, held out (95% CI over heads) | feature nodes shared with exact's |",
            "|---|---|---|")
    for m, r in bm.items():
        ci = r.faithfulness_ci95 or [None, None]
        val = doc.number(f"circuit.by_method.{m}.faithfulness", r.faithfulness, on)
        doc.add(f"| {m} | {val} ({f3(ci[0])} to {f3(ci[1])}) | {r.shared_feature_nodes} of {r.n_feature_nodes} |")
    doc.add("")


def _pruned(doc: Doc, faith: CircuitFaithfulness) -> None:
    pr = faith.pruned_per_prompt
    if not pr:
        return
    doc.add(f"**Per-prompt circuits** (backward elimination under {pr.ablation} ablation on {pr.n_pairs} selection pairs; each "
            "circuit is fitted to its own prompt, so these numbers are **in-sample**): faithfulness "
            f"{doc.number('circuit.pruned.faithfulness_in_sample', pr.faithfulness_within_max, 'the prompts each circuit was pruned on', in_sample=True)} "
            f"with at most {pr.max_features} feature nodes per prompt"
            + (f"; ≥ {pr.target} down to {pr.min_features_reaching_target} feature nodes." if pr.min_features_reaching_target else "."))
    tr = pr.transfer
    if tr:
        same, other = tr.same_relations, tr.other_relations
        doc.add("", f"What generalizes: the node types (hook, position, feature) of each prompt's pruned circuit at ≤ {tr.max_features} "
                "features, applied to *other* prompts. Prompts with the same relations (r1, r2): "
                f"{doc.number('circuit.pruned.transfer_same_relations', same.faithfulness, f'{same.n_rows} other prompts with the same (r1, r2)')} "
                f"(n {same.n_rows}); prompts with other relations (control): {f3(other.faithfulness)} (n {other.n_rows}).")
    doc.add("")


def _edges(doc: Doc, faith: CircuitFaithfulness) -> None:
    edges = faith.edges
    by_kind = edges.ablation_by_kind
    if by_kind:
        doc.add(f"{edges.n_edges} edges, weighed on the selection pairs, ablated on the held-out pairs. The top K edges by |weight| "
                f"against random sets of K edges drawn from the {edges.n_candidate_edges} candidate edges outside the top K "
                "(the gradient method's edges among the most important nodes); the percentile of the top set's drop among the draws:", "",
                "| ablation | K | metric drop, top K | random K: mean ± sd (5–95%) | draws | percentile |", "|---|---|---|---|---|---|")
        for kind, rows in by_kind.items():
            for r in rows:
                q = r.random_edges_drop_quantiles or {}
                on_e = f"held-out pairs, {kind} ablation"
                drop = doc.number(f"circuit.edges.{kind}.top{r.k}.drop", r.top_edges_drop, on_e)
                pctl = doc.number(f"circuit.edges.{kind}.top{r.k}.percentile", r.percentile, f"{r.n_random} random edge sets, {on_e}", spec=".0f")
                doc.add(f"| {kind} | {r.k} | {drop} | {f3(r.random_edges_drop_mean)} ± {f3(r.random_edges_drop_std)} "
                        f"({f3(q.get('5'))} to {f3(q.get('95'))}) | {r.n_random} | {pctl} |")
        doc.add("")
    ec = edges.exact_check
    if ec:
        doc.add(f"Edge weights ({edges.weights}): the gradient weights of Marks et al. 2024 against exact edge patching, "
                f"Pearson {f3(ec.pearson)}, Spearman {f3(ec.spearman)} over {ec.n_edges} edges and {ec.n_pairs} pairs.", "")


def _prompt_circuit(doc: Doc) -> None:
    if not (doc.run.circuit_dir / PROMPT_CIRCUIT_FILE).exists():
        return
    ex = CircuitGraph.load(doc.run.circuit_dir / PROMPT_CIRCUIT_FILE)
    m, sc = ex.metadata, ex.scores
    nf = sum(n.type == "feature" for n in ex.nodes)
    doc.add(f"**One prompt's circuit** (in-sample: pruned on this very pair). `{m.prompt}` → {m.answer} (bridge {m.bridge}; "
            f"corrupted `{m.corrupted_prompt}` → {m.corrupted_answer}): {nf} feature and {len(ex.nodes) - nf} error nodes, "
            f"faithfulness {f3(opt(sc.faithfulness))} on this pair under {m.ablation} ablation; {len(ex.edges)} edges weighed by exact "
            "edge patching on this pair."
            + (" With the logit-diff metric a circuit only has to prefer t2 over t2' (a tail of another bridge), so it can pass "
               "without carrying r2; `--set attribution.metric=logprob` asks for t2 itself." if m.metric == "logit_diff" else ""), "",
            "![one prompt's circuit](prompt_circuit.png)", "", "Interactive version: [prompt_circuit.html](prompt_circuit.html).", "")
