"""Export: every format parses (SVG as XML, graph JSON against GRAPH_SCHEMA, DOT structure, a self-contained
HTML page with escaped labels), drawing options, and the `export` command on a run."""

import json
import re
import xml.etree.ElementTree as ET

import pytest
from circuit_fixtures import HOOKS, make_run
from conftest import rendered_figures

from sae_ooc.circuits.graph import CircuitGraph
from sae_ooc.cli import main as cli_main
from sae_ooc.pipeline import run_stage
from sae_ooc.viz.circuit_files import ExportOptions, export_circuit, select_drawn
from sae_ooc.viz.graph_json import (
    GRAPH_SCHEMA,
    check_schema,
    to_graph_json,
    validate_graph,
)

EVIL = '<script>alert("x")</script>'


def synthetic_circuit() -> dict:
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    nodes = []
    for k, (h, p, f, eff) in enumerate([(0, 0, 3, -1.0), (0, 0, None, -0.4), (1, 2, 7, -0.8), (1, 1, 9, 0.3), (1, 2, 11, 0.01)]):
        nid = f"{hooks[h]}:{p}:{'err' if f is None else f}"
        nodes.append({"id": nid, "hook": hooks[h], "hook_index": h, "position": p, "role": ["head", "r1", "r2"][p],
                      "type": "error" if f is None else "feature", "feature": f, "effect": eff, "effect_std": 0.1, "rank": k + 1,
                      "label": EVIL if f == 3 else None, "description": EVIL if f == 3 else "on e1@head → e2",
                      "top_activations": [{"prompt": "e1 r0 r1", "position": p, "role": "head", "token": "e1", "activation": 1.5}],
                      "promoted": [{"token": "e2", "score": 0.7}]})
    ids = [n["id"] for n in nodes]
    edges = [{"source": ids[0], "target": ids[2], "weight": -0.5}, {"source": ids[1], "target": ids[2], "weight": 0.2},
             {"source": ids[0], "target": ids[3], "weight": 0.001}, {"source": ids[2], "target": "metric", "weight": -0.9},
             {"source": ids[3], "target": "metric", "weight": 0.25}, {"source": ids[4], "target": "metric", "weight": 0.01}]
    return {"metadata": {"config": "synthetic", "method": "atp", "metric": "logit_diff", "n_pairs": 4, "hooks": hooks, "d_sae": {h: 16 for h in hooks},
                         "positions": ["head", "r1", "r2"], "sink": {"id": "metric", "description": "logit(t2) - logit(t2')"},
                         "example_prompt": "e1 r0 r1", "example_answer": "e2"},
            "scores": {"faithfulness": 0.9, "completeness": 0.1}, "nodes": nodes, "edges": edges}


