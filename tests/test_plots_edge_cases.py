"""No figure may stop a stage: every public plot function of sae_ooc/viz/*_plots.py (and the circuit diagram) draws a
PNG for edge cases: a share of 0 whose interval's lower end rounds above it, a share of 1, an interval that excludes
its point, missing values (None/NaN), one row, no rows. The functions are enumerated from the modules, so a new one
without a builder here fails `test_every_plot_function_has_edge_cases`. The tests run under SAE_OOC_STRICT_FIGURES
(conftest.py): a figure that only survives through `fail_soft` fails here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from conftest import typed

import sae_ooc.viz as viz
from sae_ooc.analyses.result import (
    AttentionResult,
    BackPatchingResult,
    DlaResult,
    LogitLensResult,
    PatchingResult,
    ProbesResult,
    TracingResult,
)
from sae_ooc.circuits.attribute_result import AttributionValidation
from sae_ooc.circuits.faithfulness_result import AblationCurve, PrunedPerPrompt, Scores
from sae_ooc.circuits.variable_faithfulness_result import VariableCircuitFaithfulness
from sae_ooc.viz import plots
from sae_ooc.viz.circuit_files import draw_matplotlib

EPS = 1e-12
# (rows, value per row, interval per row). "bounds": a share of 0 whose lower end rounds above it (the steer stage's
# crash), a share of 1 whose upper end rounds below it, an interval that excludes its point (percentile intervals of
# ratios); "nan": every value missing; then one row, and no rows
CASES = {"bounds": (3, [0.0, 1.0, 0.5], [(EPS, 0.3), (0.7, 1 - EPS), (0.6, 0.9)]), "nan": (3, [None] * 3, [None] * 3),
         "one_row": (1, [0.5], [(0.4, 0.6)]), "no_rows": (0, [], [])}
ROLES = ["head", "r1", "r2"]
H = 2


def _nan(v):
    return float("nan") if v is None else v


def first(vs, default=0.5):
    """A figure's one summary number: the first row's value (None when that is missing), `default` without rows."""
    return vs[0] if vs else default


def attention(n, vs, cis):
    pat = [[[[vs[l]] * 3 for _ in ROLES] for _ in range(H)] for l in range(n)]
    return dict(r=typed(AttentionResult, {"roles": ROLES, "mean_pattern": pat, "heads": [{"head": f"L{l}H{h}", "z_patch_at_r2_recovered": vs[l]} for l in range(n)
                                                                  for h in range(H)],
                   "movers": ["L0H1"] if n else [], "examples": [{"prompt": "e1 r1 r2", "answer": "e3", "bridge": "e2", "pattern": pat}],
                   "n_prompts": 5, "mover_rule": "rule"}), name="t")


def logit_lens(n, vs, cis):
    d = {"prob": [[v] * 3 for v in vs], "top1": [[v] * 3 for v in vs], "median_rank": [[v] * 3 for v in vs]}
    return dict(r=typed(LogitLensResult, {"roles": ROLES, "states": [f"{i}_pre" for i in range(n)], "bridge": d, "answer": d, "n_prompts": 5}), name="t")


def patching(n, vs, cis):
    two, three = {"normalised": [[v] * 3 for v in vs]}, {"normalised": [[[v] * H] * 3 for v in vs]}
    return dict(r=typed(PatchingResult, {"roles": ROLES, "resid_pre": two, "attn_out": two, "mlp_out": two, "z": three, "pattern": three, "n_prompts": 5,
                   "metric": "logit_diff", "clean": first(vs), "corrupt": first(vs)}), name="t")


def tracing(n, vs, cis):
    m = [[v] * 3 for v in vs]
    return dict(r=typed(TracingResult, {"roles": ROLES, "resid": m, "mlp": m, "attn": m, "total_effect": first(vs), "window": 2, "noise_scale": 3.0,
                   "samples": 10, "n_prompts": 5, "p_clean": first(vs), "p_corrupt": first(vs)}), name="t")


def probes(n, vs, cis):
    d = {k: [[v] * 3 for v in vs] for k in ("heldout_acc", "random_model_acc", "shuffled_acc", "chance")}
    d["n_heldout"] = [[None if v is None else 4] * 3 for v in vs]
    return dict(r=typed(ProbesResult, {"hooks": [f"blocks.{i}.hook_resid_pre" for i in range(n)], "positions": ROLES, "n_controls": 1,
                   "head": d, "bridge": d, "answer": d}), name="t")


def dla(n, vs, cis):
    return dict(r=typed(DlaResult, {"components": [{"component": f"L{i}H0", "answer": v, "answer_std": v, "answer_minus_corrupt": v,
                                   "answer_minus_corrupt_std": v} for i, v in enumerate(vs)], "n_prompts": 5}), name="t")


def back_patching(n, vs, cis):
    patches = [{"position": p, "src": s, "dst": d} for p in ("r1", "r2") for s in range(n + 1) for d in range(min(s, n))]
    split = {"n_failures": 3, "fixed_by_patch": [vs[k % n] for k in range(len(patches))]}
    return dict(r=typed(BackPatchingResult, {"n_layers": n, "states": [f"resid_pre {i}" for i in range(n + 1)], "patches": patches,
                                             "test_id": split, "test_ood_sys": split, "test_unanswerable": split,
                                             "chosen": {"position": "r1", "src": 1, "dst": 0} if n else None}), name="t")


def validation(n, vs, cis):
    x = torch.tensor([_nan(v) for v in vs], dtype=torch.float32)
    flat = {"changed": torch.ones(n, dtype=torch.bool), "exact": x, "atp": x.flip(0), "atp_verified": x,
            "computed.atp_verified": torch.arange(n) % 2 == 0}
    methods = {m: {"recall_top50": first(vs), "spearman_not_exact": first(vs), "trusted": m == "atp"} for m in ("atp", "atp_verified")}
    return dict(flat=flat, report=typed(AttributionValidation, {"methods": methods, "n_pairs": n, "n_changed_nodes": n}))


def curve(n, vs, cis):
    rows = [{"n_features": 2 ** i, "faithfulness": v, "completeness": v, "faithfulness_features_only": v} for i, v in enumerate(vs)]
    sizes = [2 ** i for i in range(n)]
    transfer = {"faithfulness": first(vs), "n_rows": n}
    pruned = {"rounds": [{"max_features": s, "faithfulness": v} for s, v in zip(sizes, vs)], "ablation": "mean", "n_pairs": 4,
              "transfer": {"max_features": 4, "same_relations": transfer, "other_relations": transfer}}
    scores = typed(Scores, {"curve": rows})
    return dict(scored={"heldout": scores, "selection": scores}, main="mean", title="t", pruned=typed(PrunedPerPrompt, pruned),
                curves={"mean": typed(AblationCurve, {"sizes": sizes, "faithfulness": vs, "faithfulness_per_prompt_circuits_in_sample": vs})})


def dynamics(n, vs, cis):
    from sae_ooc.dynamics.result import DynamicsResult

    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    probe = {"shuffled_acc": None, "majority_acc": None, "n_heldout": 4, "heldout_ci95": None}
    sae = {"frac_detected_features": None, "probe_accuracy": None, "n_values": 2}
    pts = [{"step": 10 * i, "source": "saved", "accuracy": {s: v for s in ("train", "valid_id", "test_id", "test_ood_sys", "test_unanswerable", "atomic_test")},
            "probes": {h: {p: {**probe, "heldout_acc": v, "shuffled_acc": v} for p in ("r1", "r2")} for h in hooks},
            "logit_lens": {"labels": ["0_pre", "final_post"], "n_prompts": 5, "bridge@r1": {"median_rank": [v, v], "top1": [v, v]},
                           "answer@r2": {"median_rank": [v, v], "top1": [v, v]}},
            "patching": {"clean_logit_diff": 1.0, "corrupt_logit_diff": 0.0, "n_pairs": 4, "normalised": [[v]],
                         "peak@r1": {"value": v, "layer": 0}, "peak@r2": {"value": v, "layer": 0}},
            "saes": {h: {"explained_variance": v, "l0": 2.0, **{k: {**sae, "mean_auroc_features": v, "shuffled_mean_auroc": v}
                                                                for k in ("bridge@r1", "bridge@r2")}} for h in hooks},
            "control": {hooks[0]: {"n": 3, "das": v, "resid_patch": v, "random": v, "das_ci95": list(ci) if ci else None}}}
           for i, (v, ci) in enumerate(zip(vs, cis))]
    rise = {"split": "valid_id", "found": n > 1, "moment": 10}
    used = {"step": 10, "switch": first(vs), "hook": hooks[0], "final_switch": first(vs)} if n else None
    answers = {"composition_step_test_id": None, "rise_step_valid_id": None, "bridge_first_readable": None,
               "bridge_readable_before_composition": None, "bridge_first_used": used}
    control = {"hooks": [hooks[0]], "position": "r1", "rank": 4, "das_steps": 1, "n_fit_pairs": 3, "n_heldout_pairs": 3, "n_random": 1,
               "used_threshold": 0.5, "measured_on": "-"}
    return dict(result=DynamicsResult.from_json({"rise": {"valid_id": rise, "test_id": rise}, "readable_threshold": 0.5, "hooks": hooks,
                                                 "sae_hooks": hooks, "n_checkpoints": {"saved": n, "replayed": 0}, "answers": answers,
                                                 "n_prompts_logit_lens": 5, "n_patch_pairs": 4, "checkpoints": pts, "control": control}))


def steering(n, vs, cis):
    from sae_ooc.interventions.steer_result import RandomControl, SteerMethods, SteerOutcome, SteerResult, SteerRow, SteerSettings
    from sae_ooc.records import MeanCI, Share, Spread

    rows = []
    for v, ci in zip(vs, cis):
        share = Share(share=v, ci95=list(ci) if ci else None, n=5)
        logit = MeanCI(mean=v, ci95=None, n=5)
        out = SteerOutcome(consistent=share, unchanged=share, other=share, consistent_logit=logit, consistent_logit_change=logit,
                           max_abs_logit_change=0.0)
        rnd = Spread(mean=v, min=ci[0] if ci else None, max=ci[1] if ci else None, sd=0.1)
        rows.append(SteerRow(hook="blocks.1.hook_resid_pre", position="r1", n_prompts=5, covered_by_features=5, n_labelled_bridges=1,
                             n_bridge_features=1, methods=SteerMethods(
                                 features=out, random=RandomControl(n_draws=2, draws=[], consistent=rnd, unchanged=rnd, other=rnd,
                                                                    consistent_logit=rnd),
                                 resid_patch=out, resid_patch_same_bridge=out)))
    settings = SteerSettings(split="test_id", only_correct=True, n_split_two_hop=5, n_correct=5, n_prompts=5, random_draws=2, seed=0,
                             hooks=["blocks.1.hook_resid_pre"], positions=["r1"])
    return dict(result=SteerResult(settings=settings, rows=rows))


def edit_layers(n, vs, cis):
    from sae_ooc.interventions.edit_result import EditControl, EditLayer
    from sae_ooc.records import MeanCI, Share

    rows = [Share(share=v, ci95=list(ci) if ci else None, n=3) for v, ci in zip(vs, cis)]
    kl, none = MeanCI(mean=0.1, ci95=None, n=3), Share(share=None, ci95=None, n=0)
    return dict(by_layer=[EditLayer(layer=i, efficacy=r, propagation=r, propagation_all_prompts=r, reverse=none, specificity_same_head=r,
                                    specificity_atomic=r, specificity_two_hop=r, kl_same_head=kl, kl_atomic=kl, kl_two_hop=kl, p_new=kl,
                                    random_direction_control=EditControl(efficacy=r, propagation=r, specificity_atomic=r),
                                    value_change_norm=kl, editable=3) for i, r in enumerate(rows)])


def localization(n, vs, cis):
    from sae_ooc.interventions.edit_result import Correlation, CorrValue, LocalizationPoints

    c = CorrValue(value=first(vs), ci95=list(cis[0]) if cis and cis[0] else None)
    none = CorrValue(value=None, ci95=None)
    return dict(points=LocalizationPoints(layer=list(range(n)), trace=vs, rewrite=vs, propagation=vs),
                corr={"rewrite": Correlation(n_points=n, n_facts=n, pearson=c, spearman=c, spearman_within_layer=[]),
                      "propagation": Correlation(n_points=n, n_facts=n, pearson=c, spearman=none, spearman_within_layer=[])})


def phase(n, vs, cis):
    grid = {"model.n_layers": list(range(1, n + 1)), "model.weight_sharing": [False, True]}
    points = [SimpleNamespace(values={"model.n_layers": a, "model.weight_sharing": b}, slug=f"p{a}{b}") for a in grid["model.n_layers"]
              for b in grid["model.weight_sharing"]]
    from sae_ooc.sweep.result import SweepPoint

    done = {p.slug: SweepPoint(slug=p.slug, values=p.values, config_hash="", unique_parameters=1, accuracy={"test_id": v, "test_ood_sys": v, "test_unanswerable": v},
                               majority_rate={}, steps=100, minutes=0.0, stopped_early=False, test_id_0_9_step=None if v is None else 50,
                               valid_id_0_9_step=None if v is None else 50, max_steps=100)
            for p, v in zip(points[:-1], vs + vs)}
    sw = SimpleNamespace(name="s", grid=grid, axes=lambda: ("model.n_layers", "model.weight_sharing"))
    return dict(sw=sw, points=points, done=done)


def training_curves(n, vs, cis):
    return dict(log=[{"tokens": 100 * (i + 1), "overall_loss": v, "l0": v, "explained_variance": v, "dead_fraction": v}
                     for i, v in enumerate(vs)], title="t")


def pareto(n, vs, cis):
    return dict(points=[{"l0": 1.0 + i, "fvu": v, "loss_recovered_valid_id": v, "param": "k", "value": i} for i, v in enumerate(vs)],
                title="t")


def alignment_heatmap(n, vs, cis):
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(n)]
    grid = {(h, p): {"trained": v, "features": v, "trained_mark": "*" if v else "", "features_mark": ""} for h, v in zip(hooks, vs)
            for p in ROLES}
    return dict(grid=grid, hooks=hooks, positions=ROLES)


def training(n, vs, cis):
    return dict(records=[{"step": 10 * i, "train_acc": v, "train_loss": v, "test_id_acc": v, "test_id_loss": v} for i, v in enumerate(vs)])


def finetune(n, vs, cis):
    return dict(records=[{"step": 10 * i, "atomic_test_acc": v, "new_new_acc": v, "old_new_acc": _nan(v), "test_id_acc": v}
                         for i, v in enumerate(vs)])


def variable_faithfulness(n, vs, cis):
    """One ablation kind per row, each with its own point and interval."""
    def kind(v, ci):
        return {"curve": {"sizes": [1, 2], "heldout": [v, v], "selection": [v, v]}, "random_groups": {"heldout": {"values": [v, v]}},
                "heldout": {"faithfulness": v, "ci95": list(ci) if ci else None}, "top_features_same_size": {"heldout": v},
                "variables_only": {"heldout": v}}

    return dict(faith=typed(VariableCircuitFaithfulness, {"by_ablation": {f"kind{i}": kind(v, ci) for i, (v, ci) in enumerate(zip(vs, cis))},
                                                          "selection": {"n_groups": n, "ablation": "kind0", "target": 0.8}, "n_heldout": 4}),
                title="t")


def variable_curves(n, vs, cis):
    """A row per variable (n of them, one hook), with DAS and sae_opt curves of the values; a row without held-out pairs."""
    from types import SimpleNamespace

    from sae_ooc.causal.result import VariableRow

    rows = []
    for i, (v, ci) in enumerate(zip(vs, cis)):
        units = {"das_rank4": {"size": 4, "switch": v, "ci95": list(ci) if ci else None}, "sae_opt1": {"size": 1, "switch": v},
                 "random_rank4": {"size": 4, "switch": v, "min": ci[0] if ci else None, "max": ci[1] if ci else None},
                 "resid_patch": {"size": None, "switch": v}}
        rows.append(VariableRow.from_json(dict(
            variable=("head", "r1", "r2", "bridge", "answer")[i % 5], position="r2", hook="blocks.1.hook_resid_pre", n_heldout=0 if i == 2 else 3,
            n_heads=2, units=units, curves={"das": ["das_rank4"], "sae_opt": ["sae_opt1"], "random_subspace": ["random_rank4"]},
            pairs={"name": f"v{i}", "role": "r2", "pos": 2})))
    return dict(result=SimpleNamespace(rows=rows))


def diagram(n, vs, cis):
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    nodes = [{"id": f"n{i}", "hook": hooks[i % 2], "hook_index": i % 2, "position": i % 3, "role": ROLES[i % 3], "type": "feature",
              "feature": i, "effect": _nan(v), "effect_std": 0.1, "label": None, "description": f"feature {i}"} for i, v in enumerate(vs)]
    edges = [{"source": f"n{i}", "target": "metric", "weight": _nan(v)} for i, v in enumerate(vs)]
    meta = {"config": "t", "method": "atp", "metric": "logit_diff", "n_pairs": 4, "hooks": hooks, "positions": ROLES,
            "sink": {"id": "metric", "description": "logit(t2) - logit(t2')"}, "example_prompt": "e1 r0 r1"}
    circuit = {"metadata": meta, "scores": {"faithfulness": first(vs), "completeness": first(vs)}, "nodes": nodes, "edges": edges}
    return dict(circuit=circuit, nodes=nodes, edges=edges)


def compare_accuracy(n, vs, cis):
    """Two runs and one without model/metrics.jsonl."""
    c = {"train": (list(range(n)), vs), "test_id": (list(range(n)), vs)} if n else {}
    return dict(curves={"a": c, "b": c, "missing": None})


def compare_probes(n, vs, cis):
    p = {"hooks": [f"blocks.{i}.hook_resid_pre" for i in range(n)], "positions": ROLES, "acc": [[v] * 3 for v in vs],
         "control": [[v] * 3 for v in vs]}
    return dict(probes={"a": p, "b": p, "missing": None})


def compare_patching(n, vs, cis):
    m = {"matrix": [[_nan(v)] * 3 for v in vs] or [[]], "roles": ROLES}
    return dict(maps={"a": m, "missing": None})


def compare_controls(n, vs, cis):
    panel = {"das": ([2 ** i for i in range(n)], vs), "top_features": ([2 ** i for i in range(n)], vs), "resid_patch": first(vs)}
    return dict(controls={"a": {"blocks.0.hook_resid_pre@r1": panel} if n else {}, "missing": None})


def control_curves(n, vs, cis):
    from types import SimpleNamespace

    from sae_ooc.causal.result import VariableRow

    units = {f"das_rank{2 ** i}": {"size": 2 ** i, "switch": v, "ci95": list(ci) if ci else None} for i, (v, ci) in enumerate(zip(vs, cis))}
    units |= {f"random_rank{2 ** i}": {"size": 2 ** i, "switch": v, "min": ci[0] if ci else None, "max": ci[1] if ci else None}
              for i, (v, ci) in enumerate(zip(vs, cis))}
    units["resid_patch"] = {"size": 64, "switch": first(vs)}
    row = VariableRow.from_json(dict(variable="bridge", position="r1", hook="blocks.2.hook_resid_pre", n_heldout=5 * n, n_heads=n, units=units,
                                     curves={"das": [f"das_rank{2 ** i}" for i in range(n)],
                                             "random_subspace": [f"random_rank{2 ** i}" for i in range(n)]}, pairs={}))
    return dict(result=SimpleNamespace(rows=[row] if n else []))


def answers(n, vs, cis):
    """analyses.answers' result: n answer classes on one split (a missing share is NaN: shares are counts' ratios)."""
    from types import SimpleNamespace

    classes = [f"class {i}" for i in range(n)]
    d = {"n": 5 * n, "share": {c: _nan(v) for c, v in zip(classes, vs)}, "chance": {c: _nan(v) for c, v in zip(classes, vs)}}
    return dict(r=SimpleNamespace(classes=classes, splits={"test_id": d} if n else {"test_id": {}}, most_frequent_answer="e0"),
                name="answers")


def finetune_compare(n, vs, cis):
    """sae_ooc.compare.finetune's result with n layers / hooks / interchange cases (values may be None: n/a)."""
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(n)]
    unit = {"switch": first(vs, None)}
    return dict(res={"pretrained_run": "/runs/pre", "finetuned_run": "/runs/ft",
                     "tracing": {"old facts": {"last_position": 0, "mlp": [[v] for v in vs], "n_prompts": n}} if n else {},
                     "bridge_probe": {"hooks": hooks, "acc": {h: {"old": v, "new": v} for h, v in zip(hooks, vs)}},
                     "das": {"rank": 16, "hook": "blocks.2.hook_resid_pre",
                             "cases": {f"case{i}@r1": {"unit": {"switch": v}, "resid_patch": unit, "random": None,
                                                       "n_correct_bases": n} for i, v in enumerate(vs)}}})


