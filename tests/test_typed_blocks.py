"""The stage outputs typed outside the StageOutput classes (tests/test_records.py covers those, the activation manifest
among them): layout.json and vocab.json (tasks.layout.Layout, tasks.vocab.Vocab), metrics.jsonl (models.metrics.EvalRow),
the data stage's info block of stages.json (tasks.data_info.DataInfo) and a circuit graph's metadata and scores
(circuits.graph.GraphMetadata, GraphScores). Each reads a real file of a configs/tiny.yaml run (tests/data/outputs/)
and writes it back byte for byte; the attributes are the file's numbers, read independently with json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sae_ooc.circuits.graph import CircuitGraph, GraphMetadata, GraphScores
from sae_ooc.errors import UserError
from sae_ooc.io import write_json
from sae_ooc.models.metrics import METRICS_LOG, read_train_log, train_log_text
from sae_ooc.records import OMIT
from sae_ooc.tasks.data_info import DataInfo
from sae_ooc.tasks.layout import LAYOUT_FILE, load_layout
from sae_ooc.tasks.vocab import read_vocab

DATA = Path(__file__).parent / "data" / "outputs"


def _resaved(tmp_path: Path, name: str, obj) -> bytes:
    return write_json(tmp_path / name, obj).read_bytes()


def test_layout_and_vocab_of_a_real_run_round_trip(tmp_path):
    raw_layout, raw_vocab = (json.loads((DATA / "data" / f).read_text()) for f in (LAYOUT_FILE, "vocab.json"))
    layout, vocab = load_layout(DATA / "data"), read_vocab(DATA / "data")
    assert _resaved(tmp_path, LAYOUT_FILE, layout.to_json()) == (DATA / "data" / LAYOUT_FILE).read_bytes()
    assert _resaved(tmp_path, "vocab.json", vocab.to_json()) == (DATA / "data" / "vocab.json").read_bytes()
    assert list(layout.position_names) == raw_layout["position_names"] and layout.answer_len == raw_layout["answer_len"]
    assert vocab.d_vocab == len(raw_vocab["names"]) and vocab.pad_id == raw_vocab["pad_id"] and vocab.layout == layout


def test_train_log_rows_of_a_real_run_round_trip(tmp_path):
    lines = [json.loads(x) for x in (DATA / "model" / METRICS_LOG).read_text().splitlines()]
    rows = read_train_log(DATA / "model")
    assert train_log_text(rows) == (DATA / "model" / METRICS_LOG).read_text()
    assert [r.step for r in rows] == [x["step"] for x in lines] and rows[0].loss is None and not any(r.extra for r in rows)
    last = lines[-1]
    assert rows[-1].accuracy == {k[:-4]: v for k, v in last.items() if k.endswith("_acc")} and rows[-1].acc("test_id") == last["test_id_acc"]
    assert read_train_log(tmp_path) is None  # no log: None (a reader leaves the run out)
    (tmp_path / METRICS_LOG).write_text('{"step": 0}\n')  # a row without its keys
    with pytest.raises(UserError, match="metrics.jsonl is unreadable.*sae-ooc train --force"):
        read_train_log(tmp_path)


def test_data_info_of_a_real_run_round_trips(tmp_path):
    """The `info` block of the tiny run's stages.json "data" record (copied out of it as data_info.json)."""
    raw = json.loads((DATA / "data" / "data_info.json").read_text())
    info = DataInfo.from_json(raw)
    assert _resaved(tmp_path, "x.json", info.to_json()) == (DATA / "data" / "data_info.json").read_bytes()
    assert info.sizes == raw["sizes"] and info.majority_rate["test_id"] == raw["majority_rate"]["test_id"] and info.finetune is OMIT

    class Run:  # what DataInfo.of reads: RunDir.stage_record
        def __init__(self, rec):
            self.rec = rec

        def stage_record(self, stage):
            return self.rec

    assert DataInfo.of(Run({"info": raw})) == info and DataInfo.of(Run(None)) is None


