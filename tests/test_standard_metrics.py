"""The field's standard SAE metrics on planted variables (sae_ooc.saes.standard_metrics), on hand-built data whose
answers are known: SAEBench's k-sparse probing and absorption, sae_lens.synthetic's MCC and per-latent precision/recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from sae_ooc.saes.absorption import absorption_row, f1
from sae_ooc.saes.sparse_probing import _pad, balanced_probe_data, batched_logreg, sparse_probing, top_k_mean_diff
from sae_ooc.saes.synthetic_match import synthetic_match


def _planted(n_values=4, per=12, d=8, seed=0):
    """Activations x = onehot(value) @ D + noise with known value directions D, labels y, and an 'SAE' whose latent i
    is exactly the indicator of value i and whose decoder row i is D_i."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_values).repeat_interleave(per)
    dirs = torch.randn(n_values, d, generator=g)
    x = dirs[y] + 0.01 * torch.randn(len(y), d, generator=g)
    f = torch.nn.functional.one_hot(y, n_values).float()
    return x, y, f, dirs


def test_an_sae_whose_latent_i_is_value_i_matches_with_mcc_one_and_perfect_precision_recall():
    x, y, f, dirs = _planted()
    w_dec = dirs - dirs.mean(0)  # the class-mean differences: exactly the ground-truth directions synthetic_match fits
    out, per_latent = synthetic_match(x, y, f, y, w_dec)
    assert out["mcc_activation"] == pytest.approx(1.0, abs=1e-6)
    assert out["mcc_decoder"] == pytest.approx(1.0, abs=1e-3)
    assert out["precision"] == pytest.approx(1.0) and out["recall"] == pytest.approx(1.0)
    assert per_latent["matched_value"].tolist() == [0, 1, 2, 3]
    # a permuted, rescaled code and decoder match just as well (Hungarian matching; |cos| is scale-free)
    perm = torch.tensor([2, 0, 3, 1])
    out2, lat2 = synthetic_match(x, y, 3 * f[:, perm], y, w_dec[perm] * 5)
    assert out2["mcc_activation"] == pytest.approx(1.0, abs=1e-6) and lat2["matched_value"].tolist() == perm.tolist()
    # a latent that fires on values 0 and 1 has precision 1/2 for its match and an activation MCC below one, computed
    # independently: Hungarian matching of |Pearson| between latent columns and value indicators
    f3 = f.clone()
    f3[:, 0] = f[:, 0] + f[:, 1]
    out3, lat3 = synthetic_match(x, y, f3, y, w_dec)
    corr = np.abs(np.corrcoef(np.concatenate([f3.numpy(), f.numpy()], 1).T)[:4, 4:])
    r, c = linear_sum_assignment(-corr)
    assert out3["mcc_activation"] == pytest.approx(corr[r, c].mean(), abs=1e-5) and out3["mcc_activation"] < 0.95
    assert lat3["precision"][0] == pytest.approx(0.5) and lat3["recall"][0] == pytest.approx(1.0)


def test_batched_logistic_regression_is_sklearns_l2_optimum():
    """sklearn's LogisticRegression(C=1) minimises sum logloss + |coef|^2 / 2 (intercept free); at what batched_logreg
    returns, autograd's gradient of that objective is zero for every problem, padding rows ignored. (scripts/check_saebench.py
    compares the accuracies with SAEBench's sklearn probe on a run's activations; importing sklearn here costs seconds.)"""
    g = torch.Generator().manual_seed(0)
    sets = []
    for n in (6, 31, 80):
        x = torch.randn(n, 3, generator=g) * 2
        y = (x[:, 0] + 0.7 * torch.randn(n, generator=g) > 0).long()
        sets.append((x, y))
    coef, icpt = batched_logreg(*_pad(sets))
    for (x, y), c, b in zip(sets, coef, icpt):
        w = c.clone().requires_grad_()
        b0 = b.clone().reshape(1).requires_grad_()
        z = x.double() @ w + b0
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y.double(), reduction="sum") + 0.5 * (w * w).sum()
        loss.backward()
        assert w.grad.abs().max() < 1e-6 and b0.grad.abs().max() < 1e-6


