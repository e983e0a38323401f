"""What the trainer trains: a module whose forward maps (noise, prompts) to loss terms.

The methods implement it (``methods.hypernoise.HyperNoiseTask``: images = g(x0 + f_phi(x0, c), c),
loss from the noise-space objective; ``methods.finetune.FineTuneTask``: a LoRA on g itself). The
trainer knows nothing else about them.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class TrainTask(nn.Module):
    """Protocol: ``forward(noise [B, *latent_shape], prompts) -> {"loss": scalar, ...}``."""

    latent_shape: tuple
    #: dtype of the initial noise fed to ``forward`` (the frozen generator's)
    noise_dtype: torch.dtype = torch.float32
    #: what the run saves as ``adapter/``: a module with ``trainable_state_dict()`` and ``config()``
    adapter: nn.Module
    #: the frozen generator the adapter belongs to
    generator: nn.Module

    def trainable_parameters(self) -> list[nn.Parameter]:  # pragma: no cover
        raise NotImplementedError

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError

    def diagnostics(self, noise: torch.Tensor, prompts: Sequence[str], iters: int) -> dict[str, float]:
        return {}

    def set_step(self, step: int) -> None:
        """Told by the trainer before each optimizer step (0-based), for step-dependent losses."""

    def reinitialize(self, seed: int) -> None:  # pragma: no cover
        """Draw a fresh initialisation of the trainable weights from ``seed`` (for init trials)."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-draw its initialisation")

    def enable_gradient_checkpointing(self) -> None:
        """Trade compute for memory in the backbone; tasks without one ignore it."""

    def run_settings(self, cfg) -> dict:
        """The settings recorded in the adapter's hypernoise.json (``cfg``: the run's config)."""
        return {}
