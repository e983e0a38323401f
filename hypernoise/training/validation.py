"""Validation during training, the trainer's side: what a validation returns, the files it writes,
and the best adapter so far.

Every ``validation_every`` optimizer steps and at the end, the main process asks a ``Validator``
(``methods.validation.MethodValidator``: base and the trained method on fixed noises of the
held-out ``validation_prompts``) for a ``ValidationResult``, and ``ValidationRecord`` writes it:

    OUT/validation.jsonl                 one row per validation: step, reward (the selection
                                         criterion), reward/<term>, geneval/* where the world has
                                         a judge, the same for the base under base/, best_step
    OUT/validation/step-<step:06d>.png   base row over trained row, same noise; only the latest
                                         and the best grids are kept
    OUT/best/                            the adapter of the highest validation reward so far, in
                                         adapter/'s format, plus validation.json (step, reward,
                                         metrics); replaced atomically

The prompts must be held out from the test prompts too: selecting a checkpoint on the test
prompts (as the authors do on GenEval) leaks the test set into the result.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from hypernoise.io import load_json, replace_folder

VALIDATION_FILE = "validation.jsonl"
GRID_DIR = "validation"
BEST_DIR = "best"
BEST_RECORD = "validation.json"
_GRID = re.compile(r"^step-(\d+)\.png$")


@dataclass
class ValidationResult:
    """One validation: flat scalar ``metrics`` (``"reward"``, the mean training reward of the
    trained method, is what ``best/`` is chosen by) and an optional ``grid`` (a PIL image)."""

    metrics: dict = field(default_factory=dict)
    grid: Any = None


class Validator(Protocol):
    """What the trainer validates with (``methods.validation.MethodValidator``)."""

    def run(self, step: int) -> ValidationResult: ...

    def save_adapter(self, folder: Path) -> None:
        """Write the current adapter into ``folder`` as ``adapter/`` is written."""


def validation_key(prompts, seeds) -> str:
    """A short fingerprint of a validation set: best-so-far rewards compare only within one."""
    text = json.dumps([list(prompts), [int(s) for s in seeds]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ValidationRecord:
    """The validation files of one run folder (see the module docstring) and the best so far,
    ``best`` = {"step", "reward", "key"} (None before the first validation). Main process only."""

    def __init__(self, out_dir, key: str):
        self.out_dir, self.key = Path(out_dir), key
        self.best: Optional[dict] = None

    def restore(self, saved: Optional[dict]) -> Optional[str]:
        """Take the best so far from a checkpoint's state. It is dropped (and the reason returned)
        when it was measured on another validation set or ``best/`` is gone: the next validation
        then writes ``best/`` afresh."""
        self.best = None
        if not isinstance(saved, dict) or not isinstance(saved.get("reward"), (int, float)):
            return None
        if saved.get("key") != self.key:
            return "the validation prompts or seeds changed: the best adapter is chosen afresh from now on"
        if not (self.out_dir / BEST_DIR / BEST_RECORD).is_file():
            return f"{self.out_dir / BEST_DIR} is missing: the best adapter is chosen afresh from now on"
        self.best = {"step": int(saved["step"]), "reward": float(saved["reward"]), "key": self.key}
        return None

    def truncate(self, step: int) -> None:
        """Drop rows and grids past ``step`` (a resumed run replays those steps)."""
        path = self.out_dir / VALIDATION_FILE
        if path.is_file():
            keep = []
            for line in path.read_text().splitlines():
                try:
                    if load_json(line).get("step", 0) <= step:
                        keep.append(line)
                except (ValueError, AttributeError):  # a line cut by a crash
                    continue
            path.write_text("".join(l + "\n" for l in keep))
        for grid_step, grid in self._grids():
            if grid_step > step:
                grid.unlink(missing_ok=True)

    def write(self, step: int, result: ValidationResult, save_adapter: Callable[[Path], None]) -> bool:
        """Record the validation of ``step``: its grid, ``best/`` when its reward beats the best
        so far (a NaN never does), then its row. Returns whether it is the new best."""
        reward = result.metrics.get("reward", math.nan)
        improved = math.isfinite(reward) and (self.best is None or reward > self.best["reward"])
        grid = self._write_grid(step, result.grid) if result.grid is not None else None
        if improved:
            self._write_best(step, result, grid, save_adapter)
            self.best = {"step": step, "reward": float(reward), "key": self.key}
        self._prune_grids(step)
        row = {"step": step, **result.metrics, "best_step": self.best["step"] if self.best else None}
        with open(self.out_dir / VALIDATION_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
        return improved

    # ----------------------------------------------------------------- files
    def _grids(self) -> list[tuple[int, Path]]:
        folder = self.out_dir / GRID_DIR
        if not folder.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _GRID.match(p.name)))

    def _write_grid(self, step: int, grid) -> str:
        path = self.out_dir / GRID_DIR / f"step-{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
        try:  # whole or not at all
            grid.save(tmp, format="PNG")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return str(path.relative_to(self.out_dir))

    def _prune_grids(self, latest: int) -> None:
        keep = {latest, self.best["step"] if self.best else latest}
        for grid_step, grid in self._grids():
            if grid_step not in keep:
                grid.unlink(missing_ok=True)

    def _write_best(self, step: int, result: ValidationResult, grid: Optional[str],
                    save_adapter: Callable[[Path], None]) -> None:
        """``best/``: the adapter and its validation.json, staged in a hidden folder and renamed
        into place, so that ``best/`` is always one whole adapter with the record of its step."""
        final = self.out_dir / BEST_DIR
        for stale in self.out_dir.glob(f".tmp-*{BEST_DIR}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a run killed while writing best/
        tmp = final.with_name(f".tmp-{final.name}-staged-{os.getpid()}")
        try:
            save_adapter(tmp)
            record = {"step": step, "reward": result.metrics["reward"], "metrics": result.metrics, "grid": grid,
                      "key": self.key}
            (tmp / BEST_RECORD).write_text(json.dumps(record, indent=1) + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_folder(tmp, final)  # a user's files inside best/ are kept


def log_to_trackers(accelerator, step: int, result: ValidationResult) -> None:
    """The scalars under ``validation/`` and the grid as an image, to each of accelerate's
    trackers, the way diffusers' training scripts log their validation images."""
    scalars = {f"validation/{k}": v for k, v in result.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    accelerator.log(scalars, step=step)
    if result.grid is None:
        return
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            import numpy as np

            tracker.writer.add_image("validation/grid", np.asarray(result.grid), step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"validation/grid": wandb.Image(result.grid, caption="top: base, bottom: trained")}, step=step)
