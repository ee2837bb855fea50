"""Accuracy and answer cross-entropy of a model on a task split (used by training, SAE evaluation and reports)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sae_ooc.tasks.data import SplitTensors

EVAL_SEED = 12345  # the periodic-eval subsample is the same for every run of a split


def answer_logits(model, tokens: torch.Tensor, answer_pos: torch.Tensor) -> torch.Tensor:
    """Logits at each example's answer position: [n, d_vocab]."""
    logits = model(tokens, return_type="logits")
    return logits[torch.arange(tokens.shape[0], device=tokens.device), answer_pos]


def answer_token_logits(logits: torch.Tensor, answer_pos: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Logits predicting each of an answer's `n_tokens` tokens (teacher forcing: token j at answer_pos + j):
    [n, n_tokens, d_vocab]. Positions past the sequence (padding of a shorter answer) read its last position."""
    idx = (answer_pos[:, None] + torch.arange(n_tokens, device=logits.device)).clamp(max=logits.shape[1] - 1)
    return logits[torch.arange(logits.shape[0], device=logits.device)[:, None], idx]


def answer_scores(logits: torch.Tensor, answer_pos: torch.Tensor, answer_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of the whole answer [n], whether greedy decoding produces it [n]) from teacher-forced logits:
    the sum over the answer's tokens, and every token the argmax given the ones before (= greedy exact match)."""
    lg = answer_token_logits(logits, answer_pos, answer_ids.shape[1]).float()
    valid = answer_ids >= 0
    target = answer_ids.clamp(min=0)
    lp = F.log_softmax(lg, dim=-1).gather(-1, target[..., None])[..., 0]
    hit = (lg.argmax(-1) == target) | ~valid
    return (lp * valid).sum(-1), hit.all(-1)


LOGIT_BUDGET = 1 << 27  # logits held at once (512 MB in float32): a 50k-token vocabulary must not get 8192-row batches


def logit_batch(batch_size: int, seq_len: int, d_vocab: int) -> int:
    """`batch_size`, lowered so that one batch's logits [batch, seq_len, d_vocab] fit LOGIT_BUDGET."""
    return max(1, min(batch_size, LOGIT_BUDGET // max(seq_len * d_vocab, 1)))


def eval_indices(n: int, max_examples: int | None, seed: int = EVAL_SEED) -> torch.Tensor | None:
    """A fixed subsample of a split (None = all of it), independent of the run's seeds."""
    if max_examples is None or max_examples <= 0 or n <= max_examples:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:max_examples].sort().values


@torch.no_grad()
def evaluate(model, st: SplitTensors, max_examples: int | None = None, batch_size: int = 8192, device: str | None = None) -> dict:
    """Accuracy and mean cross-entropy of `model` on a split (subsampled deterministically to `max_examples`)."""
    idx = eval_indices(len(st), max_examples)
    if idx is not None:
        st = st.subset(idx)
    n = len(st)
    if n == 0:
        return {"acc": float("nan"), "loss": float("nan"), "n": 0}
    device = device or str(next(model.parameters()).device)
    batch_size = logit_batch(batch_size, st.tokens.shape[1], model.cfg.d_vocab_out)
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        tokens, pos, ans = st.tokens[sl].to(device), st.answer_pos[sl].to(device), st.answer[sl].to(device)
        if st.multi_token:  # the answer's summed log-probability; correct = greedy decoding gives every token
            lp, hit = answer_scores(model(tokens, return_type="logits"), pos, st.answer_ids[sl].to(device))
            correct += int(hit.sum())
            loss_sum += float(-lp.sum())
            continue
        logits = answer_logits(model, tokens, pos).float()
        correct += int((logits.argmax(-1) == ans).sum())
        loss_sum += float(F.cross_entropy(logits, ans, reduction="sum"))
    model.train(was_training)
    return {"acc": correct / n, "loss": loss_sum / n, "n": n}


def evaluate_splits(model, tensors: dict[str, SplitTensors], max_examples: int | None = None, device: str | None = None) -> dict:
    """`{<split>_acc, <split>_loss}` for every split in `tensors`."""
    out = {}
    for split, st in tensors.items():
        r = evaluate(model, st, max_examples=max_examples, device=device)
        out[f"{split}_acc"] = r["acc"]
        out[f"{split}_loss"] = r["loss"]
    return out
