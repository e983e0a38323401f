"""The shape every noise method shares, what it costs, and the one sampling path.

    METHODS.get(name).run(generator, reward, noise [B, *latent_shape], prompts, RunConfig) -> MethodOutput
        samples: images [B, 3, H, W] in [0, 1] (or points), one per prompt
        cost:    network evaluations, seconds and peak memory, per image

    sample(generator, hypernet, noise, cond, passes, num_steps, rng) -> Sample
        images = g(x0 + f_phi(x0, c), c) with the hypernetwork's adapters off while g runs
        (g(x0, c) without a hypernetwork); differentiable. Training, evaluation, generation, the
        bench and the benchmarks all generate through it.

Each method lives in its own module and registers a ``Method`` (its runner, and the loader of
its trained adapter where it has one) in ``METHODS`` with ``register_method``; the base model's
runner is here.

Network evaluations are counted per image and per network, forward and backward apart: a
backward pass through g costs about two forwards, so ReNO's 50 iterations are 50 forward +
50 backward generator passes, not 50 NFEs.

Nested budgets: a method whose cheaper settings are prefixes of its run (ReNO's first K
iterations, best-of-N's first N candidates) registers what its budget counts
(``register_method(..., budget="iterations")``) and, given ``RunConfig.budgets``, returns in
``MethodOutput.budgets`` the output it would have returned at each budget: the best so far, with
the passes counted up to there and the wall time and peak memory read at that point of this run
(``Meter.read``), not a unit time multiplied.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
from torch import nn

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Conditioning, Generator
from hypernoise.hypernet.base import NoiseHypernetwork
from hypernoise.registry import Registry


@dataclass
class Cost:
    """Per-image cost of a method. ``nfe_per_image`` sums every pass of every network."""

    generator_forward: float = 0.0
    generator_backward: float = 0.0
    hypernet_forward: float = 0.0
    hypernet_backward: float = 0.0
    reward_forward: float = 0.0
    reward_backward: float = 0.0
    seconds_per_image: float = 0.0
    peak_memory_mb: float = 0.0

    @property
    def nfe_per_image(self) -> float:
        """Generator + hypernetwork passes, forward and backward (reward passes not included)."""
        return self.generator_forward + self.generator_backward + self.hypernet_forward + self.hypernet_backward

    def to_dict(self) -> dict:
        return {"nfe_per_image": self.nfe_per_image, **asdict(self)}


@dataclass
class MethodOutput:
    """What a noise method returns."""

    samples: torch.Tensor
    cost: Cost
    #: the initial noise each sample was generated from [B, *latent_shape] (after optimisation)
    noise: Optional[torch.Tensor] = None
    #: the reward of each returned sample [B], where the method computed it
    reward: Optional[torch.Tensor] = None
    extras: dict = field(default_factory=dict)
    #: budget -> the output at that budget of a nested run (``RunConfig.budgets``): the images,
    #: noise and reward it would have returned, its cost up to that point
    budgets: dict = field(default_factory=dict)


def _rss_peak_mb() -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak resident set size
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a block, in MB: allocated CUDA memory on a GPU, else the process's peak
    resident set size (Linux; includes the loaded weights). ``mb`` is 0.0 where neither can
    be read."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.mb = 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_rss_peak()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mb = _rss_peak_mb() or 0.0


class Meter:
    """Wall time and peak memory since the start of a ``measure`` block, readable inside it: a
    nested run reads them at each budget."""

    def __init__(self, device: torch.device, n_images: int):
        self.device, self.n_images = torch.device(device), max(1, n_images)
        self.start = time.perf_counter()

    def read(self) -> tuple[float, float]:
        """(seconds per image so far, peak memory so far in MB, as ``PeakMemory`` measures it)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _rss_peak_mb() or 0.0
        return (time.perf_counter() - self.start) / self.n_images, peak

    def fill(self, cost: Cost) -> Cost:
        """``cost`` with its seconds per image and peak memory read now."""
        cost.seconds_per_image, cost.peak_memory_mb = self.read()
        return cost


@contextlib.contextmanager
def measure(cost: Cost, device: torch.device, n_images: int) -> Iterator[Meter]:
    """Fill ``cost.seconds_per_image`` and ``cost.peak_memory_mb`` for the enclosed block; yields
    the running ``Meter`` (for budget snapshots inside the block)."""
    with PeakMemory(device) as peak:
        meter = Meter(device, n_images)
        yield meter
    cost.seconds_per_image = meter.read()[0]
    cost.peak_memory_mb = peak.mb


