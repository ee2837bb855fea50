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
            "circuit.edge_extra_ablations=[]", "variables.bootstrap=20", "variables.max_groups=4", "variables.random_draws=20",
            # one of the question's variables (head, r1, answer: test above) at one hook, the smallest units
            "causal.variables=[answer]", "causal.variable_hooks=[blocks.1.hook_resid_pre]", "causal.das_steps=5", "causal.variable_ranks=[4]", "causal.bootstrap=20",
            "causal.random_draws=2", "causal.feature_counts=[1]", "causal.ranks=[1]"]
    run = RunDir(tmp_path / "run", load_config(REVERSAL_TINY, over))
    import sae_ooc.causal.variables as stage_variables

    for fig in ("plot_control_curves", "plot_variable_curves"):  # drawn and checked on the tiny run
        monkeypatch.setattr(stage_variables, fig, lambda *a, **k: None)
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
    # variables: the question's own variables, no bridge row, and each stage that cannot measure says so in one line
    from sae_ooc.causal.result import VariablesResult
    from sae_ooc.interventions.steer_result import SteerResult

    v = VariablesResult.load(run.variables_dir)
    assert [(r.variable, r.position, r.hook) for r in v.rows] == [("answer", "r1", "blocks.1.hook_resid_pre")]
    assert "no bridge row" in v.settings.note and "Not applicable: no bridge row" in report
    assert SteerResult.load(run.steer_dir).note.startswith("not measured: the question asks one fact")
    assert "Model: does it answer the reversed question (b, r⁻¹) → a?" in report and "A→C" not in report


def _comparison_tiny():
    cfg = load_config(ROOT / "configs" / "comparison_tiny.yaml").task
    ds, vocab = generate(cfg)
    vocab.layout = layout_of(cfg.family)
    return cfg, ds, vocab


def test_comparison_counterfactuals_follow_both_values():
    """The comparison family's interchange pairs, steering targets and edits come from its own high-level model
    (lt / eq / gt of the two values), checked against the atomic facts of train: the bridge at r1 (b' changes the label),
    the second value at the answer position (bridge2@answer: the donor shares the first value), and the comparisons an
    edit (e, attr): v -> v' must move."""
    from sae_ooc.causal.pairs import FIT, draw_pairs
    from sae_ooc.causal.planted import FIELDS, draw, specs
    from sae_ooc.causal.variables import two_hop_questions
    from sae_ooc.interventions.facts import Facts

    cfg, ds, vocab = _comparison_tiny()
    V = {(h, r): a for h, r, a, hop in zip(ds["train"]["head"], ds["train"]["r1"], ds["train"]["answer"], ds["train"]["hop"]) if hop == 1}

    def label(x, y):  # value tokens are consecutive: v0 < v1 < ...
        return vocab.names.index("lt" if x < y else "eq" if x == y else "gt")

    facts = Facts.from_dataset(ds, vocab, cfg.family)
    q = two_hop_questions(ds, vocab, ["train", "test_id"])
    for b, r1, r2, a in zip(q.bridge.tolist(), q.r1.tolist(), q.r2.tolist(), q.answer.tolist()):
        assert facts.answer_via(b, r1, (r2,)) == label(b, V[(r2, r1)]) == a
    groups = {p: FIT for p in zip(q.head.tolist(), q.r1.tolist())}
    P = draw_pairs(facts, q, torch.arange(len(q)), groups, FIT, 1, 0)
    assert len(P) > 0
    for r1, r2, b, b2, (h2, r1d), a in zip(P.r1.tolist(), P.r2.tolist(), P.b.tolist(), P.b2.tolist(), P.donor.tolist(), q.answer[P.base_q].tolist()):
        assert V[(h2, r1d)] == b2 != b and label(b2, V[(r2, r1)]) != a == label(b, V[(r2, r1)])
    sp = specs(vocab.layout, facts.high)
    assert sp["bridge2@answer"].share == ("bridge",) and sp["bridge@answer"].share == ("bridge2",)
    vals = {f: getattr(q, f).tolist() for f in FIELDS}
    for name, other in (("bridge2@answer", "bridge"), ("bridge@answer", "bridge2")):
        base, donor = draw(q, sp[name], torch.arange(len(q)), torch.ones(len(q), dtype=torch.bool), None, 0)
        assert len(base) > 0
        for i, j in zip(base.tolist(), donor.tolist()):  # the base's other value with the donor's: the donor's own answer
            v1, v2 = (vals["bridge"][i], vals["bridge2"][j]) if other == "bridge" else (vals["bridge"][j], vals["bridge2"][i])
            assert label(v1, v2) == vals["answer"][j] != vals["answer"][i]
    (h, r1), b = next(iter(V.items()))
    b2 = next(v for v in sorted(set(V.values())) if v != b)
    moved = facts.moved(h, r1, b, b2)
    want = {e2 for (e2, r) in V if r == r1 and e2 != h and label(b, V[(e2, r)]) != label(b2, V[(e2, r)])}
    assert {rest[0] for rest, _, _ in moved} == want and want
    assert all(new == label(b2, V[(r[0], r1)]) and old == label(b, V[(r[0], r1)]) for r, new, old in moved)


