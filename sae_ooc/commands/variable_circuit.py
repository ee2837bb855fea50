"""Group SAE features into variable nodes by their ground-truth labels and build the variable-level circuit (RUN/variable_circuit/).

Nodes are task variables at a (hook, position), e.g. bridge@r1@blocks.1.hook_resid_pre: every feature eval-sae
labelled with that variable there (unlabelled features form one remainder node per hook and position; the SAE error
term is its own node). Groups are patched and ablated as a whole; the circuit is chosen on the selection pairs and
scored on the held-out pairs (circuit.heldout_fraction) under every ablation, beside random groups of the same sizes.
Settings: the `variables` config section (kinds, ablation, target, max_groups, random_draws, bootstrap, seed).
"""

from sae_ooc.commands import files_written, verb


def summarize(run, result) -> str:
    from sae_ooc.io import read_json
    from sae_ooc.stages import get_stage

    # circuits.variable_circuit.FAITHFULNESS_FILE: importing that module loads torch and matplotlib, seconds that a skipped
    # stage's line should not cost
    f = read_json(run.root / get_stage("variable-circuit").outputs[0] / "faithfulness.json")
    g, ch = f["groups"], f["selection"]
    head = (f"variable-circuit: {verb(result)} {files_written(run, 'variable-circuit')}: {g['variable']} variable, {g['remainder']} remainder "
            f"and {g['error']} error nodes; circuit of {ch['n_groups']} chosen on {f['n_selection']} selection pairs under {ch['ablation']} "
            f"ablation ({'reached' if ch['reached_target_on_selection'] else 'did NOT reach'} {ch['target']} there), {f['circuit']['n_edges']} edges")
    lines = [head, "  " + f["verdict"]["text"]]
    for kind, r in f["by_ablation"].items():
        h, rnd = r["heldout"], r["random_groups"]["heldout"]
        lines.append(f"  {kind} ablation, {h['n_pairs']} held-out pairs: faithfulness {h['faithfulness']:.3f} [{h['ci95'][0]:.3f}, {h['ci95'][1]:.3f}], "
                     f"completeness {h['completeness']:.3f}; random features outside the circuit "
                     + (f"{rnd['mean']:.3f} ± {rnd['std']:.3f}; " if rnd["values"] else "(none drawn); ")
                     + f"top {r['top_features_same_size']['n_features']} features {r['top_features_same_size']['heldout']:.3f}; "
                     f"selection (in-sample) {r['selection']['faithfulness']:.3f}")
    return "\n".join(lines)
