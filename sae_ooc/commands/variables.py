"""Where does the model carry the bridge, and in what form? Score candidate units at (hook, r1) by interchange (RUN/variables/),
and the same for every other planted variable at its position (head, r1, r2, the bridge and the answer at the answer position).

Per hook: labelled SAE features, the top-n SAE features by class-mean difference, the whole SAE code, the class-mean edit
and its rank-r projections, DAS subspaces of rank r (rank chosen on fit-valid prefixes), beside the residual patch and
random units of the same size; switch rate to t(b', r2) on held-out prefixes, and erasure (LEACE, mean projection) of a
rank-`causal.erase_rank` unit. Settings: the `causal` config section.
"""

from sae_ooc.commands import files_written, verb
from sae_ooc.viz.text import fmt as num


def summarize(run, result) -> str:
    from sae_ooc.causal.result import VariablesResult
    from sae_ooc.records import opt

    v = VariablesResult.load(run.root / "variables")
    st = v.settings
    if st.note:  # nothing to localize (sae_ooc.causal.variables: a question with no bridge)
        return f"variables: {verb(result)} {files_written(run, 'variables')}: {st.note}"
    lines = [f"variables: {verb(result)} {files_written(run, 'variables')}: {st.n_pairs.heldout} held-out interchange pairs "
             f"({st.n_prefixes.heldout} held-out prefixes)"]
    for r in v.rows:
        def s(name, r=r):
            return num(r.switch(name), ".1%")

        if r.pairs:  # another planted variable (sae_ooc.causal.planted)
            das = ", ".join(f"DAS rank {n.removeprefix('das_rank')} {s(n)}" for n in r.curves.get("das", [])) or "no DAS (patch too small)"
            lines.append(f"  {opt(r.pairs.name, r.variable)} {r.hook}@{r.position}: residual patch {s('resid_patch')}, {das}, "
                         f"class means {s('supervised')}, SAE code {s('sae_code_swap')}, sae_opt 16 {s('sae_opt16')}, "
                         f"top 16 {s('top16_features')}, random {s('random')}")
            continue

        lines.append(f"  {r.hook}@{r.position}: residual patch {s('resid_patch')}, DAS rank 16 {s('das_rank16')} "
                     f"(rank chosen on fit-valid prefixes, the smallest reaching 80% of the patch there: {opt(r.das.min_rank_80)}), class means {s('supervised')} / rank 16 "
                     f"{s('supervised_rank16')}, SAE code {s('sae_code_swap')}, top 16 features {s('top16_features')}, "
                     f"labelled {s('labelled_features')}, random {s('random')}")
    c = v.circuit
    if c and c.ok:
        nodes = ", ".join(f"{k} at {n.hook} rank {n.rank} {num(n.unit.switch, '.1%')}" for k, n in c.nodes.items())
        cut = opt(c.faithfulness.circuit) if c.faithfulness else None
        if cut is None:  # three hops: not measured (sae_ooc.causal.chain), or no bridge@answer unit
            why = opt(c.faithfulness.status, "not measured") if c.faithfulness else "not measured"
            lines.append(f"  circuit of causal variables (held-out): IIA {nodes}; faithfulness {why}")
        else:
            lines.append(f"  circuit of causal variables (held-out): IIA {nodes}; no remainder keeps {num(cut.unit.kept, '.1%')}, "
                         f"faithfulness {num(cut.unit.faithfulness, '.3f')} (random subspaces {num(cut.random.kept, '.1%')}, "
                         f"valid {cut.valid})")
    elif c:
        lines.append(f"  circuit of causal variables: {c.status}")
    return "\n".join(lines)
