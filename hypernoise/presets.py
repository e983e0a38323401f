"""Typed training presets: what a generator trains with unless the user says otherwise.

    PRESETS: "generator" or "generator/name" -> factory() -> HyperNoiseConfig  (validated dataclasses)
    default_config(generator, model, reward, reward_weights, preset=None, **given) -> HyperNoiseConfig

"sana-sprint" is the generator's own preset (used when none is named); "sana-sprint/paper" is
the preset "paper" of that generator (``hypernoise train --preset paper``).

A preset is a whole ``HyperNoiseConfig`` (LoRA, objective, training), checked on construction like
any config; a user's settings are applied over it with ``dataclasses.replace``, so precedence is
given > the generator's preset > the dataclasses' defaults. A generator with no preset trains with
the dataclasses' defaults. Built-in worlds register their own presets from their packages.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable, Optional

from hypernoise.errors import ConfigError
from hypernoise.generators import GENERATORS, detect_generator
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


#: the name of a generator's own preset
DEFAULT = "default"


def _key(generator: str, preset: Optional[str]) -> str:
    return generator if preset in (None, DEFAULT) else f"{generator}/{preset}"


def register_preset(generator: str, preset: Optional[str] = None,
                    help: str = "") -> Callable[[Callable[[], HyperNoiseConfig]], Callable]:
    """Decorator: ``factory() -> HyperNoiseConfig`` is ``generator``'s preset ``preset`` (its own
    preset when None)."""
    return PRESETS.register(_key(generator, preset), help=help)


def presets_of(generator: str) -> list[str]:
    """The preset names ``generator`` has: "default" first, then its named presets."""
    return [DEFAULT] + sorted(k.split("/", 1)[1] for k in PRESETS if k.startswith(f"{generator}/"))


def preset_config(generator: str, preset: Optional[str] = None) -> HyperNoiseConfig:
    """``generator``'s preset ``preset`` (default: its own preset, or the dataclasses' defaults
    where it has none); an unknown name is a ``ConfigError`` listing the generator's presets."""
    key = _key(generator, preset)
    if key in PRESETS:
        return PRESETS.build(key)
    GENERATORS.get(generator)  # an unknown generator is said as such, not as a missing preset
    if key != generator:
        raise ConfigError(f"generator {generator!r} has no `preset` {preset!r}; choose one of: "
                          f"{', '.join(presets_of(generator))}", field="preset")
    return HyperNoiseConfig()


@register_preset("sd-turbo", help="this project's own choice (the authors' SD-Turbo script is in a later commit, 1d5d3db8)")
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


# --------------------------------------------------------------------------- the paper's runs
# The authors' code: github.com/ExplainableML/HyperNoise at bbe3ab4 (docs/training.md, "The paper's
# runs", cites every value). Batches are per process: the authors' --batch_size is global, divided
# by the number of processes (main.py:168 of their later commit 1d5d3db8); their 6 (SANA) and 7
# (FLUX) processes give global batches of 18 and 7. 30 epochs of ~70,000 prompts (METHOD.md):
# 70,000 // 18 // 3 x 30 = 38,880 optimizer steps on SANA, 70,000 // 7 // 4 x 30 = 75,000 on FLUX.
def _paper(lora: LoraSettings, train: TrainConfig, model: ModelConfig) -> HyperNoiseConfig:
    return HyperNoiseConfig(model=model, reward="reno", reward_dtype="bfloat16", lora=lora,
                            objective=ObjectiveConfig(kind="reference", reg_weight=0.5), train=train)


def _paper_train(**given) -> TrainConfig:
    return TrainConfig(noise_mode="per-step", warmup_steps=100, warmup_from_zero=True, warmup_per_process=True,
                       max_grad_norm=1.0, num_steps=1, **given)


@register_preset("sana-sprint", "paper", help="the authors' SANA-Sprint run: Sana_Sprint_0.6B_1024px, LoRA r 128 / "
                                              "alpha 256 on every Linear and conv, SGD 1e-3, 3 x 3 accumulation "
                                              "per process (18 x 3 on their 6 processes)")
