"""Check eval-sae's SAEBench metrics (sae_ooc.saes.sparse_probing, sae_ooc.saes.absorption) against SAEBench's own code.

    pip install --no-deps --target /tmp/sb sae-bench     # SAEBench pins numpy<2 and datasets<4: keep it out of the venv
    PYTHONPATH=/tmp/sb:. python scripts/check_saebench.py RUN [--hook blocks.3.hook_resid_post] [--variable bridge@r1]

On RUN's activations (selection / held-out prefixes of eval-sae) at one hook and one planted variable:
- k-sparse probing: on the same balanced draws, SAEBench's `get_top_k_mean_diff_mask` + `apply_topk_mask_reduce_dim` +
  `train_sklearn_probe` against ours (`top_k_mean_diff` + the batched C = 1 logistic regression): per-class test accuracy;
- absorption: SAEBench's `FeatureAbsorptionCalculator.calculate_absorption`, fed our activations through a stand-in for
  its LLM (a word is a held-out row's index, its "prompt" the activation there), against our `absorption_row`, on every
  held-out row of every value with our probe direction and main latents: absorption fraction and full absorption.
Prints the largest differences; exits 1 if any exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import sys

import torch

from sae_ooc.activations.cache import ActivationCache
from sae_ooc.models.hooked import model_hash
from sae_ooc.rundir import RunDir
from sae_ooc.saes.absorption import absorption_row, main_latents, train_multi_probe
from sae_ooc.saes.eval_sae import heldout_from_disk
from sae_ooc.saes.prefixes import position_slices
from sae_ooc.saes.reconstruction import feature_acts
from sae_ooc.saes.sparse_probing import balanced_probe_data, probe_accuracies, top_k_mean_diff
from sae_ooc.saes.store import load_saes
from sae_ooc.tasks.data import load_task


class _Acts:
    """SAEBench's calculator runs `model.run_with_cache(prompts)`; here a prompt is a row index of `x`."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def to_tokens(self, prompt: str) -> torch.Tensor:
        return torch.zeros(1, 1, dtype=torch.long)

    def run_with_cache(self, prompts, names_filter):
        rows = torch.tensor([int(p.strip()) for p in prompts])
        return None, {names_filter[0]: self.x[rows][:, None, :]}


def main() -> int:
    from sae_bench.evals.absorption.feature_absorption_calculator import FeatureAbsorptionCalculator
    from sae_bench.evals.sparse_probing.probe_training import (
        apply_topk_mask_reduce_dim,
        get_top_k_mean_diff_mask,
        train_sklearn_probe,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--hook", default="blocks.3.hook_resid_post")
    ap.add_argument("--variable", default="bridge@r1")
    args = ap.parse_args()
    run = RunDir.open(args.run)
    var, pos = args.variable.split("@")
    cache = ActivationCache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    sae = load_saes(run.saes_dir, "cpu", [args.hook])[args.hook]
    _, vocab = load_task(run.data_dir)
    ecfg = run.cfg.sae_eval
    sl = next(s for s in position_slices(cache, heldout_from_disk(run.saes_dir, cache), ecfg.max_select_tokens, ecfg.seed,
                                         vocab.layout.positions(ecfg.positions)) if s.name == pos)
    y_sel, y_ev = sl.labels[var]
    x_sel, x_ev = cache.read(args.hook, sl.sel).float(), cache.read(args.hook, sl.ev).float()
    with torch.no_grad():
        f_sel, f_ev = feature_acts(sae, x_sel).float(), feature_acts(sae, x_ev).float()

    # k-sparse probing on identical draws
    worst_sp = 0.0
    classes = [int(c) for c in torch.unique(y_sel[y_sel >= 0]) if (y_ev == c).any() and int((y_sel == c).sum()) >= ecfg.min_positives]
    ms, me = torch.isin(y_sel, torch.tensor(classes)), torch.isin(y_ev, torch.tensor(classes))
    for k in (1, 2, 5):
        tr, te, theirs = [], [], []
        for c in classes:
            g = torch.Generator().manual_seed(c)
            xt, yt = balanced_probe_data(f_sel[ms], y_sel[ms], c, g)
            xe, ye = balanced_probe_data(f_ev[me], y_ev[me], c, g)
            mask = get_top_k_mean_diff_mask(xt, yt.int(), k)
            assert sorted((~mask).nonzero().squeeze(1).tolist()) == sorted(top_k_mean_diff(xt, yt, k).tolist())
            a, b = apply_topk_mask_reduce_dim(xt, mask), apply_topk_mask_reduce_dim(xe, mask)
            theirs.append(train_sklearn_probe(a, yt.int(), b, ye.int())[1])
            tr.append((a, yt))
            te.append((b, ye))
        ours = probe_accuracies(tr, te)
        diff = max(abs(o - t) for o, t in zip(ours, theirs))
        worst_sp = max(worst_sp, abs(sum(ours) - sum(theirs)) / len(ours))
        print(f"sparse probing k={k}: {len(classes)} classes, mean accuracy ours {sum(ours) / len(ours):.4f}, SAEBench "
              f"{sum(theirs) / len(theirs):.4f}, largest per-class difference {diff:.4f}")

    # absorption, row by row
    m_sel, m_ev = y_sel >= 0, y_ev >= 0
    values = torch.tensor(classes)
    onehot = (y_sel[m_sel][:, None] == values[None, :]).float()
    w_probe, _ = train_multi_probe(x_sel[m_sel], onehot)
    w_l1, _ = train_multi_probe(f_sel[m_sel], onehot, num_epochs=50, l1_decay=0.01)
    xe, fe, ye = x_ev[m_ev], f_ev[m_ev], y_ev[m_ev]
    calc = FeatureAbsorptionCalculator(model=_Acts(xe), icl_word_list=[], max_icl_examples=0, base_template="{word}",
                                       answer_formatter=lambda w: "", word_token_pos=-1, shuffle_examples=False,
                                       prepend_separator_to_first_example=False)
    unit = w_probe / w_probe.norm(dim=1, keepdim=True)
    dec = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    n, worst_frac, full_diff = 0, 0.0, 0
    for j, v in enumerate(classes):
        feats, _ = main_latents(f_sel[m_sel], (y_sel[m_sel] == v).numpy(), fe, (ye == v).numpy(), w_l1[j])
        rows = (ye == v).nonzero().squeeze(1).tolist()
        if not rows or not feats:
            continue
        res = calc.calculate_absorption(sae, [str(r) for r in rows], w_probe[j], feats, layer=0, show_progress=False)
        cos = dec @ unit[j]
        for r, wr in zip(rows, res.word_results):
            frac, full = absorption_row(fe[r], float(xe[r] @ unit[j]), cos, feats)
            worst_frac = max(worst_frac, abs(frac - wr.absorption_fraction))
            full_diff += int(full != wr.is_full_absorption)
            n += 1
    print(f"absorption: {n} held-out rows; largest absorption-fraction difference {worst_frac:.2e}; "
          f"full-absorption disagreements {full_diff}")
    ok = worst_sp < 0.02 and worst_frac < 1e-4 and full_diff == 0
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
