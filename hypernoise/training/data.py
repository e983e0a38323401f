"""Stateless prompt and noise sampling: batch k of a run is a pure function of (seed, k).

Resuming at any step therefore replays exactly the data an uninterrupted run would have seen,
and N processes with per-process batch B see the same global batch as one process with N x B
(rank r takes rows [r B, (r+1) B) of it), without duplication.
"""

from __future__ import annotations

from typing import Sequence

import torch

_NOISE_STREAM = 1_000_003  # keeps the noise seeds apart from the prompt-order seeds


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 6364136223846793005 + int(k) + 1442695040888963407) % (2**63)
    return torch.Generator().manual_seed(seed)


class PromptSampler:
    """Prompts of micro-batch ``index``: epochs of seeded permutations, sliced per rank."""

    def __init__(self, prompts: Sequence[str], global_batch: int, seed: int):
        if not prompts:
            raise ValueError("no prompts to train on")
        self.prompts = list(prompts)
        self.global_batch = global_batch
        self.seed = seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(len(self.prompts), generator=_generator(self.seed, epoch)).tolist()}
        return self._perms[epoch]

    def global_batch_at(self, index: int) -> list[str]:
        n = len(self.prompts)
        start = index * self.global_batch
        return [self.prompts[self._perm(p // n)[p % n]] for p in range(start, start + self.global_batch)]

    def batch(self, index: int, rank: int, per_process: int) -> list[str]:
        return self.global_batch_at(index)[rank * per_process : (rank + 1) * per_process]


class NoiseSampler:
    """Initial noise of micro-batch ``index`` [global_batch, *latent_shape], in one of four modes.

    per-sample: fresh noise for every sample; shared: one fresh noise per micro-batch, used by
    every prompt in it; per-step: one noise per optimizer step (micro-batch ``index`` belongs to
    step ``index // accumulation``), drawn as ``torch.randn([1, *latent_shape])`` from a CPU
    generator seeded with ``seed + step`` and shared by every row, micro-step and process (the
    authors' ``latent_type="batch"``: ``_generate_latents``, training/trainer.py:139-149); fixed:
    the same global batch of noise at every step.
    """

    def __init__(self, latent_shape: tuple, global_batch: int, seed: int, mode: str = "shared", accumulation: int = 1):
        self.latent_shape, self.global_batch, self.seed, self.mode = tuple(latent_shape), global_batch, seed, mode
        self.accumulation = int(accumulation)

    def global_noise_at(self, index: int) -> torch.Tensor:
        if self.mode == "per-step":
            g = torch.Generator().manual_seed(int(self.seed) + index // self.accumulation)
            return torch.randn((1, *self.latent_shape), generator=g).expand(self.global_batch, *self.latent_shape)
        key = 0 if self.mode == "fixed" else index + 1
        g = _generator(_NOISE_STREAM, self.seed, key)
        if self.mode == "shared":
            x = torch.randn((1, *self.latent_shape), generator=g).expand(self.global_batch, *self.latent_shape)
            return x.contiguous()
        return torch.randn((self.global_batch, *self.latent_shape), generator=g)

    def batch(self, index: int, rank: int, per_process: int, device=None, dtype=None) -> torch.Tensor:
        x = self.global_noise_at(index)[rank * per_process : (rank + 1) * per_process]
        return x.to(device=device, dtype=dtype)
