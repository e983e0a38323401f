"""HyperNoise: train a noise hypernetwork for a frozen generator, and generate with it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from hypernoise.adapter import save_adapter
from hypernoise.generators import Generator, build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings, MLPHypernetwork, NoiseHypernetwork
from hypernoise.objective import NoiseObjective, ObjectiveConfig
from hypernoise.rewards import build_reward
from hypernoise.training import HyperNoiseTask, TrainConfig, Trainer, TrainResult


@dataclass
class ModelConfig:
    """Which frozen generator, from which weights, on which device."""

    generator: str = field(default="shapes", metadata={"help": "registry name, or auto (detect from --pretrained)"})
    pretrained: Optional[str] = field(default=None, metadata={"help": "hub id or local folder of the weights"})
    device: Optional[str] = field(default=None, metadata={"help": "torch device (default: cuda if available, else cpu)"})
    dtype: Optional[str] = field(default=None, metadata={"help": "float32, bfloat16 or float16 (default per device)"})
    height: Optional[int] = field(default=None, metadata={"help": "image height (default: the model's)"})
    width: Optional[int] = field(default=None, metadata={"help": "image width (default: the model's)"})

    def torch_dtype(self) -> Optional[torch.dtype]:
        from hypernoise.errors import ConfigError

        if self.dtype is None:
            return None
        table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
        if self.dtype not in table:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose float32, bfloat16 or float16")
        return table[self.dtype]

    def build(self) -> Generator:
        size = {k: v for k, v in (("height", self.height), ("width", self.width)) if v is not None}
        return build_generator(self.generator, pretrained=self.pretrained, device=self.device, dtype=self.torch_dtype(), **size)


@dataclass
class HyperNoiseConfig:
    """Everything that defines a HyperNoise training run besides the prompts."""

    model: ModelConfig = field(default_factory=ModelConfig)
    reward: Optional[str] = field(default=None, metadata={"help": "reward spec; default: the generator's"})
    reward_weights: dict = field(default_factory=dict, metadata={"help": "per-reward builder options, e.g. {'hps': {'pretrained': DIR}}"})
    lora: LoraSettings = field(default_factory=LoraSettings)
    mlp_hidden: int = field(default=128, metadata={"help": "width of the MLP hypernetwork (backbone-less generators)"})
    passes: int = field(default=1, metadata={
        "help": "K, times the map x <- x + f_phi(x, c) is applied in training and by default at inference (1: the paper)"})
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def build_hypernetwork(generator: Generator, cfg: HyperNoiseConfig) -> NoiseHypernetwork:
    """LoRA on the generator's backbone when it has one, else the standalone MLP."""
    if generator.backbone is not None:
        return LoRAHypernetwork(generator, cfg.lora).set_passes(cfg.passes)
    return MLPHypernetwork(generator.latent_shape, hidden=cfg.mlp_hidden).to(generator.device).set_passes(cfg.passes)


def build_task(cfg: HyperNoiseConfig, generator: Optional[Generator] = None) -> HyperNoiseTask:
    generator = generator or cfg.model.build()
    reward = build_reward(cfg.reward or generator.default_reward, device=str(generator.device), per_reward=cfg.reward_weights)
    torch.manual_seed(cfg.train.seed)  # LoRA A / MLP initialisation
    hypernet = build_hypernetwork(generator, cfg)
    return HyperNoiseTask(generator, hypernet, reward, NoiseObjective(cfg.objective), cfg.train.num_steps)


def run_settings(cfg: HyperNoiseConfig, task: HyperNoiseTask) -> dict:
    """The settings recorded in the adapter's hypernoise.json."""
    return {"method": "hypernoise", "reward": task.reward.spec(), "objective": asdict(cfg.objective),
            "train": cfg.train.to_dict(), "num_steps": cfg.train.num_steps or task.generator.default_steps}


def train_hypernetwork(cfg: HyperNoiseConfig, prompts: Sequence[str], out_dir, resume: Optional[str] = None,
                       task: Optional[HyperNoiseTask] = None) -> tuple[HyperNoiseTask, TrainResult]:
    """Train, then write ``out_dir/adapter`` (main process). Returns the task and the result."""
    out_dir = Path(out_dir)
    task = task or build_task(cfg)
    trainer = Trainer(task, cfg.train, out_dir)
    result = trainer.fit(list(prompts), resume=resume)
    if trainer.is_main and not result.interrupted:
        save_adapter(out_dir / "adapter", task.hypernet, task.generator, run_settings(cfg, task))
    trainer.acc.wait_for_everyone()
    return task, result


