"""Device and dtype: the one place names become torch objects (nothing else hard-codes either).

    resolve_device(None | "cuda:1" | torch.device) -> torch.device    (default: the first accelerator, else cpu)
    parse_dtype(None | "bf16" | "float32" | torch.dtype) -> torch.dtype | None
    resolve_dtype(dtype, device) -> torch.dtype                         (default: bf16 on CUDA, fp32 elsewhere)
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from hypernoise.errors import ConfigError

#: dtype names accepted everywhere (config files, --dtype, accelerate's mixed-precision names)
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "no": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}

DeviceLike = Union[str, torch.device, None]
DtypeLike = Union[str, torch.dtype, None]


def resolve_device(device: DeviceLike = None) -> torch.device:
    """The device asked for, or the first accelerator available, or the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def parse_dtype(dtype: DtypeLike, field: str = "dtype") -> Optional[torch.dtype]:
    """A torch dtype from a name (``"bf16"``, ``"float32"``...) or a dtype; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r} (`{field}`); choose float32, bfloat16 or float16 (or fp32, bf16, fp16)",
                          field=field) from None


def resolve_dtype(dtype: DtypeLike, device: torch.device) -> torch.dtype:
    """The dtype asked for; by default bf16 on CUDA, fp32 elsewhere."""
    parsed = parse_dtype(dtype)
    if parsed is not None:
        return parsed
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
