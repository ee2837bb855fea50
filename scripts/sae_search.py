"""Search SAE settings that could make the bridge at r1 a few features, chosen by control on fit-valid prefixes.

    python scripts/sae_search.py RUN OUT_DIR [--hook blocks.2.hook_resid_pre] [--tokens 300000] [--only NAME ...]

Each variant is a small SAE trained by train-sae's own trainer (`sae_ooc.saes.trainer.train_sae`) on RUN's activation
cache at one hook, on the rows train-sae trained on (its held-out prefixes stay out), either every position or r1 alone
(`per_position`), from SAELens's initialisation or with the first decoder rows the bridge values' class-mean directions. Its control score is stage `variables`' top-n unit: exchange, from a donor prefix, the n features whose
fit class means differ most between b and b' (`sae_ooc.causal.units`), and count answers switched to t(b', r2). The
pairs are `sae-ooc dynamics`' (`sae_ooc.dynamics.control.control_setup`: the variables stage's prefix groups, every
question kept). The variant is **chosen on the fit-valid pairs** (prefixes neither the DAS fit nor the held-out score
uses) by its top-4 switch rate, and every variant's held-out switch rates are reported beside the residual patch,
RUN's own SAE at the hook and (from RUN/variables/variables.json when present) the supervised dictionary and DAS.
Prints a Markdown table (results/sae_search.md); finished SAEs are reused on a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from sae_ooc.activations.cache import ActivationCache, distinct_rows
from sae_ooc.causal.control import switch_only
from sae_ooc.causal.pairs import FIT, HELD, VALID
from sae_ooc.causal.row import scored
from sae_ooc.causal.variables import heldout_prefixes
from sae_ooc.causal.units import class_means, decode_delta, exchanged, principal_directions, projected, top_feature_mask
from sae_ooc.dynamics.control import bridge_control, control_setup
from sae_ooc.interventions.prompts import read_batched
from sae_ooc.interventions.steer import residuals
from sae_ooc.models.hooked import load_model, model_hash
from sae_ooc.rundir import RunDir
from sae_ooc.saes.eval_sae import heldout_from_disk
from sae_ooc.saes.store import load_saes
from sae_ooc.saes import architectures, trainer
from sae_ooc.saes.trainer import finished_metrics, settings_hash, train_sae
from sae_ooc.tasks.data import load_task

# name: (train on r1 rows only, overrides of the run's `sae` section)
VARIANTS = {
    "all_topk_k16_d1024": (False, {"architecture": "topk", "k": 16, "d_sae": 1024}),
    "r1_topk_k16_d1024": (True, {"architecture": "topk", "k": 16, "d_sae": 1024}),
    "r1_topk_k4_d1024": (True, {"architecture": "topk", "k": 4, "d_sae": 1024}),
    "r1_topk_k2_d256": (True, {"architecture": "topk", "k": 2, "d_sae": 256}),
    "r1_topk_k4_d128": (True, {"architecture": "topk", "k": 4, "d_sae": 128}),
    "r1_topk_k16_d128": (True, {"architecture": "topk", "k": 16, "d_sae": 128}),
    "r1_topk_k8_d64": (True, {"architecture": "topk", "k": 8, "d_sae": 64}),
    "r1_batchtopk_k16_d1024": (True, {"architecture": "batchtopk", "k": 16, "d_sae": 1024}),
    "r1_matryoshka_k16_d1024": (True, {"architecture": "matryoshka_batchtopk", "k": 16, "d_sae": 1024}),
    "r1_jumprelu_d1024": (True, {"architecture": "jumprelu", "d_sae": 1024}),
    "r1_standard_l1_d1024": (True, {"architecture": "standard", "d_sae": 1024}),
    "r1_topk_k1_d256": (True, {"architecture": "topk", "k": 1, "d_sae": 256}),
    "r1_topk_k2_d128": (True, {"architecture": "topk", "k": 2, "d_sae": 128}),
    "r1_topk_k2_d512": (True, {"architecture": "topk", "k": 2, "d_sae": 512}),
    "r1_topk_k3_d256": (True, {"architecture": "topk", "k": 3, "d_sae": 256}),
    "r1_topk_k2_d256_seed1": (True, {"architecture": "topk", "k": 2, "d_sae": 256, "seed": 1}),
    # initialisation: the first rows of the decoder (and columns of the encoder) the unit class-mean directions of the
    # bridge values on the fit prefixes (a supervised dictionary to start from), the rest SAELens's own init
    "r1_topk_k2_d256_init_classmeans": (True, {"architecture": "topk", "k": 2, "d_sae": 256, "init": "classmeans"}),
    "r1_topk_k4_d128_init_classmeans": (True, {"architecture": "topk", "k": 4, "d_sae": 128, "init": "classmeans"}),
    "r1_topk_k16_d1024_init_classmeans": (True, {"architecture": "topk", "k": 16, "d_sae": 1024, "init": "classmeans"}),
}
COUNTS = (1, 4, 16, 64)
CHOOSE_N = 4  # the control score a variant is chosen by: its top-4 switch rate on the fit-valid pairs


def _with_init(make, dirs: torch.Tensor | None):
    """train-sae's SAE constructor, with the first len(dirs) decoder rows (encoder columns) set to `dirs` when given."""

    def build(*a, **kw):
        sae = make(*a, **kw)
        if dirs is not None:
            n = min(len(dirs), sae.W_dec.shape[0])
            with torch.no_grad():
                sae.W_dec[:n] = dirs[:n]
                sae.W_enc[:, :n] = dirs[:n].T
        return sae

    return build


