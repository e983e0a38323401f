"""What the trainer trains: a module whose forward maps (noise, prompts) to loss terms.

``HyperNoiseTask`` is the method of the paper: images = g(x0 + f_phi(x0, c), c), loss from the
noise-space objective. The trainer knows nothing else about it, so direct fine-tuning (a LoRA on
g itself) plugs in as another task.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from hypernoise.generators.base import Generator
from hypernoise.hypernet.base import NoiseHypernetwork
from hypernoise.lipschitz import spectral_norm
from hypernoise.objective import NoiseObjective


class TrainTask(nn.Module):
    """Protocol: ``forward(noise [B, *latent_shape], prompts) -> {"loss": scalar, ...}``."""

    latent_shape: tuple
    #: dtype of the initial noise fed to ``forward`` (the frozen generator's)
    noise_dtype: torch.dtype = torch.float32

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


class HyperNoiseTask(TrainTask):
    """L = objective(x0, f_phi(x0, c), r(g(x0 + f_phi(x0, c), c), c)), g frozen."""

    def __init__(self, generator: Generator, hypernet: NoiseHypernetwork, reward: nn.Module,
                 objective: NoiseObjective, num_steps: Optional[int] = None):
        super().__init__()
        self.generator, self.hypernet, self.reward = generator, hypernet, reward
        self.objective = objective
        self.num_steps = num_steps
        self.latent_shape = tuple(generator.latent_shape)
        self.noise_dtype = generator.dtype

    def forward(self, noise: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        cond = self.generator.encode(prompts)
        if self.objective.config.needs_input_grad:
            noise = noise.detach().requires_grad_(True)
        delta = self.hypernet.displacement(noise, cond)
        with self.hypernet.adapters_disabled():
            samples = self.generator.generate(noise + delta.to(noise.dtype), cond, self.num_steps)
        reward = self.reward(samples, prompts)
        terms = self.objective(noise, delta, reward)
        for name, value in getattr(self.reward, "last_terms", {}).items():
            terms[f"reward/{name}"] = torch.as_tensor(value)
        return terms

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.hypernet.trainable_parameters()

    def set_step(self, step: int) -> None:
        self.objective.step = step

    def reinitialize(self, seed: int) -> None:
        self.hypernet.reinitialize(seed)

    def enable_gradient_checkpointing(self) -> None:
        self.generator.enable_gradient_checkpointing()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.hypernet.trainable_state_dict()

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.hypernet.load_trainable_state_dict(state)

    def diagnostics(self, noise: torch.Tensor, prompts: Sequence[str], iters: int) -> dict[str, float]:
        """Spectral norm of J_f on this batch (max and mean over samples)."""
        from hypernoise.lipschitz import theorem1_bound

        cond = self.generator.encode(prompts)
        sigma = spectral_norm(lambda x: self.hypernet.displacement(x, cond).to(x.dtype), noise, iters=iters)
        lip = float(sigma.max())
        dim = int(noise[0].numel())
        return {"lipschitz/max": lip, "lipschitz/mean": float(sigma.mean()), "lipschitz/theorem1_bound": theorem1_bound(lip, dim)}
