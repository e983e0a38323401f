"""Device and dtype: the one place names become torch objects (nothing else hard-codes either).

    resolve_device(None | "cuda:1" | torch.device) -> torch.device    (default: the first accelerator, else cpu)
    parse_dtype(None | "bf16" | "float32" | torch.dtype) -> torch.dtype | None
    resolve_dtype(dtype, device) -> torch.dtype                         (default: bf16 on CUDA, fp32 elsewhere)
    check_launch_env(environ) -> int                                    (the process count a launcher set, checked)

A device that cannot be used here (``cuda`` without CUDA, ``cuda:3`` on a one-GPU machine, ``mps``
off a Mac, ``meta``, which holds no data, a name torch does not know) is a ``ConfigError`` naming
`device`, before any model loads.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Union

import torch

from hypernoise.errors import ConfigError

#: dtype names accepted everywhere (config files, --dtype, accelerate's mixed-precision names)
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "no": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}

DeviceLike = Union[str, torch.device, None]
DtypeLike = Union[str, torch.dtype, None]


def resolve_device(device: DeviceLike = None, field: str = "device") -> torch.device:
    """The device asked for (checked: ``check_device``), or the first accelerator available, or the CPU."""
    if device is not None:
        return check_device(device, field)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(device: Union[str, torch.device], field: str = "device") -> torch.device:
    """``device`` as a torch.device that exists on this machine; ``ConfigError`` naming `field` otherwise."""
    try:
        if isinstance(device, torch.device):
            dev = device
        else:
            dev = torch.device(device if isinstance(device, int) and not isinstance(device, bool) else str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"unknown device {str(device)!r} (`{field}`); pass cpu, cuda, cuda:N or mps, or drop "
                          f"`{field}` for the default", field=field) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"CUDA is not available on this machine; drop `{field}` or pass `{field}` cpu",
                              field=field)
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"`{field}` {dev} does not exist: this machine has {count} CUDA device"
                              f"{'s' if count != 1 else ''} (cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})",
                              field=field)
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"MPS is not available on this machine; drop `{field}` or pass `{field}` cpu",
                              field=field)
    elif dev.type == "meta":
        raise ConfigError(f"`{field}` meta holds no data (torch's placeholder for shapes), so nothing can run on it; "
                          f"pass cpu, cuda, cuda:N or mps, or drop `{field}` for the default", field=field)
    elif dev.type != "cpu":
        backend = getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise ConfigError(f"device {dev.type!r} is not available on this machine; drop `{field}` or pass "
                              f"`{field}` cpu", field=field)
    return dev


#: what a distributed launch (torchrun, accelerate launch) sets for every process beyond WORLD_SIZE
LAUNCH_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")
_LAUNCH_HINT = "launch several processes with torchrun or accelerate launch, or unset WORLD_SIZE and RANK for one"


def _env_int(environ: Mapping[str, str], name: str) -> Optional[int]:
    text = environ.get(name)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"the environment has {name}={text!r}, which is not an integer; {_LAUNCH_HINT}") from None


def check_launch_env(environ: Optional[Mapping[str, str]] = None) -> int:
    """The number of processes a launcher set (``WORLD_SIZE``, 1 when unset), after checking that
    the distributed environment is whole: integers where integers belong, a rank inside the world,
    and, for more than one process, ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set (without them
    the process group would wait forever or fail deep inside torch). ``ConfigError`` otherwise,
    before any model is loaded."""
    environ = os.environ if environ is None else environ
    world, rank, local = _env_int(environ, "WORLD_SIZE"), _env_int(environ, "RANK"), _env_int(environ, "LOCAL_RANK")
    if world is None:
        if rank not in (None, 0):
            raise ConfigError(f"the environment has RANK={rank} but no WORLD_SIZE; {_LAUNCH_HINT}")
        return 1
    if world < 1:
        raise ConfigError(f"the environment has WORLD_SIZE={world}; it must be at least 1; {_LAUNCH_HINT}")
    if world > 1:
        missing = [name for name in LAUNCH_VARIABLES if not str(environ.get(name, "")).strip()]
        if missing:
            raise ConfigError(f"the environment has WORLD_SIZE={world} but no {', '.join(missing)}: a half-set "
                              f"distributed launch; {_LAUNCH_HINT}")
        port = _env_int(environ, "MASTER_PORT")
        if not 0 < port < 65536:
            raise ConfigError(f"the environment has MASTER_PORT={port}, not a port (1 to 65535); {_LAUNCH_HINT}")
    if rank is not None and not 0 <= rank < world:
        raise ConfigError(f"the environment has RANK={rank} outside WORLD_SIZE={world} (0 to {world - 1}); "
                          f"{_LAUNCH_HINT}")
    if local is not None and not 0 <= local < world:
        raise ConfigError(f"the environment has LOCAL_RANK={local} outside WORLD_SIZE={world}; {_LAUNCH_HINT}")
    return world


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
