"""The noise hypernetwork f_phi: the protocol shared by the LoRA and MLP variants.

Shape contract:

    hypernet(noise [B, *latent_shape], cond) -> delta [B, *latent_shape]
    modulated noise x0_hat = noise + delta; f_phi = 0 at initialisation.

The map from x0 to x0_hat is T(x) = x + f_phi(x, c) applied ``passes`` times (K, default 1: the
paper's map, one forward of f_phi). K > 1 composes the map with itself,
x_{k+1} = x_k + f_phi(x_k, c); ``displacement`` is the total x_K - x_0, which the noise-space
objective charges, and each pass costs one more network evaluation.

``adapters_disabled()`` is the context in which the frozen generator g runs: for the LoRA
variant it switches the backbone's adapters off (g and f_phi share one copy of the weights),
for the MLP variant it does nothing. The inverse arrangement, for a pipeline the user calls
(``hypernoise.attach``): ``park()`` leaves g in the backbone, ``applied()`` is f_phi. ``merged()`` is an opt-in inference mode in which a pass of
f_phi costs one plain forward of its network (the LoRA variant keeps merged weights meanwhile).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import torch
from torch import nn

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Conditioning


#: the most passes K: each pass is one more forward of f_phi (for LoRA, of the whole backbone), so
#: K = 64 already costs 64 backbone forwards per image on top of g (the paper uses K = 1); a larger
#: K would look like a hang rather than a setting
MAX_PASSES = 64


def check_passes(passes, field: str = "passes") -> int:
    """``passes`` as an int K in [1, ``MAX_PASSES``] (K = 1 is the paper's HyperNoise);
    ``ConfigError`` otherwise."""
    if (isinstance(passes, bool) or not isinstance(passes, (int, float)) or not math.isfinite(passes)
            or int(passes) != passes or passes < 1):
        raise ConfigError(f"`{field}` must be a positive integer (times the hypernetwork's map is applied), "
                          f"got {passes}", field=field)
    if passes > MAX_PASSES:
        raise ConfigError(f"`{field}` must be at most {MAX_PASSES} (each pass is one more forward of the "
                          f"hypernetwork), got {passes}", field=field)
    return int(passes)


class NoiseHypernetwork(nn.Module):
    """Base class: ``forward(noise, cond) -> delta`` with ``delta.shape == noise.shape``."""

    #: "lora" or "mlp", recorded in hypernoise.json
    kind: str = "hypernetwork"

    def __init__(self, passes: int = 1):
        super().__init__()
        self._passes = check_passes(passes)

    @property
    def passes(self) -> int:
        """K, times the map x <- x + f_phi(x, c) is applied by default (fixed at construction,
        recorded in hypernoise.json; ``displacement``/``modulate`` take a per-call K)."""
        return self._passes

    def forward(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def displacement(self, noise: torch.Tensor, cond: Conditioning, passes: Optional[int] = None) -> torch.Tensor:
        """x0_hat - x0 [B, *latent_shape] after K = ``passes`` (default: ``self.passes``) passes;
        exactly f_phi(x0, c) for K = 1."""
        delta = self(noise, cond)
        for _ in range((self.passes if passes is None else check_passes(passes)) - 1):
            delta = delta + self(noise + delta.to(noise.dtype), cond)
        return delta

    def modulate(self, noise: torch.Tensor, cond: Conditioning, passes: Optional[int] = None) -> torch.Tensor:
        """x0_hat = x0 + f_phi(x0, c), or its K-fold composition."""
        return noise + self.displacement(noise, cond, passes).to(noise.dtype)

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """Run the frozen generator inside this context."""
        yield

    def park(self) -> None:
        """Leave the frozen g in the backbone outside any context, until ``applied()`` (for a
        user's pipeline, ``hypernoise.attach``); nothing to do for variants without a backbone."""

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """f_phi exactly as trained inside the context, whatever the backbone holds outside it
        (after ``park``, and a user's LoRA loaded onto g, which f_phi does not see)."""
        yield

    @contextlib.contextmanager
    def merged(self) -> Iterator["NoiseHypernetwork"]:
        """Inference mode in which a pass of f_phi costs what its plain network costs (the LoRA
        variant merges its adapters into a copy of the adapted layers); outputs are unchanged up to
        rounding. A no-op for variants that have nothing to merge."""
        yield self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The weights the optimizer updates (fp32)."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained weights, keyed as they are saved."""
        return {k: v for k, v in self.named_parameters() if v.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``trainable_state_dict``; raises ``KeyError`` on any mismatch."""
        own = dict(self.named_parameters())
        missing = sorted(set(k for k, v in own.items() if v.requires_grad) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)

    def reinitialize(self, seed: int) -> None:
        """Draw a fresh initialisation of the trainable weights from ``seed`` (f_phi = 0 again);
        the global random state is left as it was."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-draw its initialisation")

    def config(self) -> dict:
        """Settings recorded in hypernoise.json so that the hypernetwork can be rebuilt."""
        return {"type": self.kind, "passes": self.passes}
