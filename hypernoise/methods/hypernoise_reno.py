"""HyperNoise-initialised ReNO: semi-amortised inference.

ReNO (``methods.reno``) started from the hypernetwork's noise x0 + f_phi(x0, c) instead of x0,
everything else as ReNO (the same loss, optimiser, iterations, best iterate and seeded sampler):

    x_start = x0 + f_phi(x0, c)          (K = ``passes`` applications of the map, no gradient)
    image   = ReNO(g, r, x_start, c)

The amortised map supplies a start that already reads better, and a few iterations of per-noise
optimisation add what one map cannot (docs/world.md, "Where the reward's gain goes"). Its first
iterate is the HyperNoise image; with f_phi = 0 it is ReNO exactly. The cost is ReNO's plus the
hypernetwork's K forwards, and its time includes theirs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from hypernoise.adapter import load_adapter
from hypernoise.generators.base import Generator
from hypernoise.hypernet.base import NoiseHypernetwork
from hypernoise.methods.base import Cost, MethodOutput, RunConfig, measure, register_method
from hypernoise.methods.reno import RenoConfig, reno, run_settings


@register_method("hypernoise-reno", help="ReNO started from the HyperNoise noise x0 + f_phi(x0, c) (semi-amortised)",
                 load_adapter=load_adapter, budget="iterations")
def run_hypernoise_reno(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
                        config: RunConfig) -> MethodOutput:
    """``hypernoise_reno`` with the loaded hypernetwork ``config.adapter``, applied ``config.passes``
    times (default: its own), and ReNO's settings as ``run_reno`` takes them."""
    return hypernoise_reno(generator, reward, config.adapter, noise, prompts, run_settings(config),
                           passes=config.passes, progress=config.progress, seeds=config.seeds or None,
                           budgets=config.budgets)


def hypernoise_reno(generator: Generator, reward: nn.Module, hypernet: NoiseHypernetwork, noise: torch.Tensor,
                    prompts: Sequence[str], config: Optional[RenoConfig] = None, passes: Optional[int] = None,
                    progress: bool = False, seeds: Optional[Sequence[int]] = None,
                    budgets: Sequence[int] = ()) -> MethodOutput:
    """``reno`` from x0 + f_phi(x0, c) for noise x0 [B, *latent_shape]; g runs with the
    hypernetwork's adapters off. The output (and each of its ``budgets``) is ReNO's, with the
    hypernetwork's forwards counted in its cost and its time added to every point's seconds;
    ``extras["start_noise"]`` is x0 + f_phi(x0, c)."""
    passes = passes or hypernet.passes
    amortised = Cost(hypernet_forward=float(passes))
    with measure(amortised, noise.device, len(prompts)), torch.no_grad():
        start = hypernet.modulate(noise, generator.encode(prompts), passes)
    with hypernet.adapters_disabled():
        out = reno(generator, reward, start, prompts, config, progress=progress, seeds=seeds, budgets=budgets)
    for point in {id(o): o for o in (out, *out.budgets.values())}.values():  # the full run may be a budget too
        _add(point.cost, amortised)
    out.extras["start_noise"] = start
    return out


def _add(cost: Cost, amortised: Cost) -> None:
    """``cost`` plus the hypernetwork's passes: their forwards and seconds; the larger peak."""
    cost.hypernet_forward += amortised.hypernet_forward
    cost.seconds_per_image += amortised.seconds_per_image
    cost.peak_memory_mb = max(cost.peak_memory_mb, amortised.peak_memory_mb)
