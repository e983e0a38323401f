"""The analytic 2-D world's training preset (registered in ``hypernoise.presets.PRESETS``)."""

from __future__ import annotations

from hypernoise.methods.hypernoise import HyperNoiseConfig
from hypernoise.objective import ObjectiveConfig
from hypernoise.presets import register_preset
from hypernoise.training.config import TrainConfig


@register_preset("toy2d", help="the MLP hypernetwork on the 2-D world with the exact KL objective")
def toy2d_preset() -> HyperNoiseConfig:
    """AdamW 3e-3, batch 512, per-sample noise, 2000 steps, the exact (low-dimensional) KL."""
    return HyperNoiseConfig(objective=ObjectiveConfig(kind="exact"),
                            train=TrainConfig(optimizer="adamw", lr=3e-3, batch_size=512, noise_mode="per-sample",
                                              steps=2000))
