"""Atomic checkpoints: a checkpoint folder either exists complete or not at all.

A checkpoint is written into a hidden temporary folder beside its final place, each file
flushed to disk, ``state.json`` last, then renamed into place in one ``os.replace``. A crash at
any moment leaves at worst a ``.tmp-*`` folder, which ``latest`` ignores and the next write
removes.

Layout of ``checkpoints/checkpoint-<step:06d>/``: ``trainable.safetensors`` (the trained
weights, fp32), ``optimizer.pt``, ``scheduler.pt``, ``state.json`` (step, counters, config).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

from hypernoise.errors import CheckpointError
from hypernoise.faults import maybe_kill
from hypernoise.io import load_json, replace_folder, save_tensors, save_torch

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "state.json"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return sorted(found)


def latest_checkpoint(root: Path) -> Optional[Path]:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save_checkpoint(root: Path, step: int, trainable: dict, optimizer_state: dict, scheduler_state: dict,
                    state: dict, total_limit: Optional[int] = None) -> Path:
    """Write ``root/checkpoint-<step>`` atomically and prune old ones beyond ``total_limit``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"checkpoint-{step:06d}"
    tmp = root / f".tmp-checkpoint-{step:06d}-{os.getpid()}"
    tmp.mkdir()
    try:
        _write_checkpoint(tmp, step, trainable, optimizer_state, scheduler_state, state)
    except OSError:  # a full disk or a file-size limit: no half-written folder is left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, final)  # re-saving the same step (e.g. after resume): swap, never delete first
    _fsync_dir(root)
    if total_limit:
        for _, old_ckpt in list_checkpoints(root)[:-total_limit]:
            shutil.rmtree(old_ckpt, ignore_errors=True)
    return final


def _write_checkpoint(tmp: Path, step: int, trainable: dict, optimizer_state: dict, scheduler_state: dict,
                      state: dict) -> None:
    save_tensors({k: v.detach().float().contiguous().cpu() for k, v in trainable.items()}, tmp / "trainable.safetensors")
    save_torch(optimizer_state, tmp / "optimizer.pt")
    save_torch(scheduler_state, tmp / "scheduler.pt")
    for name in ("trainable.safetensors", "optimizer.pt", "scheduler.pt"):
        _fsync_file(tmp / name)
    maybe_kill("checkpoint", step)
    with open(tmp / STATE_FILE, "w") as f:
        json.dump({**state, "step": step}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)


def json_kind(value) -> str:
    """What a parsed JSON value is, in JSON's words ("an array", "a string", "null"), for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = ((dict, "an object"), (list, "an array"), (str, "a string"), ((int, float), "a number"))
    return next((name for t, name in kinds if isinstance(value, t)), type(value).__name__)


def _check_state(state, path: Path) -> dict:
    """``state.json``'s content, checked to be what ``save_checkpoint`` writes: an object with an
    integer ``step`` >= 0, integer counters, and ``config`` / ``run`` objects where present.
    Anything else (a list, a string step, a hand edit gone wrong) is a ``CheckpointError``."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is corrupt ({path / STATE_FILE} {what}); delete it to resume "
                               f"from the one before")

    if not isinstance(state, dict):
        raise bad(f"holds {json_kind(state)}, not an object")
    for key in ("step", "skipped_steps", "nonfinite_streak", "num_processes"):
        value = state.get(key, 0)
        if key == "step" and key not in state:
            raise bad("has no step")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"has {key} {value!r}, not an integer >= 0")
    for key in ("config", "run"):
        if key in state and not isinstance(state[key], dict):
            raise bad(f"has a {key} that is {json_kind(state[key])}, not an object")
    return state


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Read a checkpoint folder; a missing or corrupt file (``state.json`` of any other shape than
    ``save_checkpoint`` writes included) is a ``CheckpointError``."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE}); pass another folder or set `resume` to latest")
    try:
        state = load_json((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
        raise CheckpointError(f"checkpoint {path} is corrupt ({STATE_FILE}: {type(e).__name__}: {str(e)[:120]}); "
                              f"delete it to resume from the one before") from None
    state = _check_state(state, path)
    try:
        return {
            "state": state,
            "trainable": load_file(str(path / "trainable.safetensors")),
            "optimizer": torch.load(path / "optimizer.pt", map_location=map_location, weights_only=True),
            "scheduler": torch.load(path / "scheduler.pt", map_location=map_location, weights_only=True),
        }
    except Exception as e:  # truncated or corrupted files
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(e).__name__}: {str(e)[:120]}); "
                              f"delete it to resume from the one before") from None
