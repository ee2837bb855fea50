"""Stage `eval-sae`: how well each SAE reconstructs, how much task skill survives it, what its features mean.

For every SAE in RUN/saes/<hook_name>/ this measures, on the sequences held out of SAE training:
explained variance / FVU / MSE / L0 / dead and dense features; with the SAE spliced into the model
(sae_lens.HookedSAETransformer): answer cross-entropy and accuracy on every split and the fraction of
answer loss recovered relative to zero-ablating the hook; and ground-truth alignment: for every planted
variable (head, r1, r2, bridge, answer) and position, which single feature best detects each value
(AUROC, one-vs-rest) next to a linear probe on the raw activations. Results go to each SAE's
metrics.json and a summary over layers in RUN/saes/summary.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from sae_ooc.activations.cache import ROLES, ActivationCache
from sae_ooc.errors import UserError
from sae_ooc.stats import tie_ranks
from sae_ooc.threads import torch_threads

STAGE = "eval-sae"
VARIABLES = ("head", "r1", "r2", "bridge", "answer")


# reconstruction -------------------------------------------------------------------------------
def check_d_in(sae, cache: ActivationCache, hook_name: str, where: str) -> None:
    if int(sae.cfg.d_in) != cache.d_model:
        raise UserError(
            f"SAE in {where} has d_in {sae.cfg.d_in} but the activations of {hook_name} in {cache.root} have d_model "
            f"{cache.d_model}; retrain the SAE on this cache (`sae-ooc train-sae --force`) or pass the cache it was trained on"
        )


@torch.no_grad()
def feature_acts(sae, x: torch.Tensor) -> torch.Tensor:
    return sae.encode(x.to(sae.device, sae.dtype))


@torch.no_grad()
def reconstruction_metrics(sae, cache: ActivationCache, hook_name: str, rows: torch.Tensor, dense_threshold: float = 0.1,
                           batch_size: int = 8192) -> dict:
    """Explained variance, FVU, MSE, mean L0, dead and dense features of `sae` on cache rows `rows`.

    Explained variance is 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the rows (SAELens's
    `metrics/explained_variance`); a feature is dead if it never fires on these rows.
    """
    sae.eval()
    n = len(rows)
    if n == 0:
        raise UserError(f"no held-out tokens to evaluate the SAE of {hook_name} on; raise sae.eval_fraction")
    d = cache.d_model
    sq_err = 0.0
    sum_x = torch.zeros(d, dtype=torch.float64)
    sum_x2 = 0.0
    l0_sum = 0.0
    fire_count = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    for s in range(0, n, batch_size):
        x = cache.read(hook_name, rows[s : s + batch_size]).to(sae.device)
        acts = sae.encode(x)
        x_hat = sae.decode(acts)
        x64, xh64 = x.double(), x_hat.double()
        sq_err += float(((x64 - xh64) ** 2).sum())
        sum_x += x64.sum(0).cpu()
        sum_x2 += float((x64**2).sum())
        active = (acts != 0).double()
        l0_sum += float(active.sum())
        fire_count += active.sum(0).cpu()
    total_var = sum_x2 - float((sum_x**2).sum()) / n
    ev = 1.0 - sq_err / total_var if total_var > 0 else float("nan")
    freq = fire_count / n
    return {
        "explained_variance": ev,
        "fvu": 1.0 - ev,
        "mse": sq_err / (n * d),
        "mse_per_token": sq_err / n,
        "l0": l0_sum / n,
        "dead_fraction": float((fire_count == 0).double().mean()),
        "n_dead": int((fire_count == 0).sum()),
        "dense_fraction": float((freq > dense_threshold).double().mean()),
        "n_dense": int((freq > dense_threshold).sum()),
        "n_tokens": n,
    }


def finite(x: float) -> float | None:
    """JSON has no NaN: None stands in for it."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def eval_rows(saes_root: Path) -> Path:
    return Path(saes_root) / "heldout_rows.safetensors"


