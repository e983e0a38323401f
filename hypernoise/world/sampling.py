"""Euler sampling of the rectified flow (x_0 = noise at t = 0, image at t = 1), with optional
classifier-free guidance. Pixel values live in [-1, 1] inside the flow."""

from __future__ import annotations

import torch

from hypernoise.world.models import ShapesUNet


def velocity(unet: ShapesUNet, x: torch.Tensor, t: torch.Tensor, cond: dict, uncond: dict | None = None,
             guidance: float = 1.0) -> torch.Tensor:
    """v(x, t | c); with ``uncond`` and guidance w: v_u + w (v_c - v_u) in one batched pass."""
    if uncond is None or guidance == 1.0:
        return unet(x, t, cond["tokens"], cond["mask"], cond["pooled"])
    both = {k: torch.cat([cond[k], uncond[k]]) for k in ("tokens", "mask", "pooled")}
    v_c, v_u = unet(torch.cat([x, x]), torch.cat([t, t]), both["tokens"], both["mask"], both["pooled"]).chunk(2)
    return v_u + guidance * (v_c - v_u)


def euler(unet: ShapesUNet, noise: torch.Tensor, cond: dict, steps: int, uncond: dict | None = None,
          guidance: float = 1.0) -> torch.Tensor:
    """Integrate dx/dt = v from t = 0 to 1 in ``steps`` equal steps: noise -> x in [-1, 1] (unclamped)."""
    x = noise
    for i in range(steps):
        t = torch.full((x.shape[0],), i / steps, device=x.device, dtype=x.dtype)
        x = x + velocity(unet, x, t, cond, uncond, guidance) / steps
    return x
