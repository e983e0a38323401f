"""The reward r: the protocol every reward model implements.

Shape contract:

    reward(samples, prompts: list[str]) -> scores [B], higher is better
        samples: images [B, 3, H, W] in [0, 1] (image rewards) or points [B, D] (toy rewards)

Scores are differentiable with respect to the samples. A reward's own weights are frozen and it
stays in eval mode.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Reward(nn.Module):
    """Base class of a differentiable reward. Subclasses implement ``forward``."""

    #: registry name, used in specs and logs
    name: str = "reward"
    #: "image" or "points": which generator outputs it scores
    input_kind: str = "image"

    def forward(self, samples: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def freeze(self) -> "Reward":
        self.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> "Reward":
        return super().train(False)  # frozen reward models never leave eval mode


class WeightedReward(nn.Module):
    """r = sum_i w_i r_i. ``forward`` returns the total [B]; ``terms`` the parts, for logging.

    The total is computed once per call; ``last_terms`` holds each reward's mean score of the
    latest call (detached floats), so trainers can log every term without a second pass.
    """

    def __init__(self, rewards: Sequence[Reward], weights: Sequence[float]):
        super().__init__()
        if len(rewards) != len(weights) or not rewards:
            raise ValueError("a weighted reward needs one weight per reward and at least one reward")
        self.rewards = nn.ModuleList(rewards)
        self.weights = [float(w) for w in weights]
        self.last_terms: dict[str, float] = {}
        kinds = {r.input_kind for r in rewards}
        self.input_kind = kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def spec(self) -> str:
        return ",".join(f"{r.name}:{w:g}" for r, w in zip(self.rewards, self.weights))

    def terms(self, samples: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Each reward's unweighted scores [B], by name."""
        return {r.name: r(samples, prompts) for r in self.rewards}

    def forward(self, samples: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        total = None
        self.last_terms = {}
        for reward, weight in zip(self.rewards, self.weights):
            scores = reward(samples, prompts)
            self.last_terms[reward.name] = float(scores.detach().float().mean())
            total = weight * scores if total is None else total + weight * scores
        return total

    def train(self, mode: bool = True) -> "WeightedReward":
        return super().train(False)
