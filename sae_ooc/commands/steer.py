"""Steer the bridge: switch the SAE's bridge=b features off and bridge=b' on, does the two-hop answer follow? (RUN/steer/).

On held-out two-hop prompts (steer.split), per hook and position, beside its baselines: random features of matched norm,
the whole residual patched from a prompt whose bridge is b', and b' = b. Settings: the `steer` config section.
"""

from sae_ooc.commands import files_written, verb
from sae_ooc.viz.text import fmt as num


def summarize(run, result) -> str:
    from sae_ooc.interventions.steer_result import SteerResult  # no torch there

    s = SteerResult.load(run.steer_dir)
    st = s.settings
    lines = [f"steer: {verb(result)} {files_written(run, 'steer')}: {st.n_prompts} {st.split} two-hop prompts"
             + (" answered correctly" if st.only_correct else "")]
    if s.note:
        lines.append("  " + s.note)
    for r in s.rows:
        f, rnd, rp = r.methods.features, r.methods.random, r.methods.resid_patch
        feat = (f"features {num(f.consistent.share)} consistent / {num(f.unchanged.share)} unchanged; random "
                f"{num(rnd.consistent.mean)} ± {num(rnd.consistent.sd)}") if f else "no bridge features labelled here"
        lines.append(f"  {r.name} (n {r.n_prompts}, {r.covered_by_features} covered by features): {feat}; "
                     f"residual patch {num(rp.consistent.share)} consistent")
    return "\n".join(lines)