def test_reversal_question_has_head_r1_and_answer_variables_and_no_bridge():
    """The one-fact question's variables (head, r1, the answer at r1), donors that keep the high-level model's answer the
    donor's own, and no bridge: no counterfactual bridge, the two-hop variables it lacks left out of the default list."""
    from sae_ooc.causal.planted import FIELDS, draw, specs
    from sae_ooc.causal.variables import task_variables, two_hop_questions
    from sae_ooc.interventions.facts import Facts

    cfg = load_config(REVERSAL_TINY).task
    ds, vocab = generate(cfg)
    vocab.layout = layout_of(cfg.family)
    facts = Facts.from_dataset(ds, vocab, cfg.family)
    sp = specs(vocab.layout, facts.high)
    assert list(sp) == ["head", "r1", "answer"] and facts.high.no_bridge
    assert task_variables(["head", "r1", "r2", "bridge@answer", "answer"], vocab.layout, facts.high) == ["head", "r1", "answer"]
    q = two_hop_questions(ds, vocab, ["train", "test_id"])
    tok, pos = facts.tokens(q.prompts())  # the questions as the interventions run them: (h, r), read at r
    asked = [ids for s in ("train", "test_id") for ids, hop in zip(ds[s]["input_ids"], ds[s]["hop"]) if hop == 1]
    assert tok[:, :2].tolist() == asked and bool((pos == vocab.layout.answer_pos).all())
    assert not facts.counterfactual_bridges(int(q.answer[0]), int(q.r1[0]), ())
    truth = {(h, r): a for s in ds for h, r, a in zip(ds[s]["head"], ds[s]["r1"], ds[s]["answer"])}
    vals = {f: getattr(q, f).tolist() for f in FIELDS}
    for name in ("head", "r1"):
        base, donor = draw(q, sp[name], torch.arange(len(q)), torch.ones(len(q), dtype=torch.bool), None, 0)
        assert len(base) > 0
        for i, j in zip(base.tolist(), donor.tolist()):
            h, r = (vals["head"][j], vals["r1"][i]) if name == "head" else (vals["head"][i], vals["r1"][j])
            assert truth[(h, r)] == vals["answer"][j] != vals["answer"][i]


def test_answer_probe_names_entities_it_never_saw_as_labels():
    """The answer-at-head probe regresses onto the answer's code, so it reads an entity on held-out rows that no fit row
    had as its label (a reversal's a_r(b) is a random permutation: a class probe could not), and not from shuffled labels."""
    from sae_ooc.analyses.probes import _ridge_codes

    g = torch.Generator().manual_seed(0)
    E, d = 40, 24
    codes = torch.nn.functional.normalize(torch.randn(E, d, generator=g), dim=-1)
    mix = torch.randn(d, 32, generator=g)
    y_fit, y_ev = torch.arange(30), torch.arange(30, 40)  # the held-out labels never occur in the fit rows
    x = codes @ mix + 0.05 * torch.randn(E, 32, generator=g)
    assert bool((_ridge_codes(x[y_fit], y_fit, x[y_ev], codes, 1e-3) == y_ev).all())
    shuffled = y_fit[torch.randperm(30, generator=g)]
    assert (_ridge_codes(x[y_fit], shuffled, x[y_ev], codes, 1e-3) == y_ev).float().mean() < 0.3
