"""Draw the saved circuit into RUN/export/: SVG, PNG, Graphviz DOT, circuit-tracer graph JSON and one self-contained HTML page.

Only what is drawn depends on the options below; the saved circuit keeps every node and edge. The example
pair's own circuit, when the circuit stage pruned one, is drawn too (prompt_* files). `sae-ooc report --out`
copies the diagrams elsewhere (e.g. results/).
"""

from sae_ooc.commands import bounded, files_written, verb
from sae_ooc.viz.export_options import ExportOptions

COMMON = {"overrides": False}  # export reads no config section: a --set would only be saved into RUN/config.yaml, unused


def add_arguments(p) -> None:
    d = ExportOptions()
    p.add_argument("--max-nodes", type=bounded(int, 0), default=d.max_nodes, help="draw at most this many nodes, largest |effect| first (0 = all)")
    p.add_argument("--min-abs-effect", type=bounded(float, 0), default=d.min_abs_effect, help="draw only nodes with at least this |effect|")
    p.add_argument("--edge-threshold", type=bounded(float, 0, 1), default=d.edge_threshold, help="draw edges with |weight| >= this fraction of the largest")
    p.add_argument("--max-edges", type=bounded(int, 0), default=d.max_edges, help="draw at most this many edges")


def options(args) -> dict:
    return {"max_nodes": args.max_nodes, "min_abs_effect": args.min_abs_effect, "edge_threshold": args.edge_threshold,
            "max_edges": args.max_edges}


def summarize(run, result) -> str:
    example = any(run.export_dir.glob("prompt_circuit.*"))
    return (f"export: {verb(result)} {files_written(run, 'export')}"
            + ("; prompt_*: the example pair's own circuit" if example else ""))
