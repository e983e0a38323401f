"""A standalone MLP noise hypernetwork, for generators with no backbone to reuse."""

from __future__ import annotations

import math

import torch
from torch import nn

from hypernoise.generators.base import Conditioning
from hypernoise.hypernet.base import NoiseHypernetwork


class MLPHypernetwork(NoiseHypernetwork):
    """f_phi(x0) = MLP(flatten(x0)), reshaped back; unconditional.

    The last layer starts at zero, so f_phi = 0 exactly at initialisation.
    Shapes: noise [B, *latent_shape] -> delta [B, *latent_shape].
    """

    kind = "mlp"

    def __init__(self, latent_shape: tuple, hidden: int = 128, depth: int = 3, passes: int = 1):
        super().__init__(passes)
        self.latent_shape = tuple(latent_shape)
        self.hidden, self.depth = hidden, depth
        dim = math.prod(self.latent_shape)
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def reinitialize(self, seed: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        h = self.net(noise.flatten(1).to(self.out.weight.dtype))
        return self.out(h).view_as(noise)

    def config(self) -> dict:
        return {**super().config(), "hidden": self.hidden, "depth": self.depth}
