"""ReNO (arXiv 2406.04312): test-time optimisation of the initial noise, per prompt.

For each sample independently, gradient ascent on the reward with respect to x0:

    loss(x0) = -r(g_K(x0, c), c) + lambda * (1/2 ||x0||^2 - (d - 1) log ||x0||)

SGD with Nesterov momentum (lr 5, momentum 0.9), the gradient norm of each sample clipped to 0.1
(coefficient 0.1 / (norm + 1e-6), as torch's ``clip_grad_norm_`` in ReNO's trainer.py:128),
50 iterations, and the best iterate by reward is returned. The regulariser is the negative
log-density of ||x0|| under a chi distribution with d degrees of freedom (up to a constant): it
keeps the norm near the chi mode sqrt(d - 1), where Gaussian noise lives; computed in fp32. The
noise itself is optimised in float32 unless ``noise_dtype`` says otherwise (ReNO: float16).

g_K runs K = ``optimize_steps`` generator steps (default: ``DEFAULT_OPTIMIZE_STEPS`` of the
generator, else the rendering steps S = ``num_steps``). Where K != S the best iterate is rendered
once more at S steps (no grad) and that image is returned. With ``seeds`` every call of g gets
fresh CPU generators in the state ``seeded_noise`` leaves them, so a stochastic sampler
(SANA-Sprint's multi-step re-noising) re-noises alike at every iteration and
``g(returned noise, rng=seeded_noise(generator, seed)[1])`` regenerates the returned image.

Nested budgets (``budgets``): the best iterate among the first K iterations of one run is exactly
what a run of K iterations returns (the first K iterations are the same computation), so one run
reports ReNO-K for every K asked, each with the passes and the wall time up to its K-th iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Conditioning, Generator
from hypernoise.methods.base import (Cost, Meter, MethodOutput, RunConfig, check_budgets, measure, register_method,
                                     seeded_noise)
from hypernoise.training.config import check_int, check_number

#: This library's default optimisation steps K per generator name; any other generator optimises
#: through its rendering steps. FLUX-Schnell: optimise through 1 step and render the best noise at
#: the generator's 4. ReNO has this mode only behind ``--enable_multi_apply`` (off by default,
#: ExplainableML/ReNO arguments.py:138; the 4-step render of ``models/utils.get_multi_apply_fn``,
#: utils.py:137-143); its default optimises and renders at 1 step (``presets.reno_preset``).
DEFAULT_OPTIMIZE_STEPS: Mapping[str, int] = {"flux-schnell": 1}
#: dtypes the optimised noise may be kept in (``RenoConfig.noise_dtype``)
NOISE_DTYPES = ("float32", "bfloat16", "float16")


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise ConfigError(f"`{name}` must be a positive integer, got {value}", field=name)


@dataclass
class RenoConfig:
    """ReNO's settings; the defaults are the paper's."""

    iters: int = field(default=50, metadata={"help": "optimisation iterations"})
    lr: float = field(default=5.0, metadata={"help": "SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "Nesterov momentum"})
    max_grad_norm: float = field(default=0.1, metadata={"help": "per-sample gradient-norm clipping"})
    norm_reg: float = field(default=0.01, metadata={"help": "weight lambda of the chi-norm regulariser"})
    num_steps: Optional[int] = field(default=None, metadata={
        "help": "generator steps of the returned image (default: the generator's)"})
    optimize_steps: Optional[int] = field(default=None, metadata={
        "help": "generator steps the noise is optimised through (default: 1 on flux-schnell, else num_steps)"})
    noise_dtype: str = field(default="float32", metadata={
        "help": "dtype of the optimised noise and its SGD state: float32, or float16 as ReNO's fp16 latents "
                "(main.py:111-112)"})
    keep_iterates: bool = field(default=False, metadata={"help": "return the image of every iteration"})

    def __post_init__(self):
        check_int(self.iters, "iters")
        check_number(self.lr, "lr")
        check_number(self.momentum, "momentum", strict=False, high=1.0, high_strict=True)
        # 0 would zero every step; a negative norm flips the gradient and runs ReNO backwards
        check_number(self.max_grad_norm, "max_grad_norm")
        check_number(self.norm_reg, "norm_reg", strict=False)
        if self.num_steps is not None:
            check_int(self.num_steps, "num_steps")
        if self.optimize_steps is not None:
            _check_positive_int(self.optimize_steps, "optimize_steps")
        if self.noise_dtype not in NOISE_DTYPES:
            raise ConfigError(f"`noise_dtype` must be one of {', '.join(NOISE_DTYPES)}, got {self.noise_dtype!r}",
                              field="noise_dtype")


def reno_steps(generator: Generator, cfg: RenoConfig) -> tuple[int, int]:
    """(K, S): the steps ReNO optimises through and the steps of the returned image."""
    render = int(cfg.num_steps or generator.default_steps)
    optimize = cfg.optimize_steps or DEFAULT_OPTIMIZE_STEPS.get(generator.name) or render
    return int(optimize), render


@register_method("reno", help="ReNO: per-prompt optimisation of the noise against the reward", budget="iterations")
def run_reno(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
             config: RunConfig) -> MethodOutput:
    """``reno`` with ``config.reno`` (default: the paper's settings) at ``config.num_steps``, each
    row's sampler seeded by ``config.seeds`` (where given), reporting ``config.budgets``."""
    return reno(generator, reward, noise, prompts, run_settings(config), progress=config.progress,
                seeds=config.seeds or None, budgets=config.budgets)


def run_settings(config: RunConfig) -> RenoConfig:
    """ReNO's settings in a method run: ``config.reno`` (default: the paper's) at ``config.num_steps``."""
    return replace(config.reno or RenoConfig(), num_steps=config.num_steps)


def norm_regulariser(x: torch.Tensor) -> torch.Tensor:
    """1/2 ||x||^2 - (d - 1) log ||x|| per sample [B], in fp32."""
    flat = x.float().flatten(1)
    d = flat.shape[1]
    sq = flat.pow(2).sum(1)
    return 0.5 * sq - 0.5 * (d - 1) * torch.log(sq)


def _clip_per_sample(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each sample's gradient scaled by min(1, max_norm / (its norm + 1e-6)): torch's
    ``clip_grad_norm_`` per sample (ReNO clips its batch of one, trainer.py:128)."""
    norms = grad.flatten(1).norm(dim=1)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return grad * scale.view(-1, *[1] * (grad.dim() - 1))


def seeded_rngs(generator: Generator, seeds: Optional[Sequence[int]]) -> Optional[list[torch.Generator]]:
    """Fresh CPU generators, one per seed, each in the state ``seeded_noise(generator, seed)``
    leaves it (after drawing that seed's noise), as ``hypernoise generate`` seeds its sampler;
    None without seeds."""
    if seeds is None:
        return None
    return [seeded_noise(generator, s)[1] for s in seeds]


def reno(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
         config: Optional[RenoConfig] = None, progress: bool = False,
         seeds: Optional[Sequence[int]] = None, budgets: Sequence[int] = ()) -> MethodOutput:
    """Optimise each sample's noise [B, *latent_shape] for its prompt through K steps; returns the
    best iterate by reward, its image [B, 3, H, W] rendered at S steps (``reno_steps``).

    ``reward`` [B] is the best iterate's reward as optimised (through K steps); where K != S,
    ``extras["rendered_reward"]`` [B] is the reward of the returned S-step image.
    ``extras["reward_history"]`` [B, iters] and (on request) ``"iterates"`` [B, iters, 3, H, W] are
    per iteration, through K steps; ``"optimize_steps"`` and ``"render_steps"`` are K and S.
    ``seeds`` (one per row): every call of g is fed ``seeded_rngs(generator, seeds)``, so the
    returned noise regenerates the returned image.

    ``budgets`` (each K <= ``iters``): ``budgets[K]`` of the output is ReNO-K, the best of the
    first K iterates, with the cost of a K-iteration run and the wall time and peak memory read
    after its K-th iterate (plus its own S-step render where K != S, timed apart).
    """
    cfg = config or RenoConfig()
    if seeds is not None and len(seeds) != len(prompts):
        raise ConfigError(f"`seeds` needs one seed per prompt: {len(seeds)} for {len(prompts)}", field="seeds")
    budgets = check_budgets(budgets, cfg.iters, "iterations")
    optimize, render = reno_steps(generator, cfg)
    cost, snapshots = Cost(), {}
    with measure(cost, noise.device, len(prompts)) as meter:
        cond = generator.encode(prompts)
        keep = _snapshots(snapshots, set(budgets) - {cfg.iters}, meter)
        images, best_x, best_r, extras = _optimise(generator, reward, noise, prompts, cond, cfg, optimize, seeds,
                                                   progress, keep)
        if render != optimize:
            images, extras["rendered_reward"] = _render(generator, reward, best_x.to(noise.dtype), prompts, cond,
                                                        render, seeds)
    _count(cost, generator, cfg.iters, optimize, render)
    extras.update(optimize_steps=optimize, render_steps=render)
    out = MethodOutput(images, cost, noise=best_x.to(noise.dtype), reward=best_r, extras=extras)
    out.budgets = {k: _at_budget(generator, reward, prompts, cond, k, snapshots.get(k), out, optimize, render, seeds)
                   for k in budgets}
    return out


def _snapshots(into: dict, budgets: set, meter: Meter):
    """The loop's callback: at each budget K, keep the best so far and what the run cost up to it."""
    def keep(k: int, images, x, r) -> None:
        if k in budgets:
            into[k] = (images, x, r, meter.read())
    return keep


def _at_budget(generator: Generator, reward: nn.Module, prompts, cond, k: int, snapshot, full: MethodOutput,
               optimize: int, render: int, seeds) -> MethodOutput:
    """ReNO-K from the run's snapshot at iteration K (the full output itself at K = iters)."""
    if snapshot is None:
        return full
    images, x, r, (seconds, peak) = snapshot
    cost = Cost(seconds_per_image=seconds, peak_memory_mb=peak)
    extras = {"reward_history": full.extras["reward_history"][:, :k], "optimize_steps": optimize,
              "render_steps": render}
    if render != optimize:  # ReNO-K renders its own best noise: timed apart and added
        rendered = Cost()
        with measure(rendered, x.device, len(prompts)):
            images, extras["rendered_reward"] = _render(generator, reward, x.to(full.noise.dtype), prompts, cond,
                                                        render, seeds)
        cost.seconds_per_image += rendered.seconds_per_image
        cost.peak_memory_mb = max(peak, rendered.peak_memory_mb)
    _count(cost, generator, k, optimize, render)
    return MethodOutput(images, cost, noise=x.to(full.noise.dtype), reward=r, extras=extras)


def _optimise(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
              cond: Conditioning, cfg: RenoConfig, steps: int, seeds: Optional[Sequence[int]], progress: bool,
              keep=None):
    """The loop through ``steps`` generator steps: (best images [B, 3, H, W], best noise
    [B, *latent_shape] in ``cfg.noise_dtype``, best reward [B], extras with ``reward_history`` [B, iters]).
    ``keep(k, best images, best noise, best reward)`` is called after the k-th iterate is scored."""
    x = noise.detach().clone().to(getattr(torch, cfg.noise_dtype)).requires_grad_(True)
    opt = torch.optim.SGD([x], lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    best_r = torch.full((len(prompts),), -float("inf"), device=noise.device)
    best_img, best_x, history, iterates = None, x.detach().clone(), [], []
    bar = _progress(cfg.iters, progress)
    for it in range(cfg.iters):
        images = generator.generate(x.to(noise.dtype), cond, steps, rng=seeded_rngs(generator, seeds))
        r = reward(images, prompts).float()
        best_img, best_x, best_r = _keep_best(images, x, r, best_img, best_x, best_r)
        if keep is not None:
            keep(it + 1, best_img, best_x, best_r)
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
    extras = {"reward_history": torch.stack(history, 1)}  # [B, iters]
    if cfg.keep_iterates:
        extras["iterates"] = torch.stack(iterates, 1)  # [B, iters, 3, H, W]
    return best_img, best_x, best_r, extras


@torch.no_grad()
def _render(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
            cond: Conditioning, steps: int, seeds: Optional[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The best noise [B, *latent_shape] rendered at ``steps``: (images [B, 3, H, W], their reward [B])."""
    images = generator.generate(noise, cond, steps, rng=seeded_rngs(generator, seeds))
    return images, reward(images, prompts).float()


def _count(cost: Cost, generator: Generator, iters: int, optimize: int, render: int) -> None:
    """Per-image passes: ``iters`` forwards and ``iters - 1`` backwards through K steps, plus the
    S-step render and its reward where K != S."""
    nfe, rendered = generator.nfe(optimize), render != optimize
    cost.generator_forward = iters * nfe + (generator.nfe(render) if rendered else 0)
    cost.generator_backward = (iters - 1) * nfe
    cost.reward_forward, cost.reward_backward = iters + int(rendered), iters - 1


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
