"""Batched evaluation of the steer and edit stages against per-prompt loops, side by side in one process.

    python benchmarks/bench_interventions.py --run runs/default     # a run with data and a trained model

Editing: the prompts of `--edits` edits at one layer (efficacy, propagation, specificity rows) evaluated
(a) all edits in one batched forward, each row with its own rank-one edit as a hook (what the edit stage does),
(b) one forward per edit with the edit written into W_out and restored (`rome.applied`),
(c) one forward per prompt with the edit written into W_out (the per-prompt loop).
Steering: one residual delta per prompt on `--prompts` two-hop prompts, (a) batched vs (c) one forward per prompt.
Prints seconds (best of `--repeats`), the speed-ups against the per-prompt loop, and the largest logit difference
between the ways (they compute the same thing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_ooc.interventions.editing import build_eval_set, choose_edits, edited_logits  # noqa: E402
from sae_ooc.interventions.facts import Facts, answer_logits  # noqa: E402
from sae_ooc.interventions.rome import RankOneEdits, applied  # noqa: E402
from sae_ooc.interventions.steering import logits_with_delta  # noqa: E402
from sae_ooc.models.hooked import load_model  # noqa: E402
from sae_ooc.rundir import RunDir  # noqa: E402
from sae_ooc.tasks.data import load_task, split_tensors  # noqa: E402


def best(fn, repeats: int):
    out, times = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "default")
    ap.add_argument("--edits", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = RunDir.open(args.run)
    ds, vocab = load_task(run.data_dir)
    facts = Facts.from_dataset(ds, vocab, run.cfg.task.family)
    model = load_model(run.model_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    L = min(args.layer, model.cfg.n_layers - 1)
    edits = choose_edits(facts, model, args.edits, 0)
    es = build_eval_set(facts, model, edits, run.cfg.edit.specificity_prompts, 0)
    g = torch.Generator().manual_seed(0)
    ed = RankOneEdits(L, torch.randn(len(edits), model.cfg.d_mlp, generator=g) * 0.01, torch.randn(len(edits), model.cfg.d_model, generator=g))

    def per_edit():
        out = torch.empty(len(es.tokens), model.cfg.d_vocab_out)
        for e in range(len(edits)):
            rows = es.edit == e
            with applied(model, ed, e):
                out[rows] = answer_logits(model, es.tokens[rows], es.answer_pos[rows])
        return out

    def per_prompt():
        out = torch.empty(len(es.tokens), model.cfg.d_vocab_out)
        for e in range(len(edits)):
            with applied(model, ed, e):
                for i in (es.edit == e).nonzero().squeeze(1).tolist():
                    out[i] = answer_logits(model, es.tokens[i : i + 1], es.answer_pos[i : i + 1])[0]
        return out

    a, ta = best(lambda: edited_logits(model, es, ed), args.repeats)
    b, tb = best(per_edit, args.repeats)
    c, tc = best(per_prompt, 1)
    print(f"editing: {len(edits)} edits at layer {L}, {len(es.tokens)} prompts ({len(es.tokens) / len(edits):.0f} per edit), "
          f"model {model.cfg.n_layers} layers d_model {model.cfg.d_model}, 1 thread")
    print(f"  all edits batched (hooks)      {ta:8.3f} s   x{tc / ta:7.1f} vs per-prompt loop")
    print(f"  one forward per edit (weights) {tb:8.3f} s   x{tc / tb:7.1f} vs per-prompt loop")
    print(f"  per-prompt loop (weights)      {tc:8.3f} s")
    print(f"  max |logit difference|: batched vs per-edit {float((a - b).abs().max()):.2e}, per-edit vs per-prompt {float((b - c).abs().max()):.2e}")

    st = split_tensors(ds["test_id"], vocab)
    st = st.subset(torch.arange(min(args.prompts, len(st))))
    hook = "blocks.1.hook_resid_pre"
    delta = torch.randn(len(st), model.cfg.d_model, generator=g)
    a, ta = best(lambda: logits_with_delta(model, st.tokens, st.answer_pos, hook, 1, delta), args.repeats)
    c, tc = best(lambda: torch.cat([logits_with_delta(model, st.tokens[i : i + 1], st.answer_pos[i : i + 1], hook, 1, delta[i : i + 1])
                                    for i in range(len(st))]), 1)
    print(f"steering: {len(st)} prompts, one residual delta each at {hook}@r1")
    print(f"  batched                        {ta:8.3f} s   x{tc / ta:7.1f} vs per-prompt loop")
    print(f"  per-prompt loop                {tc:8.3f} s")
    print(f"  max |logit difference| {float((a - c).abs().max()):.2e}")


if __name__ == "__main__":
    main()
