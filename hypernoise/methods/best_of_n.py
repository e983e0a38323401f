"""Best-of-N: draw N noises per prompt, generate all, keep the image with the highest reward."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Generator
from hypernoise.methods.base import Cost, MethodOutput, RunConfig, measure, register_method
from hypernoise.training.config import check_int

#: best-of-N candidates of a (prompt, seed) come from seed + this, a stream of their own
CANDIDATE_STREAM = 7_000_000_000


@register_method("best-of-n", help="best of N noises by the reward")
def run_best_of_n(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
                  config: RunConfig) -> MethodOutput:
    """``best_of_n`` with ``config.n``; each row's candidates come from its own seed's stream
    (``config.seeds``; without them, one stream for the batch)."""
    seeds = [CANDIDATE_STREAM + int(s) for s in config.seeds] or CANDIDATE_STREAM
    return best_of_n(generator, reward, noise, prompts, n=config.n, num_steps=config.num_steps, seed=seeds)


@torch.no_grad()
def best_of_n(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str], n: int = 50,
              num_steps: Optional[int] = None, chunk: int = 64, seed: Union[int, Sequence[int]] = 0) -> MethodOutput:
    """``noise`` [B, ...] is the first candidate of each prompt; N - 1 more are drawn from ``seed``
    (one seed for the batch, or one per row so that a row's candidates do not depend on the batch).

    Candidates are generated and scored about ``chunk`` images at a time, keeping only the best
    so far per prompt (memory does not grow with N). ``extras["index"]`` says which candidate
    won (0 = the given noise) and ``extras["scores"]`` holds every candidate's reward [B, N].
    """
    n = check_int(n, "n")  # N of best-of-N: the given noise and N - 1 more
    chunk = check_int(chunk, "chunk")
    b = len(prompts)
    extra = _extra_candidates(generator, b, n - 1, seed).to(noise.dtype)
    candidates = torch.cat([noise.unsqueeze(1), extra], 1)  # [B, N, *latent_shape]
    per = max(1, chunk // max(1, b))
    best_img, scores = None, []
    cost = Cost()
    with measure(cost, noise.device, b):
        for j0 in range(0, n, per):
            block = candidates[:, j0 : j0 + per]  # [B, k, ...]
            k = block.shape[1]
            rep = [p for p in prompts for _ in range(k)]
            imgs = generator.generate(block.flatten(0, 1), generator.encode(rep), num_steps)
            r = reward(imgs, rep).float().view(b, k)
            imgs = imgs.view(b, k, *imgs.shape[1:])
            scores.append(r)
            local = r.argmax(1)
            rows = torch.arange(b, device=local.device)
            cand_img, cand_r = imgs[rows, local], r[rows, local]
            if best_img is None:
                best_img, best_r = cand_img, cand_r
            else:
                better = cand_r > best_r
                best_img = torch.where(better.view(-1, *[1] * (cand_img.dim() - 1)), cand_img, best_img)
                best_r = torch.where(better, cand_r, best_r)
        scores = torch.cat(scores, 1)
        index = scores.argmax(1)
    cost.generator_forward = float(n * generator.nfe(num_steps))
    cost.reward_forward = float(n)
    rows = torch.arange(b, device=index.device)
    return MethodOutput(best_img, cost, noise=candidates[rows, index], reward=scores[rows, index],
                        extras={"index": index, "scores": scores})


def _extra_candidates(generator: Generator, b: int, k: int, seed: Union[int, Sequence[int]]) -> torch.Tensor:
    """[B, k, *latent_shape] candidate noises beyond the given one."""
    if isinstance(seed, int):
        return generator.sample_noise(b * k, seed=seed).view(b, k, *generator.latent_shape)
    if len(seed) != b:
        raise ConfigError(f"best-of-N's `seed` needs one seed per prompt: {len(seed)} for {b}", field="seed")
    return torch.stack([generator.sample_noise(k, seed=int(s)) for s in seed])