def _sana_sprint_paper() -> HyperNoiseConfig:
    return _paper(LoraSettings(rank=128, alpha=256, grouped_convs=True),
                  _paper_train(optimizer="sgd", lr=1e-3, momentum=0.9, batch_size=3, gradient_accumulation_steps=3,
                               steps=38_880),
                  ModelConfig(generator="sana-sprint", pretrained="Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers",
                              dtype="bfloat16"))


@register_preset("flux-schnell", "paper", help="the authors' FLUX-Schnell run: 512 px, LoRA r 128 / alpha 640 on every "
                                               "Linear and conv, AdamW 2e-5 (weight decay 1e-4), 1 x 4 accumulation "
                                               "per process (7 x 4 on their 7 processes)")
def _flux_schnell_paper() -> HyperNoiseConfig:
    return _paper(LoraSettings(rank=128, alpha=640, grouped_convs=True),
                  _paper_train(optimizer="adamw", lr=2e-5, weight_decay=1e-4, batch_size=1, gradient_accumulation_steps=4,
                               steps=75_000),
                  ModelConfig(generator="flux-schnell", pretrained="black-forest-labs/FLUX.1-schnell", dtype="bfloat16",
                              height=512, width=512))


def _train_fields() -> set[str]:
    return {f.name for f in fields(TrainConfig)}


def default_config(generator: Generator, model: Optional[ModelConfig] = None, reward: Optional[str] = None,
                   reward_weights: Optional[dict] = None, preset: Optional[str] = None, **given) -> HyperNoiseConfig:
    """A HyperNoiseConfig: ``generator``'s preset (``preset``, default its own) with what the user
    gave applied over it.

    ``given``: TrainConfig fields and ``objective``, ``alpha``, ``reg_weight``, ``alpha_start``,
    ``alpha_ramp``, ``rank``, ``lora_alpha``, ``passes``; a value of None means "not given". A
    ``rank`` given without ``lora_alpha`` keeps the preset's LoRA scale alpha / rank (its alpha
    scaled with the rank: sana-sprint's r 128 / alpha 256 at rank 2 is alpha 4, not 256). The
    preset's ``init_trials`` is dropped when the run is no longer than one trial (a short run is a
    smoke test); trials the user asks for are kept, and such a run is an error.
    """
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - _train_fields() - set(_OTHER_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown training settings {unknown}")
    base = preset_config(generator.name, preset)
    parts = {"objective": {}, "lora": {}, None: {}}
    for key, (part, name) in _OTHER_SETTINGS.items():
        if key in given:
            parts[part][name] = given[key]
    if "rank" in given and "lora_alpha" not in given and base.lora.alpha is not None:
        parts["lora"]["alpha"] = base.lora.alpha * given["rank"] / base.lora.rank  # the preset's scale alpha / r kept
    train = {k: v for k, v in given.items() if k in _train_fields()}
    steps, trial_steps = train.get("steps", base.train.steps), train.get("trial_steps", base.train.trial_steps)
    if "init_trials" not in train and steps <= trial_steps:
        train["init_trials"] = TrainConfig.__dataclass_fields__["init_trials"].default
    model = model or ModelConfig(generator=generator.name, pretrained=generator.pretrained)
    return replace(base, model=_model_over(base.model, model), preset=preset or DEFAULT, reward=reward or base.reward,
                   reward_weights=reward_weights or base.reward_weights,
                   objective=replace(base.objective, **parts["objective"]), lora=replace(base.lora, **parts["lora"]),
                   train=replace(base.train, **train), **parts[None])


def preset_model(model: ModelConfig, preset: Optional[str] = None) -> ModelConfig:
    """``model`` with the weights and resolution of ``preset`` filled in where the user gave none
    (``model.generator`` "auto" is detected from ``model.pretrained`` first)."""
    name = detect_generator(model.pretrained) if model.generator == "auto" else model.generator
    return _model_over(preset_config(name, preset).model, replace(model, generator=name))


def _model_over(preset: ModelConfig, given: ModelConfig) -> ModelConfig:
    """The user's model settings over a preset's (a preset may name weights and a resolution)."""
    return replace(given, **{f.name: getattr(preset, f.name) for f in fields(ModelConfig)
                             if getattr(given, f.name) is None and getattr(preset, f.name) is not None})
