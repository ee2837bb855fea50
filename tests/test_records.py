"""Typed stage outputs (sae_ooc/records.py): every output class reads a real file of a configs/tiny.yaml run and writes it
back byte for byte, round-trips through its file, refuses what it cannot read in one line, and docs/FORMATS.md is the
documentation generated from the classes.

tests/data/outputs/<stage>/<file> are real files of `sae-ooc pipeline --config configs/tiny.yaml` (copied, not generated
here: the tests stay fast, and a change of format shows as a failing test, not as silently rewritten fixtures).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from sae_ooc import formats
from sae_ooc.errors import UserError
from sae_ooc.interventions.steer_result import SteerResult
from sae_ooc.records import OMIT, Record, Share, StageOutput, given

DATA = Path(__file__).parent / "data" / "outputs"
CLASSES = formats.output_classes()


# where a file name is not unique: the folder of its real file
FOLDER = {"sae_ooc.sae_train": "saes/blocks.1.hook_resid_pre", "sae_ooc.sae_eval": "sae_eval/blocks.1.hook_resid_pre",
          "sae_ooc.circuit_faithfulness": "circuit", "sae_ooc.variable_circuit_faithfulness": "variable_circuit",
          "sae_ooc.standard_metrics": "sae_eval/blocks.1.hook_resid_pre"}


def _real(cls) -> Path:
    """The tiny run's directory holding cls.FILE."""
    if cls.FORMAT_NAME in FOLDER:
        return DATA / FOLDER[cls.FORMAT_NAME]
    hits = sorted(DATA.glob(f"*/{cls.FILE}"))
    assert hits, f"no tests/data/outputs/*/{cls.FILE}"
    return hits[0].parent


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_real_file_loads_and_saves_byte_identical(cls, tmp_path):
    x = cls.load(_real(cls))
    assert isinstance(x, cls)
    assert not x.extra, f"{cls.__name__} does not know keys {list(x.extra)} of a real file"
    x.save(tmp_path)
    assert (tmp_path / cls.FILE).read_bytes() == (_real(cls) / cls.FILE).read_bytes()
    assert cls.load(tmp_path) == x  # load(save(x)) == x


def _unknown_keys(obj) -> list[str]:
    """Every `extra` key anywhere in a loaded record (keys the classes do not declare)."""
    if isinstance(obj, Record):
        return list(obj.extra) + [k for f in fields(obj) if f.name != "extra" for k in _unknown_keys(getattr(obj, f.name))]
    if isinstance(obj, (list, tuple)):
        return [k for v in obj for k in _unknown_keys(v)]
    if isinstance(obj, dict):
        return [k for v in obj.values() for k in _unknown_keys(v)]
    return []


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_key_of_a_real_file_is_declared(cls):
    assert _unknown_keys(cls.load(_real(cls))) == []


def test_steer_attributes_are_the_files_numbers():
    raw = json.loads((DATA / "steer" / "steer.json").read_text())
    s = SteerResult.load(DATA / "steer")
    for r, d in zip(s.rows, raw["rows"], strict=True):
        assert r.methods.resid_patch.consistent.share == d["methods"]["resid_patch"]["consistent"]["share"]
        assert bool(r.methods.features) == ("features" in d["methods"])
        if r.methods.random:
            assert r.methods.random.consistent.max == d["methods"]["random"]["consistent"]["max"]
    assert s.settings.n_prompts == raw["settings"]["n_prompts"]


@dataclass(kw_only=True)
class _Inner(Record):
    a: int
    b: float | None = OMIT  # optional


@dataclass(kw_only=True)
class _Out(StageOutput):
    FILE = "out.json"
    STAGE = "demo"
    FORMAT_NAME = "sae_ooc.demo"

    rows: list[_Inner]
    by: dict[str, _Inner]
    share: Share


def test_round_trip_optional_unknown_and_order(tmp_path):
    x = _Out(rows=[_Inner(a=1), _Inner(a=2, b=None)], by={"k": _Inner(a=3, b=0.5)}, share=Share(share=None, ci95=None, n=0))
    x.save(tmp_path)
    d = json.loads((tmp_path / "out.json").read_text())
    assert d["rows"] == [{"a": 1}, {"a": 2, "b": None}]  # OMIT is left out, None written as null
    assert _Out.load(tmp_path) == x and not given(_Out.load(tmp_path).rows[0].b)
    d["rows"][0]["new_key"] = [1]  # a newer writer's key is kept and written back
    (tmp_path / "out.json").write_text(json.dumps(d))
    y = _Out.load(tmp_path)
    assert y.rows[0].extra == {"new_key": [1]} and y.to_json() == d


def test_unreadable_newer_or_incomplete_files_are_one_line_errors(tmp_path):
    (tmp_path / "out.json").write_text("{")
    with pytest.raises(UserError, match="unreadable.*sae-ooc demo --force"):
        _Out.load(tmp_path)
    (tmp_path / "out.json").write_text(json.dumps({"format": "sae_ooc.demo/2", "rows": []}))
    with pytest.raises(UserError, match="not a sae_ooc.demo/1 file"):
        _Out.load(tmp_path)
    (tmp_path / "out.json").write_text(json.dumps({"rows": [], "by": {}}))
    with pytest.raises(UserError, match="missing share"):
        _Out.load(tmp_path)
    assert _Out.load_if(tmp_path / "absent") is None


