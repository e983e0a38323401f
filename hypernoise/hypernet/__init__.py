"""Noise hypernetworks f_phi: LoRA on the generator's backbone, or a standalone MLP."""

from hypernoise.hypernet.base import NoiseHypernetwork, check_passes
from hypernoise.hypernet.lora import LoRAHypernetwork
from hypernoise.hypernet.mlp import MLPHypernetwork
from hypernoise.lora import ADAPTER_NAME, LoraSettings, default_target_modules

__all__ = ["NoiseHypernetwork", "LoRAHypernetwork", "LoraSettings", "MLPHypernetwork",
           "ADAPTER_NAME", "default_target_modules", "check_passes"]