@torch.no_grad()
def hypernoise_generate(generator: Generator, hypernet: Optional[NoiseHypernetwork], noise: torch.Tensor,
                        prompts: Sequence[str], num_steps: Optional[int] = None) -> tuple[torch.Tensor, dict]:
    """Images g(x0 + f_phi(x0, c), c) (or g(x0, c) without a hypernetwork) and what they cost;
    a hypernetwork of K passes costs K forwards.

    noise [B, *latent_shape] -> samples, {"nfe_per_image", "seconds_per_image"}.
    """
    start = time.perf_counter()
    cond = generator.encode(prompts)
    if hypernet is None:
        samples = generator.generate(noise, cond, num_steps)
    else:
        modulated = hypernet.modulate(noise, cond)
        with hypernet.adapters_disabled():
            samples = generator.generate(modulated, cond, num_steps)
    nfe = generator.nfe(num_steps) + (0 if hypernet is None else hypernet.passes)
    return samples, {"nfe_per_image": float(nfe), "seconds_per_image": (time.perf_counter() - start) / len(prompts)}


#: keys of ``Generator.train_defaults`` besides TrainConfig's own fields
_NON_TRAIN_KEYS = ("objective", "alpha", "reg_weight", "alpha_start", "alpha_ramp", "rank", "lora_alpha", "passes")


def _field_default(name: str):
    return TrainConfig.__dataclass_fields__[name].default


def default_config(generator: Generator, model: Optional[ModelConfig] = None, reward: Optional[str] = None,
                   reward_weights: Optional[dict] = None, **given) -> HyperNoiseConfig:
    """A HyperNoiseConfig from what the user gave over the generator's ``train_defaults``.

    ``given``: TrainConfig fields and ``objective``, ``alpha``, ``reg_weight``, ``alpha_start``,
    ``alpha_ramp``, ``rank``, ``lora_alpha``, ``passes``; a value of None means "not given". Precedence: given > the generator's
    defaults > the dataclasses' defaults. The generator's ``init_trials`` is dropped when the run is
    no longer than one trial (a short run is a smoke test); trials the user asks for are kept, and
    such a run is an error.
    """
    from hypernoise.errors import ConfigError

    given = {k: v for k, v in given.items() if v is not None}
    merged = {**generator.train_defaults, **given}
    if "init_trials" not in given and merged.get("steps", _field_default("steps")) <= merged.get(
            "trial_steps", _field_default("trial_steps")):
        merged.pop("init_trials", None)  # the generator's trials need a run longer than one trial
    unknown = sorted(set(merged) - set(TrainConfig.__dataclass_fields__) - set(_NON_TRAIN_KEYS))
    if unknown:
        raise ConfigError(f"unknown training settings {unknown}")
    objective = ObjectiveConfig(kind=merged.pop("objective", "l2"), alpha=merged.pop("alpha", 1.0),
                                reg_weight=merged.pop("reg_weight", 0.5), alpha_start=merged.pop("alpha_start", None),
                                alpha_ramp=merged.pop("alpha_ramp", (0, 0)))
    lora = LoraSettings(rank=merged.pop("rank", 16), alpha=merged.pop("lora_alpha", None))
    passes = merged.pop("passes", 1)
    return HyperNoiseConfig(model=model or ModelConfig(generator=generator.name, pretrained=generator.pretrained),
                            reward=reward, reward_weights=reward_weights or {}, objective=objective, lora=lora,
                            passes=passes, train=TrainConfig(**merged))


def write_samples(generator: Generator, hypernet: NoiseHypernetwork, prompts: Sequence[str], out_dir,
                  seed: int = 0, num_steps: Optional[int] = None, max_prompts: int = 8) -> Optional[Path]:
    """``out_dir/samples/compare.png`` (base row over HyperNoise row, same noise) and one PNG per
    image; only for image generators. Returns the grid's path."""
    from hypernoise.methods.generate import compare_grid, generate_images, save_png

    if generator.output_kind != "image":
        return None
    prompts = list(dict.fromkeys(prompts))[:max_prompts]
    folder = Path(out_dir) / "samples"
    base = generate_images(generator, prompts, [seed], num_steps, hypernet, base=True)
    modulated = generate_images(generator, prompts, [seed], num_steps, hypernet)
    for i, (prompt, b, h) in enumerate(zip(prompts, base, modulated)):
        save_png(b, folder / f"{i:02d}-base.png", prompt, seed, {"method": "base"})
        save_png(h, folder / f"{i:02d}-hypernoise.png", prompt, seed, {"method": "hypernoise"})
    grid = compare_grid(base, modulated, prompts)
    grid.save(folder / "compare.png")
    return folder / "compare.png"


def before_after(generator: Generator, hypernet: NoiseHypernetwork, prompts: Sequence[str],
                 seeds: Sequence[int] = (0, 1), reward: Optional[str] = None) -> Optional[dict]:
    """Base and HyperNoise results on ``prompts`` (``evaluation.evaluate``), for generators whose
    world has a judge; None otherwise. ``{"base": results, "hypernoise": results}``."""
    from hypernoise.evaluation import EvalConfig, evaluate

    if generator.judge() is None:
        return None
    common = dict(seeds=tuple(seeds), reward=reward, batch_size=32)
    with hypernet.adapters_disabled():  # g carries the hypernetwork's LoRA; the base runs without it
        base = evaluate(generator, prompts, EvalConfig(method="base", **common))
    return {"base": base,
            "hypernoise": evaluate(generator, prompts, EvalConfig(method="hypernoise", adapter_given=True, **common),
                                   adapter=hypernet)}
