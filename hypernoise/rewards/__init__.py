"""Rewards r, looked up by name and combined by spec (``"hps:5,imagereward:1"``).

Modules of model-based rewards import their model packages (transformers) only when built.
``REWARD_SOURCES`` says where each model-based reward loads its weights from. The worlds' rewards
("shapes", the 2-D ones) are registered by their plugins, loaded on the first lookup
(``hypernoise.registry.load_plugins``).
"""

from hypernoise.rewards.base import Reward, WeightedReward
from hypernoise.rewards.registry import PRESETS, REWARDS, build_reward, parse_spec
from hypernoise.rewards.hub import REWARD_SOURCES, reward_source
from hypernoise.rewards import pixel as _pixel  # noqa: F401  (registers "redness")
from hypernoise.rewards import clip as _clip  # noqa: F401  (registers "clip", "pickscore")
from hypernoise.rewards import hps as _hps  # noqa: F401  (registers "hps")
from hypernoise.rewards import imagereward as _imagereward  # noqa: F401  (registers "imagereward")
from hypernoise.rewards import aesthetic as _aesthetic  # noqa: F401  (registers "aesthetic")

__all__ = ["Reward", "WeightedReward", "REWARDS", "PRESETS", "REWARD_SOURCES", "build_reward", "parse_spec",
           "reward_source"]
