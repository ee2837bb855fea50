"""The fast paths of eval-sae and circuit give what the slow ones give: the closed-form probe is scikit-learn's LDA,
and the sequential random-edge-set draw decides as the full draw does."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sae_ooc.saes.probes import fit_predict


class Shrunk:
    """A scikit-learn covariance estimator: the (biased) empirical covariance shrunk towards the identity."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    def get_params(self, deep: bool = True) -> dict:
        return {"alpha": self.alpha}

    def fit(self, x):
        self.covariance_ = (1 - self.alpha) * np.cov(x, rowvar=False, bias=True).reshape(x.shape[1], -1) + self.alpha * np.eye(x.shape[1])
        return self


def test_lda_probe_is_sklearns_lda_on_standardised_activations():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # here: scikit-learn costs every worker's collection ~0.6 CPU-s

    g = torch.Generator().manual_seed(0)
    n, d, k = 300, 6, 4
    y = torch.randint(0, k, (n,), generator=g) * 3 + 2  # class ids 2, 5, 8, 11: fit_predict maps them to 0..3
    centres = torch.randn(12, d, generator=g) * 2
    x = (centres[y] + torch.randn(n, d, generator=g)) * torch.tensor([1.0, 5, 0.2, 1, 3, 1])  # unequal scales: standardised first
    y_part = torch.where(torch.arange(n) % 7 == 0, -1, y)  # some rows unlabelled: left out of the fit
    x_new = torch.randn(50, d, generator=g) * 3
    cfg = SimpleNamespace(probe="lda", probe_shrinkage=0.05)
    classes, (logits,) = fit_predict(x, [x_new], {"v": y_part}, cfg)["v"]
    xs = ((x - x.mean(0)) / x.std(0)).double().numpy()
    m = (y_part >= 0).numpy()
    ref = LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=Shrunk(0.05)).fit(xs[m], y_part[m].numpy())
    z_new = ((x_new - x.mean(0)) / x.std(0)).double().numpy()
    assert torch.equal(classes, torch.tensor(ref.classes_))
    np.testing.assert_allclose(logits.numpy(), ref.decision_function(z_new), rtol=1e-4, atol=1e-4)


def _fake_ablation(monkeypatch, top_drop: float, random_drops: list[float]):
    """ablate_edge_sets without a model: the empty set scores 0, a set of edges named "top*" -top_drop, and the i-th
    random set seen -random_drops[i] on each of 3 pairs (the metric drop of a set is then its number above)."""
    from sae_ooc.circuits import edges as edges_mod

    seen: dict[tuple, float] = {}

    def fake(sp, pairs, sets, abl, metric, *a, **k):
        out = []
        for s in sets:
            key = tuple(s)
            if not s:
                out.append(0.0)
            elif all(u.startswith("top") for u, _ in s):
                out.append(-top_drop)
            else:
                out.append(-seen.setdefault(key, random_drops[len(seen)]))
        return torch.tensor(out)[:, None].expand(len(sets), 3)

    monkeypatch.setattr(edges_mod, "ablate_edge_sets", fake)
    return edges_mod


@pytest.mark.parametrize("case", ["far_above", "in_the_bulk", "just_below_95"])
def test_sequential_edge_draw_decides_as_the_full_draw(monkeypatch, case):
    """The default run's situation (the top set's drop far above every random set's) stops after 60 draws; a top set
    inside the random drops after the first round; both with the full draw's decision (percentile >= 95)."""
    rng = np.random.default_rng(0)
    random_drops = list(rng.gamma(0.5, 0.05, size=100))  # skewed like the default run's random drops (mean 0.03)
    top = {"far_above": 0.64, "in_the_bulk": float(np.median(random_drops)), "just_below_95": float(np.quantile(random_drops, 0.93))}[case]
    edges = {(f"top{i}", f"top{i}d"): 1.0 - i / 10 for i in range(5)}
    candidates = [*edges, *[(f"u{i}", f"d{i}") for i in range(60)]]
    rows = {}
    for mode, round_size in (("sequential", 20), ("full", 100)):
        edges_mod = _fake_ablation(monkeypatch, top, random_drops)
        monkeypatch.setattr(edges_mod, "EDGE_ROUND", round_size)
        rows[mode] = edges_mod.edge_ablation_test(None, None, edges, candidates, None, "logit_diff", [3], 100, seed=0)[0]
    seq, full = rows["sequential"], rows["full"]
    assert full["n_random"] == 100 and seq["random_edges_drops"] == full["random_edges_drops"][: seq["n_random"]]  # the same draws
    assert (seq["percentile"] >= 95) == (full["percentile"] >= 95)
    assert seq["n_random"] == {"far_above": 60, "in_the_bulk": 20, "just_below_95": 100}[case]
    assert full["percentile"] == pytest.approx(100 * float(np.mean(np.array(random_drops) < top)))
