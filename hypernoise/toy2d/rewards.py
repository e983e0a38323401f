"""Rewards of the analytic 2-D world, on points y = g(x0) [B, 2]."""

from __future__ import annotations

from typing import Sequence

import torch

from hypernoise.rewards.base import Reward
from hypernoise.rewards.registry import REWARDS

CORNER = (1.5, 1.5)
RING_RADIUS = 2.0


class _PointReward(Reward):
    input_kind = "points"


class HalfPlane(_PointReward):
    """r(y) = y1."""

    name = "halfplane"

    def forward(self, samples: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return samples[:, 0]


class Ring(_PointReward):
    """r(y) = -(||y|| - 2)^2."""

    name = "ring"

    def forward(self, samples: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return -(samples.norm(dim=1) - RING_RADIUS) ** 2


class Corner(_PointReward):
    """r(y) = -||y - (1.5, 1.5)||^2."""

    name = "corner"

    def forward(self, samples: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        target = samples.new_tensor(CORNER)
        return -((samples - target) ** 2).sum(1)


for _cls in (HalfPlane, Ring, Corner):
    REWARDS.register(_cls.name, help=f"toy2d: {_cls.__doc__.strip()}")(lambda _c=_cls, **_: _c())
