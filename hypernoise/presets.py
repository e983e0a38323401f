"""Typed training presets: what a generator trains with unless the user says otherwise.

    PRESETS: generator name -> factory() -> HyperNoiseConfig     (validated dataclasses)
    default_config(generator, model, reward, reward_weights, **given) -> HyperNoiseConfig

A preset is a whole ``HyperNoiseConfig`` (LoRA, objective, training), checked on construction like
any config; a user's settings are applied over it with ``dataclasses.replace``, so precedence is
given > the generator's preset > the dataclasses' defaults. A generator with no preset trains with
the dataclasses' defaults. Built-in worlds register their own presets from their packages.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable, Optional

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Generator
from hypernoise.lora import LoraSettings
from hypernoise.methods.hypernoise import HyperNoiseConfig, ModelConfig
from hypernoise.objective import ObjectiveConfig
from hypernoise.registry import Registry
from hypernoise.training.config import TrainConfig

PRESETS: Registry = Registry("training preset")

#: user settings that are not TrainConfig fields -> (part of HyperNoiseConfig, its field)
_OTHER_SETTINGS = {"objective": ("objective", "kind"), "alpha": ("objective", "alpha"),
                   "reg_weight": ("objective", "reg_weight"), "alpha_start": ("objective", "alpha_start"),
                   "alpha_ramp": ("objective", "alpha_ramp"), "rank": ("lora", "rank"),
                   "lora_alpha": ("lora", "alpha"), "passes": (None, "passes")}


def register_preset(generator: str, help: str = "") -> Callable[[Callable[[], HyperNoiseConfig]], Callable]:
    """Decorator: ``factory() -> HyperNoiseConfig`` is ``generator``'s training preset."""
    return PRESETS.register(generator, help=help)


def preset_config(generator: str) -> HyperNoiseConfig:
    """``generator``'s preset, or the dataclasses' defaults where it has none."""
    return PRESETS.build(generator) if generator in PRESETS else HyperNoiseConfig()


@register_preset("sd-turbo", help="this project's own choice: the authors' repository has no SD-Turbo script")
def _sd_turbo() -> HyperNoiseConfig:
    return HyperNoiseConfig(lora=LoraSettings(rank=128, alpha=128), objective=ObjectiveConfig(kind="reference"),
                            train=TrainConfig(optimizer="sgd", lr=1e-3, max_grad_norm=10.0, num_steps=1))


@register_preset("sana-sprint", help="the paper's SANA-Sprint recipe: LoRA r 128 / alpha 256, SGD 1e-3")
def _sana_sprint() -> HyperNoiseConfig:
    return HyperNoiseConfig(lora=LoraSettings(rank=128, alpha=256), objective=ObjectiveConfig(kind="reference"),
                            train=TrainConfig(optimizer="sgd", lr=1e-3, max_grad_norm=1.0, warmup_steps=100,
                                              num_steps=1))


@register_preset("flux-schnell", help="the authors' FLUX-Schnell script: LoRA r 128 / alpha 640, AdamW 2e-5")
def _flux_schnell() -> HyperNoiseConfig:
    return HyperNoiseConfig(lora=LoraSettings(rank=128, alpha=640), objective=ObjectiveConfig(kind="reference"),
                            train=TrainConfig(optimizer="adamw", lr=2e-5, max_grad_norm=1.0, warmup_steps=100,
                                              num_steps=1))


def _train_fields() -> set[str]:
    return {f.name for f in fields(TrainConfig)}


def default_config(generator: Generator, model: Optional[ModelConfig] = None, reward: Optional[str] = None,
                   reward_weights: Optional[dict] = None, **given) -> HyperNoiseConfig:
    """A HyperNoiseConfig: ``generator``'s preset with what the user gave applied over it.

    ``given``: TrainConfig fields and ``objective``, ``alpha``, ``reg_weight``, ``alpha_start``,
    ``alpha_ramp``, ``rank``, ``lora_alpha``, ``passes``; a value of None means "not given". The
    preset's ``init_trials`` is dropped when the run is no longer than one trial (a short run is a
    smoke test); trials the user asks for are kept, and such a run is an error.
    """
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - _train_fields() - set(_OTHER_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown training settings {unknown}")
    preset = preset_config(generator.name)
    parts = {"objective": {}, "lora": {}, None: {}}
    for key, (part, name) in _OTHER_SETTINGS.items():
        if key in given:
            parts[part][name] = given[key]
    train = {k: v for k, v in given.items() if k in _train_fields()}
    steps, trial_steps = train.get("steps", preset.train.steps), train.get("trial_steps", preset.train.trial_steps)
    if "init_trials" not in train and steps <= trial_steps:
        train["init_trials"] = TrainConfig.__dataclass_fields__["init_trials"].default
    return replace(preset, model=model or ModelConfig(generator=generator.name, pretrained=generator.pretrained),
                   reward=reward, reward_weights=reward_weights or {},
                   objective=replace(preset.objective, **parts["objective"]), lora=replace(preset.lora, **parts["lora"]),
                   train=replace(preset.train, **train), **parts[None])
