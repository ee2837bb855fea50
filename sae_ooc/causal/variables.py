"""Stage `variables`: where does the model carry the bridge entity, and in what form? Every candidate unit at (hook, r1) is
judged by interchange interventions on held-out prefixes, beside the residual patch above it and random units of the
same size below it (Geiger et al.'s interchange intervention accuracy; Makelov, Lange & Nanda 2024's sparse control).

Per hook (causal.hooks, default every hook with an SAE), the bridge b at r1 (sae_ooc.causal.row):
- control (sufficiency): labelled SAE features, the top-n SAE features by class-mean difference, the whole SAE code, the
  class-mean edit and its rank-r projections, DAS subspaces of rank r (rank chosen on fit-valid prefixes), the residual
  patch, random subspaces and random features of matched size and norm; switch rate to t(b', r2), logit change, cost;
- necessity: LEACE and mean-projection erasure of a rank-`causal.erase_rank` unit against a random one: the held-out
  questions' accuracy and a probe of b refitted on the erased stream;
- isolation: r2 as a probe reads it at the last layer's answer position, after the interchange of a few units.

Every other planted variable at its position (head, r1, r2, the bridge and the answer at the answer position), at each of
`causal.variable_hooks`: the same units and references (sae_ooc.causal.planted).

The counterfactual answers come from the task family's high-level model (sae_ooc.tasks.counterfactuals, through Facts):
t(b', r2) for two hops, lt / eq / gt of b' against the second value for comparison (whose second value, bridge2, is a
variable too). A question without a bridge (the reversal family's one fact) has no bridge row and says so in one line
(settings.note); its head, r1 and answer are measured like any other variable.

Section 2, the circuit of causal variables built from these units (IIA per node, faithfulness with no remainder):
sae_ooc.causal.circuit.

Prefix groups and pairs: sae_ooc.causal.pairs. Outputs (RUN/variables/): variables.json (sae_ooc.causal.result),
circuit_units.safetensors (the circuit's unit bases and ablation means), control_curves.png/.svg (the bridge at r1),
variable_curves.png/.svg (every other variable), and the circuit of causal variables in the export stage's formats:
causal_circuit.png/.svg/.dot/.html, causal_graph.json, causal_circuit_full.json (sae_ooc.causal.graph).
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.causal.circuit import CIRCUIT_UNITS_FILE, variable_circuit
from sae_ooc.causal.graph import causal_graph
from sae_ooc.causal.isolation import fit_reader, read_state
from sae_ooc.causal.pairs import FIT, GROUP_NAMES, HELD, VALID, Questions, draw_pairs, prefix_groups
from sae_ooc.causal.result import VariablesResult
from sae_ooc.causal.row import Context, bridge_row
from sae_ooc.causal.planted import SPECS, heldout_keys, position_of, prefix_roles, spec_of, specs, variable_pairs, variable_row
from sae_ooc.errors import UserError
from sae_ooc.hooks import hook_seed, hook_sort_key
from sae_ooc.io import save_tensors
from sae_ooc.records import opt
from sae_ooc.interventions.facts import Facts, atomic_template
from sae_ooc.interventions.prompts import matches, read_batched
from sae_ooc.interventions.steer import residuals
from sae_ooc.models.hooked import load_model
from sae_ooc.saes.eval_sae import heldout_from_disk
from sae_ooc.saes.features import load_feature_labels
from sae_ooc.saes.store import load_saes, saved_hooks
from sae_ooc.tasks.counterfactuals import says
from sae_ooc.tasks.data import load_task, split_tensors
from sae_ooc.threads import torch_threads
from sae_ooc.viz.circuit_files import export_circuit
from sae_ooc.viz.control_plots import plot_control_curves, plot_variable_curves


CAUSAL_PREFIX = "causal_"  # the circuit of causal variables' export files


def run_variables(run, force: bool = False) -> dict:
    ccfg = run.cfg.causal
    with torch_threads(ccfg.threads):
        return _run_variables(run, ccfg)


def two_hop_questions(ds, vocab, splits: list[str]) -> Questions:
    """Every analysed question of `splits` (the layout's hops: two, or three with r3 and bridge2), in planted space."""
    parts = []
    three = "r3" in vocab.layout.variables
    for s in splits:
        st = split_tensors(ds[s], vocab)
        keep = (st.hop == vocab.layout.question_hop).nonzero().squeeze(1)
        st = st.subset(keep)
        r3 = st.variable("r3") if three else torch.full_like(st.answer, -1)
        parts.append((*(st.variable(k) for k in ("head", "r1", "r2")), st.bridge, st.variable("answer"), r3, st.variable("bridge2"),
                      [s] * len(keep)))
    cat = [torch.cat([p[i] for p in parts]).long() for i in range(7)]
    return Questions(*cat[:5], [s for p in parts for s in p[7]], cat[5], cat[6])


def heldout_prefixes(run, pos: int) -> set[tuple[int, int]]:
    """The (h, r1) prefixes train-sae held out at position `pos` (RUN/saes/heldout_rows.safetensors over the cache rows)."""
    tok, rows = heldout_rows(run)
    return prefixes_at(tok, rows, pos)


def heldout_rows(run) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The cache's token table and its rows train-sae held out ([n_tokens] bool)."""
    cache = ActivationCache(run.activations_dir)
    return cache.tokens(), heldout_from_disk(run.saes_dir, cache)


def prefixes_at(tok: dict[str, torch.Tensor], rows: torch.Tensor, pos: int) -> set[tuple[int, int]]:
    """The (h, r1) prefixes of the cache rows `rows` [n_tokens] bool at position `pos` (token table `tok`)."""
    at = rows & (tok["role"] == pos) & (tok["r1"] >= 0)
    return set(zip(tok["head"][at].tolist(), tok["r1"][at].tolist()))


def default_variable_hooks(hooks: list[str], n_layers: int) -> list[str]:
    """The other variables' hooks when `causal.variable_hooks` is empty: the bridge's hooks, every layer's middle (after
    attention, before the MLP: no SAE there, so its SAE units are n/a, but a variable may first appear there) and the last
    layer's output, where the answer position holds the answer; in forward order."""
    mids = [f"blocks.{i}.hook_resid_mid" for i in range(n_layers)]
    return sorted(set(hooks + mids + [f"blocks.{n_layers - 1}.hook_resid_post"]), key=hook_sort_key)


def task_variables(asked: list[str], layout, high) -> list[str]:
    """The variables of `asked` (causal.variables) that the task's question has: the two-hop question's that it lacks (r2
    and the bridge of a one-fact question) are left out and said so; any other unknown name is the one-line error."""
    have = specs(layout, high)
    for n in asked:
        if n not in have and n not in SPECS:
            spec_of(layout, n, high)  # raises, naming the variables the question has
    return [n for n in asked if n in have]


def resolve_hooks(run, ccfg, n_layers: int) -> list[str]:
    available = saved_hooks(run.saes_dir)
    # by default every residual hook with an SAE but the last layer's output: nothing after it reads r1
    last = f"blocks.{n_layers - 1}.hook_resid_post"
    hooks = ccfg.hooks or [h for h in available if h.split(".")[-1] in ("hook_resid_pre", "hook_resid_post") and h != last]
    bad = [h for h in hooks if h not in available]
    if bad and available:
        raise UserError(f"causal.hooks: no trained SAE for {', '.join(bad)} in {run.saes_dir}; use some of {', '.join(available)} "
                        f"(e.g. --set causal.hooks=[{available[-1]}]), or [] for every hook with an SAE")
    return hooks


def _run_variables(run, ccfg) -> dict:
    ds, vocab = load_task(run.data_dir)
    layout = vocab.layout
    if "r1" not in layout.roles and "r1" not in layout.position_names:
        raise UserError("stage variables interchanges the variables of the question's roles head, r1, ..., and this task's "
                        "question has no r1; use a task of the toy's families")
    facts = Facts.from_dataset(ds, vocab, run.cfg.task.family, atomic_template(run.cfg.task))
    model = load_model(run.model_dir, run.device).eval()
    # a question without a bridge (one fact: the reversal family's) has no bridge row; its other variables are measured
    no_bridge = facts.high.no_bridge
    hooks = [] if no_bridge else resolve_hooks(run, ccfg, model.cfg.n_layers)
    names = task_variables(ccfg.variables, layout, facts.high)
    v_hooks = (ccfg.variable_hooks or default_variable_hooks(hooks or resolve_hooks(run, ccfg, model.cfg.n_layers),
                                                             model.cfg.n_layers)) if names else []
    bad = [h for h in v_hooks if h not in model.hook_dict]
    if bad:
        raise UserError(f"causal.variable_hooks: the model has no hook {', '.join(bad)}; use hooks such as blocks.0.hook_resid_pre")
    all_hooks = sorted(set(hooks) | set(v_hooks), key=hook_sort_key)
    with_sae = set(saved_hooks(run.saes_dir))
    saes = load_saes(run.saes_dir, run.device, [h for h in all_hooks if h in with_sae])
    labels = load_feature_labels(run.sae_eval_dir)
    pos = layout.index("r1")
    splits = list(dict.fromkeys(ccfg.fit_splits + ccfg.heldout_splits))
    q = two_hop_questions(ds, vocab, splits)
    tok, held_rows = heldout_rows(run)
    held = prefixes_at(tok, held_rows, pos)
    groups = prefix_groups(list(zip(q.head.tolist(), q.r1.tolist())), held, ccfg.valid_fraction, ccfg.seed)
    q_tok, q_pos = facts.tokens(q.prompts())
    clean = read_batched(model, q_tok, q_pos, facts.answer_len, ccfg.batch_size)
    correct = matches(clean.greedy, facts.answer_ids(q.answer))
    ok = correct if ccfg.only_correct else torch.ones(len(q), dtype=torch.bool)
    in_fit = torch.tensor([s in ccfg.fit_splits for s in q.split], dtype=torch.bool)
    in_held = torch.tensor([s in ccfg.heldout_splits for s in q.split], dtype=torch.bool)
    # the r1 state depends on the prefix alone: one activation per distinct prefix (asked with any r2: its own r1)
    prefixes = sorted(groups)
    p_tok, _ = facts.tokens([(h, r, r) for h, r in prefixes])
    p_group = torch.tensor([groups[p] for p in prefixes])
    p_bridge = torch.tensor([facts.tail.get(p, -1) for p in prefixes], dtype=torch.long)  # -1: no known fact (a held-out question)
    has_mean = set(p_bridge[p_group == FIT].tolist())
    pairs = {g: draw_pairs(facts, q, ((in_held if g == HELD else in_fit) & ok).nonzero().squeeze(1), groups, g,
                           ccfg.das_pairs_per_prompt if g == FIT else 1, ccfg.seed + g, has_mean) for g in (FIT, VALID, HELD)}
    heldout_q = (in_held & torch.tensor([groups[(int(h), int(r))] == HELD for h, r in zip(q.head, q.r1)])).nonzero().squeeze(1)
    ctx = Context(model=model, facts=facts, cfg=ccfg, pos=pos, position_name=layout.position_names[pos], prefixes=prefixes,
                  p_group=p_group, p_bridge=p_bridge, q_tok=q_tok, q_pos=q_pos, clean=clean, q=q, pairs=pairs,
                  heldout_q=heldout_q, entity_of={vocab.planted_names[e]: e for e in range(vocab.n_entities)})
    # isolation: a probe of r2 at the last layer's output, answer position, fitted on clean fit-prefix questions
    ctx.read_hook = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    fit_q = pairs[FIT].base_q.unique()
    fit_q = fit_q[torch.randperm(len(fit_q), generator=torch.Generator().manual_seed(ccfg.seed))[:4000]]
    if len(fit_q) and len(q.r2[fit_q].unique()) > 1:
        z = read_state(model, q_tok[fit_q], q_pos[fit_q], ctx.read_hook, pos, None, ctx.read_hook, ccfg.batch_size)
        ctx.r2_reader = fit_reader(z, q.r2[fit_q], ccfg.probe_steps, ccfg.seed)
    p_x = residuals(model, p_tok, hooks, ccfg.batch_size)
    rows, v_rows = [], []
    # every other planted variable at its position (sae_ooc.causal.planted): pairs drawn once, scored at each of its hooks
    held_ok, fit_ok = in_held & ok, in_fit & ok
    vps = [variable_pairs(ctx, name, layout, heldout_keys(tok, held_rows, position_of(layout, spec_of(layout, name, facts.high).role),
                                                         prefix_roles(layout, position_of(layout, spec_of(layout, name, facts.high).role))),
                          fit_ok, held_ok, (in_fit | in_held) & ok) for name in names]
    value_of = {n: i for i, n in enumerate(vocab.planted_names)}
    for h in tqdm(all_hooks, desc="variables", leave=False):
        # the base questions' whole residual at the hook: what DAS edits and runs the model on from the hook
        q_x = residuals(model, q_tok, [h], ccfg.batch_size)[h]
        if h in hooks:
            rows.append(bridge_row(ctx, saes[h], h, p_x[h][:, pos], q_x, labels.get(h, {}), seed=ccfg.seed + 1000 * hooks.index(h)))
        if h in v_hooks:
            # seeded by the hook's place in the forward pass, not in this list: adding a hook leaves the other rows' draws
            v_rows += [variable_row(ctx, vp, saes.get(h), h, q_x, labels.get(h, {}), value_of, ccfg.seed + 1000 * hook_seed(h) + 100 * (j + 1))
                       for j, vp in enumerate(vps)]
    settings = {"hooks": hooks, "position": layout.position_names[pos], "heldout_splits": ccfg.heldout_splits,
                "fit_splits": ccfg.fit_splits, "only_correct": ccfg.only_correct,
                "n_prefixes": {GROUP_NAMES[g]: int((p_group == g).sum()) for g in (FIT, VALID, HELD)},
                "n_pairs": {GROUP_NAMES[g]: len(pairs[g]) for g in (FIT, VALID, HELD)},
                "n_heldout_questions": len(heldout_q), "n_heldout_correct": int(correct[heldout_q].sum()),
                "variables": {vp.name: {"position": vp.position_name, "n_pairs": {GROUP_NAMES[g]: len(vp.pairs[g][0]) for g in (FIT, VALID, HELD)},
                                        "class_means": vp.has is not None} for vp in vps},
                "variable_hooks": v_hooks, "variable_ranks": ccfg.variable_ranks,
                "variable_patch_min": ccfg.variable_patch_min,
                "feature_counts": ccfg.feature_counts, "ranks": ccfg.ranks, "erase_rank": ccfg.erase_rank,
                "random_draws": ccfg.random_draws, "bootstrap": ccfg.bootstrap, "das_steps": ccfg.das_steps, "seed": ccfg.seed,
                "heldout_prefixes": "the (h, r1) prefixes train-sae held out at r1 (neither the SAE nor eval-sae's labels saw them)"}
    skipped = [n for n in ccfg.variables if n not in names]
    if no_bridge or skipped:
        settings["note"] = "; ".join(
            ([f"no bridge row: {no_bridge}"] if no_bridge else [])
            + ([f"{', '.join(skipped)}: not a variable of this task's question (its roles: {', '.join(layout.position_names)})"]
               if skipped else []))
    P = pairs[HELD]
    r2vp = next((vp for vp in vps if vp.name == "r2"), None)
    if layout.question_hop == 2 and facts.high.circuit:
        circuit, units = variable_circuit(ctx, rows, hooks, v_rows, r2vp.pairs[HELD] if r2vp else None)
    elif layout.question_hop != 2:  # section 2's high-level model is the two-hop one (head, r1 -> bridge; bridge, r2 -> answer)
        circuit, units = {"status": f"not built: the circuit of causal variables is the two-hop model's, this task asks {layout.question_hop} "
                                    f"hop{'s' if layout.question_hop != 1 else ''}"}, {}
    else:
        circuit, units = {"status": "not built: the circuit of causal variables is the two-hop model's (bridge, r2 -> answer); this "
                                    "task's answer is another function of its variables (sae_ooc.tasks.counterfactuals)"}, {}
    # rows and the circuit are built as plain dicts (the measuring code fills them in); typed once, here, in the file's key order
    result = VariablesResult.from_json({
        "settings": settings, "rows": [r.to_json() for r in rows + v_rows],
        "heldout_pairs": torch.stack([P.head, P.r1, P.r2, P.b, P.b2, P.donor[:, 0], P.donor[:, 1]], 1).tolist(),
        "circuit": circuit, "format": VariablesResult.format_string()})
    out = run.variables_dir
    result.save(out)
    if units:
        save_tensors(out / CIRCUIT_UNITS_FILE, units)
    plot_control_curves(result, out / "control_curves", says(run.cfg.task.family)[0])  # fail_soft: no figure stops the stage
    plot_variable_curves(result, out / "variable_curves")
    # the circuit in every format the export stage writes, by its own code: causal_circuit.{png,svg,dot,html},
    # causal_graph.json (circuit-tracer's format), causal_circuit_full.json
    graph = causal_graph(result.circuit, list(layout.position_names), run.cfg.name)
    for stale in out.glob(f"{CAUSAL_PREFIX}*"):
        stale.unlink()
    if graph is not None:
        try:
            export_circuit(graph.to_json(), out, prefix=CAUSAL_PREFIX)
        except Exception as e:  # no drawing may stop a stage
            print(f"variables: the circuit drawing failed ({type(e).__name__}: {e})")
    typed_rows = result.rows
    best = {r.hook: {u: r.switch(u) for u in ("resid_patch", "das_rank16", "supervised")} for r in typed_rows[:len(rows)]}
    others = {f"{r.variable}@{r.position} {r.hook}": {u: r.switch(u) for u in ("resid_patch", "das_rank16", "random")}
              for r in typed_rows[len(rows):]}
    c = result.circuit
    cut = c.faithfulness.circuit if c and c.faithfulness else None
    return {"n_heldout_pairs": len(pairs[HELD]), "hooks": len(hooks), "switch": best, "variables": others, "circuit_iia": opt(c.iia) if c else None,
            "circuit_faithfulness": opt(cut.unit.faithfulness) if cut else None}
