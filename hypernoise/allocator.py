"""The CPU heap of a long run: keep freed tensor memory for reuse instead of faulting it back in.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc hands every block above its
mmap threshold (dynamic, 128 KiB at the start) straight to the kernel and gives the top of its
heap back once more than the trim threshold is free there; the next step's tensors of the same
size then fault their pages in again, each one zeroed by the kernel. A training or ReNO loop
makes the same tensors at every step, so on the built-in world at batch 16 that is about 200k
page faults a second: in its bench, half the CPU in the kernel during HyperNoise-initialised ReNO
and 12 % over the whole run (docs/performance.md, ``benchmarks/cpu_allocator.py``).

``tune()`` keeps blocks up to 32 MiB (glibc's largest mmap threshold) on the heap, returns the
heap's top only when 256 MiB are free there, and grows it 16 MiB at a time. The price is that
freed memory, up to 256 MiB of it, stays with the process: its resident size (what the CPU's
``peak_memory_mb`` reads) can be that much higher (+116 to +191 MB on the world's bench, whose
process holds about 1 GB). The CLI calls it at start; from Python, call it once. It does nothing
off glibc, when the user tunes the allocator (any of ``USER_TUNING`` set), or with
``HYPERNOISE_MALLOC_TUNING=0`` (a value neither on nor off is refused by ``env.check_environment``).
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Mapping, Optional

from hypernoise.env import flag
from hypernoise.errors import ConfigError

#: mallopt(3) parameters
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3

#: parameter -> value set by ``tune``
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 256 << 20, M_TOP_PAD: 16 << 20}

#: environment variables through which a user tunes glibc's malloc (any one set: hands off)
USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
               "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD")

_tuned: Optional[bool] = None


def wanted(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``tune`` may change the allocator: glibc, no user tuning, not switched off."""
    env = os.environ if environ is None else environ
    try:
        if not flag("HYPERNOISE_MALLOC_TUNING", env):
            return False
    except ConfigError:  # a value neither on nor off: hands off; the CLI reports it (env.check_environment)
        return False
    if any(env.get(name) for name in USER_TUNING):
        return False
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def tune(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Apply ``SETTINGS`` through ``mallopt`` once per process; whether they are in effect."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if wanted(environ):
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _tuned = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    return _tuned
