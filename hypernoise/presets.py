"""Typed training presets: what a generator trains with unless the user says otherwise.

    PRESETS: "generator" or "generator/name" -> factory() -> HyperNoiseConfig  (validated dataclasses)
    default_config(generator, model, reward, reward_weights, preset=None, **given) -> HyperNoiseConfig
    RENO_PRESETS: "generator" -> factory() -> RenoPreset   (ReNO's own settings per family)
    reno_settings(model, preset=None, reward=None, **given) -> RenoPreset

"sana-sprint" is the generator's own preset (used when none is named); "sana-sprint/paper" is
the preset "paper" of that generator (``hypernoise train --preset paper``).

A preset is a whole ``HyperNoiseConfig`` (LoRA, objective, training), checked on construction like
any config; a user's settings are applied over it with ``dataclasses.replace``, so precedence is
given > the generator's preset > the dataclasses' defaults. A generator with no preset trains with
the dataclasses' defaults. Built-in worlds register their own presets from their packages.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Optional

from hypernoise.errors import ConfigError
from hypernoise.generators import GENERATORS, detect_generator
from hypernoise.generators.base import Generator
from hypernoise.lora import LoraSettings
from hypernoise.methods.hypernoise import HyperNoiseConfig, ModelConfig
from hypernoise.methods.reno import RenoConfig
from hypernoise.objective import ObjectiveConfig
from hypernoise.registry import Registry
from hypernoise.training.config import TrainConfig

PRESETS: Registry = Registry("training preset")

#: user settings that are not TrainConfig fields -> (part of HyperNoiseConfig, its field)
_OTHER_SETTINGS = {"objective": ("objective", "kind"), "alpha": ("objective", "alpha"),
                   "reg_weight": ("objective", "reg_weight"), "alpha_start": ("objective", "alpha_start"),
                   "alpha_ramp": ("objective", "alpha_ramp"), "rank": ("lora", "rank"),
                   "lora_alpha": ("lora", "alpha"), "lora_dtype": ("lora", "weights_dtype"),
                   "passes": (None, "passes")}


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


# --------------------------------------------------------------------------- this library's choices
# Each family's own preset (used when no --preset is named). Close to the authors' values, but not
# their runs (fp32 rewards, the default weights and batch, one noise per micro-batch, a warm-up
# from lr / W): only the "paper" presets below reproduce a run of theirs.
@register_preset("sd-turbo", help="this library's choice for SD-Turbo: LoRA r 128 / alpha 128, SGD 1e-3, clip 10, "
                                  "one noise per micro-batch (`--preset paper` is the authors' run)")
def _sd_turbo() -> HyperNoiseConfig:
    return HyperNoiseConfig(lora=LoraSettings(rank=128, alpha=128), objective=ObjectiveConfig(kind="reference"),
                            train=TrainConfig(optimizer="sgd", lr=1e-3, max_grad_norm=10.0, num_steps=1))


@register_preset("sana-sprint", help="this library's choice for SANA-Sprint: the 1.6B model, LoRA r 128 / alpha 256, "
                                     "SGD 1e-3, batch 4, fp32 rewards, 100 warm-up steps from lr / 100 "
                                     "(`--preset paper` is the authors' run)")
def _sana_sprint() -> HyperNoiseConfig:
    return HyperNoiseConfig(lora=LoraSettings(rank=128, alpha=256), objective=ObjectiveConfig(kind="reference"),
                            train=TrainConfig(optimizer="sgd", lr=1e-3, max_grad_norm=1.0, warmup_steps=100,
                                              num_steps=1))


@register_preset("flux-schnell", help="this library's choice for FLUX-Schnell: LoRA r 128 / alpha 640, AdamW 2e-5, "
                                      "batch 4, fp32 rewards, 100 warm-up steps from lr / 100 "
                                      "(`--preset paper` is the authors' run)")
def _flux_schnell() -> HyperNoiseConfig:
    return HyperNoiseConfig(lora=LoraSettings(rank=128, alpha=640), objective=ObjectiveConfig(kind="reference"),
                            train=TrainConfig(optimizer="adamw", lr=2e-5, max_grad_norm=1.0, warmup_steps=100,
                                              num_steps=1))


# --------------------------------------------------------------------------- the paper's runs
# The authors' code: github.com/ExplainableML/HyperNoise at bbe3ab4, and 1d5d3db8 for SD-Turbo
# (docs/training.md, "The paper's runs", cites every value; tests/test_paper_table.py holds every
# value of these presets against that table). Batches are per process: the authors' --batch_size
# is global, divided by the number of processes (main.py:168 @1d5d3db8); their 6 (SANA, SD-Turbo)
# and 7 (FLUX) processes give global batches of 18, 18 and 7. 30 epochs of ~70,000 prompts
# (METHOD.md): 70,000 // 18 // 3 x 30 = 38,880 optimizer steps on SANA, 70,000 // 7 // 4 x 30 =
# 75,000 on FLUX. `reference_processes` (`--reference-processes N`) trains as on their N processes.

#: processes of the authors' runs (scripts/*_hypernoise.sh, --nproc_per_node)
PAPER_PROCESSES = {"sana-sprint": 6, "flux-schnell": 7, "sd-turbo": 6}


def _paper(lora: LoraSettings, train: TrainConfig, model: ModelConfig) -> HyperNoiseConfig:
    return HyperNoiseConfig(model=model, reward="reno", reward_dtype="bfloat16", lora=lora,
                            objective=ObjectiveConfig(kind="reference", reg_weight=0.5), train=train)


def _paper_train(**given) -> TrainConfig:
    settings = dict(noise_mode="per-step", warmup_steps=100, warmup_from_zero=True, warmup_per_process=True,
                    max_grad_norm=1.0, num_steps=1, momentum=0.9)
    return TrainConfig(**{**settings, **given})


@register_preset("sana-sprint", "paper", help="the authors' SANA-Sprint run: Sana_Sprint_0.6B_1024px, LoRA r 128 / "
                                              "alpha 256 on every Linear and conv, SGD 1e-3, 3 x 3 accumulation "
                                              "per process (18 x 3 on their 6 processes)")
def _sana_sprint_paper() -> HyperNoiseConfig:
    return _paper(LoraSettings(rank=128, alpha=256, grouped_convs=True),
                  _paper_train(optimizer="sgd", lr=1e-3, batch_size=3, gradient_accumulation_steps=3, steps=38_880),
                  ModelConfig(generator="sana-sprint", pretrained="Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers",
                              dtype="bfloat16", max_sequence_length=300, guidance_scale=4.5, text_dtype_sampling=True))


@register_preset("flux-schnell", "paper", help="the authors' FLUX-Schnell run: 512 px, LoRA r 128 / alpha 640 on every "
                                               "Linear and conv, AdamW 2e-5 (weight decay 1e-4), 1 x 4 accumulation "
                                               "per process (7 x 4 on their 7 processes)")
def _flux_schnell_paper() -> HyperNoiseConfig:
    return _paper(LoraSettings(rank=128, alpha=640, grouped_convs=True),
                  _paper_train(optimizer="adamw", lr=2e-5, weight_decay=1e-4, batch_size=1, gradient_accumulation_steps=4,
                               steps=75_000),
                  ModelConfig(generator="flux-schnell", pretrained="black-forest-labs/FLUX.1-schnell", dtype="bfloat16",
                              height=512, width=512, max_sequence_length=512))


@register_preset("sd-turbo", "paper", help="the authors' SD-Turbo run (1d5d3db8 scripts/sd-turbo_hypernoise.sh): LoRA "
                                           "r 128 / alpha 128 on every Linear and conv, SGD 1e-3, clip 10, no warm-up, "
                                           "fresh noise per sample, 3 per process (18 on their 6 processes)")
def _sd_turbo_paper() -> HyperNoiseConfig:
    return _paper(LoraSettings(rank=128, alpha=128, grouped_convs=True),
                  _paper_train(optimizer="sgd", lr=1e-3, batch_size=3, gradient_accumulation_steps=1, steps=25_000,
                               max_grad_norm=10.0, warmup_steps=0, noise_mode="per-sample"),
                  ModelConfig(generator="sd-turbo", pretrained="stabilityai/sd-turbo", dtype="bfloat16"))


def paper_processes_note(generator: str, preset: Optional[str], train: TrainConfig, launched: int,
                         option: str = "`reference_processes`") -> Optional[str]:
    """One line when a paper preset runs on another number of processes than the authors' without
    ``reference_processes`` (named ``option`` in the line): its global batch and warm-up then
    differ from their run; None otherwise."""
    theirs = PAPER_PROCESSES.get(generator)
    if preset != "paper" or theirs is None or train.reference_processes is not None or launched == theirs:
        return None
    return (f"note: the authors ran {generator} on {theirs} processes, this run has {launched}: its global batch and "
            f"warm-up follow {launched}; add {option} {theirs} to train as on {theirs} (each process then "
            f"accumulates {theirs}/{launched} times more micro-batches)")


def _train_fields() -> set[str]:
    return {f.name for f in fields(TrainConfig)}


def default_config(generator: Generator, model: Optional[ModelConfig] = None, reward: Optional[str] = None,
                   reward_weights: Optional[dict] = None, preset: Optional[str] = None, **given) -> HyperNoiseConfig:
    """A HyperNoiseConfig: ``generator``'s preset (``preset``, default its own) with what the user
    gave applied over it.

    ``given``: TrainConfig fields and ``objective``, ``alpha``, ``reg_weight``, ``alpha_start``,
    ``alpha_ramp``, ``rank``, ``lora_alpha``, ``lora_dtype``, ``passes``; a value of None means "not given". A
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