def control_scores(model, ctx, sae, X: torch.Tensor, hook: str) -> dict:
    """Top-n exchange switch rates (n in COUNTS) and the whole-code swap, on the fit-valid and held-out pairs."""
    fit = ctx.p_group == FIT
    with torch.no_grad():
        F = sae.encode(X).float()
    mu_f, _ = class_means(F[fit], ctx.p_bridge[fit], ctx.facts.n_entities)
    out = {}
    for g, tag in ((VALID, "valid"), (HELD, "held")):
        S = scored(ctx, ctx.pairs[g], X)
        P = ctx.pairs[g]
        with torch.no_grad():
            f, fd = sae.encode(S.x).float(), sae.encode(S.xd).float()
            for n in COUNTS:
                d = exchanged(sae, f, fd, top_feature_mask(mu_f, P.b, P.b2, n)).detach()
                out[f"{tag}_top{n}"] = switch_only(model, S, hook, ctx.pos, d, ctx.cfg.batch_size)
            out[f"{tag}_code_swap"] = switch_only(model, S, hook, ctx.pos, decode_delta(sae, f, fd).detach(), ctx.cfg.batch_size)
            out[f"{tag}_resid_patch"] = switch_only(model, S, hook, ctx.pos, S.xd - S.x, ctx.cfg.batch_size)
        out[f"n_{tag}"] = len(S)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--hook", default="blocks.2.hook_resid_pre")
    ap.add_argument("--tokens", type=int, default=400_000, help="training tokens per SAE (train-sae's default is 2M)")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = RunDir.open(args.run)
    out = Path(args.out)
    ds, vocab = load_task(run.data_dir)
    cache = ActivationCache(run.activations_dir, expected_model_hash=model_hash(run.model_dir))
    tok = cache.tokens()
    pos = vocab.layout.index("r1")
    held_rows = heldout_from_disk(run.saes_dir, cache)
    setup = control_setup(ds, vocab, run.cfg.task, run.cfg.causal, heldout_prefixes(run, pos), run.cfg.causal.das_steps,
                          10**9, keep_valid=True)
    model = load_model(run.model_dir, "cpu").eval()
    ctx = dataclasses.replace(setup.ctx, model=model)
    ctx.clean = read_batched(model, ctx.q_tok, ctx.q_pos, ctx.facts.answer_len, ctx.cfg.batch_size)
    X = residuals(model, setup.p_tok, [args.hook], ctx.cfg.batch_size)[args.hook][:, pos]
    fit = ctx.p_group == FIT
    mu, has = class_means(X[fit], ctx.p_bridge[fit], ctx.facts.n_entities)
    dirs = mu[has] - mu[has].mean(0)
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp(min=1e-12)
    rows = {}
    own = load_saes(run.saes_dir, "cpu", [args.hook])[args.hook]
    rows["run's own SAE (2M tokens, every position)"] = {"seconds": None, **control_scores(model, ctx, own, X, args.hook)}
    for name, (per_position, over) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        over = dict(over)
        init = over.pop("init", None)
        p = dataclasses.replace(run.cfg.sae, training_tokens=args.tokens, n_checkpoints=0, **over)
        trainer.training_sae = _with_init(architectures.training_sae, dirs if init == "classmeans" else None)
        mask = ~held_rows & ((tok["role"] == pos) if per_position else torch.ones_like(held_rows))
        evr = distinct_rows(tok, held_rows & ((tok["role"] == pos) if per_position else torch.ones_like(held_rows)))
        t = time.time()
        if finished_metrics(out / name, settings_hash(p, args.hook, cache)) is None:  # the name fixes rows and init
            train_sae(cache, args.hook, out / name, p, rows_mask=mask, eval_rows=evr, plot=False)
        secs = time.time() - t
        from sae_lens import SAE

        sae = SAE.load_from_disk(str(out / name), device="cpu")
        m = json.loads((out / name / "metrics.json").read_text())
        rows[name] = {"seconds": round(secs, 1), "explained_variance": m["reconstruction"].get("explained_variance"),
                      "l0": m["reconstruction"].get("l0"),
                      **control_scores(model, ctx, sae, X, args.hook)}
        print(name, json.dumps(rows[name]), flush=True)
    # references on the same held-out pairs: the supervised dictionary (class-mean edit and its top-r principal projections,
    # fitted on the fit prefixes) and DAS of rank 4 and 16 (`sae-ooc dynamics`' per-checkpoint fit: the variables stage's)
    S = scored(ctx, ctx.pairs[HELD], X)
    P = ctx.pairs[HELD]
    U, _ = principal_directions(mu, has)
    edit = mu[P.b2] - mu[P.b]
    refs = {"supervised (class-mean edit)": switch_only(model, S, args.hook, pos, edit, ctx.cfg.batch_size)}
    for r in (4, 16):
        refs[f"supervised rank {r}"] = switch_only(model, S, args.hook, pos, projected(edit, U[:r]), ctx.cfg.batch_size)
        refs[f"DAS rank {r}"] = bridge_control(model, setup, [args.hook], r, 1)[args.hook]["das"]
    rows["references"] = refs
    (out / "sae_search.json").write_text(json.dumps(rows, indent=1))
    rows.pop("references")
    ranked = [n for n in rows if rows[n]["seconds"] is not None]
    chosen = max(ranked, key=lambda n: rows[n][f"valid_top{CHOOSE_N}"] or 0) if ranked else None
    print(f"\n| variant | EV (held-out prefixes) | L0 | fit-valid top-{CHOOSE_N} | held-out top-1 / 4 / 16 / 64 | held-out code swap | held-out resid patch |")
    print("|---|---|---|---|---|---|---|")
    for n, r in rows.items():
        star = " **(chosen)**" if n == chosen else ""
        ev, l0 = r.get("explained_variance"), r.get("l0")
        print(f"| {n}{star} | {'' if ev is None else f'{ev:.3f}'} | {'' if l0 is None else f'{l0:.1f}'} | {r[f'valid_top{CHOOSE_N}']:.3f} | " + " / ".join(f"{r[f'held_top{c}']:.3f}" for c in COUNTS)
              + f" | {r['held_code_swap']:.3f} | {r['held_resid_patch']:.3f} |")
    print("\nOn the same held-out pairs: " + ", ".join(f"{k} {v:.3f}" for k, v in refs.items()))
    vpath = run.variables_dir / "variables.json"
    if vpath.exists():
        from sae_ooc.causal.result import VariablesResult

        vr = VariablesResult.load(run.variables_dir).row("bridge", "r1", args.hook)
        if vr is not None:
            print(f"\nRUN/variables (its own held-out pairs: only questions the model answers): "
                  + ", ".join(f"{u} {vr.switch(u):.3f}" for u in ("resid_patch", "top16_features", "supervised", "supervised_rank16",
                                                                  "das_rank8", "das_rank16") if vr.switch(u) is not None))
    print(f"\nchosen on fit-valid top-{CHOOSE_N}: {chosen}; {len(ctx.pairs[VALID])} fit-valid pairs, {len(ctx.pairs[HELD])} held-out pairs")


if __name__ == "__main__":
    main()
