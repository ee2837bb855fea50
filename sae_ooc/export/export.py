"""Stage `export`: draw the saved circuit. Rendering only: everything comes from RUN/circuit/circuit.json.

Files (RUN/export/): every format of sae_ooc.viz.circuit_files (circuit.svg/.png/.dot/.html, graph.json,
circuit_full.json); the example pair's pruned circuit (RUN/circuit/prompt_circuit.json), when the circuit stage wrote
one, is exported the same way into prompt_-prefixed files. circuit.html's feature nodes link to the feature browser
(RUN/browse/ seen from RUN/export/) once `sae-ooc browse` has written it. The circuit is read through
`sae_ooc.circuits.graph.CircuitGraph`; the drawing code works on its JSON form.
"""

from __future__ import annotations

from functools import partial

from sae_ooc.browse.paths import JS, SITE_DIR, site_links
from sae_ooc.circuits.graph import load_circuit, load_prompt_circuit
from sae_ooc.viz.circuit_files import export_circuit
from sae_ooc.viz.export_options import ExportOptions

PROMPT_PREFIX = "prompt_"  # files of the example pair's own circuit


def run_export(run, force: bool = False, max_nodes: int = ExportOptions.max_nodes, min_abs_effect: float = ExportOptions.min_abs_effect,
               edge_threshold: float = ExportOptions.edge_threshold, max_edges: int = ExportOptions.max_edges) -> dict:
    """Stage `export`: draw RUN/circuit/circuit.json (and the example pair's circuit, if any) into RUN/export/."""
    opt = ExportOptions(max_nodes=max_nodes, min_abs_effect=min_abs_effect, edge_threshold=edge_threshold, max_edges=max_edges)
    out = run.export_dir
    site = f"../{SITE_DIR}/"  # RUN/browse/ from RUN/export/: written later by the browse stage, not by this one
    draw = partial(export_circuit, out_dir=out, opt=opt, links=partial(site_links, site=site), site_check=site + JS)
    paths = draw(load_circuit(run).to_json())
    example = load_prompt_circuit(run)
    if example is not None:
        paths += draw(example.to_json(), prefix=PROMPT_PREFIX)
    for stale in out.glob(f"{PROMPT_PREFIX}*") if example is None else ():  # from an earlier circuit that had an example
        stale.unlink()
    return {"out": str(out), "files": len(paths)}
