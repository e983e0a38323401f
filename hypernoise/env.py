"""The environment variables the library reads, each checked like an option.

    flag("HF_HUB_OFFLINE") -> bool          on (1, true, yes, on) or off (0, false, no, off); unset or empty: the default
    check_environment(environ) -> None      every variable of ``CHECKS`` checked; a ``ConfigError`` naming the first bad one

A value that is neither on nor off (``HYPERNOISE_MALLOC_TUNING=disable``) is an error, not read as
one or the other. The distributed launch variables (``WORLD_SIZE``, ``RANK``, ...) are checked by
``devices.check_launch_env`` where a command may run distributed.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Mapping, Optional

from hypernoise.errors import ConfigError

ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

#: switch -> its value when unset or empty
FLAGS = {"HF_HUB_OFFLINE": False, "HYPERNOISE_MALLOC_TUNING": True}


def _environ(environ: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def flag(name: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """The switch ``name`` (one of ``FLAGS``): on or off, its default when unset or empty."""
    text = _environ(environ).get(name)
    value = (text or "").strip().lower()
    if not value:
        return FLAGS[name]
    if value in ON or value in OFF:
        return value in ON
    raise ConfigError(f"the environment has {name}={text[:40]!r}, which is neither on nor off; set it to 1 or 0 "
                      f"(true/false, yes/no, on/off) or unset it")


_KILL_POINT = re.compile(r"^(step|checkpoint):\d+$")


def _check_kill_at(name: str, text: str) -> None:
    """``HYPERNOISE_KILL_AT`` (``faults``): ``point:step`` items, comma-separated."""
    bad = [item for item in text.split(",") if item.strip() and not _KILL_POINT.match(item.strip())]
    if bad:
        raise ConfigError(f"the environment has {name}={text[:60]!r}; each item is step:N or checkpoint:N "
                          f"(got {bad[0][:30]!r}); fix it or unset it")


#: variable -> check(name, value) of a value that is set
CHECKS: dict[str, Callable[[str, str], None]] = {
    **{name: (lambda n, _text: flag(n, {n: _text}) and None) for name in FLAGS},
    "HYPERNOISE_KILL_AT": _check_kill_at,
}


def check_environment(environ: Optional[Mapping[str, str]] = None) -> None:
    """Check every variable the library reads that is set (``CHECKS``)."""
    env = _environ(environ)
    for name, check in CHECKS.items():
        if env.get(name) is not None:
            check(name, env[name])