BUILDERS = {"plot_control_curves": control_curves, "plot_attention": attention, "plot_logit_lens": logit_lens, "plot_patching": patching, "plot_tracing": tracing,
            "plot_probes": probes, "plot_dla": dla, "plot_back_patching": back_patching, "plot_validation": validation, "plot_curve": curve,
            "plot_dynamics": dynamics, "plot_steering": steering, "plot_edit_layers": edit_layers, "plot_localization": localization,
            "plot_phase": phase, "plot_training_curves": training_curves, "plot_pareto": pareto, "plot_alignment_heatmap": alignment_heatmap,
            "plot_training": training, "plot_variable_faithfulness": variable_faithfulness, "plot_compare_accuracy": compare_accuracy,
            "plot_compare_probes": compare_probes, "plot_compare_patching": compare_patching, "plot_compare_controls": compare_controls,
            "plot_variable_curves": variable_curves, "plot_finetune": finetune,
            "plot_finetune_compare": finetune_compare, "plot_answers": answers}


def plot_functions() -> dict:
    """Every public plot_* function defined in a sae_ooc/viz/*_plots.py module."""
    out = {}
    for m in pkgutil.iter_modules(viz.__path__):
        if m.name.endswith("_plots"):
            mod = importlib.import_module(f"sae_ooc.viz.{m.name}")
            out |= {n: f for n, f in inspect.getmembers(mod, inspect.isfunction) if n.startswith("plot_") and f.__module__ == mod.__name__}
    return out


