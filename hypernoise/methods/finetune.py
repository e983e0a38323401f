"""Direct LoRA reward fine-tuning of the generator itself: the baseline that hacks the reward.

A LoRA on g's backbone (all adapters on while generating, no delta-only final layer) trained to
maximise the reward with no noise-space penalty (L = -r). It reaches the reward by moving the
output distribution wherever the reward is high, off the base model's image manifold (the
paper's Figures 3-4); HyperNoise instead stays within a KL budget of the base noise distribution.
The LoRA layers are ``hypernoise.lora.BackboneLoRA``, the hypernetwork's own.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Iterator, Optional, Sequence

import torch
from safetensors.torch import load_file
from torch import nn

from hypernoise.adapter import FINETUNE_KIND, WEIGHTS_FILE, check_compatible, read_metadata, resolve_adapter_folder
from hypernoise.errors import AdapterError, ConfigError, plain
from hypernoise.generators.base import Generator
from hypernoise.lora import BackboneLoRA, LoraSettings, adapter_state_checkpoint
from hypernoise.methods.base import MethodOutput, RunConfig, register_method, run_base
from hypernoise.methods.hypernoise import HyperNoiseConfig, build_training_reward
from hypernoise.methods.train import TRAINING, train
from hypernoise.training import TrainResult, TrainTask

ADAPTER_NAME = "finetune_adapter"


class GeneratorLoRA(nn.Module):
    """A LoRA in ``generator.backbone``, always on; weights fp32 in peft's key layout."""

    kind = FINETUNE_KIND

    def __init__(self, generator: Generator, settings: Optional[LoraSettings] = None):
        super().__init__()
        if generator.backbone is None:
            raise ConfigError(f"generator {generator.name!r} has no backbone to fine-tune; use `method` hypernoise",
                              field="method")
        self.settings = replace(settings or LoraSettings(), adapter_name=ADAPTER_NAME)
        self.__dict__["_generator"] = generator
        self.lora = BackboneLoRA(generator.backbone, self.settings)
        self.peft_config = self.lora.peft_config

    @property
    def generator(self) -> Generator:
        return self._generator

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.lora.params.values())

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """g itself inside the context (the LoRA off), as a hypernetwork's ``adapters_disabled``."""
        with self.lora.disabled():
            yield

    def reinitialize(self, seed: int) -> None:
        """Re-draw A from ``seed`` and zero B: g itself again."""
        self.lora.reinitialize(seed)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.lora.state_dict()

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.lora.load_state_dict(state)

    def config(self) -> dict:
        s = self.settings.describe()
        return {"type": self.kind, "rank": s["rank"], "alpha": s["alpha"], "target_modules": s["target_modules"]}


class FineTuneTask(TrainTask):
    """L = -r(g_theta(x0, c), c): the generator's LoRA trained on the reward alone."""

    def __init__(self, generator: Generator, lora: GeneratorLoRA, reward: nn.Module, num_steps: Optional[int] = None):
        super().__init__()
        self.generator, self.lora, self.reward, self.num_steps = generator, lora, reward, num_steps
        self.latent_shape = tuple(generator.latent_shape)
        self.noise_dtype = generator.dtype

    @property
    def adapter(self) -> GeneratorLoRA:
        return self.lora

    def forward(self, noise: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        cond = self.generator.encode(prompts)
        samples = self.generator.generate(noise, cond, self.num_steps)
        reward = self.reward(samples, prompts).float()
        terms = {"loss": -reward.mean(), "reward": reward.mean()}
        for name, value in getattr(self.reward, "last_terms", {}).items():
            terms[f"reward/{name}"] = torch.as_tensor(value)
        return terms

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.lora.trainable_parameters()

    def reinitialize(self, seed: int) -> None:
        self.lora.reinitialize(seed)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.lora.trainable_state_dict()

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.lora.load_trainable_state_dict(state)

    def enable_gradient_checkpointing(self) -> None:
        self.generator.enable_gradient_checkpointing(adapter_state_checkpoint)

    def run_settings(self, cfg: HyperNoiseConfig) -> dict:
        return {"method": "finetune", "reward": self.reward.spec(), "train": cfg.train.to_dict(),
                "num_steps": cfg.train.num_steps or self.generator.default_steps, "lora": self.lora.settings.describe()}


@TRAINING.register("finetune", help="direct LoRA reward fine-tuning of g (L = -r, no KL)")
def build_finetune_task(cfg: HyperNoiseConfig, generator: Optional[Generator] = None) -> FineTuneTask:
    """The fine-tuning task of ``cfg`` (its objective and passes are not used)."""
    generator = generator or cfg.model.build()
    reward = build_training_reward(cfg, generator)
    torch.manual_seed(cfg.train.seed)
    return FineTuneTask(generator, GeneratorLoRA(generator, cfg.lora), reward, cfg.train.num_steps)


def train_finetune(cfg: HyperNoiseConfig, prompts: Sequence[str], out_dir, resume: Optional[str] = None,
                   generator: Optional[Generator] = None) -> tuple[FineTuneTask, TrainResult]:
    """Direct fine-tuning: writes ``out_dir/adapter`` (type finetune-lora) on the main process."""
    return train(cfg, prompts, out_dir, resume, method="finetune", generator=generator)


def load_finetune_adapter(generator: Generator, folder) -> GeneratorLoRA:
    """Inject a saved fine-tuning LoRA into ``generator`` (always on from then on)."""
    folder = resolve_adapter_folder(folder)  # a run folder or a file inside adapter/: names the folder to pass
    meta = read_metadata(folder) if folder.is_dir() else None
    if meta is None or (meta.get("hypernetwork") or {}).get("type") != GeneratorLoRA.kind:
        raise AdapterError(f"{folder} is not a fine-tuning adapter (written by `hypernoise train --method finetune`)")
    check_compatible(meta, generator, folder)
    cfg = meta["hypernetwork"]
    try:
        settings = LoraSettings(rank=int(cfg["rank"]), alpha=float(cfg["alpha"]), target_modules=cfg.get("target_modules"))
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise AdapterError(f"fine-tuning adapter {folder} has an unusable config ({plain(str(e))})") from None
    lora = GeneratorLoRA(generator, settings)
    try:
        lora.load_trainable_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except Exception as e:
        raise AdapterError(f"fine-tuning adapter {folder} does not load ({type(e).__name__}: {str(e)[:100]})") from None
    return lora


@register_method("finetune", help="the generator with a directly fine-tuned LoRA", load_adapter=load_finetune_adapter)
def run_finetune(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
                 config: RunConfig) -> MethodOutput:
    """The base runner: the fine-tuning LoRA is loaded into g and always on."""
    return run_base(generator, reward, noise, prompts, config)
