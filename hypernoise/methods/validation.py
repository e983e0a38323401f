"""Validation on held-out prompts during training: the base generator and the trained method on
fixed noises, scored with the training reward (and the world's judge where there is one).

    MethodValidator(task, method, cfg, settings).run(step) -> ValidationResult

Each (prompt, seed) starts from ``seeded_noise(generator, seed)``, the noise ``evaluation.evaluate``
uses, so a validation reward is the reward ``hypernoise evaluate --seeds ...`` reports on the same
prompts (up to the rounding of batched kernels). The base (g with the task's adapter off) is
computed once: g is frozen. The trained side is the method's registered runner with the task's
adapter: g(x0 + f_phi(x0, c), c) for HyperNoise, the fine-tuned g for direct fine-tuning. The
trainer (``training.validation``) decides when to validate and writes the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from hypernoise.adapter import save_adapter
from hypernoise.images import compare_grid
from hypernoise.methods.base import METHODS, RunConfig, seeded_noise
from hypernoise.training import TrainConfig, TrainTask
from hypernoise.training.validation import ValidationResult

#: columns of the validation grid: the first seed of the first prompts
GRID_COLUMNS = 8


class MethodValidator:
    """Validates ``task``'s adapter as ``method`` (a name in ``METHODS``) on ``cfg``'s
    ``validation_prompts`` x ``validation_seeds``, ``cfg.batch_size`` images at a time.
    ``settings``: what ``save_adapter`` records in ``hypernoise.json`` (``task.run_settings``)."""

    def __init__(self, task: TrainTask, method: str, cfg: TrainConfig, settings: Optional[dict] = None):
        METHODS.get(method)  # a training method with no runner to validate: UnknownNameError now, not at step N
        self.task, self.method, self.settings = task, method, settings or {}
        self.prompts, self.seeds = list(cfg.validation_prompts), [int(s) for s in cfg.validation_seeds]
        self.num_steps, self.batch_size, self.progress = cfg.num_steps, cfg.batch_size, cfg.progress
        self._base: Optional[tuple[dict, list]] = None  # (metrics, images) of g: computed once

    def run(self, step: int) -> ValidationResult:
        """Metrics of the trained method (``reward``, ``reward/<term>``, ``geneval/<category>``) and
        of the base (the same under ``base/``), and the grid of base over trained images."""
        if self._base is None:
            with self.task.adapter.adapters_disabled():
                self._base = self._score("base", None, "validate base")
        metrics, images = self._score(self.method, self.task.adapter, f"validate step {step}")
        base_metrics, base_images = self._base
        return ValidationResult({**metrics, **{f"base/{k}": v for k, v in base_metrics.items()}},
                                self._grid(base_images, images))

    def save_adapter(self, folder: Path) -> None:
        save_adapter(folder, self.task.adapter, self.task.generator, self.settings)

    @torch.no_grad()
    def _score(self, method: str, adapter, desc: str) -> tuple[dict, list]:
        """Run ``method`` on every (prompt, seed), prompt-major; mean reward per term, GenEval."""
        from tqdm.auto import tqdm

        generator, reward, run = self.task.generator, self.task.reward, METHODS.get(method).run
        pairs = [(p, s) for p in self.prompts for s in self.seeds]
        images, totals, terms = [], [], {}
        bar = tqdm(total=len(pairs), desc=desc, unit="img", leave=False, delay=2, disable=not self.progress)
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            prompts, seeds = [p for p, _ in chunk], [s for _, s in chunk]
            noise = torch.cat([seeded_noise(generator, s)[0] for s in seeds])
            out = run(generator, reward, noise, prompts, RunConfig(num_steps=self.num_steps, adapter=adapter, seeds=seeds))
            totals += reward(out.samples, prompts).float().cpu().tolist()
            for name, value in getattr(reward, "last_terms", {}).items():  # batch means: weighted by the batch
                terms[name] = terms.get(name, 0.0) + float(value) * len(chunk)
            images += out.samples.detach().float().cpu().unbind(0)
            bar.update(len(chunk))
        bar.close()
        metrics = {"reward": sum(totals) / len(totals), **{f"reward/{k}": v / len(pairs) for k, v in terms.items()}}
        metrics.update(self._judge(images, [p for p, _ in pairs]))
        return metrics, images

    def _judge(self, images: list, prompts: list) -> dict:
        """The world's GenEval summary (``geneval/<category>``), where the generator has a judge."""
        judge = self.task.generator.judge()
        if judge is None:
            return {}
        summary = judge.summary(judge.evaluate_images(torch.stack(images), prompts))
        return {f"geneval/{k}": v for k, v in summary.items() if v is not None}

    def _grid(self, base: list, trained: list):
        """Base row over trained row for the first seed of the first ``GRID_COLUMNS`` prompts."""
        if self.task.generator.output_kind != "image":
            return None
        k, prompts = len(self.seeds), self.prompts[:GRID_COLUMNS]
        return compare_grid([base[i * k] for i in range(len(prompts))], [trained[i * k] for i in range(len(prompts))],
                            prompts)