FUNCS = {**plot_functions(), "draw_matplotlib": draw_matplotlib}
BUILDERS["draw_matplotlib"] = diagram


def test_every_plot_function_has_edge_cases():
    assert len(FUNCS) >= 20
    assert set(FUNCS) == set(BUILDERS), "give each plot function an edge-case builder in this file"


@pytest.fixture
def fast_png(monkeypatch):
    """PNG only, at a low resolution: the suite draws 80 figures here, and nothing in these cases depends on the SVG writer."""
    monkeypatch.setattr(plots, "DPI", 24)
    monkeypatch.setattr(plots, "FORMATS", ("png",))


def _draw_without_writing(fig, fname, **kwargs):
    """Figure.savefig's drawing without its rasterising and file: every artist drawn (layout, text, transforms, images
    resampled) and the tight bounding box savefig crops to, which must be finite and non-empty."""
    fig.draw_without_rendering()
    box = fig.get_tightbbox()
    assert np.isfinite(box.bounds).all() and box.width > 0 and box.height > 0, box
    _draw_without_writing.drawn.append(Path(fname))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_plot_draws_edge_case(name, case, tmp_path, fast_png, monkeypatch):
    """Each case drawn in full; the "bounds" case (the steer stage's crash) also laid out, rasterised and written as a PNG
    that loads back with something on it. The others skip the rasterising (two fifths of the time of the 116 figures)
    and the tight layout (a third of what is left): the layout only measures the artists' extents, which the figure's
    tight bounding box measures again in `_draw_without_writing`, and a layout that does not fit only warns."""
    n, v, ci = CASES[case]
    png = tmp_path / f"{name}.png"
    if case != "bounds":
        _draw_without_writing.drawn = []
        monkeypatch.setattr(plots.plt.Figure, "savefig", _draw_without_writing)
        monkeypatch.setattr(plots, "lay_out", lambda fig, tight_layout=False: None)
    paths = FUNCS[name](**BUILDERS[name](n, v, ci), stem=tmp_path / name)
    assert png in paths
    if case != "bounds":
        assert len(_draw_without_writing.drawn) == 1  # one figure drawn (into save_figure's temporary file, left empty)
        return
    img = mpimg.imread(png)  # loads back as an image with something on it
    assert img.shape[0] > 20 and img.shape[1] > 20 and np.ptp(img) > 0


