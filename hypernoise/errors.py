"""Typed exceptions. The CLI turns each into one line on stderr and a non-zero exit."""

from typing import Optional


def plain(message: str) -> str:
    """``message`` without the backquotes that mark config fields: for a message quoted inside
    another, where its fields are not the user's flags (an adapter's recorded settings)."""
    return message.replace("`", "")


class HypernoiseError(Exception):
    """Base class of every error the library raises on purpose.

    ``exit_code`` is what the CLI exits with: 2 for bad input, 1 for failures during a run.
    """

    exit_code = 2


class ConfigError(HypernoiseError, ValueError):
    """An option or value is invalid (bad number, unknown name, malformed spec).

    ``field``: the dotted config field at fault (``"train.batch_size"``, ``"seeds"``), when there
    is one; the message names it the library's way, and the CLI rewrites it to its flag.
    """

    def __init__(self, message: str = "", *, field: Optional[str] = None):
        super().__init__(message)
        self.field = field


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup failed (generator, reward, method, preset)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputFileError(HypernoiseError, OSError):
    """A file the user gave is missing, empty, unreadable or malformed."""


class OutputExistsError(HypernoiseError, FileExistsError):
    """An output folder already holds results; nothing was overwritten."""


class AdapterError(HypernoiseError):
    """An adapter folder is missing, corrupt, or belongs to another generator."""


class CheckpointError(HypernoiseError):
    """A checkpoint is missing or corrupt."""


class WeightsNotFoundError(HypernoiseError, FileNotFoundError):
    """Model weights could not be found locally (and could not be downloaded)."""


class MissingPackageError(HypernoiseError, ImportError):
    """An optional package a feature needs is not installed; the message names the install line."""


class TrainingDivergedError(HypernoiseError, RuntimeError):
    """Training stopped: too many non-finite steps in a row."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """A command stopped by SIGINT/SIGTERM after writing what it had finished.

    ``message``: what was kept and how to go on (one line, printed by the CLI); ``partial``: the
    partial result the library wrote (a results dict marked ``"partial": true``), or None.
    """

    def __init__(self, message: str, partial: Optional[dict] = None):
        super().__init__(message)
        self.message = message
        self.partial = partial
