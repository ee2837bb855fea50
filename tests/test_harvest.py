"""Activation harvest: cache format vs a direct run_with_cache, resume, checksums, model-hash refusal, streaming."""

import shutil

import pytest
import torch
from conftest import SHARD
from safetensors.torch import load_file

from sae_ooc.activations.cache import MANIFEST, PROGRESS, open_cache
from sae_ooc.activations.harvest import (
    SPLIT_CODE_ORDER,
    ShardWriter,
    default_hooks,
    harvest_activations,
)
from sae_ooc.errors import UserError
from sae_ooc.io import read_json
from sae_ooc.models.hooked import load_model, model_hash
from sae_ooc.tasks.data import SPLITS, load_task, split_tensors


def _split_tensors(run):
    ds, vocab = load_task(run.data_dir)
    return {s: split_tensors(ds[s], vocab) for s in SPLITS}


def test_cache_loads_with_safetensors_and_matches_run_with_cache(harvested_run):
    root = harvested_run.activations_dir
    manifest = read_json(root / MANIFEST)
    model = load_model(harvested_run.model_dir)
    assert manifest["hooks"] == default_hooks(model.cfg.n_layers) == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    assert manifest["model_hash"] == model_hash(harvested_run.model_dir)
    tokens = load_file(str(root / "tokens.safetensors"))
    expected_rows = {h: [] for h in manifest["hooks"]}
    expected_meta = []
    for split, st in _split_tensors(harvested_run).items():
        code = SPLIT_CODE_ORDER.index(split)
        _, cache = model.run_with_cache(st.tokens)
        for i in range(len(st)):
            for p in range(int(st.answer_pos[i]) + 1):
                for h in manifest["hooks"]:
                    expected_rows[h].append(cache[h][i, p])
                expected_meta.append((i, code, p, int(st.tokens[i, p]), int(st.bridge[i]), int(st.answer[i]), int(st.hop[i])))
    n = len(expected_meta)
    assert manifest["n_tokens"] == n and len(tokens["seq"]) == n
    got_meta = list(zip(*(tokens[c].tolist() for c in ("seq", "split", "pos", "token", "bridge", "answer", "hop"))))
    assert got_meta == expected_meta
    assert tokens["role"].tolist() == tokens["pos"].tolist()
    for h in manifest["hooks"]:
        shards = manifest["shards"][h]
        assert len(shards) == -(-n // SHARD) and all(s["n_tokens"] == SHARD for s in shards[:-1])
        acts = torch.cat([load_file(str(root / h / s["file"]))["activations"] for s in shards])
        assert acts.shape == (n, model.cfg.d_model)
        torch.testing.assert_close(acts, torch.stack(expected_rows[h]), rtol=0, atol=1e-6)


def test_interrupted_harvest_resumes_after_last_complete_shard(harvested_run, tmp_path):
    model = load_model(harvested_run.model_dir)
    splits = _split_tensors(harvested_run)
    mh = model_hash(harvested_run.model_dir)
    out = tmp_path / "acts"
    kw = dict(shard_tokens=SHARD, batch_size=16)
    assert harvest_activations(model, splits, out, mh, stop_after_shards=2, **kw) is None
    assert not (out / MANIFEST).exists() and (out / PROGRESS).exists()
    with pytest.raises(UserError, match="interrupted"):
        open_cache(out)
    first = out / "blocks.1.hook_resid_pre" / "shard_00000.safetensors"
    stamp = first.stat().st_mtime_ns
    events = []
    harvest_activations(model, splits, out, mh, events=events, **kw)
    assert first.stat().st_mtime_ns == stamp  # finished shards are not redone
    assert events[0] == ("forward", 0) and ("shard", 0) not in events and ("shard", 2) in events
    resumed = read_json(out / MANIFEST)
    reference = harvest_activations(model, splits, tmp_path / "ref", mh, **kw)
    assert resumed["shards"] == reference["shards"]  # byte-identical to an uninterrupted harvest
    assert resumed["tokens_sha256"] == reference["tokens_sha256"]


def test_corrupted_or_truncated_shard_is_a_one_line_error_naming_the_file(harvested_run, tmp_path):
    root = tmp_path / "acts"
    shutil.copytree(harvested_run.activations_dir, root)
    bad = root / "blocks.0.hook_resid_pre" / "shard_00001.safetensors"
    data = bytearray(bad.read_bytes())
    data[-5] ^= 0xFF
    bad.write_bytes(bytes(data))
    cache = open_cache(root)
    cache.load_shard("blocks.0.hook_resid_pre", 0)  # intact shards still load
    with pytest.raises(UserError) as e:
        cache.verify()
    assert str(bad) in str(e.value) and "\n" not in str(e.value) and "corrupted" in str(e.value)
    bad.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(UserError, match="shard_00001.safetensors"):
        open_cache(root).load_shard("blocks.0.hook_resid_pre", 1)


def test_cache_from_a_different_model_is_refused_unless_forced(harvested_run, tmp_path):
    root = tmp_path / "acts"
    shutil.copytree(harvested_run.activations_dir, root)
    model = load_model(harvested_run.model_dir)
    other_hash = "0" * 64
    with pytest.raises(UserError, match="different model"):
        open_cache(root, expected_model_hash=other_hash)
    with pytest.raises(UserError, match="different model.*--force"):
        harvest_activations(model, _split_tensors(harvested_run), root, other_hash, shard_tokens=SHARD)
    manifest = harvest_activations(model, _split_tensors(harvested_run), root, other_hash, shard_tokens=SHARD, force=True)
    assert manifest["model_hash"] == other_hash
    assert open_cache(root, expected_model_hash=other_hash).n_tokens == manifest["n_tokens"]


def test_harvest_streams_with_a_fixed_number_of_shard_buffers(harvested_run, tmp_path, monkeypatch):
    """Structural memory bound: shards are written while sequences are still being run, and each hook holds
    two buffers of `shard_tokens` rows, allocated once (one filling, one being written), never more."""
    writers = []
    orig_init = ShardWriter.__init__

    def spy_init(self, *a, **k):
        orig_init(self, *a, **k)
        writers.append(self)

    monkeypatch.setattr(ShardWriter, "__init__", spy_init)
    events = []
    shard = 50
    harvest_activations(load_model(harvested_run.model_dir), _split_tensors(harvested_run), tmp_path / "acts", model_hash(harvested_run.model_dir),
                        shard_tokens=shard, batch_size=8, events=events)
    forwards = [i for i, e in enumerate(events) if e[0] == "forward"]
    shards = [i for i, e in enumerate(events) if e[0] == "shard"]
    assert len(shards) >= 8 and shards[0] < forwards[len(forwards) // 4]  # writing starts early, not after all forwards
    # between two shard writes, at most the forwards needed to fill one shard: a full batch brings >= 16 tokens
    # (8 sequences of >= 2), and at most one short batch per split end
    assert max(b - a for a, b in zip(shards, shards[1:])) <= shard // 16 + 1 + len(SPLITS)
    assert writers and all(len(w.buffers) == 2 and all(b.shape[0] == shard for b in w.buffers) and w.peak_fill <= shard for w in writers)


def test_unknown_hook_in_config_lists_valid_ones(harvested_run):
    with pytest.raises(UserError, match="valid residual-stream hooks: .*blocks.0.hook_resid_pre"):
        harvest_activations(load_model(harvested_run.model_dir), _split_tensors(harvested_run), harvested_run.root / "nope", "x",
                            hooks=["blocks.7.hook_resid_pre"])