@pytest.mark.parametrize("value,lo,hi,want", [(0.0, EPS, 0.3, [[0.0], [0.3]]), (1.0, 0.7, 1 - EPS, [[0.3], [0.0]]),
                                              (0.5, 0.6, 0.9, [[0.0], [0.4]]), (None, 0.1, 0.2, [[0.0], [0.0]]),
                                              (0.5, None, float("nan"), [[0.0], [0.0]])])
def test_err_bars_never_negative(value, lo, hi, want):
    np.testing.assert_allclose(plots.err_bars([value], [lo], [hi]), want, atol=1e-9)


@pytest.mark.figures
def test_failing_figure_warns_and_stage_goes_on(tmp_path, monkeypatch, capsys):
    @plots.fail_soft
    def plot_broken(rows, stem):
        plots.plt.subplots()
        raise ValueError("'yerr' must not contain\nnegative values")

    monkeypatch.delenv(plots.STRICT_ENV, raising=False)
    n_open = len(plots.plt.get_fignums())
    paths = plot_broken([], tmp_path / "broken")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken" in err[0] and "ValueError" in err[0] and "yerr" in err[0]
    assert paths and (tmp_path / "broken.png").exists() and len(plots.plt.get_fignums()) == n_open
    monkeypatch.setenv(plots.STRICT_ENV, "1")  # tests: broken plot code must not hide behind the guard
    with pytest.raises(ValueError):
        plot_broken([], tmp_path / "broken")


