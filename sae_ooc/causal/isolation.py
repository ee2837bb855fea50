"""Isolation (RAVEL's, Huang et al. 2024): an intervention on the bridge at r1 should leave what the question says about other
variables unchanged. Here: r2's identity as read at the answer position of the last layer, by a linear probe fitted on
clean fit-prefix questions; the isolation score of a unit is the share of held-out pairs on which the probe still reads the
base question's r2 after the unit is interchanged (beside the probe's clean accuracy on the same questions)."""

from __future__ import annotations

import torch

from sae_ooc.interventions.steering import delta_hooks
from sae_ooc.saes.probes import train_probes


@torch.no_grad()
def read_state(model, tokens: torch.Tensor, answer_pos: torch.Tensor, hook: str, pos: int, delta: torch.Tensor | None,
               read_hook: str, batch: int) -> torch.Tensor:
    """[n, d] the activation at `read_hook`, answer position, with delta[i] added at (hook, pos) of row i."""
    out = []
    for s in range(0, len(tokens), batch):
        sl = slice(s, s + batch)
        got = {}
        hooks = delta_hooks(hook, pos, delta)(sl)
        hooks.append((read_hook, lambda x, hook=None: got.__setitem__("x", x.detach())))
        tok = tokens[sl].to(model.cfg.device)
        model.run_with_hooks(tok, fwd_hooks=hooks, return_type=None)
        out.append(got["x"][torch.arange(len(tok)), answer_pos[sl].to(tok.device)].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.cfg.d_model)


def fit_reader(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int):
    """A linear probe of the class y from x (sae_ooc.saes.probes); returns x -> predicted class."""
    classes = torch.unique(y)
    probe = train_probes(x, {"y": (torch.ones(len(y), dtype=torch.bool), torch.searchsorted(classes, y), len(classes))},
                         steps, 0.05, 0.0, seed)["y"]
    return lambda z: classes[probe(z).argmax(-1)]
