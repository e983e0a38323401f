"""The frozen generator g: the protocol every model family implements.

Shape contract (B = batch, ``latent_shape`` = the noise shape of one sample):

    encode(prompts: list[str])              -> Conditioning (dict of batch-first tensors, len B)
    generate(noise [B, *latent_shape], cond, num_steps, rng) -> samples
        images [B, 3, H, W] in [0, 1] (``output_kind == "image"``) or points [B, D]
        (``output_kind == "points"``); differentiable with respect to ``noise``. ``rng`` (a
        torch.Generator, or one per row) feeds stochastic sampler steps; deterministic
        samplers ignore it.
    backbone_delta(noise [B, *latent_shape], cond) -> [B, *latent_shape]
        one pass of the backbone at the "pure noise" timestep; with the noise hypernetwork's
        adapters on, this is f_phi(x0, c).

The generator's own weights are frozen (``requires_grad=False``) and it is always in eval mode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Optional, Protocol, Sequence, Union

import torch
from torch import nn

from hypernoise.errors import ConfigError
from hypernoise.generators.cache import DEFAULT_CACHE_MB, Conditioning, ConditioningCache

RngLike = Union[None, torch.Generator, Sequence[torch.Generator]]


def check_fixed_size(name: str, side: Optional[int], height=None, width=None) -> None:
    """For a generator of one output size (``side`` x ``side`` images; None: points, no image):
    refuse a `height`/`width` it cannot take instead of ignoring it."""
    for field_name, value in (("height", height), ("width", width)):
        if value is None or value == side:
            continue
        if side is None:
            raise ConfigError(f"generator {name} makes points, not images: it has no `{field_name}`; drop it "
                              f"(got {value})", field=field_name)
        raise ConfigError(f"generator {name} makes {side}x{side} images only, so `{field_name}` {value} cannot be "
                          f"taken; drop `{field_name}` (or pass {side})", field=field_name)


class Judge(Protocol):
    """An evaluator of prompt faithfulness independent of the training reward (the built-in
    world's GenEval). images [N, 3, H, W] in [0, 1], one prompt per image."""

    def evaluate_images(self, images: torch.Tensor, prompts: Sequence[str]) -> list[dict]: ...
    def summary(self, records: Sequence[dict]) -> dict: ...
    def fidelity(self, images: torch.Tensor, prompts: Sequence[str]) -> float: ...


class Generator(nn.Module, ABC):
    """Base class of a frozen few-step generator. See the module docstring for the contract."""

    #: registry name, written into adapters so that loading can check the match
    name: str = "generator"
    #: noise shape of one sample, without the batch dimension
    latent_shape: tuple = ()
    #: "image" or "points"
    output_kind: str = "image"
    #: number of generator network evaluations used when the user gives none
    default_steps: int = 1
    #: dotted module path of the backbone's final projection ("proj_out", "conv_out")
    final_projection: Optional[str] = None
    #: identifier of the weights (hub id or folder), recorded in adapters
    pretrained: Optional[str] = None
    #: reward spec used when the user names none
    default_reward: str = "redness"

    def __init__(self):
        super().__init__()
        self.prompt_cache = ConditioningCache()

    # ----------------------------------------------------------------- conditioning
    def encode(self, prompts: Sequence[str]) -> Conditioning:
        """Encode prompts into batch-first conditioning tensors, through the bounded prompt cache
        (``prompt_cache``, ``set_prompt_cache``): each distinct prompt is encoded once while it
        stays in the cache."""
        return self.prompt_cache.get(prompts, self.encode_uncached, device=self.device)

    def set_prompt_cache(self, limit_mb: Optional[float] = DEFAULT_CACHE_MB, store_on: Optional[str] = None) -> "Generator":
        """Bound the prompt cache to ``limit_mb`` MB (0: no cache, None: unbounded), its entries
        kept on ``store_on`` (e.g. "cpu") instead of the generator's device."""
        self.prompt_cache = ConditioningCache(limit_mb, store_on)
        return self

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Raise ``ConfigError`` for a prompt this model cannot take (cheap, nothing is encoded);
        commands call it before they create output. Open-vocabulary models take any text."""

    def encode_uncached(self, prompts: list[str]) -> Conditioning:
        """Encode prompts without the cache; generators with a text encoder override this."""
        return {}

    def default_prompts(self, split: str = "train") -> Optional[list[str]]:
        """Built-in prompts of this generator's world ("train" / "test"), or None."""
        return None

    def judge(self) -> Optional[Judge]:
        """An evaluator of prompt faithfulness independent of the training rewards (the built-in
        world's GenEval-style judge), or None."""
        return None

    # ----------------------------------------------------------------- generation
    @abstractmethod
    def generate(self, noise: torch.Tensor, cond: Conditioning, num_steps: Optional[int] = None,
                 rng: RngLike = None) -> torch.Tensor:
        """Map noise [B, *latent_shape] to samples (see module docstring); differentiable."""

    @property
    def backbone(self) -> Optional[nn.Module]:
        """The network the LoRA hypernetwork reuses, or None for backbone-less generators."""
        return None

    def backbone_delta(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One backbone pass at the pure-noise timestep: f_phi(x0, c) when adapters are on."""
        raise NotImplementedError(f"generator {self.name!r} has no backbone for a LoRA hypernetwork")

    def enable_gradient_checkpointing(self, checkpoint_fn: Optional[Callable] = None) -> "Generator":
        """Recompute backbone activations during backward to save memory, with ``checkpoint_fn(module,
        *args)`` where given (the caller knows what the backbone carries: a LoRA hypernetwork needs
        ``lora.adapter_state_checkpoint``); a no-op where nothing is worth recomputing."""
        return self

    def nfe(self, num_steps: Optional[int] = None) -> int:
        """Generator network evaluations for one image at ``num_steps``."""
        return int(num_steps or self.default_steps)

    # ----------------------------------------------------------------- noise
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in self.parameters():
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    def sample_noise(self, batch_size: int, seed: Optional[int] = None,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Standard normal noise [B, *latent_shape] on the generator's device and dtype.

        Drawn on the CPU so that a seed gives the same noise on every device.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        x = torch.randn((batch_size, *self.latent_shape), generator=generator, dtype=torch.float32)
        return x.to(device=self.device, dtype=self.dtype)

    def freeze(self) -> "Generator":
        """Freeze every weight and switch to eval mode (g is never trained by HyperNoise)."""
        self.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> "Generator":
        # The frozen generator stays in eval mode (dropout, norms) whatever the caller asks.
        return super().train(False)

    def describe(self) -> dict:
        """What an adapter records about the generator it was trained for."""
        return {"generator": self.name, "pretrained": self.pretrained, "latent_shape": list(self.latent_shape)}