def check_budgets(budgets: Sequence[int], most: int, what: str) -> tuple[int, ...]:
    """``budgets`` sorted and unique, each a positive integer at most ``most`` (the run's own
    ``what``); ``ConfigError`` naming `budgets` otherwise."""
    out = set()
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or int(b) != b or b < 1:
            raise ConfigError(f"`budgets` must be positive integers, got {b!r}", field="budgets")
        if b > most:
            raise ConfigError(f"`budgets` must be at most the run's {most} {what}, got {int(b)}", field="budgets")
        out.add(int(b))
    return tuple(sorted(out))


# --------------------------------------------------------------------------- noise and the sampling path
def seeded_noise(generator: Generator, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """Noise [1, *latent_shape] for ``seed`` (drawn on the CPU) and the generator that drew it."""
    rng = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((1, *generator.latent_shape), generator=rng, dtype=torch.float32)
    return noise.to(device=generator.device, dtype=generator.dtype), rng


@dataclass
class Sample:
    """What ``sample`` returns: images [B, 3, H, W] (or points [B, D]), the noise g started from
    x0_hat [B, *latent_shape], and the displacement x0_hat - x0 (None without a hypernetwork)."""

    images: torch.Tensor
    noise: torch.Tensor
    delta: Optional[torch.Tensor] = None


RngLike = Union[None, torch.Generator, Sequence[torch.Generator]]


def sample(generator: Generator, hypernet: Optional[NoiseHypernetwork], noise: torch.Tensor, cond: Conditioning,
           passes: Optional[int] = None, num_steps: Optional[int] = None, rng: RngLike = None) -> Sample:
    """g(x0 + f_phi(x0, c), c) for noise x0 [B, *latent_shape], the hypernetwork applied K =
    ``passes`` times (default: its own); g(x0, c) when ``hypernet`` is None. f_phi runs with its
    adapters on, g with them off (one copy of the backbone holds both). Differentiable; wrap in
    ``torch.no_grad()`` for inference. ``rng`` feeds stochastic sampler steps (one per row)."""
    if hypernet is None:
        return Sample(generator.generate(noise, cond, num_steps, rng=rng), noise)
    delta = hypernet.displacement(noise, cond, passes)
    modulated = noise + delta.to(noise.dtype)
    with hypernet.adapters_disabled():
        images = generator.generate(modulated, cond, num_steps, rng=rng)
    return Sample(images, modulated, delta)


# --------------------------------------------------------------------------- the method family
@dataclass
class RunConfig:
    """What a method's runner may use besides the noise and the prompts; each reads its own fields."""

    #: generator steps (default: the generator's)
    num_steps: Optional[int] = None
    #: the method's loaded adapter (hypernoise: the hypernetwork; finetune: the LoRA already in g)
    adapter: Any = None
    #: hypernoise: times its map is applied (default: the adapter's)
    passes: Optional[int] = None
    #: the seed of each row of the batch (best-of-N draws a row's candidates from it; ReNO seeds
    #: each row's sampler with it at every iteration)
    seeds: Sequence[int] = ()
    #: best-of-N: candidates per prompt
    n: int = 50
    #: ReNO's settings (``methods.reno.RenoConfig``; None: its defaults)
    reno: Any = None
    #: progress bars inside a method (ReNO's iterations)
    progress: bool = False
    #: nested budgets to report besides the full run (``MethodOutput.budgets``), for methods that
    #: register a ``budget`` (ReNO: iterations, best-of-N: candidates); each at most the run's
    budgets: Sequence[int] = ()


Runner = Callable[[Generator, nn.Module, torch.Tensor, Sequence[str], RunConfig], MethodOutput]


@dataclass(frozen=True)
class Method:
    """A registered method: ``run`` (one signature for all) and, for methods that run with a
    trained adapter, ``load_adapter(generator, folder)`` returning what ``RunConfig.adapter`` holds."""

    run: Runner
    load_adapter: Optional[Callable[[Generator, Any], Any]] = None
    #: what a nested budget counts ("iterations", "candidates"); None: the method reports none
    budget: Optional[str] = None

    @property
    def needs_adapter(self) -> bool:
        return self.load_adapter is not None


METHODS: Registry = Registry("method")


def register_method(name: str, help: str, load_adapter: Optional[Callable] = None,
                    budget: Optional[str] = None) -> Callable[[Runner], Runner]:
    """Decorator: register ``run`` as method ``name`` (one line per method); ``budget``: what its
    nested budgets count, for a method that reports them."""
    def decorator(run: Runner) -> Runner:
        METHODS.register(name, help=help)(Method(run, load_adapter, budget))
        return run

    return decorator


@register_method("base", help="the frozen generator from the initial noise")
@torch.no_grad()
def run_base(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
             config: RunConfig) -> MethodOutput:
    cost = Cost(generator_forward=float(generator.nfe(config.num_steps)))
    with measure(cost, noise.device, len(prompts)):
        images = sample(generator, None, noise, generator.encode(prompts), num_steps=config.num_steps).images
    return MethodOutput(images, cost, noise=noise)
