"""What the browser reads from the other stages, once per site: the task and the cache's prompts with the model's
answer to each (computed by sae_ooc.activations.answers: the browser runs no model), eval-sae's labels and alignment
tables, attribution's node effects, and the circuits a feature is in.

Everything here is small (per prompt or per labelled feature); per-feature activation statistics come from
`sae_ooc.saes.cache_stats`, one hook at a time.
"""

from __future__ import annotations


from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sae_ooc.activations.answers import cache_answers
from sae_ooc.activations.cache import ROLES, ActivationCache, distinct_rows, prefix_ids
from sae_ooc.browse.feature_record import AlignmentHit, Appearance
from sae_ooc.circuits.effects import EffectsMeta
from sae_ooc.circuits.graph import OMIT as NOT_IN_GRAPH, CircuitGraph
from sae_ooc.circuits.variable_faithfulness_result import VariableGroups
from sae_ooc.errors import UserError
from sae_ooc.io import read_json
from sae_ooc.models.hooked import load_model, model_hash
from sae_ooc.records import opt
from sae_ooc.saes.eval_sae import heldout_from_disk
from sae_ooc.saes.features import load_feature_labels
from sae_ooc.saes.metrics_result import SaeEvalMetrics
from sae_ooc.saes.store import sae_dir
from sae_ooc.tasks.data import first_tokens, load_task
from sae_ooc.viz.export_options import Drawn

EFFECTS_FILE = "node_effects.safetensors"  # = sae_ooc.circuits.effects.EFFECTS_FILE (that module loads the spliced model)
# (name, title, the JSON written by export or variable-circuit: the whole circuit plus what was drawn)
CIRCUITS = (("circuit", "the aggregate feature circuit", ("export", "circuit_full.json")),
            ("prompt_circuit", "the example pair's pruned circuit", ("export", "prompt_circuit_full.json")),
            ("variable_circuit", "the circuit of variable nodes", ("variable_circuit", "variable_circuit_full.json")))


@dataclass
class Prompts:
    """Per cache row: its prompt (token ids, -1 past its end), the true answer, and the model's answer to the prompt."""

    tokens: torch.Tensor  # [n_tokens, W] (W: the longest prompt)
    pos: torch.Tensor  # [n_tokens]
    split: torch.Tensor  # [n_tokens] split code
    answer: torch.Tensor  # [n_tokens] the true answer's (first) token
    model_answer: torch.Tensor  # [n_tokens]
    model_prob: torch.Tensor  # [n_tokens]


@dataclass
class DrawnCircuit:
    """A circuit's full JSON (sae_ooc.viz.circuit_files: the saved `CircuitGraph` plus `drawn`): the graph and what of it
    was drawn."""

    graph: CircuitGraph
    drawn_nodes: set[str]  # ids of the drawn nodes
    drawn_edges: set[tuple[str, str]]  # (source, target) of the drawn edges
    n_without_drawn_edges: int  # drawn nodes with no drawn edge

    @classmethod
    def from_json(cls, d: dict) -> DrawnCircuit:
        drawn = Drawn.from_json(d["drawn"]) if d.get("drawn") else Drawn(options=None, nodes=[], edges=[], without_drawn_edges=[])
        return cls(CircuitGraph.from_json(d), set(drawn.nodes), {tuple(e) for e in drawn.edges}, len(drawn.without_drawn_edges))


@dataclass
class Context:
    vocab: object
    cache: ActivationCache
    hooks: list[str]
    prompts: Prompts
    split_names: dict[int, str]
    first: torch.Tensor  # [n_tokens] bool: the first row of each distinct prefix
    held: torch.Tensor  # cache rows, one per held-out prefix
    key: torch.Tensor  # [n_tokens] sample keys
    model: object  # read for its weights (the direct path of promoted tokens); its answers come from activations.answers
    scale: float  # mean ln_final scale on the task prompts (what promoted tokens in `query` divide by too)
    labels: dict  # hook -> feature -> [label, ...] (eval-sae)
    eval_metrics: dict  # hook -> eval-sae's SaeEvalMetrics (None where absent or unreadable)
    effects: dict  # hook -> [P, d_sae + 1] mean node effect (attribution), absent when unreadable
    effects_meta: EffectsMeta | None  # node_effects.safetensors' (None: attribution has not run)
    circuits: dict = field(default_factory=dict)  # name -> DrawnCircuit
    members: dict = field(default_factory=dict)  # (hook, feature) -> [variable node id, ...]
    alignment: dict = field(default_factory=dict)  # hook -> feature -> [eval-sae's values it detects best, ...]
    appearances: dict = field(default_factory=dict)  # (hook, feature) -> [Appearance, ...]
    positions: tuple = ROLES  # the name of each token position (the cache's: the task layout's roles, or pos<p>)