def test_k_sparse_probing_picks_the_latent_that_carries_the_value():
    x, y, f, _ = _planted(n_values=5, per=10)
    noise = torch.rand(len(y), 20, generator=torch.Generator().manual_seed(1))
    feats = torch.cat([noise, f], 1)  # latents 20..24 are the values' indicators, the rest noise
    xt, yt = balanced_probe_data(feats, y, 2, torch.Generator().manual_seed(0))
    assert int(yt.sum()) == 10 and len(yt) == 20  # SAEBench's balanced one-vs-rest set: 10 of class 2, 10 others
    assert (xt[yt == 1, 22] == 1).all() and (xt[yt == 0, 22] == 0).all()
    # the negatives spread over the other classes: ceil(10 / 4) = 3 drawn from each, then 10 of those 12
    counts = torch.bincount(xt[yt == 0][:, 20:].argmax(1), minlength=5)
    assert counts[2] == 0 and counts.max() <= 3 and counts.sum() == 10
    assert top_k_mean_diff(xt, yt, 1).tolist() == [22]
    other = torch.rand(len(y), 20, generator=torch.Generator().manual_seed(2))  # held-out rows: fresh noise, same indicators
    out = sparse_probing(feats, y, torch.cat([other, f], 1), y, ks=(1, 2), min_positives=3, x_sel=noise, x_ev=other)
    assert out["n_classes"] == 5 and out["sae_top_k"] == {"1": 1.0, "2": 1.0}
    assert out["llm_top_k"]["1"] < 0.8 and out["llm"] < 0.8  # noise does not tell the values apart on held-out rows


def test_absorption_row_follows_saebench_on_constructed_cases():
    cos = torch.tensor([0.9, 0.5, 0.05, 0.0])  # latent 0 main; latent 1 aligned absorber; latent 2 below the 0.1 threshold
    # the main latent carries the whole probe projection: no absorption
    assert absorption_row(torch.tensor([2.0, 0.0, 0.0, 0.0]), 1.8, cos, [0]) == (0.0, False)
    # the main latent is silent and latent 1 carries the projection (0.5 * 2 = 1.0 of 1.0): full absorption
    assert absorption_row(torch.tensor([0.0, 2.0, 0.0, 0.0]), 1.0, cos, [0]) == (1.0, True)
    # partial: main carries 0.9 * 0.5 = 0.45 of 1.25, latent 1 carries 0.5 * 1.6 = 0.8 (0.64 of it >= 0.4): fraction
    # min(0.8, 1.25 - 0.45) / (0.8 + 0.45) = 0.64; the main latent fires, so it is not full absorption
    frac, full = absorption_row(torch.tensor([0.5, 1.6, 0.0, 0.0]), 1.25, cos, [0])
    assert frac == pytest.approx(0.64) and not full
    # the other latent's projection is under 40% of the probe's: not absorption
    assert absorption_row(torch.tensor([0.0, 0.5, 0.0, 0.0]), 1.0, cos, [0]) == (0.0, False)
    assert f1(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == pytest.approx(0.5)


def test_the_report_quotes_standard_metrics_with_what_they_were_measured_on(tmp_path):
    from types import SimpleNamespace

    from sae_ooc.saes.standard_result import StandardMetrics
    from sae_ooc.report.doc import Doc
    from sae_ooc.report.standard import standard_section

    hook = "blocks.2.hook_resid_pre"
    sp = {"n_classes": 7, "n_test_rows": 20, "ks": [1, 2], "sae_top_k": {"1": 0.61, "2": 0.7}, "llm_top_k": {"1": 0.5, "2": 0.55},
          "llm": 0.9, "per_class": {}}
    m = {"n_values": 7, "n_heldout": 20, "mcc_decoder": 0.4, "mcc_activation": 0.8, "precision": None, "recall": None, "f1": None,
         "n_live": 3, "precision_live": 0.3, "recall_live": 0.2}
    settings = {"sparse_probing_k": [1, 2], "absorption": True, "min_positives": 2, "seed": 0, "fitted_on": "selection prefixes",
                "measured_on": "held-out prefixes"}
    row = {"variable": "bridge", "position": "r1", "n_select": 80, "n_heldout": 20, "sparse_probing": sp,
           "absorption": {"mean_absorption_fraction": 0.25, "mean_full_absorption": 0.125}, "matching": m}
    (tmp_path / hook).mkdir()
    StandardMetrics.from_json({"hook_name": hook, "rows": [row], "settings": settings, "format": StandardMetrics.format_string()}
                              ).save(tmp_path / hook)
    doc = Doc(SimpleNamespace(sae_eval_dir=tmp_path))
    standard_section(doc)
    line = next(x for x in doc.lines if x.startswith(f"| `{hook}` | bridge@r1"))
    assert "| 7 | 0.610 / 0.700 | 0.500 / 0.550 / 0.900 | 0.250 (0.125) | 0.400 (in-sample) / 0.800 | 0.300 / 0.200 |" in line
    nums = {n["name"]: n for n in doc.numbers}
    assert nums[f"sparse_probing.bridge@r1.{hook}.sae_top_1"]["value"] == 0.61
    assert nums[f"sparse_probing.bridge@r1.{hook}.sae_top_1"]["measured_on"] == "20 held-out prefixes"
    assert nums[f"mcc.bridge@r1.{hook}.decoder"]["in_sample"] and not nums[f"mcc.bridge@r1.{hook}.activation"]["in_sample"]
    assert nums[f"absorption.bridge@r1.{hook}.mean_absorption_fraction"]["value"] == 0.25
