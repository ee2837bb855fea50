"""The fast paths of eval-sae and circuit give what the slow ones give: the closed-form probe is scikit-learn's LDA,
and the sequential random-edge-set draw decides as the full draw does."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

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
