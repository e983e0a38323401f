"""The noise-space objective (METHOD.md, "The objective").

Per sample, with f = f_phi(x0, c), d = the number of noise elements and r the (weighted) reward:

    l2 (the paper):     L = 1/2 ||f||^2 - r / alpha
    reference:          L = reg_weight * mean(f^2) - r
                          = (2 reg_weight / d) * [ 1/2 ||f||^2 - r / alpha ]  with  alpha = 2 reg_weight / d
                        i.e. the paper's objective at temperature alpha = 2 reg_weight / d, with the
                        loss scaled by 2 reg_weight / d (a learning-rate factor). The paper's runs use
                        reg_weight = 0.5, i.e. alpha = 1 / d.
    exact:              L = 1/2 ||f||^2 + tr(J_f) - log|det(I + J_f)| - r / alpha
                        the full KL(T#N(0,I) || N(0,I)) via Stein's lemma; its minimiser over T is the
                        tilted noise distribution p0* itself. J_f is built with autograd, one backward
                        pass per noise element: for low-dimensional noise only.
    none:               L = -r  (direct reward fine-tuning, no noise-space penalty)

An optional temperature schedule (``alpha_start``, ``alpha_ramp``) holds alpha at ``alpha_start``
until optimizer step ``alpha_ramp[0]``, moves it geometrically to ``alpha`` by step
``alpha_ramp[1]`` and holds it there: a low temperature first lets the reward find a direction,
the final one sets how far from the base the map ends. The trainer tells the objective its step.

The batch loss is the mean over samples. ``kl_estimate`` is the per-sample KL term (the L2 part,
plus the log-det part for ``exact``) so every objective logs a comparable number.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from hypernoise.errors import ConfigError
from hypernoise.training.config import check_number

KINDS = ("l2", "reference", "exact", "none")
EXACT_MAX_DIM = 64


@dataclass
class ObjectiveConfig:
    """Which noise-space objective to minimise, and its temperature."""

    kind: str = field(default="l2", metadata={"help": "l2 (paper), reference (reg_weight * mean f^2), exact (low-dim KL), none"})
    alpha: float = field(default=1.0, metadata={"help": "temperature of the tilt exp(r / alpha) (l2, exact)"})
    reg_weight: float = field(default=0.5, metadata={"help": "weight of mean(f^2) in the reference convention"})
    alpha_start: Optional[float] = field(default=None, metadata={"help": "alpha before the ramp (None: constant alpha)"})
    alpha_ramp: Tuple[int, int] = field(default=(0, 0), metadata={"help": "optimizer steps where alpha moves from alpha_start to alpha"})

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"unknown objective {self.kind!r}; choose one of: {', '.join(KINDS)}", field="kind")
        check_number(self.alpha, "alpha", what="positive")  # inf would drop the reward, NaN poison the loss
        check_number(self.reg_weight, "reg_weight", strict=False, what="non-negative")
        if self.alpha_start is not None:
            check_number(self.alpha_start, "alpha_start", what="positive")
        ramp = self.alpha_ramp
        if (isinstance(ramp, (str, bytes)) or not hasattr(ramp, "__len__") or len(ramp) != 2
                or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in ramp)
                or not 0 <= ramp[0] <= ramp[1]):
            raise ConfigError(f"`alpha_ramp` takes two steps BEGIN END with 0 <= BEGIN <= END, got {ramp}",
                              field="alpha_ramp")
        self.alpha_ramp = tuple(int(s) for s in ramp)

    def alpha_at(self, step: int) -> float:
        """The temperature at optimizer step ``step`` (0-based): alpha_start, a geometric ramp, alpha."""
        if self.alpha_start is None:
            return self.alpha
        begin, end = self.alpha_ramp
        if step >= end:
            return self.alpha
        if step <= begin:
            return self.alpha_start
        t = (step - begin) / (end - begin)
        return self.alpha_start * (self.alpha / self.alpha_start) ** t

    @property
    def needs_input_grad(self) -> bool:
        """Whether the noise must require grad before f is computed (for J_f)."""
        return self.kind == "exact"


def reference_alpha(reg_weight: float, dim: int) -> float:
    """The paper-convention temperature equivalent to the reference code's reg_weight."""
    return 2.0 * reg_weight / dim


def jacobian(delta: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobian J[b] = d delta[b] / d noise[b], shape [B, d, d]; differentiable.

    Assumes samples do not interact (true of every hypernetwork here). ``noise`` must require
    grad and ``delta`` must have been computed from it.
    """
    flat = delta.flatten(1)
    b, d = flat.shape
    if d > EXACT_MAX_DIM:
        raise ConfigError(f"the exact objective builds a {d}x{d} Jacobian per sample; use l2 for noise of more than {EXACT_MAX_DIM} elements")
    rows = [torch.autograd.grad(flat[:, i].sum(), noise, create_graph=True)[0].reshape(b, d) for i in range(d)]
    return torch.stack(rows, dim=1)


def logdet_term(jac: torch.Tensor) -> torch.Tensor:
    """tr(J) - log|det(I + J)| per sample [B]: the part of the KL the L2 objective drops."""
    eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
    return jac.diagonal(dim1=-2, dim2=-1).sum(-1) - torch.linalg.slogdet(eye + jac)[1]


class NoiseObjective:
    """Callable: ``(noise, delta, reward) -> dict`` of per-batch scalars, ``"loss"`` included.

    noise, delta: [B, *latent_shape]; reward: [B] (already weighted). All outputs are means over
    the batch: loss, kl (the KL estimate), reg (1/2 ||f||^2), reward, and logdet for ``exact``.
    """

    def __init__(self, config: Optional[ObjectiveConfig] = None):
        self.config = config or ObjectiveConfig()
        #: the optimizer step the trainer is on; sets alpha under a schedule
        self.step = 0

    @property
    def alpha(self) -> float:
        return self.config.alpha_at(self.step)

    def __call__(self, noise: torch.Tensor, delta: torch.Tensor, reward: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        delta32 = delta.float().flatten(1)
        reward = reward.float()
        half_sq = 0.5 * delta32.pow(2).sum(1)
        out = {"reg": half_sq.mean(), "reward": reward.mean()}
        if cfg.kind == "l2":
            kl = half_sq
            loss = kl - reward / self.alpha
        elif cfg.kind == "reference":
            kl = half_sq
            loss = cfg.reg_weight * delta32.pow(2).mean(1) - reward
        elif cfg.kind == "exact":
            ld = logdet_term(jacobian(delta, noise).float())
            kl = half_sq + ld
            out["logdet"] = ld.mean()
            loss = kl - reward / self.alpha
        else:  # "none"
            kl = half_sq
            loss = -reward
        if cfg.alpha_start is not None:
            out["alpha"] = torch.tensor(self.alpha)
        out["kl"] = kl.mean()
        out["loss"] = loss.mean()
        return out
