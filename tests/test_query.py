"""`sae-ooc query`: JSON output checked against the model and an independent gradient, text output,
--target, and one-line errors for unknown tokens."""

import json

import pytest
import torch
from circuit_fixtures import HOOKS, make_run

from sae_ooc.cli import main as cli_main
from sae_ooc.models.hooked import load_model
from sae_ooc.saes.store import load_saes


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    labels = {HOOKS[1]: [{"feature": f, "variable": "r1", "position": "r1", "value": "r2", "auroc": 0.97} for f in range(48)]}
    return make_run(tmp_path_factory.mktemp("query"), train_steps=20, labels=labels)


def _json(capsys, *argv):
    assert cli_main(["query", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_query_json(run, capsys):
    res = _json(capsys, "--run", str(run.root), "e3 r1 r2", "--json", "--top", "4")
    model = load_model(run.model_dir)
    tokens = torch.tensor([[3, 13, 14]])
    probs = torch.softmax(model(tokens)[0, -1].detach(), -1)
    p, i = probs.topk(4)
    assert [a["token"] for a in res["answers"]] == [f"e{int(t)}" for t in i]
    assert [a["prob"] for a in res["answers"]] == pytest.approx(p.tolist(), abs=1e-5)
    assert res["target"] == res["answers"][0]["token"]
    assert [(r["hook"], r["position"]) for r in res["hooks"]] == [(h, p) for h in HOOKS for p in range(3)]

    # attribution = activation x d logit(target) / d activation, via the decoder direction in the plain model
    saes = load_saes(run.saes_dir)
    target = int(i[0])
    row = next(r for r in res["hooks"] if r["hook"] == HOOKS[1] and r["position"] == 2)
    x = {}

    def grab(t, hook):
        t = t.detach().requires_grad_(True)
        x["a"] = t
        return t

    logits = model.run_with_hooks(tokens, fwd_hooks=[(HOOKS[1], grab)])
    logits[0, -1, target].backward()
    acts = saes[HOOKS[1]].encode(x["a"].detach())[0, 2]
    for item in row["by_attribution"]:
        f = item["feature"]
        want = float(acts[f] * (saes[HOOKS[1]].W_dec[f] @ x["a"].grad[0, 2]))
        assert item["attribution"] == pytest.approx(want, rel=1e-3, abs=1e-5)
        assert item["activation"] == pytest.approx(float(acts[f]), abs=1e-5)
    assert [it["activation"] for it in row["by_activation"]] == sorted((it["activation"] for it in row["by_activation"]), reverse=True)
    assert all(it["activation"] > 0 for it in row["by_activation"])
    for it in row["by_activation"]:
        assert it["label"] == "r1=r2@r1" and it["promoted"] and len(it["top_activations"]) <= 3
        assert all(ex["activation"] > 0 for ex in it["top_activations"])


def test_query_text_and_target(run, capsys):
    assert cli_main(["query", "--run", str(run.root), "e3 r1 r2", "--target", "e7"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("prompt: e3 r1 r2") and "logit(e7)" in out and HOOKS[2] in out
    res = _json(capsys, "--run", str(run.root), "e5 r0", "--json", "--target", "e7")
    assert res["target"] == "e7" and {r["position"] for r in res["hooks"]} == {0, 1}


@pytest.mark.parametrize("argv, hint", [(["e3 r1 x2"], "did you mean"), (["e3 r1 r2", "--target", "e99"], "valid tokens"),
                                        (["e3 r1 r2 r0"], "has 4 tokens")])
def test_query_errors_are_one_line(run, capsys, argv, hint):
    assert cli_main(["query", "--run", str(run.root), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err and "Traceback" not in err