def check_outputs(out, circuit, prefix=""):
    svg = ET.parse(out / f"{prefix}circuit.svg").getroot()
    assert svg.tag.endswith("svg")
    assert (out / f"{prefix}circuit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    graph = json.loads((out / f"{prefix}graph.json").read_text())
    assert validate_graph(graph) == []
    types = {n["feature_type"] for n in graph["nodes"]}
    assert {"embedding", "logit", "sae feature"} <= types
    assert sum(n["is_target_logit"] for n in graph["nodes"]) == 1

    dot = (out / f"{prefix}circuit.dot").read_text()
    assert dot.startswith("digraph circuit {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    declared = set(re.findall(r'^\s*("(?:[^"\\]|\\.)*") \[label=', dot, re.M))
    for src, dst in re.findall(r'^\s*("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*")', dot, re.M):
        assert src in declared and dst in declared

    page = (out / f"{prefix}circuit.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    n_scripts = 3 if 'id="links-note"' in page else 2  # the third turns the links to the feature browser on
    assert page.count("<script") == n_scripts and page.count("</script>") == n_scripts  # only our own blocks
    ET.fromstring(page[page.index("<svg"): page.index("</svg>") + 6])  # the inline SVG is well-formed XML
    full = json.loads((out / f"{prefix}circuit_full.json").read_text())
    assert full["nodes"] == circuit["nodes"] and full["edges"] == circuit["edges"]
    return graph, dot, page, full


@pytest.mark.figures
def test_synthetic_circuit_exports_and_escapes(tmp_path):
    circuit = synthetic_circuit()
    export_circuit(circuit, tmp_path, ExportOptions(edge_threshold=0.0))
    graph, dot, page, full = check_outputs(tmp_path, circuit)
    assert "&lt;script&gt;" in page and EVIL not in page
    assert "\\u003cscript\\u003e" in page  # the hover data carries the label, escaped inside its JSON block
    assert '<script>alert(\\"x\\")' in dot  # DOT strings keep the text (captions are truncated), quotes escaped
    assert len(graph["links"]) == 6 and len(full["drawn"]["nodes"]) == 5


def test_drawing_options_only_change_what_is_drawn(tmp_path):
    circuit = synthetic_circuit()
    nodes, edges = select_drawn(circuit, ExportOptions(max_nodes=3, edge_threshold=0.1))
    assert [n["effect"] for n in nodes] == [-1.0, -0.8, -0.4]
    ids = {n["id"] for n in nodes} | {"metric"}
    assert all(e["source"] in ids and e["target"] in ids and abs(e["weight"]) >= 0.09 for e in edges)
    assert len(edges) == 3
    export_circuit(circuit, tmp_path, ExportOptions(max_nodes=3, edge_threshold=0.1))
    full = json.loads((tmp_path / "circuit_full.json").read_text())
    assert len(full["nodes"]) == 5 and len(full["drawn"]["nodes"]) == 3  # the circuit keeps everything
    assert len(json.loads((tmp_path / "graph.json").read_text())["links"]) == 3


def test_schema_checker_rejects_bad_graphs():
    circuit = synthetic_circuit()
    nodes, edges = select_drawn(circuit, ExportOptions())
    graph = to_graph_json(circuit, nodes, edges, ExportOptions())
    assert check_schema(graph, GRAPH_SCHEMA) == []
    bad = json.loads(json.dumps(graph))
    del bad["nodes"][0]["ctx_idx"]
    bad["nodes"][1]["feature_type"] = "neuron"
    bad["links"].append({"source": "nowhere", "target": "metric", "weight": 1.0})
    errs = validate_graph(bad)
    assert any("ctx_idx" in e for e in errs) and any("neuron" in e for e in errs)
    bad2 = json.loads(json.dumps(graph))
    bad2["links"].append({"source": "nowhere", "target": "metric", "weight": 1.0})
    assert validate_graph(bad2) == ["link nowhere -> metric: unknown endpoint"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    labels = {h: [{"feature": f, "variable": "bridge", "position": "r1", "value": EVIL, "auroc": 0.93} for f in range(48)] for h in HOOKS}
    run = make_run(tmp_path_factory.mktemp("export"), labels=labels,
                   overrides=["circuit.top_n=5", "circuit.curve_sizes=[0]", "circuit.edge_counts=[2]", "circuit.random_edge_sets=2",
                              "circuit.edge_check=2", "circuit.mean_examples=32", "attribution.n_pairs=6"])
    run_stage(run, "attribute", validate=False)
    run_stage(run, "circuit")
    return run


@pytest.mark.figures
def test_export_command_on_a_run(run, tmp_path, capsys):
    assert cli_main(["export", "--run", str(run.root)]) == 0
    out = run.export_dir
    assert "export: wrote" in capsys.readouterr().out
    circuit = json.loads((run.circuit_dir / "circuit.json").read_text())
    graph, dot, page, _ = check_outputs(out, circuit)
    assert "&lt;script&gt;" in page and EVIL not in page
    labelled = [n for n in circuit["nodes"] if n["type"] == "feature"]
    assert labelled and all(n["label"] == f"bridge={EVIL}@r1" for n in labelled)
    for f in ("circuit.png", "circuit.svg", "circuit.html", "prompt_circuit.png", "prompt_circuit.svg", "prompt_circuit.html"):
        assert (out / f).stat().st_size > 0
    # the example pair's own (pruned) circuit goes through the same exporters
    example = json.loads((run.circuit_dir / "prompt_circuit.json").read_text())
    check_outputs(out, example, prefix="prompt_")
    # the typed graph exports to the same files as its JSON form (compared by its JSON: the figures are not rendered
    # again, here or below, where nothing reads them)
    with rendered_figures(()):
        export_circuit(CircuitGraph.from_json(circuit).to_json(), tmp_path / "typed")
    assert (tmp_path / "typed" / "circuit_full.json").read_bytes() == (out / "circuit_full.json").read_bytes()
    assert cli_main(["export", "--run", str(run.root)]) == 0
    assert "export: unchanged, skipped" in capsys.readouterr().out
    with rendered_figures(()):
        assert cli_main(["export", "--run", str(run.root), "--max-nodes", "2"]) == 0  # other options: drawn again
    assert "export: wrote" in capsys.readouterr().out
    drawn = json.loads((out / "circuit_full.json").read_text())["drawn"]
    assert len(drawn["nodes"]) == 2  # the top two, drawn whether or not a drawn edge touches them
    assert set(drawn["without_drawn_edges"]) == {n for n in drawn["nodes"] if not any(n in e for e in drawn["edges"])}


def test_the_prompt_page_names_its_prompt_and_speaks_of_one_prompt(run, capsys):
    """Issue #10: a per-prompt page titled with the prompt, not "1 pairs" or a "mean effect" over one prompt."""
    assert cli_main(["export", "--run", str(run.root)]) == 0
    example = json.loads((run.circuit_dir / "prompt_circuit.json").read_text())
    prompt = example["metadata"].get("prompt") or example["metadata"]["example_prompt"]
    page = (run.export_dir / "prompt_circuit.html").read_text()
    title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
    assert f"circuit of the prompt &#x27;{prompt}&#x27;" in title or f"circuit of the prompt '{prompt}'" in title, title
    assert "1 pairs" not in page and "mean effect" not in page and "effect on this prompt" in page
    assert "mean effect over the selection pairs" in (run.export_dir / "circuit.html").read_text()
