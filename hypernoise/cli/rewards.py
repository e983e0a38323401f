"""``hypernoise rewards``: the registered rewards, presets, and where weights come from."""

from __future__ import annotations


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    from hypernoise.rewards import PRESETS, REWARDS, reward_source

    width = max(len(n) for n in REWARDS)
    print("rewards (use as name:weight[,name:weight...]):")
    for name in REWARDS:
        print(f"  {name:<{width}}  {REWARDS.help(name)}")
        print(f"  {'':<{width}}  weights: {reward_source(name)}")
    print("presets:")
    for name, spec in PRESETS.items():
        print(f"  {name:<{width}}  {spec}")
    return 0
