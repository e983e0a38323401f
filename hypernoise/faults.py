"""Fault injection for tests of crash safety: kill this process at a named point.

Set ``HYPERNOISE_KILL_AT=<point>:<step>`` (several separated by commas) and the process sends
itself SIGKILL when it reaches that point at that step, exactly like a machine dying there.
Points: ``step`` (after the backward pass, before the optimizer update) and ``checkpoint``
(after the weights and optimizer state are written, before the checkpoint is complete).
Unset, it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "HYPERNOISE_KILL_AT"


def maybe_kill(point: str, step: int) -> None:
    spec = os.environ.get(ENV)
    if spec and f"{point}:{step}" in spec.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
