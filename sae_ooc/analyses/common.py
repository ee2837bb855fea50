"""What every analysis shares: the prompt sample, batched hooked forwards, and small tensor summaries."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_ooc.circuits.pairs import Pairs, make_pairs
from sae_ooc.tasks.layout import TOY_LAYOUT, Layout

ANSWER_POS = TOY_LAYOUT.answer_pos  # the toy's two-hop prompt (h, r1, r2) is read at r2; every analysis reads its layout's
SPLIT = "test_id"  # held out of training and of every choice: only reported


@dataclass
class Sample:
    """The prompts an analysis averages over: clean test_id prompts with their corrupted partners (`circuits.pairs`)."""

    pairs: Pairs
    split: str
    names: list[str]  # vocabulary, for labels
    layout: Layout = TOY_LAYOUT  # where the roles of the prompts are

    @property
    def n(self) -> int:
        return len(self.pairs)

    def describe(self) -> str:
        return f"{self.n} held-out {self.split} prompts"


def sample_prompts(ds, vocab, n: int, seed: int, split: str = SPLIT) -> Sample:
    """A seeded sample of up to `n` two-hop prompts of `split`, each with a corrupted partner (h', r1, r2) whose bridge
    and answer differ (the contrast of every patching analysis). The analyses read answers off one position's logits,
    so a multi-token answer is represented by its first token (`make_pairs(first_token=True)`)."""
    return Sample(make_pairs(ds, vocab, split, n, seed, first_token=True), split, list(vocab.names), vocab.layout)


def roles(layout: Layout = TOY_LAYOUT) -> list[str]:
    return list(layout.position_names)


@torch.no_grad()
def run_hooked(model, x: torch.Tensor, hooks: list, batch_size: int, start: int | None = None) -> torch.Tensor:
    """Logits of `model` on `x` with `hooks` [(name, fn(act, hook, rows))], in batches of rows: `fn` gets the slice of
    rows of the batch, so a hook can patch a different site in each block of rows. With `start`, `x` is the residual
    stream entering block `start` (TransformerLens's `start_at_layer`): a patch at layer l need not recompute the
    layers below it, which are the same in every patched row."""
    out = []
    device = next(model.parameters()).device
    for s in range(0, len(x), batch_size):
        rows = slice(s, min(s + batch_size, len(x)))
        fwd = [(name, (lambda act, hook, fn=fn, rows=rows: fn(act, hook, rows))) for name, fn in hooks]
        out.append(model.run_with_hooks(x[rows].to(device), fwd_hooks=fwd, start_at_layer=start).float().cpu())
    return torch.cat(out)


def answer_prob_rank(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability and rank (0 = top) of `target` in `logits` [..., vocab]; `target` broadcasts over the leading dims."""
    lg = logits.float()
    t = target.expand(lg.shape[:-1]).unsqueeze(-1)
    chosen = lg.gather(-1, t)
    prob = torch.softmax(lg, -1).gather(-1, t).squeeze(-1)
    rank = (lg > chosen).sum(-1)
    return prob, rank


def share(x: torch.Tensor) -> float:
    return float(x.double().mean()) if x.numel() else float("nan")


def normalise(m: torch.Tensor, clean: float, corrupt: float, eps: float = 1e-9) -> torch.Tensor:
    """(m - corrupt) / (clean - corrupt): 1 = the clean metric recovered, 0 = still the corrupted one (NaN when the
    two differ by `eps` or less)."""
    gap = clean - corrupt
    return (m - corrupt) / gap if abs(gap) > eps else torch.full_like(m, float("nan"))
