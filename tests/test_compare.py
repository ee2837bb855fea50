"""`sae-ooc compare` and `pipeline --seeds`: the headline table against numpy, SAE feature matching on decoders with
a known answer, the mechanism readings, and bad input (one line, exit 2). Hand-built run folders: no pipeline runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import typed

from sae_ooc.analyses.result import PatchingResult, ProbesResult
from sae_ooc.cli import main as cli
from sae_ooc.compare import match, mechanism

RNG = np.random.default_rng(0)


def fake_run(root, values: dict, extra: dict | None = None):
    """A folder with a summary.json of `values` ({name: value}) and optional other files ({relative path: JSON})."""
    root.mkdir(parents=True)
    rows = [{"name": k, "value": v, "measured_on": "test", "in_sample": k.startswith("train.")} for k, v in values.items()]
    (root / "summary.json").write_text(json.dumps(rows))
    for rel, obj in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(obj))
    return root


def three_runs(tmp_path):
    vals = RNG.normal(size=(3, 4))
    runs = []
    for i in range(3):
        values = {f"m.{k}": float(vals[i, k]) for k in range(4)}
        values["only.some"] = 1.0 if i else None  # not a number in every run: listed, not averaged
        if i == 2:
            values["only.two"] = 3.0
        runs.append(fake_run(tmp_path / f"r{i}", values))
    return runs, vals


@pytest.mark.figures
def test_table_matches_numpy_and_writes_its_outputs(tmp_path, capsys):
    runs, vals = three_runs(tmp_path)
    out = tmp_path / "cmp"
    assert cli(["compare", *map(str, runs), "--out", str(out), "--no-sae-match"]) == 0
    res = json.loads((out / "compare.json").read_text())
    rows = {r["name"]: r for r in res["table"]["rows"]}
    assert sorted(rows) == [f"m.{k}" for k in range(4)]
    assert sorted(res["table"]["not_shared"]) == ["only.some", "only.two"]
    for k in range(4):
        r, col = rows[f"m.{k}"], vals[:, k]
        assert r["values"] == pytest.approx(col.tolist())
        assert (r["mean"], r["sd"], r["min"], r["max"]) == pytest.approx((col.mean(), col.std(ddof=1), col.min(), col.max()))
    md = (out / "compare.md").read_text()
    assert f"| m.0 | {vals[0, 0]:.4g} | {vals[1, 0]:.4g} | {vals[2, 0]:.4g} |" in md
    for stem in ("accuracy", "probes", "patching"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.svg").exists()
    # a rerun overwrites its own output
    assert cli(["compare", *map(str, runs[:2]), "--out", str(out), "--no-sae-match"]) == 0
    assert json.loads((out / "compare.json").read_text())["labels"] == ["r0", "r1"]


@pytest.mark.parametrize("case", ["one_run", "no_summary", "foreign_out", "out_is_file", "bad_seeds"])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    runs, _ = three_runs(tmp_path)
    out = tmp_path / "cmp"
    argv = ["compare", str(runs[0]), str(runs[1]), "--out", str(out), "--no-sae-match"]
    if case == "one_run":
        argv = ["compare", str(runs[0]), "--out", str(out)]
    elif case == "no_summary":
        (runs[1] / "summary.json").unlink()
    elif case == "foreign_out":
        out.mkdir()
        (out / "notes.md").write_text("mine")
    elif case == "out_is_file":
        out.write_text("a file")
    elif case == "bad_seeds":
        argv = ["pipeline", "--config", "configs/tiny.yaml", "--run", str(tmp_path / "s"), "--seeds", "1,1"]
    with pytest.raises(SystemExit) if case == "bad_seeds" else _nothing() as e:
        rc = cli(argv)
    rc = e.value.code if case == "bad_seeds" else rc
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert not (out / "compare.json").exists()
    if case == "foreign_out":
        assert (out / "notes.md").read_text() == "mine"


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_decoder_matching_identity_and_permutation():
    w = RNG.normal(size=(24, 8))
    same = match.match_decoders(w, w)
    assert same["perm"] == list(range(24)) and np.allclose(same["cos"], 1.0) and same["mean_cos"] == pytest.approx(1.0)
    perm = RNG.permutation(24)
    shuffled = w[perm] * RNG.uniform(0.5, 2.0, size=(24, 1))  # B's feature j is A's feature perm[j], rescaled
    res = match.match_decoders(w, shuffled)
    assert [perm[j] for j in res["perm"]] == list(range(24))
    assert res["mean_cos"] == pytest.approx(1.0)
    assert match.random_decoder_baseline(w, (24, 8)) < 0.95


def test_activation_matching_recovers_a_permutation_and_leaves_out_silent_features():
    f_a = np.maximum(RNG.normal(size=(300, 12)), 0)
    f_a[:, 3] = 0.0  # a dead feature: no correlation to match
    perm = RNG.permutation(12)
    f_b = f_a[:, perm] * 2.0
    res = match.match_activations(f_a, f_b, perm=[int(np.flatnonzero(perm == i)[0]) for i in range(12)])
    assert res["n_live_a"] == res["n_live_b"] == 11
    assert res["mean_corr"] == pytest.approx(1.0) and res["decoder_matched_mean_corr"] == pytest.approx(1.0)
    assert all(perm[j] == i for i, j in res["perm"].items())
    assert res["shuffled_rows_mean_corr"] < 0.5
    # the correlation matrix is numpy's Pearson correlation
    corr, _, _ = match.correlation_matrix(f_a[:, :3], f_a[:, 4:7])
    assert corr == pytest.approx(np.corrcoef(f_a[:, :3].T, f_a[:, 4:7].T)[:3, 3:])


def test_compare_saes_on_saved_decoders_without_shared_prompts(tmp_path):
    from safetensors.numpy import save_file

    w = RNG.normal(size=(16, 8)).astype(np.float32)
    perm = RNG.permutation(16)
    for name, dec in (("a", w), ("b", w[perm]), ("wide", RNG.normal(size=(16, 12)).astype(np.float32))):
        d = tmp_path / name / "saes" / "blocks.0.hook_resid_pre"
        d.mkdir(parents=True)
        save_file({"W_dec": dec}, str(d / "sae_weights.safetensors"))
        (d / "cfg.json").write_text("{}")
    res = match.compare_saes(tmp_path / "a", tmp_path / "b")
    h = res["hooks"]["blocks.0.hook_resid_pre"]
    assert [int(perm[j]) for j in h["decoder"]["perm"]] == list(range(16)) and h["decoder"]["mean_cos"] == pytest.approx(1.0, abs=1e-6)
    assert "activations" not in h and "no activation cache" in res["activation_correlation"]
    # models of other widths: no decoder cosine (no shared space), said in place of the numbers
    wide = match.compare_saes(tmp_path / "a", tmp_path / "wide")["hooks"]["blocks.0.hook_resid_pre"]
    assert wide["decoder"] == "not compared: d_in 8 vs 12"


def test_mechanism_readings(tmp_path):
    # the typed outputs (sae_ooc.analyses.result, CircuitGraph) with only the fields these readings use
    probes = typed(ProbesResult, {"hooks": ["h0", "h1"], "positions": ["head", "r1"], "bridge": {
        "heldout_acc": [[None, 0.4], [0.2, 0.9]], "control_max_acc": [[None, 0.1], [0.1, 0.2]]}}).to_json()
    patch = typed(PatchingResult, {"roles": ["head", "r1"], "resid_pre": {"normalised": [[1.0, 0.1], [0.9, 0.6]]}}).to_json()
    node = {"hook": "h1", "hook_index": 0, "position": 1, "role": "r1", "type": "variable", "feature": None, "effect": 0.1, "effect_std": 0.0}
    circ = {"metadata": {}, "scores": {}, "nodes": [{"id": "bridge@r1@h1", **node}],
            "edges": [{"source": "bridge@r1@h1", "target": "metric", "weight": 0.1}]}
    files = {"analyze/probes.json": probes, "analyze/patching.json": patch, "variable_circuit/variable_circuit.json": circ}
    a = fake_run(tmp_path / "a", {"x": 1.0}, files)
    b = fake_run(tmp_path / "b", {"x": 2.0}, {**files, "variable_circuit/variable_circuit.json": {**circ, "nodes": [{"id": "r2@r2@h0", **node}]}})
    assert mechanism.bridge_carried(a) == {"hook": "h1", "position": "r1", "acc": 0.9}
    assert mechanism.bridge_used(a) == {"layer": 1, "position": "r1", "effect": 0.6}  # the head column left out
    m = mechanism.same_mechanism([a, b])
    assert m["bridge_carried_same"] is True and m["bridge_used_same"] is True and m["variable_circuit_same"] is False
    assert m["variable_circuit_node_jaccard"] == {"0-1": 0.0}


def test_pipeline_seeds_runs_sibling_dirs_and_compares_them(tmp_path, capsys):
    """--seeds 3,5 (stages data and report only: the wiring, not the science): RUN-seed3 and RUN-seed5 with train.seed
    set and the task left alone, compared into RUN-seeds/; RUN itself is not left behind."""
    import yaml

    root = tmp_path / "w" / "r"
    assert cli(["pipeline", "--config", "configs/tiny.yaml", "--run", str(root), "--seeds", "3,5", "--stages", "data,report"]) == 0
    assert sorted(p.name for p in root.parent.iterdir()) == ["r-seed3", "r-seed5", "r-seeds"]
    cfgs = [yaml.safe_load((root.parent / f"r-seed{s}" / "config.yaml").read_text()) for s in (3, 5)]
    assert [c["train"]["seed"] for c in cfgs] == [3, 5] and cfgs[0]["task"] == cfgs[1]["task"]
    assert (root.parent / "r-seed3" / "data" / "vocab.json").read_text() == (root.parent / "r-seed5" / "data" / "vocab.json").read_text()
    res = json.loads((root.parent / "r-seeds" / "compare.json").read_text())
    assert res["labels"] == ["r-seed3", "r-seed5"]
