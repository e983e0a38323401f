"""Pixel rewards: no model, no weights."""

from __future__ import annotations

from typing import Sequence

import torch

from hypernoise.rewards.base import Reward
from hypernoise.rewards.registry import REWARDS


class Redness(Reward):
    """The paper's redness r(x) = R - (G + B) / 2 per pixel, averaged over pixels.

    Images in [0, 1], so scores lie in [-1, 1]: 1 for pure red, 0 for any grey, -1 for cyan.
    """

    name = "redness"

    def forward(self, samples: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        r, g, b = samples[:, 0], samples[:, 1], samples[:, 2]
        return (r - 0.5 * (g + b)).flatten(1).mean(1)


@REWARDS.register("redness", help="R - (G+B)/2 averaged over pixels, in [-1, 1]; no weights")
def build_redness(**_) -> Redness:
    return Redness()