def test_every_plot_function_fails_soft():
    """Each public plot function is wrapped: its failure cannot stop the stage that calls it."""
    unwrapped = [n for n, f in FUNCS.items() if not hasattr(f, "__wrapped__")]
    assert not unwrapped


def test_alignment_star_tests_the_share_shown(tmp_path, fast_png):
    """The feature panels show the share of values one feature detects; their * must test that share, not the mean
    AUROC: a cell showing 0.00 never carries it, a share of 1 over 20 values against shuffled runs at 0 does."""
    from sae_ooc.saes.summary import _feature_cell, _grid

    def cell(frac, n_values, mean_auroc_above):
        f = {"frac_detected": frac, "mean_auroc": 0.85, "sd_auroc_over_values": 0.05, "shuffled_frac_detected": 0.0,
             "shuffled_frac_detected_runs": [0.0, 0.0], "shuffled_mean_auroc": 0.5, "above_controls": mean_auroc_above}
        probe = {"heldout_acc": 0.0, "random_model_acc": 0.1, "shuffled_acc": 0.1, "above_controls": False}
        return {"variable": "bridge", "position": "r1", "n_values": n_values, "probe": probe, "features": f}

    for frac, n, want in ((0.0, 20, ""), (1.0, 20, "*"), (0.2, 5, "")):  # 1 of 5 values: its interval reaches 0
        a = cell(frac, n, mean_auroc_above=True)
        g = _grid({"blocks.0.hook_resid_pre": {"alignment": {"bridge@r1": a}}}, ["blocks.0.hook_resid_pre"], "bridge")
        assert g[("blocks.0.hook_resid_pre", "r1")]["features_mark"] == want, (frac, n)
        assert ("**>shuffled**" in _feature_cell(a)) == (want == "*")
