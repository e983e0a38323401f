"""Where the shapes world's networks keep their weights, and how they are loaded (a leaf module).

    ASSETS                               the shipped weights: ``hypernoise/assets/world``
    resolve_weights(pretrained, stem)    -> the ``.safetensors`` path to load
    load_weights(module, path)           strict load; a missing file is ``WeightsNotFoundError``
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from hypernoise.errors import WeightsNotFoundError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "world"


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a safetensors file strictly into ``module``; a missing file is WeightsNotFoundError."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsNotFoundError(f"world weights {path} not found; reinstall hypernoise, or retrain them "
                                   f"(hypernoise.world.train, docs/world.md) and pass their folder")
    module.load_state_dict(load_file(str(path)), strict=True)


def resolve_weights(pretrained: Optional[str], stem: str) -> Path:
    """``pretrained`` may be a folder holding ``<stem>.safetensors`` or the file itself."""
    if pretrained is None:
        return ASSETS / f"{stem}.safetensors"
    p = Path(pretrained)
    return p / f"{stem}.safetensors" if p.is_dir() or not p.suffix else p