# spliced-in task metrics ------------------------------------------------------------------------
class TaskEvaluator:
    """Answer cross-entropy and accuracy of the model: clean, with an SAE spliced in, and with the hook zeroed.

    loss_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean): 1 when the SAE is as good as the real
    activations, 0 when it is as bad as deleting them.
    """

    def __init__(self, model, tensors: dict, device: str = "cpu"):
        self.model, self.tensors, self.device = model, tensors, device
        self._clean: dict[str, dict] = {}
        self._zero: dict[tuple[str, str], dict] = {}

    @classmethod
    def from_dirs(cls, model_dir: Path, data_dir: Path, device: str = "cpu", splits=None) -> "TaskEvaluator":
        from sae_ooc.tasks.data import SPLITS, load_task, split_tensors

        ds, vocab = load_task(data_dir)
        tensors = {s: split_tensors(ds[s], vocab.pad_id) for s in (splits or SPLITS)}
        from sae_ooc.models.hooked import load_model

        return cls(load_model(model_dir, device, sae_transformer=True), tensors, device)

    @classmethod
    def from_run(cls, run, device: str = "cpu") -> "TaskEvaluator":
        return cls.from_dirs(run.model_dir, run.data_dir, device)

    def _eval(self, split: str) -> dict:
        from sae_ooc.models.evaluate import evaluate

        return evaluate(self.model, self.tensors[split], device=self.device)

    def clean(self, split: str) -> dict:
        if split not in self._clean:
            self._clean[split] = self._eval(split)
        return self._clean[split]

    def zero(self, hook_name: str, split: str) -> dict:
        if (hook_name, split) not in self._zero:
            with self.model.hooks(fwd_hooks=[(hook_name, lambda act, hook: torch.zeros_like(act))]):
                self._zero[(hook_name, split)] = self._eval(split)
        return self._zero[(hook_name, split)]

    def with_sae(self, sae, split: str, use_error_term: bool = False) -> dict:
        with self.model.saes(saes=[sae], use_error_term=use_error_term):
            return self._eval(split)

    def evaluate(self, sae, splits=None, use_error_term: bool = False) -> dict:
        hook = sae.cfg.metadata.hook_name
        if hook not in self.model.hook_dict:
            raise UserError(f"SAE hook '{hook}' is not a hook of the model; valid residual hooks: "
                            f"{', '.join(h for h in self.model.hook_dict if 'resid' in h)}")
        out = {}
        for s in splits or list(self.tensors):
            c, z, w = self.clean(s), self.zero(hook, s), self.with_sae(sae, s, use_error_term)
            denom = z["loss"] - c["loss"]
            out[s] = {
                "n": c["n"], "acc_clean": c["acc"], "acc_sae": w["acc"], "acc_zero": z["acc"],
                "loss_clean": c["loss"], "loss_sae": w["loss"], "loss_zero": z["loss"],
                "loss_recovered": finite((z["loss"] - w["loss"]) / denom) if abs(denom) > 1e-12 else None,
            }
        head = out.get("test_id") or next(iter(out.values()))
        return {"splits": out, "loss_recovered": head["loss_recovered"], "acc_drop_test_id": finite(head["acc_clean"] - head["acc_sae"])}


# ground-truth alignment --------------------------------------------------------------------------
def auroc_matrix(scores: torch.Tensor, labels: torch.Tensor, values: torch.Tensor, chunk: int = 512,
                 ranks: torch.Tensor | None = None) -> torch.Tensor:
    """AUROC of every score column for every value, one-vs-rest: [n_columns, n_values].

    Mann-Whitney U from tie-averaged ranks: AUROC = (sum of positive ranks - P(P+1)/2) / (P * N).
    `ranks` (from `column_ranks(scores)`) saves recomputing them when the same scores serve several labelings.
    """
    n = len(labels)
    onehot = (labels[:, None] == values[None, :]).double()
    npos = onehot.sum(0)
    nneg = n - npos
    n_cols = scores.shape[1] if ranks is None else ranks.shape[1]
    out = torch.empty(n_cols, len(values), dtype=torch.float64)
    for s in range(0, n_cols, chunk):
        r = tie_ranks(scores[:, s : s + chunk].float()) if ranks is None else ranks[:, s : s + chunk].double()
        out[s : s + chunk] = (r.T @ onehot - npos * (npos + 1) / 2) / (npos * nneg).clamp(min=1)
    return out


