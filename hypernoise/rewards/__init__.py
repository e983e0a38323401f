"""Rewards r, looked up by name and combined by spec (``"hps:5,imagereward:1"``).

Modules of model-based rewards import their model packages (transformers) only when built.
"""

from hypernoise.rewards.base import Reward, WeightedReward
from hypernoise.rewards.registry import PRESETS, REWARDS, build_reward, parse_spec
from hypernoise.rewards import pixel as _pixel  # noqa: F401  (registers "redness")
from hypernoise.rewards import toy2d as _toy2d  # noqa: F401  (registers the 2-D rewards)

__all__ = ["Reward", "WeightedReward", "REWARDS", "PRESETS", "build_reward", "parse_spec"]
