"""What the model answers to the prompts of an activation cache: per cache row, its whole prompt, the model's top
answer to it and that answer's probability, and the mean ln_final scale on the task prompts. The feature browser reads
these (it runs no model itself); `describe` divides promoted-token logits by the same scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_ooc.activations.cache import ROLES


def final_scale(model, tokens: torch.Tensor) -> float:
    """Mean ln_final scale on `tokens` (1.0 without a final normalisation)."""
    if "ln_final.hook_scale" not in model.hook_dict:
        return 1.0
    _, cache = model.run_with_cache(tokens[:4096].to(model.cfg.device), names_filter="ln_final.hook_scale")
    return float(cache["ln_final.hook_scale"].mean())


@torch.no_grad()
def row_prompts(tok: dict) -> torch.Tensor:
    """Per cache row: the whole prompt it is a token of, [n_tokens, W] (-1 past its end). A prompt's rows are consecutive
    in the cache, in position order, and its last is the one `is_answer_pos` marks."""
    pos, token = tok["pos"].long(), tok["token"].long()
    n = len(pos)
    if n == 0:
        return torch.zeros(0, len(ROLES), dtype=torch.long)
    start = torch.arange(n) - pos
    last = torch.nonzero(tok["is_answer_pos"] == 1).squeeze(1)
    length = torch.zeros(n, dtype=torch.long)
    length[start[last]] = pos[last] + 1
    length = length[start]  # every row: its prompt's length
    W = max(int(length.max()), len(ROLES))
    j = torch.arange(W)
    idx = (start[:, None] + j).clamp(max=n - 1)
    return torch.where(j[None, :] < length[:, None], token[idx], -1)


def model_answers(model, tok: dict, pad_id: int, batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per cache row: its prompt [n, W] (-1 past the end) and the model's top answer to it and that answer's probability."""
    prompt = row_prompts(tok)
    uniq, inv = torch.unique(prompt, dim=0, return_inverse=True)
    last = (uniq >= 0).sum(1) - 1
    ans, prob = torch.empty(len(uniq), dtype=torch.long), torch.empty(len(uniq))
    for s in range(0, len(uniq), batch):
        u = uniq[s : s + batch]
        logits = model(torch.where(u >= 0, u, pad_id).to(model.cfg.device))  # causal: padding after the end changes nothing
        p = torch.softmax(logits[torch.arange(len(u)), last[s : s + batch].to(logits.device)].float(), -1).cpu()
        prob[s : s + batch], ans[s : s + batch] = p.max(-1)
    return prompt, ans[inv], prob[inv]


@dataclass
class CacheAnswers:
    prompt: torch.Tensor  # [n_tokens, W] each row's prompt (-1 past its end; W: the longest prompt)
    answer: torch.Tensor  # [n_tokens] the model's top answer to the prompt
    prob: torch.Tensor  # [n_tokens] that answer's probability
    scale: float  # mean ln_final scale on the distinct prompts


def cache_answers(model, tok: dict, pad_id: int) -> CacheAnswers:
    """The model's answers to the prompts of the cache whose token table is `tok` (`ActivationCache.tokens()`)."""
    prompt, ans, prob = model_answers(model, tok, pad_id)
    uniq = torch.unique(prompt, dim=0)
    return CacheAnswers(prompt, ans, prob, final_scale(model, torch.where(uniq >= 0, uniq, pad_id)))
