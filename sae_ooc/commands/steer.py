"""Steer the bridge: switch the SAE's bridge=b features off and bridge=b' on, does the two-hop answer follow? (RUN/steer/).

On held-out two-hop prompts (steer.split), per hook and position, beside its baselines: random features of matched norm,
the whole residual patched from a prompt whose bridge is b', and b' = b. Settings: the `steer` config section.
"""

from sae_ooc.commands import files_written, verb
from sae_ooc.viz.text import fmt as num


def summarize(run, result) -> str:
    from sae_ooc.io import read_json

    # interventions.steer.STEER_FILE: importing that module loads torch, seconds a skipped stage's line should not cost
    s = read_json(run.root / "steer" / "steer.json")
    st = s["settings"]
    lines = [f"steer: {verb(result)} {files_written(run, 'steer')}: {st['n_prompts']} {st['split']} two-hop prompts"
             + (" answered correctly" if st["only_correct"] else "")]
    if s.get("note"):
        lines.append("  " + s["note"])
    for r in s["rows"]:
        m = r["methods"]
        f, rnd, rp = m.get("features"), m.get("random"), m.get("resid_patch")
        feat = (f"features {num(f['consistent']['share'])} consistent / {num(f['unchanged']['share'])} unchanged; random "
                f"{num(rnd['consistent']['mean'])} ± {num(rnd['consistent']['sd'])}") if f else "no bridge features labelled here"
        lines.append(f"  {r['hook']}@{r['position']} (n {r['n_prompts']}, {r['covered_by_features']} covered by features): {feat}; "
                     f"residual patch {num(rp['consistent']['share'])} consistent")
    return "\n".join(lines)
