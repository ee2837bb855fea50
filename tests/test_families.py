"""The task families through the stages by their layout roles: the reversal family's one-fact questions (head, r1),
and what a model answers on them, checked against the facts themselves."""

from __future__ import annotations

import torch

from sae_ooc.analyses.answers import answer_classes
from sae_ooc.config import load_config
from sae_ooc.pipeline import run as run_pipeline
from sae_ooc.rundir import RunDir
from sae_ooc.tasks.data import generate, layout_of
from conftest import HARVEST_SETTINGS, ROOT

REVERSAL_TINY = ROOT / "configs" / "reversal_tiny.yaml"


class Answering(torch.nn.Module):
    """A stand-in model: at the last prompt position it puts all its logit on `choose(prompt)`."""

    def __init__(self, d_vocab: int, choose, answer_pos: int):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.d_vocab, self.choose, self.answer_pos = d_vocab, choose, answer_pos

    def forward(self, tokens):
        out = torch.zeros(*tokens.shape, self.d_vocab)
        for i, row in enumerate(tokens.tolist()):
            out[i, self.answer_pos, self.choose(row[: self.answer_pos + 1])] = 1.0
        return out


def test_reversed_questions_answered_with_the_forward_fact_are_classified_as_such():
    """A model that answers (b, r⁻¹) with its forward fact's tail t(b, r) (where trained, else b itself): the shares of
    `correct`, `inverse_tail` and `head` are what the facts say, counted here from the forward rows of train."""
    cfg = load_config(REVERSAL_TINY).task
    ds, vocab = generate(cfg)
    vocab.layout = layout_of(cfg.family)
    R = vocab.n_relations // 2
    fwd = {(h, r): t for h, r, t, hop in zip(ds["train"]["head"], ds["train"]["r1"], ds["train"]["answer"], ds["train"]["hop"])
           if hop == 1 and vocab.relation_id(0) <= r < vocab.relation_id(R)}  # forward relations r0..r{R-1}

    def forward_tail(prompt):
        b, rinv = prompt
        return fwd.get((b, rinv - R), b)

    model = Answering(len(vocab.names), forward_tail, vocab.layout.answer_pos)
    out = answer_classes(model, ds, vocab, cfg.family)
    test = ds["test_id"]
    want = {"correct": 0, "inverse_tail": 0, "head": 0}
    for b, rinv, a in zip(test["head"], test["r1"], test["answer"]):
        t = fwd.get((b, rinv - R))
        want["correct" if t == a else "inverse_tail" if t is not None else "correct" if b == a else "head"] += 1
    got = out["splits"]["test_id"]
    assert got["n"] == len(test) > 0
    for c, k in want.items():
        assert abs(got["share"][c] - k / len(test)) < 1e-9, c
    assert want["inverse_tail"] > 0 and out["has_inverse"]
    # the control: a random entity is the forward tail of its own head with probability 1 / n_entities per prompt
    n_ent = vocab.n_entities
    assert abs(got["chance"]["correct"] - 1 / n_ent) < 1e-9
    assert got["chance"]["inverse_tail"] <= 1 / n_ent + 1e-9
    # atomic_test, the trained forward facts, under the same model: answered by their own tail unless (h, r) is an inverse
    assert out["splits"]["atomic_test"]["n"] == len(ds["atomic_test"])


def test_reversal_family_runs_every_stage_by_its_layout(tmp_path, monkeypatch):
    """configs/reversal_tiny.yaml through attribute, circuit, the variable circuit, variables, analyze, steer and the
    report: the questions are (b, r⁻¹) of the layout (head, r1), paired with another head's question of the same
    relation, with no bridge."""
    over = [*HARVEST_SETTINGS, "sae.training_tokens=2048", "sae.hooks=[blocks.1.hook_resid_pre]", "sae_eval.probe_steps=10",
            "circuit.random_edge_sets=2", "circuit.prune_pairs=2", "circuit.mean_examples=32", "circuit.curve_sizes=[0,1,5]",
            "steer.random_draws=2",
            # the smallest edge test and variable circuit that still run every step (this test checks the layout, not the numbers)
            "circuit.top_n=8", "circuit.edge_check=2", "circuit.edge_counts=[2]", "circuit.edge_pool_nodes=8",
            "circuit.edge_extra_ablations=[]", "variables.bootstrap=20", "variables.max_groups=4"]
    run = RunDir(tmp_path / "run", load_config(REVERSAL_TINY, over))
    # the stages that stopped on this family before (edit ran already); analyze: the analyses that read the bridge or the layout
    results = run_pipeline(run, stages=["data", "train", "harvest", "train-sae", "eval-sae", "attribute", "circuit", "variable-circuit",
                                        "variables", "analyze", "steer", "report"],
                           options={"analyze": {"names": "logit-lens,back-patching,answers"}})
    assert all(r.finished for r in results)
    from safetensors.torch import load_file

    pairs = load_file(str(run.root / "attribution" / "node_effects.safetensors"))
    ds, _ = generate(run.cfg.task)
    inverse = {(h, r): a for s in ("valid_id", "test_id") for h, r, a in zip(ds[s]["head"], ds[s]["r1"], ds[s]["answer"])}
    clean, corrupt = pairs["pairs.clean"].tolist(), pairs["pairs.corrupt"].tolist()
    assert clean and all(len(p) == 2 for p in clean)  # one-fact questions: (b, r⁻¹)
    for p, q, t, t2 in zip(clean, corrupt, pairs["pairs.answer"].tolist(), pairs["pairs.answer_corrupt"].tolist()):
        assert inverse[tuple(p)] == t and p[1] == q[1] and t2 != t  # a held-out inverse, against another head's
    report = (run.root / "REPORT.md").read_text()
    assert "What the model answers" in report and "inverse_tail" in report
