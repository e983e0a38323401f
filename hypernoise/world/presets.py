"""The shapes world's training preset (registered in ``hypernoise.presets.PRESETS``)."""

from __future__ import annotations

from hypernoise.lora import LoraSettings
from hypernoise.methods.hypernoise import HyperNoiseConfig
from hypernoise.objective import ObjectiveConfig
from hypernoise.presets import register_preset
from hypernoise.training.config import TrainConfig


@register_preset("shapes", help="HyperNoise on the shapes world on a CPU (docs/world.md)")
def shapes_preset() -> HyperNoiseConfig:
    """HyperNoise training that suits this world on a CPU (docs/world.md, "HyperNoise on this
    world"): batch 64 (at 16 the training reward did not rise), AdamW 3e-4 (1e-3 trains
    unsteadily), on the category-balanced train prompts, trained through the 1-step map (same
    layout, 2.3x cheaper than 2 steps), used at the default 2 steps; alpha 1.0 keeps the images
    as close to the base's as real images are (alpha 0.05 gains more at twice the distance), and
    3 initialisation trials of 100 steps make it take off in every seed."""
    return HyperNoiseConfig(
        lora=LoraSettings(rank=8), objective=ObjectiveConfig(kind="l2", alpha=1.0),
        train=TrainConfig(optimizer="adamw", lr=3e-4, batch_size=64, steps=800, noise_mode="per-sample", num_steps=1,
                          init_trials=3, trial_steps=100, checkpoint_every=100))
