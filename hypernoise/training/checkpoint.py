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
from safetensors.torch import load_file, save_file

from hypernoise.errors import CheckpointError
from hypernoise.faults import maybe_kill

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
    save_file({k: v.detach().float().contiguous().cpu() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler_state, tmp / "scheduler.pt")
    for name in ("trainable.safetensors", "optimizer.pt", "scheduler.pt"):
        _fsync_file(tmp / name)
    maybe_kill("checkpoint", step)
    with open(tmp / STATE_FILE, "w") as f:
        json.dump({**state, "step": step}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. after resume): swap, never delete first
        old = root / f".tmp-old-{step:06d}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    if total_limit:
        for _, old_ckpt in list_checkpoints(root)[:-total_limit]:
            shutil.rmtree(old_ckpt, ignore_errors=True)
    return final


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Read a checkpoint folder; a missing or corrupt file is a ``CheckpointError``."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE}); pass another folder or set `resume` to latest")
    try:
        with open(path / STATE_FILE) as f:
            state = json.load(f)
        return {
            "state": state,
            "trainable": load_file(str(path / "trainable.safetensors")),
            "optimizer": torch.load(path / "optimizer.pt", map_location=map_location, weights_only=True),
            "scheduler": torch.load(path / "scheduler.pt", map_location=map_location, weights_only=True),
        }
    except Exception as e:  # truncated or corrupted files
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(e).__name__}: {str(e)[:120]}); "
                              f"delete it to resume from the one before") from None
