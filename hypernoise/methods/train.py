"""One training entry point for every training method (HyperNoise, direct fine-tuning, any
method added later).

    train(cfg, prompts, out_dir, method="hypernoise") -> (task, TrainResult)

``TRAINING`` maps a method name to ``build(cfg, generator) -> TrainTask``; a task names what is
saved (``task.adapter``, written to ``out_dir/adapter`` by ``adapter.save_adapter``) and the
settings recorded with it (``task.run_settings(cfg)``). The trainer knows nothing else. With
``cfg.train.validation_prompts`` the run also validates on them (``methods.validation``) and keeps
``out_dir/best``, the adapter of the best validation reward. ``adapter/README.md`` is the model
card (``card``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from hypernoise.adapter import save_adapter
from hypernoise.card import write_model_card
from hypernoise.generators.base import Generator
from hypernoise.methods.validation import MethodValidator
from hypernoise.registry import Registry
from hypernoise.training import Trainer, TrainResult, TrainTask

TaskBuilder = Callable[..., TrainTask]
TRAINING: Registry = Registry("training method")


def run_identity(task: TrainTask, cfg) -> dict:
    """What defines a run besides its TrainConfig, as checked on resume: the generator and its
    weights and size, the adapter's shape, the method, reward spec and weights, objective."""
    settings = {k: v for k, v in task.run_settings(cfg).items() if k != "train"}
    return {"method": settings.pop("method", None), **task.generator.describe(), "adapter": task.adapter.config(),
            **settings, "reward_weights": dict(cfg.reward_weights)}


def train(cfg, prompts: Sequence[str], out_dir, resume: Optional[str] = None, *, method: str = "hypernoise",
          generator: Optional[Generator] = None, task: Optional[TrainTask] = None) -> tuple[TrainTask, TrainResult]:
    """Train ``method`` with ``cfg`` (a ``HyperNoiseConfig``) on ``prompts``; the main process
    then writes ``out_dir/adapter`` unless the run was interrupted. ``generator`` (default:
    ``cfg.model.build()``) and ``task`` (default: the method's) may be given ready-made."""
    if task is None:
        task = TRAINING.build(method, cfg=cfg, generator=generator or cfg.model.build())
    settings = task.run_settings(cfg)
    validator = MethodValidator(task, method, cfg.train, settings) if cfg.train.validation_prompts else None
    trainer = Trainer(task, cfg.train, out_dir, identity=run_identity(task, cfg), validator=validator)
    result = trainer.fit(list(prompts), resume=resume)
    if trainer.is_main and not result.interrupted:
        save_adapter(Path(out_dir) / "adapter", task.adapter, task.generator, settings)
        write_model_card(Path(out_dir) / "adapter")  # README.md: settings, validation, usage
    trainer.acc.wait_for_everyone()
    return task, result