def alignment_by_feature(metrics: SaeEvalMetrics | None) -> dict[int, list[AlignmentHit]]:
    """feature -> every (variable, position, value) for which eval-sae chose it as the best single detector, with its
    held-out AUROC beside the probe's and the shuffled-label search's (its control)."""
    out: dict[int, list[dict]] = {}
    for rec in (metrics.alignment if metrics is not None else {}).values():
        ctrl = rec.features.shuffled_mean_auroc if rec.features is not None else None
        for v in rec.values:
            out.setdefault(int(v.feature), []).append(AlignmentHit(variable=rec.variable, position=rec.position, value=v.value,
                                                                   auroc=v.auroc_feature, auroc_probe=v.auroc_probe,
                                                                   shuffled_mean_auroc=ctrl, n_heldout=rec.n_heldout))
    return out


def load_eval_metrics(run, hook: str) -> SaeEvalMetrics | None:
    """eval-sae's metrics of one SAE; None where it has not run or its file is unreadable (the pages show no metrics)."""
    try:
        return SaeEvalMetrics.load_if(sae_dir(run.sae_eval_dir, hook))
    except UserError:
        return None


def _read_json(path: Path):
    try:
        return read_json(path) if path.is_file() else None
    except ValueError:
        return None


def node_effects(path: Path) -> tuple[dict, EffectsMeta | None]:
    """{hook: [P, d_sae + 1] mean effect over the pairs} and the file's metadata; ({}, None) when attribution has not run
    (or its file is unreadable: the pages then show no effects)."""
    if not path.is_file():
        return {}, None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = EffectsMeta.read(f)  # method, metric, positions, ...
            return {k.removeprefix("effects."): f.get_tensor(k) for k in f.keys() if k.startswith("effects.")}, meta
    except (OSError, SafetensorError, ValueError, KeyError, TypeError):
        return {}, None


def variable_members(run, circuit: DrawnCircuit | None) -> dict:
    """(hook, feature) -> ids of the variable nodes (in the variable circuit) that hold the feature."""
    try:
        groups = VariableGroups.load_if(run.variable_circuit_dir)
    except UserError:  # an unreadable groups.json: the pages link no variable node (the browser never stops on it)
        groups = None
    in_circuit = {n.id for n in circuit.graph.nodes} if circuit is not None else set()
    out: dict = {}
    for g in groups.groups if groups else []:
        if g.id in in_circuit:
            for f in g.members:
                out.setdefault((g.hook, int(f)), []).append(g.id)
    return out


def appearances(circuits: dict[str, DrawnCircuit]) -> dict:
    """(hook, feature) -> the nodes of each circuit that are that feature (at some position)."""
    out: dict = {}
    for name, c in circuits.items():
        for n in c.graph.nodes:
            if n.type == "feature" and isinstance(n.feature, int):
                out.setdefault((n.hook, n.feature), []).append(Appearance(circuit=name, id=n.id, role=n.role, effect=n.effect,
                                                                          rank=None if n.rank is NOT_IN_GRAPH else n.rank, drawn=n.id in c.drawn_nodes))
    return out


def load_context(run, hooks: list[str], seed: int = 0) -> Context:
    cache = ActivationCache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    for h in hooks:
        cache.check_hook(h)
    ds, vocab = load_task(run.data_dir)
    tok = cache.tokens()
    pid = prefix_ids(tok)
    first = torch.zeros(cache.n_tokens, dtype=torch.bool)
    first[distinct_rows(tok, torch.ones(cache.n_tokens, dtype=torch.bool), pid)] = True
    held = distinct_rows(tok, heldout_from_disk(run.saes_dir, cache), pid)
    key = torch.rand(cache.n_tokens, generator=torch.Generator().manual_seed(seed))
    model = load_model(run.model_dir, device=run.device)
    answers = cache_answers(model, tok, vocab.pad_id)  # the model runs there, not here
    prompt, scale = answers.prompt, answers.scale
    prompts = Prompts(prompt, tok["pos"].long(), tok["split"].long(), first_tokens(vocab, tok["answer"].long()), answers.answer, answers.prob)
    metrics = {h: load_eval_metrics(run, h) for h in hooks}
    effects, meta = node_effects(run.attribution_dir / EFFECTS_FILE)
    circuits = {}
    for name, _, (folder, fname) in CIRCUITS:
        c = _read_json(run.root / folder / fname)
        try:
            if c is not None:
                circuits[name] = DrawnCircuit.from_json(c)
        except (ValueError, KeyError, TypeError):
            pass  # not a circuit (an unreadable file is skipped like a missing one)
    codes = {int(v): k for k, v in (opt(cache.manifest.split_codes) or {}).items()}
    return Context(vocab, cache, hooks, prompts, codes, first, held, key, model, scale, load_feature_labels(run.sae_eval_dir),
                   metrics, effects, meta, circuits, variable_members(run, circuits.get("variable_circuit")),
                   {h: alignment_by_feature(m) for h, m in metrics.items()}, appearances(circuits),
                   tuple(cache.position_name(p) for p in range(prompt.shape[1])))

