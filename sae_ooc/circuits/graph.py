"""The circuit graph: the one definition that the circuit stage writes and export and the report read.

RUN/circuit/circuit.json (the circuit over every pair) and RUN/circuit/prompt_circuit.json (one pair's
pruned circuit) are both a `CircuitGraph` saved as JSON:

    metadata  what was measured and how: hooks, d_sae, positions, metric, method, ablation, edge_weights,
              sink {id, description}, example prompt, selection rule, ...
    scores    m_full, m_empty, m_circuit, faithfulness (+ m_complement, completeness for the aggregate circuit)
    nodes     [GraphNode]: one per circuit node, with its effect and what it is about
    edges     [GraphEdge]: source -> target (SINK for the metric) with its weight, largest |weight| first

    g = CircuitGraph.load(path)          # or load_circuit(run) / load_prompt_circuit(run)
    g.nodes[0].effect, g.edges[0].weight
    g.save(path)                          # the same JSON, key for key

Optional node fields that a graph does not have (`rank` in a one-pair circuit, `activation` in the aggregate
one) are OMIT and left out of the JSON; keys this version does not know are kept in `extra` and written back.
`metadata` is a `GraphMetadata` record (sae_ooc/records.py): `g.metadata.hooks`, `g.metadata.sink.id`; a key some graphs
lack is records.OMIT (falsy).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sae_ooc.circuits.nodes import SINK, Node
from sae_ooc.errors import UserError, unreadable
from sae_ooc.io import read_json, write_json
from sae_ooc.records import OMIT as ABSENT, Record

CIRCUIT_FILE = "circuit.json"
PROMPT_CIRCUIT_FILE = "prompt_circuit.json"  # one pair's pruned circuit (the first attribution pair)


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()  # an optional field the graph does not have (not written)


class _Record:
    """JSON for the dataclasses below: OMIT fields are left out, keys this version does not know kept in `extra`."""

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra" and getattr(self, f.name) is not OMIT}
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: dict):
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


@dataclass
class GraphNode(_Record):
    id: str
    hook: str
    hook_index: int  # the hook's place in metadata["hooks"] (forward order)
    position: int
    role: str  # the position's role: head, r1 or r2
    type: str  # "feature" or "error"
    feature: int | None  # None for the error node
    effect: float  # mean patching effect (a one-pair circuit: that pair's effect)
    effect_std: float
    rank: int | None = OMIT  # aggregate circuit: rank by |mean effect| over every node (None: zero effect)
    activation: float = OMIT  # one-pair circuit: the node's value on the pair (an error node: its norm)
    label: str | None = OMIT  # description fields (sae_ooc.saes.features.describe_nodes)
    labels: list = OMIT
    description: str | None = OMIT
    top_activations: list = OMIT
    promoted: list = OMIT
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, node: Node, hooks: list[str], roles: list[str], effect: float, effect_std: float, **optional) -> GraphNode:
        return cls(id=node.id, hook=node.hook, hook_index=hooks.index(node.hook), position=node.pos, role=roles[node.pos],
                   type=node.type, feature=node.idx, effect=effect, effect_std=effect_std, **optional)

    def describe(self, desc: dict) -> None:
        """Set the description fields from describe_nodes' record of this node."""
        known = {f.name for f in fields(self)}
        for k, v in desc.items():
            if k in known and k != "extra":
                setattr(self, k, v)
            else:
                self.extra[k] = v

    @property
    def node(self) -> Node:
        return Node(self.hook, self.position, self.feature)


@dataclass
class GraphEdge(_Record):
    source: str  # node id
    target: str  # node id, or SINK
    weight: float
    gradient: float = OMIT  # the gradient estimate beside an exact weight
    extra: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class GraphSink(Record):
    """The node the circuit's edges end in: the metric."""

    id: str  # the metric node's id (nodes.SINK)
    description: str  # what the metric measures, e.g. "logit(t2) - logit(t2')"


