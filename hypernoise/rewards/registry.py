"""The reward registry and the ``name:weight[,name:weight...]`` spec language."""

from __future__ import annotations

import math
from typing import Optional

import torch

from hypernoise.errors import ConfigError
from hypernoise.registry import Registry
from hypernoise.rewards.base import WeightedReward

REWARDS: Registry = Registry("reward")

#: named specs. "reno" is the ReNO / HyperNoise ensemble (METHOD.md).
PRESETS: dict[str, str] = {
    "reno": "hps:5,imagereward:1,clip:0.01,pickscore:0.05",
}


def parse_spec(spec: str) -> list[tuple[str, float]]:
    """Parse ``"hps:5,imagereward:1"`` (or a preset name) into ``[(name, weight), ...]``.

    A bare name means weight 1. Raises ``ConfigError`` naming the bad term and the fix.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty reward spec; give name:weight[,name:weight...], e.g. redness:1")
    spec = PRESETS.get(spec.strip(), spec)
    terms = []
    for raw in spec.split(","):
        term = raw.strip()
        name, sep, weight_text = term.partition(":")
        name = name.strip()
        if not name:
            raise ConfigError(f"reward spec term {term!r} has no name; write name:weight, e.g. redness:1")
        if sep and not weight_text.strip():
            raise ConfigError(f"reward spec term {term!r} has no weight; write {name}:1")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ConfigError(f"reward weight {weight_text!r} in {term!r} is not a number; write {name}:1") from None
        if not math.isfinite(weight):
            raise ConfigError(f"reward weight in {term!r} must be finite")
        if name not in REWARDS:
            REWARDS.get(name)  # raises UnknownNameError listing the known rewards
        if any(name == n for n, _ in terms):
            raise ConfigError(f"reward {name!r} appears twice in spec {spec!r}; give it once")
        terms.append((name, weight))
    return terms


def build_reward(spec: str, device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                 per_reward: Optional[dict] = None, **options):
    """Build a ``WeightedReward`` from a spec; each reward is frozen and on ``device``.

    ``options`` go to every reward's builder (builders ignore what they do not take);
    ``per_reward`` maps a reward name to options for that reward alone, e.g.
    ``{"hps": {"pretrained": "weights/hps"}}``.
    """
    terms = parse_spec(spec)
    per_reward = per_reward or {}
    unknown = sorted(set(per_reward) - {n for n, _ in terms})
    if unknown:
        raise ConfigError(f"options given for {', '.join(unknown)}, which the reward spec {spec!r} does not use")
    rewards = [REWARDS.build(name, device=device, dtype=dtype, **{**options, **per_reward.get(name, {})}).freeze()
               for name, _ in terms]
    out = WeightedReward(rewards, [w for _, w in terms])
    if device is not None or dtype is not None:
        out.to(device=device, dtype=dtype)
    return out
