"""The analytic 2-D world: noise x0 in R^2 and a fixed smooth bijection-like map

    g(x) = ( x1 + 0.8 sin(1.5 x2),  x2 + 0.8 sin(1.5 x1) )

small enough that the tilted noise distribution p0* can be computed exactly (METHOD.md).
"""

from __future__ import annotations

from typing import Optional

import torch

from hypernoise.generators.base import Conditioning, Generator, RngLike, check_fixed_size
from hypernoise.generators.registry import GENERATORS

AMPLITUDE = 0.8
FREQUENCY = 1.5


def toy2d_map(x: torch.Tensor) -> torch.Tensor:
    """g(x) for points [B, 2] -> [B, 2]."""
    x1, x2 = x[..., 0], x[..., 1]
    return torch.stack([x1 + AMPLITUDE * torch.sin(FREQUENCY * x2), x2 + AMPLITUDE * torch.sin(FREQUENCY * x1)], -1)


class Toy2DGenerator(Generator):
    """g: R^2 -> R^2 with no prompt conditioning and no backbone (use the MLP hypernetwork)."""

    name = "toy2d"
    latent_shape = (2,)
    output_kind = "points"
    default_steps = 1
    default_reward = "halfplane"

    def default_prompts(self, split: str = "train") -> list[str]:
        return [""]  # unconditional

    def __init__(self, device: Optional[str] = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        # A buffer only to carry device and dtype; g itself has no weights.
        self.register_buffer("_anchor", torch.zeros((), dtype=dtype, device=device), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    def generate(self, noise: torch.Tensor, cond: Conditioning, num_steps: Optional[int] = None,
                 rng: RngLike = None) -> torch.Tensor:
        """g(noise); deterministic, so ``num_steps`` and ``rng`` are ignored."""
        return toy2d_map(noise)


@GENERATORS.register("toy2d", help="analytic 2-D map g(x) = x + 0.8 sin(1.5 x_swapped); no weights")
def build_toy2d(device: Optional[str] = None, dtype: Optional[torch.dtype] = None, height: Optional[int] = None,
                width: Optional[int] = None, **_) -> Toy2DGenerator:
    check_fixed_size("toy2d", None, height, width)  # points, not images: a size is refused, not ignored
    return Toy2DGenerator(device=device, dtype=dtype or torch.float32)
