"""Necessity: erase a unit at (hook, r1) and see whether the two-hop answer, and a probe refitted on the erased stream, survive.

Erasers, each fit on the fit prefixes only:
- LEACE (Belrose et al. 2023, the `concept-erasure` package's `LeaceEraser`): the least-squares-optimal erasure of a
  concept's linear information. Erasing the one-hot bridge removes up to min(d, classes - 1) directions; `leace_rank<r>`
  erases the bridge's coordinates on the top-r principal directions of the class means, a concept of r dimensions, so at
  most r directions go (a unit of the same size as the others);
- mean projection: the component of x - mean on a subspace's span replaced by nothing (x - U^T U (x - mean));
- the same mean projection on a random subspace of the same rank (the reference below).
"""

from __future__ import annotations

import torch

from sae_ooc.saes.probes import train_probes


def leace(x_fit: torch.Tensor, z_fit: torch.Tensor):
    """`concept_erasure.LeaceEraser` fit on (x, z): x [n, d], z [n, k] (one-hot classes or a concept's coordinates)."""
    from concept_erasure import LeaceEraser

    return LeaceEraser.fit(x_fit.double(), z_fit.double())


def leace_fn(eraser):
    return lambda x: eraser(x.double()).to(x.dtype)


def mean_projection_fn(U: torch.Tensor, mean: torch.Tensor):
    """x -> x - U^T U (x - mean): the subspace spanned by the rows of U (orthonormal) set to its mean."""
    return lambda x: x - ((x - mean.to(x.dtype)) @ U.T.to(x.dtype)) @ U.to(x.dtype)


def one_hot(labels: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, n).double()


def probe_accuracy(x_fit: torch.Tensor, y_fit: torch.Tensor, x_ev: torch.Tensor, y_ev: torch.Tensor, steps: int, seed: int) -> float | None:
    """A multinomial logistic probe of y refit on (x_fit, y_fit) (sae_ooc.saes.probes), its exact accuracy on (x_ev, y_ev);
    a held-out class the fit never saw counts as wrong."""
    if len(y_ev) == 0 or len(y_fit) == 0:
        return None
    classes = torch.unique(y_fit)
    probe = train_probes(x_fit.float(), {"y": (torch.ones(len(y_fit), dtype=torch.bool), torch.searchsorted(classes, y_fit),
                                                len(classes))}, steps, 0.05, 0.0, seed)["y"]
    pred = classes[probe(x_ev.float()).argmax(-1)]
    return float((pred == y_ev).float().mean())
