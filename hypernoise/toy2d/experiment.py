"""The analytic 2-D world: train the MLP hypernetwork and check it against the exact answer.

With noise x0 ~ N(0, I) in R^2, the known map g (``toy2d/generator.py``) and a reward r, the
tilted noise distribution is p0*(x0) = N(x0; 0, I) exp(r(g(x0)) / alpha) / Z (METHOD.md,
Definition 2). For the learned map T(x) = x + f(x), q = T#N(0, I) has the density
q(T(x)) = N(x; 0, I) / |det(I + J_f(x))|, so

    KL(q || p0*) = E_x[ log N(x) - log|det(I + J_f(x))| - log N(T(x)) - r(g(T(x))) / alpha ] + log Z

is computed per sample exactly (J_f by autograd), with log Z and p0*'s mean by Monte Carlo over
millions of base samples.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hypernoise.adapter import save_adapter
from hypernoise.errors import ConfigError
from hypernoise.generators import build_generator
from hypernoise.hypernet import MLPHypernetwork
from hypernoise.lipschitz import spectral_norm, theorem1_bound
from hypernoise.methods.hypernoise import HyperNoiseTask
from hypernoise.objective import NoiseObjective, ObjectiveConfig, jacobian
from hypernoise.rewards import build_reward
from hypernoise.training import TrainConfig, Trainer
from hypernoise.training.trainer import RUN_OUTPUTS

TOY_REWARDS = ("halfplane", "ring", "corner")

#: the top-level entries ``run_toy2d`` writes in its folder (a training run's, and its own results)
OUTPUTS = (*RUN_OUTPUTS, "samples.npz", "metrics.json", "toy2d.png")


@dataclass
class Toy2DConfig:
    """One toy2d experiment. The defaults reach KL < 0.05 nats in well under two minutes."""

    reward: str = field(default="halfplane", metadata={"help": "halfplane, ring or corner"})
    alpha: float = field(default=1.0, metadata={"help": "temperature of the tilt"})
    objective: str = field(default="exact", metadata={"help": "exact (full KL) or l2 (the paper's)"})
    steps: int = field(default=2000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=512, metadata={"help": "noise samples per step"})
    lr: float = field(default=3e-3, metadata={"help": "AdamW learning rate"})
    hidden: int = field(default=128, metadata={"help": "MLP width"})
    depth: int = field(default=3, metadata={"help": "MLP layers"})
    seed: int = field(default=0, metadata={"help": "seed of training noise and evaluation noise"})
    n_eval: int = field(default=20000, metadata={"help": "fresh noise samples written and evaluated"})
    mc_samples: int = field(default=2_000_000, metadata={"help": "Monte Carlo samples for log Z and p0*'s mean"})
    checkpoint_every: int = field(default=0, metadata={"help": "checkpoint every N steps (0: at the end)"})
    progress: bool = True

    def __post_init__(self):
        if self.reward not in TOY_REWARDS:
            raise ConfigError(f"unknown toy2d reward {self.reward!r}; choose one of: {', '.join(TOY_REWARDS)}")
        if self.objective not in ("exact", "l2"):
            raise ConfigError(f"`objective` must be exact or l2, got {self.objective!r}", field="objective")
        if self.n_eval < 1 or self.mc_samples < 1000:
            raise ConfigError("`n_eval` must be >= 1 and `mc_samples` >= 1000", field="n_eval")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, optimizer="adamw",
                           noise_mode="per-sample", seed=self.seed, max_grad_norm=10.0, log_every=10,
                           checkpoint_every=self.checkpoint_every, progress=self.progress)


def _log_normal(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) per row of [N, d]."""
    return -0.5 * x.pow(2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


@torch.no_grad()
def tilted_statistics(generator, reward, alpha: float, n: int, seed: int, chunk: int = 500_000) -> dict:
    """log Z and the mean of p0* by Monte Carlo over ``n`` base samples; importance weights."""
    g = torch.Generator().manual_seed(seed + 7919)
    log_w, xs = [], []
    for start in range(0, n, chunk):
        x = torch.randn(min(chunk, n - start), 2, generator=g)
        log_w.append(reward(generator.generate(x, {}), []).double() / alpha)
        xs.append(x.double())
    log_w, xs = torch.cat(log_w), torch.cat(xs)
    log_z = torch.logsumexp(log_w, 0) - math.log(n)
    w = torch.softmax(log_w, 0)
    return {"log_z": float(log_z), "mean": (w[:, None] * xs).sum(0).tolist(),
            "ess": float(1.0 / w.pow(2).sum()), "weights": w, "points": xs}


def kl_to_tilted(hypernet, generator, reward, alpha: float, log_z: float, noise: torch.Tensor,
                 chunk: int = 5000) -> float:
    """Exact per-sample KL(T#N(0, I) || p0*) averaged over ``noise`` [N, 2] (see module doc)."""
    total = 0.0
    for x in noise.split(chunk):
        x = x.detach().requires_grad_(True)
        delta = hypernet(x, {})
        jac = jacobian(delta, x).detach()
        y = (x + delta).detach()
        logdet = torch.linalg.slogdet(torch.eye(2) + jac)[1]
        with torch.no_grad():
            terms = _log_normal(x.detach()) - logdet - _log_normal(y) - reward(generator.generate(y, {}), []) / alpha
        total += float(terms.double().sum())
    return total / noise.shape[0] + log_z


def _plot(path: Path, base: np.ndarray, target: np.ndarray, learned: np.ndarray, noise: np.ndarray,
          target_noise: np.ndarray, modulated: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    fig, axes = plt.subplots(2, 3, figsize=(12, 8), constrained_layout=True)
    panels = [(noise, "noise x0 ~ N(0, I)"), (target_noise, "tilted noise p0* (exact)"),
              (modulated, "learned x0 + f(x0)"), (base, "base g(x0)"), (target, "target p* = g#p0* (exact)"),
              (learned, "learned g(x0 + f(x0))")]
    for ax, (pts, name) in zip(axes.flat, panels):
        ax.hist2d(pts[:, 0], pts[:, 1], bins=120, range=[[-4.5, 4.5], [-4.5, 4.5]], cmap="magma", norm=PowerNorm(0.4))
        ax.set_title(name)
        ax.set_aspect("equal")
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate_toy2d(hypernet, generator, reward, cfg: Toy2DConfig, out_dir: Path) -> dict:
    """Fresh-noise evaluation: writes samples.npz, metrics.json and toy2d.png; returns metrics."""
    stats = tilted_statistics(generator, reward, cfg.alpha, cfg.mc_samples, cfg.seed)
    noise = generator.sample_noise(cfg.n_eval, seed=cfg.seed + 104729)
    kl = kl_to_tilted(hypernet, generator, reward, cfg.alpha, stats["log_z"], noise)
    with torch.no_grad():
        modulated = hypernet.modulate(noise, {})
        base, samples = generator.generate(noise, {}), generator.generate(modulated, {})
    lip = spectral_norm(lambda x: hypernet(x, {}), noise[:4096], iters=10)
    pick = torch.multinomial(stats["weights"], cfg.n_eval, replacement=True, generator=torch.Generator().manual_seed(cfg.seed))
    target_noise = stats["points"][pick].float()
    mean_err = (modulated.mean(0).double() - torch.tensor(stats["mean"], dtype=torch.float64)).abs().max()
    metrics = {
        "reward": cfg.reward, "alpha": cfg.alpha, "objective": cfg.objective, "steps": cfg.steps,
        "kl_to_tilted": kl, "log_z": stats["log_z"], "tilted_noise_mean": stats["mean"],
        "modulated_mean": modulated.mean(0).tolist(), "mean_abs_error": float(mean_err),
        "reward_base": float(reward(base, []).mean()), "reward_learned": float(reward(samples, []).mean()),
        "lipschitz_max": float(lip.max()), "lipschitz_mean": float(lip.mean()),
        "theorem1_bound": theorem1_bound(float(lip.max()), 2), "importance_ess": stats["ess"], "n_eval": cfg.n_eval,
    }
    np.savez(out_dir / "samples.npz", noise=noise.numpy(), modulated=modulated.numpy(), base=base.numpy(), samples=samples.numpy())
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=lambda v: None if v == math.inf else v))
    _plot(out_dir / "toy2d.png", base.numpy(), generator.generate(target_noise, {}).numpy(), samples.numpy(),
          noise.numpy(), target_noise.numpy(), modulated.numpy(),
          f"toy2d {cfg.reward}, alpha={cfg.alpha:g}, objective={cfg.objective}: KL(q || p0*) = {kl:.4f} nats")
    return metrics


def run_toy2d(cfg: Toy2DConfig, out_dir, resume: Optional[str] = None) -> dict:
    """Train the MLP hypernetwork on toy2d, save its adapter and evaluate it; returns metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    generator = build_generator("toy2d")
    reward = build_reward(cfg.reward)
    hypernet = MLPHypernetwork(generator.latent_shape, hidden=cfg.hidden, depth=cfg.depth)
    objective = NoiseObjective(ObjectiveConfig(kind=cfg.objective, alpha=cfg.alpha))
    task = HyperNoiseTask(generator, hypernet, reward, objective)
    result = Trainer(task, cfg.train_config(), out_dir).fit([""], resume=resume)
    if result.interrupted:
        return {"interrupted": True, "step": result.step}
    save_adapter(out_dir / "adapter", hypernet, generator, settings={"toy2d": asdict(cfg), "train": cfg.train_config().to_dict()})
    return evaluate_toy2d(hypernet, generator, reward, cfg, out_dir)
