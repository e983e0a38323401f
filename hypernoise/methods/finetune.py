"""Direct LoRA reward fine-tuning of the generator itself: the baseline that hacks the reward.

A LoRA on g's backbone (all adapters on while generating, no delta-only final layer) trained to
maximise the reward with no noise-space penalty (objective ``none``: L = -r). It reaches the
reward by moving the output distribution wherever the reward is high, off the base model's image
manifold (the paper's Figures 3-4); HyperNoise instead stays within a KL budget of the base
noise distribution.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Generator
from hypernoise.hypernet.lora import LoraSettings, default_target_modules, redraw_lora, tuner_layers
from hypernoise.training.task import TrainTask

ADAPTER_NAME = "finetune_adapter"


class GeneratorLoRA(nn.Module):
    """peft LoRA layers injected into ``generator.backbone``; always on. Weights in fp32.

    ``trainable_state_dict`` uses peft's key layout (``<module>.lora_A.weight``).
    """

    kind = "finetune-lora"

    def __init__(self, generator: Generator, settings: Optional[LoraSettings] = None):
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        if generator.backbone is None:
            raise ConfigError(f"generator {generator.name!r} has no backbone to fine-tune; use --method hypernoise")
        self.settings = settings or LoraSettings(adapter_name=ADAPTER_NAME)
        self.settings.adapter_name = ADAPTER_NAME
        self.__dict__["_generator"] = generator
        targets = list(self.settings.target_modules or default_target_modules(generator.backbone))
        self.peft_config = LoraConfig(r=int(self.settings.rank), lora_alpha=float(self.settings.alpha),
                                      target_modules=targets, init_lora_weights="gaussian", lora_dropout=0.0)
        inject_adapter_in_model(self.peft_config, generator.backbone, adapter_name=ADAPTER_NAME)
        tag = f".{ADAPTER_NAME}"
        self._params = {n.replace(tag, ""): p for n, p in generator.backbone.named_parameters() if tag in n}
        for p in self._params.values():
            p.data = p.data.float()
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self._params.values())

    def reinitialize(self, seed: int) -> None:
        """Re-draw A from ``seed`` and zero B: g itself again (see ``redraw_lora``)."""
        redraw_lora(tuner_layers(self.generator.backbone), ADAPTER_NAME, "gaussian", seed)

    @property
    def generator(self) -> Generator:
        return self._generator

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: p.detach() for k, p in self._params.items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self._params):
            raise KeyError(f"fine-tuning LoRA keys differ: {sorted(set(state) ^ set(self._params))[:3]}")
        with torch.no_grad():
            for k, v in state.items():
                self._params[k].copy_(v)

    def config(self) -> dict:
        return {"type": self.kind, "rank": self.settings.rank, "alpha": self.settings.alpha,
                "target_modules": self.settings.target_modules}


class FineTuneTask(TrainTask):
    """L = -r(g_theta(x0, c), c): the generator's LoRA trained on the reward alone."""

    def __init__(self, generator: Generator, lora: GeneratorLoRA, reward: nn.Module, num_steps: Optional[int] = None):
        super().__init__()
        self.generator, self.lora, self.reward, self.num_steps = generator, lora, reward, num_steps
        self.latent_shape = tuple(generator.latent_shape)
        self.noise_dtype = generator.dtype

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
        self.generator.enable_gradient_checkpointing()


# --------------------------------------------------------------------------- train, save, load
def load_finetune_adapter(generator: Generator, folder) -> GeneratorLoRA:
    """Inject a saved fine-tuning LoRA into ``generator`` (always on from then on)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from hypernoise.adapter import check_compatible, read_metadata
    from hypernoise.errors import AdapterError

    folder = Path(folder)
    meta = read_metadata(folder) if folder.is_dir() else None
    if meta is None or (meta.get("hypernetwork") or {}).get("type") != GeneratorLoRA.kind:
        raise AdapterError(f"{folder} is not a fine-tuning adapter (written by `hypernoise train --method finetune`)")
    check_compatible(meta, generator, folder)
    cfg = meta["hypernetwork"]
    lora = GeneratorLoRA(generator, LoraSettings(rank=int(cfg["rank"]), alpha=float(cfg["alpha"]),
                                                 target_modules=cfg.get("target_modules")))
    try:
        lora.load_trainable_state_dict(load_file(str(folder / "adapter_model.safetensors")))
    except Exception as e:
        raise AdapterError(f"fine-tuning adapter {folder} does not load ({type(e).__name__}: {str(e)[:100]})") from None
    return lora


def train_finetune(cfg, prompts: Sequence[str], out_dir, resume: Optional[str] = None, generator=None):
    """Direct fine-tuning with a ``HyperNoiseConfig`` (its objective is ignored: L = -r).

    Writes ``out_dir/adapter`` (type finetune-lora) on the main process; returns (task, result).
    """
    from dataclasses import asdict
    from pathlib import Path

    from hypernoise.adapter import save_adapter
    from hypernoise.rewards import build_reward
    from hypernoise.training import Trainer

    generator = generator or cfg.model.build()
    reward = build_reward(cfg.reward or generator.default_reward, device=str(generator.device), per_reward=cfg.reward_weights)
    torch.manual_seed(cfg.train.seed)
    lora = GeneratorLoRA(generator, LoraSettings(rank=cfg.lora.rank, alpha=cfg.lora.alpha,
                                                 target_modules=cfg.lora.target_modules))
    task = FineTuneTask(generator, lora, reward, cfg.train.num_steps)
    trainer = Trainer(task, cfg.train, out_dir)
    result = trainer.fit(list(prompts), resume=resume)
    if trainer.is_main and not result.interrupted:
        settings = {"method": "finetune", "reward": reward.spec(), "train": cfg.train.to_dict(),
                    "num_steps": cfg.train.num_steps or generator.default_steps, "lora": asdict(lora.settings)}
        save_adapter(Path(out_dir) / "adapter", lora, generator, settings)
    trainer.acc.wait_for_everyone()
    return task, result
