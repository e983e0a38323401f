"""Lipschitz diagnostic of the hypernetwork (METHOD.md, Theorem 1).

The L2 objective drops E(A) = tr A - log|det(I + A)| with A = J_f. If f is L-Lipschitz with
L < 1, |E(A)| <= d (-log(1 - L) - L) ~ d L^2 / 2, and T = id + f is invertible (Lemma 5). The
paper assumes L < 1 and never checks it; ``spectral_norm`` estimates ||J_f(x0)||_2 per sample by
power iteration on J^T J with Jacobian-vector products, a lower bound on the local Lipschitz
constant at x0.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def _jvp(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor):
    """(f(x), J v, J^T u -> ...) via the double-backward trick: works for any autograd module."""
    x = x.detach().requires_grad_(True)
    y = fn(x)
    u = torch.zeros_like(y, requires_grad=True)
    (vjp,) = torch.autograd.grad(y, x, u, create_graph=True)  # J^T u, linear in u
    (jv,) = torch.autograd.grad(vjp, u, v)
    return y, jv, x


def spectral_norm(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iters: int = 8,
                  seed: int = 0) -> torch.Tensor:
    """Per-sample estimate of ||J_fn(x[b])||_2, shape [B].

    ``fn`` maps [B, *shape] -> [B, *shape] with samples independent (so J is block-diagonal
    and the power iteration runs for all samples at once). Costs ``iters`` JVP + VJP pairs.
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape, generator=g, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    v = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    sigma = torch.zeros(x.shape[0], device=x.device)
    for _ in range(max(1, iters)):
        y, jv, xg = _jvp(fn, x, v)
        (jtjv,) = torch.autograd.grad(y, xg, jv)  # J^T (J v)
        sigma = jv.flatten(1).norm(dim=1)
        norm = jtjv.flatten(1).norm(dim=1).clamp_min(1e-12)
        v = (jtjv / norm.view(-1, *[1] * (x.dim() - 1))).detach()
    return sigma.detach().float()


def theorem1_bound(lipschitz: float, dim: int) -> float:
    """Upper bound d (-log(1 - L) - L) on |tr A - log|det(I + A)||; inf when L >= 1."""
    if lipschitz >= 1.0:
        return math.inf
    return dim * (-math.log1p(-lipschitz) - lipschitz)
