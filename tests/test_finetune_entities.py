"""task.finetune.new_entities (issue 24): new entity tokens added to a finished tiny run's vocabulary and model, facts
about them taught by fine-tuning. Checked against the pretrained run's own data and model: every old row is the same
fact under the shifted ids, and the resized model computes the same logits on the old tokens."""

from __future__ import annotations

import pytest
import torch

from sae_ooc.cli import main as cli_main
from sae_ooc.config import load_config
from sae_ooc.models.hooked import load_model, with_new_tokens
from sae_ooc.tasks.data import load_task
from sae_ooc.tasks.finetune import finetune_task

from conftest import ROOT

TINY_FT = ROOT / "configs" / "finetune_toy_tiny.yaml"
K = 2


def test_new_entities_extend_the_vocabulary_and_keep_every_old_fact(harvested_run):
    src, old_vocab = load_task(harvested_run.data_dir)
    E = old_vocab.n_entities
    cfg = load_config(TINY_FT, [f"model.run={harvested_run.root}", f"task.finetune.new_entities={K}"])
    ds, vocab, meta = finetune_task(cfg, harvested_run.root, load_task)
    assert (vocab.n_entities, vocab.d_vocab) == (E + K, old_vocab.d_vocab + K)
    assert (meta["old_n_entities"], meta["new_entities_added"]) == (E, K)

    def shift(i):
        return i + K if i >= E else i

    # the pretrained facts and questions, token by token under the shifted ids
    for mine, theirs in (("pretrain_atomic", "atomic_test"), ("test_id", "test_id")):
        assert ds[mine]["input_ids"] == [[shift(i) for i in row] for row in src[theirs]["input_ids"]]
        assert ds[mine]["r1"] == [shift(r) for r in src[theirs]["r1"]] and ds[mine]["hop"] == src[theirs]["hop"]
    assert [vocab.name(shift(i)) for i in range(old_vocab.d_vocab)] == old_vocab.names
    # every (h, r) pair of a new entity carries a new fact (n_facts 0: every free pair)
    new = {(h, r) for h, r in zip(ds["atomic_test"]["head"], ds["atomic_test"]["r1"])}
    assert {(e, vocab.relation_id(r)) for e in range(E, E + K) for r in range(vocab.n_relations)} <= new


def test_the_resized_model_reads_old_tokens_as_before(harvested_run):
    model = load_model(harvested_run.model_dir)
    E, V = load_task(harvested_run.data_dir)[1].n_entities, model.cfg.d_vocab
    big = with_new_tokens(model, E, K)
    keep = torch.tensor([i if i < E else i + K for i in range(V)])  # old id -> new id
    assert torch.allclose(big.W_E[E:E + K], model.W_E[:E].mean(0).expand(K, -1))
    tokens = torch.randint(V, (16, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(big(keep[tokens])[..., keep], model(tokens), atol=1e-5)


def test_the_train_stage_starts_from_the_resized_model(harvested_run, tmp_path):
    from sae_ooc.models.source import initial_model
    from sae_ooc.rundir import RunDir

    out = tmp_path / "ent"
    sets = [f"model.run={harvested_run.root}", f"task.finetune.new_entities={K}"]
    assert cli_main(["data", "--config", str(TINY_FT), *sum((["--set", x] for x in sets), []), "--run", str(out)]) == 0
    run = RunDir(out, load_config(TINY_FT, sets))
    vocab = load_task(run.data_dir)[1]
    start = initial_model(run, vocab)
    E = load_task(harvested_run.data_dir)[1].n_entities
    expected = with_new_tokens(load_model(harvested_run.model_dir), E, K).state_dict()
    assert start.cfg.d_vocab == vocab.d_vocab and all(torch.equal(start.state_dict()[k], expected[k]) for k in expected)
    with pytest.raises(Exception, match="new_entities"):
        load_config(TINY_FT, ["task.finetune.new_entities=-1"])