def test_circuit_graph_metadata_and_scores_are_typed_and_resave_byte_for_byte(tmp_path):
    src = DATA / "variable_circuit" / "variable_circuit.json"
    raw = json.loads(src.read_text())
    g = CircuitGraph.load(src)
    assert isinstance(g.metadata, GraphMetadata) and isinstance(g.scores, GraphScores)
    assert not g.metadata.extra and not g.scores.extra, "keys of a real graph the records do not declare"
    assert g.metadata.hooks == raw["metadata"]["hooks"] and g.metadata.sink.id == raw["metadata"]["sink"]["id"] == g.sink
    assert g.scores.faithfulness == raw["scores"]["faithfulness"]
    assert g.save(tmp_path / "g.json").read_bytes() == src.read_bytes()
    # the causal-variable circuit's blocks (its full JSON): keys of their own, in their own order
    full = json.loads((DATA / "drawn" / "causal_circuit_full.json").read_text())
    m, s = GraphMetadata.from_json(full["metadata"]), GraphScores.from_json(full["scores"])
    assert m.to_json() == full["metadata"] and list(m.to_json()) == list(full["metadata"]) and not m.extra
    assert s.to_json() == full["scores"] and not s.extra
    # a graph built in code from the producers' dicts holds the same records
    built = CircuitGraph(raw["metadata"], raw["scores"], g.nodes, g.edges)
    assert built.metadata == g.metadata and json.dumps(built.to_json()) == json.dumps(raw)


def test_node_effects_metadata_is_typed_and_the_file_resaves_byte_for_byte(tmp_path):
    from safetensors import safe_open

    from sae_ooc.browse.context import node_effects
    from sae_ooc.circuits.effects import EFFECTS_FILE, EffectsMeta, load_node_effects, save_node_effects

    src = DATA / "attribution" / EFFECTS_FILE
    with safe_open(str(src), framework="pt") as f:
        raw = json.loads(f.metadata()["sae_ooc"])
        meta = EffectsMeta.read(f)
    assert meta.to_json() == raw and not meta.extra and meta.positions == raw["positions"]
    save_node_effects(tmp_path / EFFECTS_FILE, load_node_effects(src))
    assert (tmp_path / EFFECTS_FILE).read_bytes() == src.read_bytes()
    effects, m = node_effects(src)  # what the browser reads
    assert m == meta and set(effects) == set(raw["hooks"]) and effects[raw["hooks"][0]].shape[-1] == raw["d_sae"][raw["hooks"][0]] + 1
    assert node_effects(tmp_path / "missing.safetensors") == ({}, None)


def test_the_saved_model_config_is_read_through_transformer_lens_and_the_report_names_it(tmp_path):
    """model/config.json (HookedTransformerConfig's keyword arguments) loads into TransformerLens's own config class; the
    report's description of a pretrained source names the checkpoint's architecture from it, not from the run's config."""
    from types import SimpleNamespace

    from sae_ooc.models.files import CONFIG_FILE
    from sae_ooc.models.hooked import saved_config
    from sae_ooc.report.model import _model_description

    kw = {"n_layers": 3, "d_model": 32, "n_heads": 2, "d_head": 16, "d_mlp": 96, "d_vocab": 50, "n_ctx": 8,
          "act_fn": "gelu_new", "original_architecture": "GPT2LMHeadModel"}
    assert saved_config(tmp_path) is None
    write_json(tmp_path / CONFIG_FILE, kw)
    c = saved_config(tmp_path)
    assert (c.n_layers, c.d_model, c.d_mlp, c.original_architecture) == (3, 32, 96, "GPT2LMHeadModel")
    model = SimpleNamespace(source="pretrained", name="gpt2", path="ckpt", n_layers=12, d_model=768, n_heads=12, d_mlp=3072)
    run = SimpleNamespace(cfg=SimpleNamespace(model=model, train=SimpleNamespace(trainable="all")), model_dir=tmp_path)
    assert _model_description(run) == ("The pretrained gpt2 (GPT2LMHeadModel: 3 layers, d_model 32, 2 heads, d_mlp 96; "
                                       "checkpoint `ckpt`) fine-tuned (all weights)")
    # a fine-tuning run's model (model.source: run) is named by its run, a weight-shared one (sharing.json) as such
    from sae_ooc.models.files import SHARING_FILE

    write_json(tmp_path / SHARING_FILE, {"weight_sharing": "blocks"})
    run.cfg.model = SimpleNamespace(source="run", run="runs/default", name="", path="")
    assert _model_description(run) == ("The model of the run `runs/default` (3 layers, d_model 32, 2 heads, d_mlp 96, one block's "
                                       "weights shared by every layer (model.weight_sharing)) fine-tuned (all weights)")
    run.cfg.model = SimpleNamespace(source="scratch", n_layers=4, d_model=64, n_heads=4, d_mlp=256, weight_sharing=True)
    assert "d_mlp 256, one block's weights shared by every layer" in _model_description(run)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(UserError, match="config.json"):
        saved_config(tmp_path)
