"""The shape every noise method shares, and what it costs.

    method(generator, reward, noise [B, *latent_shape], prompts, ...) -> MethodOutput
        samples: images [B, 3, H, W] in [0, 1] (or points), one per prompt
        cost:    network evaluations, seconds and peak memory, per image

Network evaluations are counted per image and per network, forward and backward apart: a
backward pass through g costs about two forwards, so ReNO's 50 iterations are 50 forward +
50 backward generator passes, not 50 NFEs.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import torch


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


@contextlib.contextmanager
def measure(cost: Cost, device: torch.device, n_images: int) -> Iterator[Cost]:
    """Fill ``cost.seconds_per_image`` and ``cost.peak_memory_mb`` for the enclosed block."""
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        yield cost
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    cost.seconds_per_image = (time.perf_counter() - start) / max(1, n_images)
    cost.peak_memory_mb = peak.mb
