"""Noise hypernetworks f_phi: LoRA on the generator's backbone, or a standalone MLP."""

from hypernoise.hypernet.base import NoiseHypernetwork
from hypernoise.hypernet.lora import ADAPTER_NAME, LoRAHypernetwork, LoraSettings, default_target_modules
from hypernoise.hypernet.mlp import MLPHypernetwork

__all__ = ["NoiseHypernetwork", "LoRAHypernetwork", "LoraSettings", "MLPHypernetwork",
           "ADAPTER_NAME", "default_target_modules"]
