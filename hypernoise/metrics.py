"""Distribution distances between image sets (a leaf module: torch only).

    image_features(images, judge=None) -> features [N, D]
    frechet_distance(a, b)             -> the Fréchet distance between Gaussians fitted to a and b
"""

from __future__ import annotations

from typing import Sequence

import torch


def image_features(images: Sequence[torch.Tensor], judge=None) -> torch.Tensor:
    """Features [N, D] for distribution distances: the judge's where it has them, else the image
    average-pooled to 8x8 (a cheap, model-free feature, 192-d for RGB)."""
    import torch.nn.functional as F

    batch = torch.stack(list(images)).float()
    if judge is not None and hasattr(judge, "features"):
        return judge.features(batch).float()
    return F.adaptive_avg_pool2d(batch, 8).flatten(1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features a [N, D] and b [M, D]."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    # tr sqrt(ca cb) from the eigenvalues of sqrt(ca) cb sqrt(ca) (symmetric PSD)
    va, ua = torch.linalg.eigh(ca)
    root = ua @ torch.diag(va.clamp_min(0).sqrt()) @ ua.T
    cross = torch.linalg.eigvalsh(root @ cb @ root).clamp_min(0).sqrt().sum()
    # >= 0 in exact arithmetic; rounding leaves about -1e-12 for identical sets
    return max(0.0, float((mu_a - mu_b).pow(2).sum() + ca.trace() + cb.trace() - 2 * cross))
