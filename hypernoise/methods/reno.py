"""ReNO (arXiv 2406.04312): test-time optimisation of the initial noise, per prompt.

For each sample independently, gradient ascent on the reward with respect to x0:

    loss(x0) = -r(g(x0, c), c) + lambda * (1/2 ||x0||^2 - (d - 1) log ||x0||)

SGD with Nesterov momentum (lr 5, momentum 0.9), the gradient norm of each sample clipped to 0.1,
50 iterations, and the best iterate by reward is returned. The regulariser is the negative
log-density of ||x0|| under a chi distribution with d degrees of freedom (up to a constant): it
keeps the norm near the chi mode sqrt(d - 1), where Gaussian noise lives; computed in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch
from torch import nn

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Generator
from hypernoise.methods.base import Cost, MethodOutput, RunConfig, measure, register_method


@dataclass
class RenoConfig:
    """ReNO's settings; the defaults are the paper's."""

    iters: int = field(default=50, metadata={"help": "optimisation iterations"})
    lr: float = field(default=5.0, metadata={"help": "SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "Nesterov momentum"})
    max_grad_norm: float = field(default=0.1, metadata={"help": "per-sample gradient-norm clipping"})
    norm_reg: float = field(default=0.01, metadata={"help": "weight lambda of the chi-norm regulariser"})
    num_steps: Optional[int] = field(default=None, metadata={"help": "generator steps (default: the generator's)"})
    keep_iterates: bool = field(default=False, metadata={"help": "return the image of every iteration"})

    def __post_init__(self):
        if int(self.iters) < 1:
            raise ConfigError(f"`iters` must be a positive integer, got {self.iters}", field="iters")
        if not self.lr > 0:
            raise ConfigError(f"ReNO's `lr` must be positive, got {self.lr}", field="lr")


@register_method("reno", help="ReNO: per-prompt optimisation of the noise against the reward")
def run_reno(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
             config: RunConfig) -> MethodOutput:
    """``reno`` with ``config.reno`` (default: the paper's settings) at ``config.num_steps``."""
    return reno(generator, reward, noise, prompts, replace(config.reno or RenoConfig(), num_steps=config.num_steps),
                progress=config.progress)


def norm_regulariser(x: torch.Tensor) -> torch.Tensor:
    """1/2 ||x||^2 - (d - 1) log ||x|| per sample [B], in fp32."""
    flat = x.float().flatten(1)
    d = flat.shape[1]
    sq = flat.pow(2).sum(1)
    return 0.5 * sq - 0.5 * (d - 1) * torch.log(sq)


def _clip_per_sample(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = (max_norm / norms).clamp(max=1.0)
    return grad * scale.view(-1, *[1] * (grad.dim() - 1))


def reno(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
         config: Optional[RenoConfig] = None, progress: bool = False) -> MethodOutput:
    """Optimise each sample's noise for its prompt; returns the best iterate by reward."""
    cfg = config or RenoConfig()
    cond = generator.encode(prompts)
    x = noise.detach().clone().float().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    best_r = torch.full((len(prompts),), -float("inf"), device=noise.device)
    best_img, best_x, history, iterates = None, x.detach().clone(), [], []
    cost = Cost()
    bar = _progress(cfg.iters, progress)
    with measure(cost, noise.device, len(prompts)):
        for it in range(cfg.iters):
            images = generator.generate(x.to(noise.dtype), cond, cfg.num_steps)
            r = reward(images, prompts).float()
            best_img, best_x, best_r = _keep_best(images, x, r, best_img, best_x, best_r)
            history.append(r.detach().cpu())
            if cfg.keep_iterates:
                iterates.append(images.detach().cpu())
            if it == cfg.iters - 1:
                break  # the last update would never be evaluated
            loss = (-r + cfg.norm_reg * norm_regulariser(x)).sum()
            opt.zero_grad()
            loss.backward()
            x.grad = _clip_per_sample(x.grad, cfg.max_grad_norm)
            opt.step()
            bar.update(1)
        bar.close()
    nfe = generator.nfe(cfg.num_steps)
    cost.generator_forward, cost.generator_backward = cfg.iters * nfe, (cfg.iters - 1) * nfe
    cost.reward_forward, cost.reward_backward = cfg.iters, cfg.iters - 1
    extras = {"reward_history": torch.stack(history, 1)}  # [B, iters]
    if cfg.keep_iterates:
        extras["iterates"] = torch.stack(iterates, 1)  # [B, iters, 3, H, W]
    return MethodOutput(best_img, cost, noise=best_x.to(noise.dtype), reward=best_r, extras=extras)


@torch.no_grad()
def _keep_best(images, x, r, best_img, best_x, best_r):
    better = r > best_r
    if best_img is None:
        return images.detach().clone(), x.detach().clone(), r.detach().clone()
    mask = better.view(-1, *[1] * (images.dim() - 1))
    best_img = torch.where(mask, images.detach(), best_img)
    best_x = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x.detach(), best_x)
    return best_img, best_x, torch.where(better, r.detach(), best_r)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="reno", unit="it", disable=not enabled, leave=False)