def test_a_real_file_missing_a_key_is_refused(tmp_path):
    shutil.copy(DATA / "steer" / "steer.json", tmp_path / "steer.json")
    d = json.loads((tmp_path / "steer.json").read_text())
    del d["rows"][0]["methods"]["resid_patch"]
    (tmp_path / "steer.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="resid_patch.*sae-ooc steer --force"):
        SteerResult.load(tmp_path)


def test_formats_doc_is_generated_from_the_classes():
    text = formats.render()
    assert formats.DOC.read_text() == text, "docs/FORMATS.md is stale: run `python -m sae_ooc.formats`"
    for cls in CLASSES:
        assert f"`{cls.FILE}`" in text
        for f in fields(cls):
            if f.metadata.get("rest"):
                assert f"| *other keys* (`{f.name}`) |" in text
            elif f.name != "extra":
                assert f"| `{f.metadata.get('key', f.name)}` |" in text


def test_variables_attributes_are_the_files_numbers_and_older_formats_still_load(tmp_path):
    from sae_ooc.causal.result import VariablesResult

    raw = json.loads((DATA / "variables" / "variables.json").read_text())
    v = VariablesResult.load(DATA / "variables")
    for r, d in zip(v.rows, raw["rows"], strict=True):
        for name, u in d["units"].items():
            assert r.units[name].switch == u["switch"] and r.switch(name) == u["switch"]
        assert bool(r.pairs) == bool(d.get("pairs"))
    c, dc = v.circuit, raw["circuit"]
    assert c.nodes["bridge@r1"].unit.switch == dc["nodes"]["bridge@r1"]["unit"]["switch"]
    assert c.faithfulness.circuit.unit.kept == dc["faithfulness"]["circuit"]["unit"]["kept"]
    # format 2 (the bridge at r1 alone, rows without `pairs`, a circuit of one status) loads and saves back as it was
    old = VariablesResult.load(DATA / "variables_v2")
    assert old.format == "sae_ooc.variables/2" and not old.rows[0].pairs and not old.circuit.ok
    old.save(tmp_path)
    assert (tmp_path / "variables.json").read_bytes() == (DATA / "variables_v2" / "variables.json").read_bytes()
    (tmp_path / "variables.json").write_text(json.dumps({**raw, "format": "sae_ooc.variables/4"}))
    with pytest.raises(UserError, match="not a sae_ooc.variables/3 file.*sae-ooc variables --force"):
        VariablesResult.load(tmp_path)
    d = json.loads(json.dumps(raw))
    d["rows"][0]["units"]["resid_patch"]["switch_rate"] = d["rows"][0]["units"]["resid_patch"].pop("switch")  # a renamed field
    (tmp_path / "variables.json").write_text(json.dumps(d))
    assert _unknown_keys(VariablesResult.load(tmp_path)) == ["switch_rate"]
    del d["settings"]["hooks"]
    (tmp_path / "variables.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="missing hooks"):
        VariablesResult.load(tmp_path)


def test_a_record_read_from_a_file_keeps_its_key_order_and_an_empty_optional_record_is_falsy():
    x = _Inner.from_json({"b": 0.5, "a": 1})
    assert list(x.to_json()) == ["b", "a"] and list(_Inner(a=1, b=0.5).to_json()) == ["a", "b"]
    assert x == _Inner(a=1, b=0.5)  # the order is not part of the value

    @dataclass(kw_only=True)
    class _AllOptional(Record):
        a: int = OMIT

    assert not _AllOptional() and _AllOptional(a=0) and not _AllOptional.from_json({})


def test_summary_groups_and_drawn_blocks_of_a_real_run_round_trip(tmp_path):
    """summary.json (a list of headline numbers, what `sae-ooc compare` reads), groups.json (a StageOutput, above) and
    the `drawn` block of a circuit's full JSON (what the browser reads) load into their classes and write back as read."""
    from sae_ooc.compare.table import read_summary
    from sae_ooc.report.summary import ReportSummary
    from sae_ooc.viz.export_options import Drawn

    s = ReportSummary.load(DATA / "report")
    s.save(tmp_path)
    assert (tmp_path / "summary.json").read_bytes() == (DATA / "report" / "summary.json").read_bytes()
    raw = json.loads((DATA / "report" / "summary.json").read_text())
    got = read_summary(DATA / "report")
    assert [n.value for n in got.values()] == [r["value"] for r in raw] and not any(n.extra for n in s.numbers)
    raw[0]["measured"] = raw[0].pop("measured_on")  # a renamed field
    (tmp_path / "summary.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="corrupt or not a summary.*sae-ooc report"):
        ReportSummary.load(tmp_path)
    full = json.loads((DATA / "drawn" / "causal_circuit_full.json").read_text())
    d = Drawn.from_json(full["drawn"])
    assert d.to_json() == full["drawn"] and not d.extra and not d.options.extra
    assert set(d.nodes) <= {n["id"] for n in full["nodes"]} and d.options.max_edges == full["drawn"]["options"]["max_edges"]