@dataclass(kw_only=True)
class GraphMetadata(Record):
    """What a circuit graph measured and how (its `metadata` block). The aggregate circuit (circuit.json), one pair's
    circuit (prompt_circuit.json) and the variable circuit (variable_circuit.json) each write their own subset."""

    run: str = ABSENT  # the run directory (aggregate and variable circuits)
    config: str = ABSENT  # the config's name
    prompt: str = ABSENT  # one pair's circuit: the clean prompt (its text)
    answer: str = ABSENT  # its answer
    corrupted_prompt: str = ABSENT
    corrupted_answer: str = ABSENT
    bridge: str = ABSENT  # the pair's bridge entity
    method: str = ABSENT  # attribution method (exact, atp, ig; "group ablation" for variable groups)
    metric: str = ABSENT  # logit_diff or logprob
    n_pairs: int | None = ABSENT  # pairs the node effects average over
    effects_over: str = ABSENT  # which pairs chose the nodes ("selection pairs")
    n_heldout_pairs: int = ABSENT  # pairs the scores are measured on
    hooks: list[str] = ABSENT  # hook_names, forward order (every graph the stages write has them, and positions)
    d_sae: dict[str, int] = ABSENT  # hook_name -> SAE width
    positions: list[str] = ABSENT  # the name of each node position
    node_kind: str = ABSENT  # variable circuit: "variable groups"
    selection: dict | str = ABSENT  # how nodes were chosen: the settings, or a sentence (one pair's circuit)
    ablation: str = ABSENT  # mean or zero
    ablation_rule: str = ABSENT  # variable circuit: how a group is ablated
    effect: str = ABSENT  # variable circuit: what a node's effect is
    edge_weights: str = ABSENT  # how edges were weighed
    values_on: str = ABSENT  # variable circuit: which pairs the numbers are measured on
    sink: GraphSink = ABSENT
    example_prompt: str = ABSENT  # a prompt the figures show
    example_answer: str = ABSENT
    high_level_model: str = ABSENT  # causal-variable circuit: the high-level model it is scored against


@dataclass(kw_only=True)
class GraphScores(Record):
    """How well the circuit stands in for the model (its `scores` block); each kind of graph writes its own subset."""

    m_full: float = ABSENT  # the metric of the full model
    m_empty: float = ABSENT  # with every node ablated
    m_circuit: float = ABSENT  # with every node but the circuit's ablated
    m_complement: float = ABSENT  # with only the circuit's nodes ablated
    faithfulness: float | None = ABSENT  # (m_circuit - m_empty) / (m_full - m_empty)
    faithfulness_ci95: list[float] = ABSENT  # over pairs
    faithfulness_selection: float = ABSENT  # variable circuit: on the selection pairs (in-sample)
    completeness: float = ABSENT  # (m_full - m_complement) / (m_full - m_empty)
    random_groups_mean: float | None = ABSENT  # variable circuit: faithfulness of random groups of the same sizes
    kept: float | None = ABSENT  # causal-variable circuit: share of the model's answer kept by the cut
    random_subspaces_kept: float | None = ABSENT  # ... and by random subspaces of the same sizes
    pairs: str = ABSENT  # which pairs the scores are on ("heldout")
    n_pairs: int | None = ABSENT
    in_sample: bool = ABSENT  # one pair's circuit: scored on the pair it was pruned on


@dataclass
class CircuitGraph:
    metadata: GraphMetadata  # a dict (the producers') becomes a GraphMetadata, its keys in the dict's order
    scores: GraphScores  # likewise
    nodes: list[GraphNode]
    edges: list[GraphEdge]

    def __post_init__(self):
        if isinstance(self.metadata, dict):
            self.metadata = GraphMetadata.from_json(self.metadata)
        if isinstance(self.scores, dict):
            self.scores = GraphScores.from_json(self.scores)

    @property
    def hooks(self) -> list[str]:
        return self.metadata.hooks

    @property
    def sink(self) -> str:
        return self.metadata.sink.id if self.metadata.sink else SINK

    def to_json(self) -> dict:
        return {"metadata": self.metadata.to_json(), "scores": self.scores.to_json(), "nodes": [n.to_json() for n in self.nodes],
                "edges": [e.to_json() for e in self.edges]}

    @classmethod
    def from_json(cls, d: dict) -> CircuitGraph:
        if not isinstance(d, dict) or not all(k in d for k in ("metadata", "nodes", "edges")):
            raise ValueError("not a circuit graph (needs metadata, nodes and edges)")
        return cls(GraphMetadata.from_json(d["metadata"]), GraphScores.from_json(d.get("scores", {})), [GraphNode.from_json(n) for n in d["nodes"]],
                   [GraphEdge.from_json(e) for e in d["edges"]])

    def save(self, path: Path) -> Path:
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path, command: str = "sae-ooc circuit") -> CircuitGraph:
        try:
            return cls.from_json(read_json(path))
        except (ValueError, KeyError, TypeError) as e:
            raise unreadable(path, e, command) from None


def load_circuit(run) -> CircuitGraph:
    path = run.circuit_dir / CIRCUIT_FILE
    if not path.exists():
        raise UserError(f"no circuit in {run.circuit_dir}; run `sae-ooc circuit --run {run.root}` first")
    return CircuitGraph.load(path, f"sae-ooc circuit --run {run.root} --force")


def load_prompt_circuit(run) -> CircuitGraph | None:
    """The example pair's pruned circuit written by the circuit stage, if it wrote one."""
    path = run.circuit_dir / PROMPT_CIRCUIT_FILE
    return CircuitGraph.load(path, f"sae-ooc circuit --run {run.root} --force") if path.exists() else None
