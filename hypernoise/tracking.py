"""Experiment trackers (``--report-to``): the names accelerate takes, checked before training.

    check_report_to("tensorboard") -> "tensorboard"    or a one-line error naming the install

accelerate drops a tracker whose package is missing with a log line, so a run asked to report to
TensorBoard without it would end having logged nothing; diffusers' training scripts refuse that
before training, and so does this check. Names are accelerate's ``LoggerType`` values (``all``:
every installed tracker); availability is accelerate's own ``is_<name>_available``. accelerate
is imported when a tracker is checked, never at import.
"""

from __future__ import annotations

from typing import Optional

from hypernoise.errors import ConfigError, MissingPackageError

#: tracker -> what installs it, where it is not ``pip install <name>``
INSTALL = {"tensorboard": 'pip install "hypernoise[tracking]"', "comet_ml": "pip install comet-ml"}


def tracker_names() -> list[str]:
    """The names accelerate's ``log_with`` takes (its ``LoggerType``), ``all`` first."""
    from accelerate.utils import LoggerType

    return [t.value for t in LoggerType]


def installed(name: str) -> bool:
    """Whether accelerate finds the package of tracker ``name``."""
    import accelerate.utils

    check = getattr(accelerate.utils, f"is_{name}_available", None)
    return bool(check and check())


def install_line(name: str) -> str:
    return INSTALL.get(name, f"pip install {name}")


def check_report_to(name: Optional[str]) -> Optional[str]:
    """``name`` (None or "none": no tracker) if accelerate takes it and its package is installed;
    a ``ConfigError`` for a name accelerate does not know, a ``MissingPackageError`` naming the
    install line for one that is not installed (``all``: none is)."""
    if name in (None, "none"):
        return None
    names = tracker_names()
    if name not in names:
        raise ConfigError(f"`report_to` must be one of {', '.join(names)} (the trackers accelerate takes), got "
                          f"{str(name)[:40]!r}", field="report_to")
    if name == "all":
        if not any(installed(n) for n in names if n != "all"):
            raise MissingPackageError(f"`report_to` all: no tracker accelerate knows is installed, so nothing would be "
                                      f"logged; {install_line('tensorboard')} (or wandb, mlflow, ...); nothing was "
                                      f"trained")
    elif not installed(name):
        raise MissingPackageError(f"`report_to` {name}: the {name} package is not installed, so nothing would be "
                                  f"logged; {install_line(name)}, or drop `report_to`; nothing was trained")
    return name