def column_ranks(scores: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Tie-averaged ranks of every column, stored as float32 (exact: ranks are multiples of 0.5 below 2^23)."""
    return torch.cat([tie_ranks(scores[:, s : s + chunk].float()).float() for s in range(0, scores.shape[1], chunk)], dim=1)


def train_probes(x: torch.Tensor, targets: dict[str, tuple[torch.Tensor, torch.Tensor, int]], steps: int, lr: float,
                 weight_decay: float, seed: int) -> dict:
    """One multinomial logistic-regression probe per variable on standardised activations, trained jointly.

    `targets[var] = (row_mask, class_ids of those rows, n_classes)`. The heads share no parameters, so the
    summed loss trains each exactly as alone, in one full-batch loop. Returns {var: scoring function}.
    """
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mu) / sd
    g = torch.Generator().manual_seed(seed)
    names = list(targets)
    sizes = [targets[v][2] for v in names]
    w = (torch.randn(x.shape[1], sum(sizes), generator=g) * 0.01).requires_grad_()
    b = torch.zeros(sum(sizes), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    with torch.enable_grad(), torch_threads(1):
        for _ in range(steps):
            opt.zero_grad()
            logits = xs @ w + b
            loss = sum(torch.nn.functional.cross_entropy(logits[targets[v][0], o : o + n], targets[v][1])
                       for v, o, n in zip(names, offsets, sizes))
            loss.backward()
            opt.step()
    w, b = w.detach(), b.detach()
    return {v: (lambda z, o=o, n=n: ((z - mu) / sd) @ w[:, o : o + n] + b[o : o + n]) for v, o, n in zip(names, offsets, sizes)}


def _subsample(rows: torch.Tensor, cap: int, seed: int) -> torch.Tensor:
    if len(rows) <= cap:
        return rows
    g = torch.Generator().manual_seed(seed)
    return rows[torch.randperm(len(rows), generator=g)[:cap].sort().values]


@torch.no_grad()
def alignment(sae, cache: ActivationCache, hook_name: str, heldout: torch.Tensor, ecfg, names: list[str] | None = None) -> dict:
    """Which single SAE feature (and how well a linear probe) detects each value of each planted variable.

    For every position and variable, values with at least `min_positives` tokens in both slices are
    scored: the best feature per value is chosen on the selection slice (non-held-out sequences, at most
    `max_select_tokens` per position) and its AUROC reported on the held-out slice; the probe is trained on
    the selection slice and scored on the held-out one. Returns per (variable, position) summaries, the
    per-value table, and the best label per feature.
    """
    tok = cache.tokens()
    results: dict[str, dict] = {}
    label_best: dict[int, dict] = {}
    name = (lambda v: names[v]) if names else (lambda v: str(v))
    for p_idx, pos_name in enumerate(ROLES):
        at = tok["pos"] == p_idx
        sel_all = (at & ~heldout).nonzero().squeeze(1)
        ev_all = (at & heldout).nonzero().squeeze(1)
        if len(sel_all) == 0 or len(ev_all) == 0:
            continue
        sel_all = _subsample(sel_all, ecfg.max_select_tokens, ecfg.seed)
        x_sel, x_ev = cache.read(hook_name, sel_all), cache.read(hook_name, ev_all)
        f_sel, f_ev = feature_acts(sae, x_sel).cpu(), feature_acts(sae, x_ev).cpu()
        per_var = {}
        for var in VARIABLES:
            y_sel_all, y_ev_all = tok[var][sel_all].long(), tok[var][ev_all].long()
            ms, me = y_sel_all >= 0, y_ev_all >= 0
            y_sel, y_ev = y_sel_all[ms], y_ev_all[me]
            if len(y_sel) == 0 or len(y_ev) == 0:
                continue
            vals = torch.unique(y_sel)  # the probe's classes: every value seen in the selection slice
            cnt_sel = (y_sel[:, None] == vals[None, :]).sum(0)
            cnt_ev = (y_ev[:, None] == vals[None, :]).sum(0)
            ok = (cnt_sel >= ecfg.min_positives) & (cnt_ev >= ecfg.min_positives) & (cnt_ev < len(y_ev)) & (cnt_sel < len(y_sel))
            if ok.any():
                per_var[var] = (ms, me, y_sel, y_ev, vals, vals[ok])
        if not per_var:
            continue
        probes = train_probes(x_sel, {v: (ms, torch.searchsorted(vals, y_sel), len(vals)) for v, (ms, _, y_sel, _, vals, _) in per_var.items()},
                              ecfg.probe_steps, ecfg.probe_lr, ecfg.probe_weight_decay, ecfg.seed)
        thr = ecfg.auroc_threshold
        rank_cache: dict[tuple, torch.Tensor] = {}

        def ranks_of(f: torch.Tensor, mask: torch.Tensor, tag: str) -> torch.Tensor:
            key = (tag, int(mask.sum()), hash(mask.numpy().tobytes()))  # head, r1, answer share one mask; r2, bridge another
            if key not in rank_cache:
                rank_cache[key] = column_ranks(f[mask])
            return rank_cache[key]

        for var, (ms, me, y_sel, y_ev, vals, scored) in per_var.items():
            au_sel = auroc_matrix(f_sel[ms], y_sel, scored, ranks=ranks_of(f_sel, ms, "sel"))  # [d_sae, n_values]
            au_ev = auroc_matrix(f_ev[me], y_ev, scored, ranks=ranks_of(f_ev, me, "ev"))
            best = au_sel.argmax(0)
            best_ev = au_ev[best, torch.arange(len(scored))]
            all_logits = probes[var](x_ev[me])
            logits = all_logits[:, torch.searchsorted(vals, scored)]
            au_probe = auroc_matrix(logits, y_ev, scored).diagonal()
            # AUROC >= 0.9 is a loose bar when a value is partly predictable from context (the bridge is one of
            # the head's ~k tails); the probe's exact-value accuracy tells decoding from guessing
            probe_acc = float((vals[all_logits.argmax(1)] == y_ev).double().mean())
            results[f"{var}@{pos_name}"] = {
                "variable": var, "position": pos_name, "n_values": len(scored), "n_select": int(ms.sum()), "n_heldout": int(me.sum()),
                "frac_detected_features": float((best_ev >= thr).double().mean()),
                "frac_detected_probe": float((au_probe >= thr).double().mean()),
                "mean_auroc_features": float(best_ev.mean()),
                "mean_auroc_probe": float(au_probe.mean()),
                "probe_accuracy": probe_acc,
                "values": [
                    {"value": name(int(v)), "id": int(v), "feature": int(f), "auroc_feature": round(float(a), 4), "auroc_probe": round(float(q), 4)}
                    for v, f, a, q in zip(scored, best, best_ev, au_probe)
                ],
            }
            # best label per feature: chosen on the selection slice, confirmed on the held-out slice. AUROC alone
            # also passes a feature that fires on many values as long as this one ranks high, so a label also
            # needs precision: most held-out tokens the feature fires on must carry the value
            top_sel, top_idx = au_sel.max(1)
            acts_ev = f_ev[me]
            for f in (top_sel >= thr).nonzero().squeeze(1).tolist():
                j = int(top_idx[f])
                a_ev = float(au_ev[f, j])
                fires = acts_ev[:, f] > 0
                precision = float((y_ev[fires] == scored[j]).double().mean()) if fires.any() else 0.0
                if a_ev >= thr and precision >= ecfg.label_min_precision and (f not in label_best or a_ev > label_best[f]["auroc"]):
                    label_best[f] = {"feature": f, "variable": var, "position": pos_name, "value": name(int(scored[j])),
                                     "auroc": round(a_ev, 4), "precision": round(precision, 4)}
    labels = [label_best[f] for f in sorted(label_best)]
    return {"by_variable_position": results, "feature_labels": labels}


# the stage -----------------------------------------------------------------------------------------
def evaluate_sae(sae, cache: ActivationCache, hook_name: str, heldout: torch.Tensor, ecfg, task: TaskEvaluator | None,
                 names: list[str] | None = None) -> dict:
    """Every number eval-sae reports for one SAE: reconstruction, task (if `task`), alignment."""
    check_d_in(sae, cache, hook_name, f"the SAE for {hook_name}")
    out = {"reconstruction": {k: finite(v) for k, v in reconstruction_metrics(
        sae, cache, hook_name, heldout.nonzero().squeeze(1), dense_threshold=ecfg.dense_threshold).items()}}
    if task is not None:
        out["task"] = task.evaluate(sae)
    al = alignment(sae, cache, hook_name, heldout, ecfg, names)
    out["alignment"] = al["by_variable_position"]
    out["feature_labels"] = al["feature_labels"]
    return out


def run_eval_sae(run, force: bool = False) -> bool:
    """Stage `eval-sae`: evaluate every SAE in RUN/saes, write metrics.json per hook, summary.md and heatmaps."""
    from sae_ooc.io import read_json, write_json
    from sae_ooc.models.hooked import model_hash
    from sae_ooc.saes.store import load_saes, sae_dir
    from sae_ooc.tasks.data import load_task

    fp = run.stage_fingerprint(("sae_eval",), ("train-sae",))
    root = run.saes_dir
    if not force and run.is_done(STAGE, fp) and (root / "summary.md").exists():
        return False
    device = getattr(run, "device", "cpu")
    cache = ActivationCache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    saes = load_saes(root, device=device, hook_names=[h for h in (run.cfg.sae.hooks or cache.hooks)])
    heldout = _heldout_from_disk(root, cache)
    _, vocab = load_task(run.data_dir)
    task = TaskEvaluator.from_run(run, device=device)
    ecfg = run.cfg.sae_eval
    per_hook = {}
    for h, sae in saes.items():
        cache.check_hook(h)
        with torch_threads(run.cfg.sae.threads):
            res = evaluate_sae(sae, cache, h, heldout, ecfg, task, vocab.names)
        m_path = sae_dir(root, h) / "metrics.json"
        metrics = read_json(m_path) if m_path.exists() else {"hook_name": h}
        metrics.update(res)
        write_json(m_path, metrics)
        per_hook[h] = metrics
        r, t = res["reconstruction"], res["task"]["splits"]["test_id"]
        print(f"eval-sae: {h}: EV {r['explained_variance']:.3f} L0 {r['l0']:.1f} dead {r['dead_fraction']:.1%} | test_id acc "
              f"{t['acc_clean']:.3f} -> {t['acc_sae']:.3f}, loss recovered {_fmt(t['loss_recovered'])} | bridge "
              f"{_best_bridge(res['alignment'])}")
    write_summary(per_hook, root, ecfg.auroc_threshold)
    run.mark_done(STAGE, fp, hooks=list(per_hook), summary=str(root / "summary.md"))
    return True


def _heldout_from_disk(root: Path, cache: ActivationCache) -> torch.Tensor:
    from sae_ooc.io import load_tensors

    path = eval_rows(root)
    if not path.exists():
        raise UserError(f"{path} is missing; rerun `sae-ooc train-sae --force --run {Path(root).parent}`")
    mask = torch.zeros(cache.n_tokens, dtype=torch.bool)
    mask[load_tensors(path)["rows"]] = True
    return mask


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _best_bridge(al: dict) -> str:
    best = max((v for v in al.values() if v["variable"] == "bridge"), key=lambda v: v["frac_detected_features"], default=None)
    if best is None:
        return "n/a"
    return f"{best['frac_detected_features']:.0%} of values by one feature at {best['position']} (probe {best['frac_detected_probe']:.0%})"


def write_summary(per_hook: dict[str, dict], root: Path, threshold: float) -> Path:
    """RUN/saes/summary.md (a table over layers + alignment tables) and the alignment heatmaps."""
    from sae_ooc.io import write_text
    from sae_ooc.saes.store import hook_sort_key
    from sae_ooc.viz.sae_plots import plot_alignment_heatmap

    hooks = sorted(per_hook, key=hook_sort_key)
    lines = ["# SAEs: reconstruction, spliced-in task metrics, ground-truth alignment", "",
             "Reconstruction on held-out sequences; task metrics with the SAE replacing the activation at its hook "
             "(loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), on test_id).", "",
             "| hook | arch | d_sae | EV | FVU | MSE | L0 | dead | dense | test_id acc clean | test_id acc SAE | loss recovered | train acc SAE | test_ood acc SAE | atomic acc SAE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for h in hooks:
        m = per_hook[h]
        r = m["reconstruction"]
        t = m.get("task", {}).get("splits", {})
        acc = lambda s, k="acc_sae": _fmt(t.get(s, {}).get(k))  # noqa: E731
        lines.append(f"| {h} | {m.get('architecture', '?')} | {m.get('d_sae', '?')} | {_fmt(r['explained_variance'])} | {_fmt(r['fvu'])} | "
                     f"{_fmt(r['mse'], '.4g')} | {r['l0']:.2f} | {r['dead_fraction']:.1%} | {r['dense_fraction']:.1%} | "
                     f"{acc('test_id', 'acc_clean')} | {acc('test_id')} | {_fmt(m.get('task', {}).get('loss_recovered'))} | "
                     f"{acc('train')} | {acc('test_ood')} | {acc('atomic_test')} |")
    positions = ["head", "r1", "r2"]
    figs = []
    for var in VARIABLES:
        lines += ["", f"## {var}: share of values detected with AUROC >= {threshold} (held-out), one SAE feature / linear probe "
                  "(probe acc: the probe's exact-value accuracy)", "",
                  "| hook | " + " | ".join(positions) + " |", "|---|" + "---|" * len(positions)]
        grid = {}
        for h in hooks:
            cells = []
            for pos in positions:
                a = per_hook[h].get("alignment", {}).get(f"{var}@{pos}")
                if a is None:
                    cells.append("–")
                    continue
                grid[(h, pos)] = {"features": a["frac_detected_features"], "probe_accuracy": a.get("probe_accuracy")}
                cells.append(f"{a['frac_detected_features']:.0%} / {a['frac_detected_probe']:.0%} (n={a['n_values']}, probe acc {a.get('probe_accuracy', float('nan')):.2f})")
            lines.append(f"| {h} | " + " | ".join(cells) + " |")
        if grid:
            plot_alignment_heatmap(grid, hooks, positions, Path(root) / f"alignment_{var}", variable=var, threshold=threshold)
            figs.append(f"alignment_{var}.png")
    bridge = [(h, a) for h in hooks for a in per_hook[h].get("alignment", {}).values() if a["variable"] == "bridge"]
    if bridge:
        h, a = max(bridge, key=lambda x: (x[1]["frac_detected_features"], x[1]["mean_auroc_features"]))
        lines += ["", f"**Bridge entity**: best read out at `{h}`, position {a['position']}: one feature detects "
                  f"{a['frac_detected_features']:.0%} of {a['n_values']} bridge values (mean AUROC {a['mean_auroc_features']:.3f}); "
                  f"linear probe {a['frac_detected_probe']:.0%} (mean AUROC {a['mean_auroc_probe']:.3f}, exact-value accuracy {a.get('probe_accuracy', float('nan')):.2f})."]
        hp = max(bridge, key=lambda x: x[1].get("probe_accuracy", 0.0))
        lines.append(f"Raw stream: the probe decodes the exact bridge best at `{hp[0]}`, position {hp[1]['position']} "
                     f"(accuracy {hp[1].get('probe_accuracy', float('nan')):.2f}).")
        first_f = next((f"`{h}` at {a['position']}" for h, a in bridge if a["frac_detected_features"] >= 0.8), "nowhere")
        first_p = next((f"`{h}` at {a['position']}" for h, a in bridge if a.get("probe_accuracy", 0.0) >= 0.9), "nowhere")
        lines.append(f"First readable (layer order): by single features (>= 80% of values) {first_f}; by the probe "
                     f"(exact-value accuracy >= 0.9) {first_p}.")
    lines += ["", "## Targets (default experiment goals)", "",
              "| hook | EV >= 0.95 at L0 <= 16 | dead < 5% | test_id acc within 2 points of clean |", "|---|---|---|---|"]
    ok = lambda c: "yes" if c else "no"  # noqa: E731
    for h in hooks:
        r, t = per_hook[h]["reconstruction"], per_hook[h].get("task", {}).get("splits", {}).get("test_id")
        drop = None if t is None else t["acc_clean"] - t["acc_sae"]
        lines.append(f"| {h} | {ok((r['explained_variance'] or 0) >= 0.95 and r['l0'] <= 16)} ({_fmt(r['explained_variance'])} at {r['l0']:.1f}) | "
                     f"{ok(r['dead_fraction'] < 0.05)} ({r['dead_fraction']:.1%}) | "
                     f"{'n/a' if drop is None else ok(drop <= 0.02) + f' ({-drop * 100:+.1f} points)'} |")
    lines += ["", "Figures: " + ", ".join(figs), ""]
    path = Path(root) / "summary.md"
    write_text(path, "\n".join(lines))
    return path
