"""Draw the saved circuit: SVG, PNG, Graphviz DOT, circuit-tracer graph JSON and one self-contained HTML page.

Default output RUN/export/ (--out DIR). Only what is drawn depends on the options below; the saved
circuit keeps every node and edge. --results-dir copies circuit.png/.svg/.html there ('auto': results/
when the run uses the default config).
"""

from pathlib import Path

from sae_ooc.viz.export import ExportOptions, resolve_results_dir, run_export


def add_arguments(p) -> None:
    d = ExportOptions()
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN/export/)")
    p.add_argument("--max-nodes", type=int, default=d.max_nodes, help="draw at most this many nodes, largest |effect| first (0 = all)")
    p.add_argument("--min-abs-effect", type=float, default=d.min_abs_effect, help="draw only nodes with at least this |effect|")
    p.add_argument("--edge-threshold", type=float, default=d.edge_threshold, help="draw edges with |weight| >= this fraction of the largest")
    p.add_argument("--max-edges", type=int, default=d.max_edges, help="draw at most this many edges")
    p.add_argument("--results-dir", default="auto", help="also copy the diagram here: auto (results/ for the default config), none, or a folder")


def main(run, args) -> int:
    run.check_and_save_config(force=args.force)
    opt = ExportOptions(max_nodes=args.max_nodes, min_abs_effect=args.min_abs_effect, edge_threshold=args.edge_threshold, max_edges=args.max_edges)
    results = resolve_results_dir(args.results_dir, run)
    out = args.out if args.out is not None else run.root / "export"
    done = run_export(run, force=args.force, out=out, opt=opt, results_dir=results)
    print(f"export: {'wrote' if done else 'unchanged, skipped'} {out} (circuit.svg/.png/.dot/.html, graph.json, circuit_full.json)"
          + (f"; copied the diagram to {results}/" if results is not None else ""))
    return 0
