"""Frozen generators g, looked up by name.

Each family lives in its own module and registers itself in ``GENERATORS``; modules that need
optional packages (diffusers) import them only when a generator is built.
"""

from __future__ import annotations

from typing import Optional

import torch

from hypernoise.devices import resolve_device
from hypernoise.generators.base import Conditioning, Generator
from hypernoise.generators.registry import GENERATORS
# The diffusers families register here; each imports diffusers only when a generator is built.
from hypernoise.generators import sd_turbo as _sd_turbo  # noqa: F401,E402  (registers "sd-turbo")
from hypernoise.generators import sana_sprint as _sana_sprint  # noqa: F401,E402  (registers "sana-sprint")
from hypernoise.generators import flux as _flux  # noqa: F401,E402  (registers "flux-schnell")
from hypernoise.generators.diffusers_common import detect_generator  # noqa: E402  (registers "auto")

__all__ = ["Conditioning", "Generator", "GENERATORS", "build_generator", "detect_generator"]


def build_generator(name: str, pretrained: Optional[str] = None, device: Optional[str] = None,
                    dtype: Optional[torch.dtype] = None, **kwargs) -> Generator:
    """Build a frozen generator by registry name; it comes back frozen and in eval mode. A device
    this machine lacks is a ``ConfigError`` before anything loads."""
    if device is not None:
        device = resolve_device(device)
    gen = GENERATORS.build(name, pretrained=pretrained, device=device, dtype=dtype, **kwargs)
    return gen.freeze()