# --------------------------------------------------------------------------- ReNO's own settings
# ExplainableML/ReNO as its code runs each family by default (docs/comparisons.md, "ReNO's own
# settings", cites every value; tests/test_paper_table.py holds them against that table): fp16
# models, rewards and noise (arguments.py:128, main.py:48-51, 111-112), 50 iterations of SGD lr 5,
# Nesterov momentum 0.9 (arguments.py:22-24, 34; training/optim.py:10), the gradient clipped to 0.1
# (arguments.py:35-37, trainer.py:128), the norm regulariser at 0.01 (arguments.py:89-94), one
# generator step (arguments.py:25-27; --enable_multi_apply, the 4-step FLUX render, is off:
# arguments.py:138) and the four rewards at 5 / 1 / 0.01 / 0.05 (arguments.py:41-76).
RENO_PRESETS: Registry = Registry("ReNO preset")
RENO = "reno"


@dataclass
class RenoPreset:
    """How a repository runs ReNO on one family: the generator's settings, ReNO's, the reward."""

    model: ModelConfig
    reno: RenoConfig
    reward: str
    reward_dtype: Optional[str] = None


def _reno_config(**given) -> RenoConfig:
    return RenoConfig(**{**dict(iters=50, lr=5.0, momentum=0.9, max_grad_norm=0.1, norm_reg=0.01, num_steps=1,
                                optimize_steps=1, noise_dtype="float16"), **given})


