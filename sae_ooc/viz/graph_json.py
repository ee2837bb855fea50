"""The circuit as circuit-tracer's graph JSON (graph.json: metadata, qParams, nodes, links), and its schema check.

Embeddings are one node per input position, the metric is the target logit node; SAE features and error
nodes keep their ids. `validate_graph` checks the small JSON-Schema subset GRAPH_SCHEMA uses, plus links
whose endpoints are not nodes.
"""

from __future__ import annotations

from sae_ooc.viz.export_options import ExportOptions
from sae_ooc.viz.node_labels import node_caption, node_title, sink_id

GRAPH_SCHEMA = {
    "type": "object",
    "required": ["metadata", "qParams", "nodes", "links"],
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold", "schema_version"],
            "properties": {"slug": {"type": "string"}, "scan": {"type": "string"}, "transcoder_list": {"type": "array", "items": {"type": "string"}},
                           "prompt_tokens": {"type": "array", "items": {"type": "string"}}, "prompt": {"type": "string"},
                           "node_threshold": {"type": ["number", "null"]}, "schema_version": {"type": "integer"}},
        },
        "qParams": {
            "type": "object",
            "required": ["pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"],
            "properties": {"pinnedIds": {"type": "array", "items": {"type": "string"}}, "supernodes": {"type": "array"},
                           "linkType": {"type": "string"}, "clickedId": {"type": "string"}, "sg_pos": {"type": "string"}},
        },
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp", "influence", "activation",
                             "token_prob", "is_target_logit", "run_idx", "reverse_ctx_idx"],
                "properties": {
                    "node_id": {"type": "string"}, "feature": {"type": "integer"}, "layer": {"type": "string"}, "ctx_idx": {"type": "integer"},
                    "feature_type": {"type": "string", "enum": ["sae feature", "sae reconstruction error", "embedding", "logit"]},
                    "jsNodeId": {"type": "string"}, "clerp": {"type": "string"}, "influence": {"type": ["number", "null"]},
                    "activation": {"type": ["number", "null"]}, "token_prob": {"type": "number"}, "is_target_logit": {"type": "boolean"},
                    "run_idx": {"type": "integer"}, "reverse_ctx_idx": {"type": "integer"},
                },
            },
        },
        "links": {
            "type": "array",
            "items": {"type": "object", "required": ["source", "target", "weight"],
                      "properties": {"source": {"type": "string"}, "target": {"type": "string"}, "weight": {"type": "number"}}},
        },
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def check_schema(obj, schema: dict, where: str = "$") -> list[str]:
    """Errors of `obj` against the small JSON-Schema subset GRAPH_SCHEMA uses (type, required,
    properties, items, enum)."""
    errs = []
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        if not any(_is_type(obj, t) for t in types):
            return [f"{where}: expected {'/'.join(types)}, got {type(obj).__name__}"]
    if "enum" in schema and obj not in schema["enum"]:
        errs.append(f"{where}: {obj!r} not one of {schema['enum']}")
    if isinstance(obj, dict):
        errs += [f"{where}: missing '{k}'" for k in schema.get("required", []) if k not in obj]
        for k, sub in schema.get("properties", {}).items():
            if k in obj:
                errs += check_schema(obj[k], sub, f"{where}.{k}")
    if isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            errs += check_schema(item, schema["items"], f"{where}[{i}]")
    return errs


def _is_type(v, t: str) -> bool:
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, _TYPES[t])


def validate_graph(graph: dict) -> list[str]:
    """Schema errors plus links whose endpoints are not nodes."""
    errs = check_schema(graph, GRAPH_SCHEMA)
    if not errs:
        ids = {n["node_id"] for n in graph["nodes"]}
        errs += [f"link {ln['source']} -> {ln['target']}: unknown endpoint" for ln in graph["links"] if ln["source"] not in ids or ln["target"] not in ids]
    return errs


def to_graph_json(circuit: dict, nodes: list[dict], edges: list[dict], opt: ExportOptions) -> dict:
    meta = circuit["metadata"]
    P = len(meta["positions"])
    L = len(meta["hooks"])
    out_nodes = []
    for p, role in enumerate(meta["positions"]):
        out_nodes.append(_graph_node(f"E_{role}_{p}", p, "E", p, "embedding", f"input position {p} ({role})", None, None, P))
    for n in nodes:
        err = n["type"] == "error"
        out_nodes.append(_graph_node(n["id"], -1 if err or n.get("feature") is None else int(n["feature"]), str(n["hook_index"]), n["position"],
                                     "sae reconstruction error" if err else "sae feature",
                                     f"{node_title(n)}: {node_caption(n, meta['positions'])}", n["effect"],
                                     (n.get("top_activations") or [{}])[0].get("activation"), P))
    sink = _graph_node(sink_id(circuit), -1, str(L + 1), P - 1, "logit", meta["sink"]["description"], None, None, P)
    sink["is_target_logit"] = True
    out_nodes.append(sink)
    return {
        "metadata": {"slug": f"sae_ooc-{meta.get('config', 'run')}", "scan": "sae_ooc", "transcoder_list": list(meta["hooks"]),
                     "prompt_tokens": list(meta["positions"]),
                     "prompt": f"{meta.get('example_prompt', '')} " + ("(one clean/corrupted pair)" if meta["n_pairs"] == 1 else
                                                                          f"(effects averaged over {meta['n_pairs']} clean/corrupted pairs)"),
                     "node_threshold": opt.min_abs_effect, "schema_version": 1, "sae_ooc": {"method": meta["method"], "metric": meta["metric"], "scores": circuit.get("scores", {})}},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": out_nodes,
        "links": [{"source": e["source"], "target": e["target"], "weight": float(e["weight"])} for e in edges],
    }


def _graph_node(nid, feature, layer, ctx, ftype, clerp, influence, activation, P) -> dict:
    return {"node_id": nid, "feature": int(feature), "layer": layer, "ctx_idx": int(ctx), "feature_type": ftype, "jsNodeId": nid,
            "clerp": clerp, "influence": influence, "activation": activation, "token_prob": 0.0, "is_target_logit": False,
            "run_idx": 0, "reverse_ctx_idx": P - 1 - int(ctx)}