@RENO_PRESETS.register("sd-turbo", help="ReNO on SD-Turbo: fp16, 512 px, 1 step, 50 iterations")
def _reno_sd_turbo() -> RenoPreset:
    return RenoPreset(ModelConfig(generator="sd-turbo", pretrained="stabilityai/sd-turbo", dtype="float16"),
                      _reno_config(), reward=RENO, reward_dtype="float16")


@RENO_PRESETS.register("flux-schnell", help="ReNO on FLUX-Schnell: fp16 (loaded bf16, then cast), 512 px, T5 at 256 "
                                            "tokens, 1 step optimised and rendered, 50 iterations")
def _reno_flux() -> RenoPreset:
    model = ModelConfig(generator="flux-schnell", pretrained="black-forest-labs/FLUX.1-schnell", dtype="float16",
                        height=512, width=512, max_sequence_length=256)
    return RenoPreset(model, _reno_config(), reward=RENO, reward_dtype="float16")


def reno_preset(generator: str, preset: str = RENO) -> RenoPreset:
    """``generator``'s ReNO preset (``ConfigError`` naming the families that have one otherwise)."""
    if preset != RENO:
        raise ConfigError(f"unknown ReNO `preset` {preset!r}; choose {RENO} (ExplainableML/ReNO's own settings)",
                          field="preset")
    if generator not in RENO_PRESETS:
        GENERATORS.get(generator)  # an unknown generator is said as such
        raise ConfigError(f"ExplainableML/ReNO has no setting for {generator!r}, so `preset` {RENO} does not apply; "
                          f"it has one for {', '.join(RENO_PRESETS)}", field="preset")
    return RENO_PRESETS.build(generator)


def reno_settings(model: ModelConfig, preset: Optional[str] = None, reward: Optional[str] = None,
                  **given) -> RenoPreset:
    """ReNO's settings for a run: ``preset``'s (``reno_preset``, after detecting an "auto"
    generator) with what the user gave over them, or, with no preset, the user's over
    ``RenoConfig``'s defaults. ``given``: ``RenoConfig`` fields, None meaning "not given"."""
    given = {k: v for k, v in given.items() if v is not None}
    if preset in (None, DEFAULT):
        return RenoPreset(model, RenoConfig(**given), reward=reward)
    name = detect_generator(model.pretrained) if model.generator == "auto" else model.generator
    base = reno_preset(name, preset)
    return RenoPreset(_model_over(base.model, replace(model, generator=name)), replace(base.reno, **given),
                      reward=reward or base.reward, reward_dtype=base.reward_dtype)
