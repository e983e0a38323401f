"""Where reward weights come from: a local file or folder, or a Hugging Face Hub id.

``pretrained`` is resolved in this order:

1. an existing local file or folder: used as is;
2. something that looks like a path (``./x``, ``/x``, ``~/x``, a file suffix, more than one
   ``/``) but does not exist: ``WeightsNotFoundError``;
3. otherwise a Hub id (``owner/name``): the Hugging Face cache, downloading if allowed.
   With ``HF_HUB_OFFLINE=1`` (read at call time) only the cache is searched.

Every failure is one ``WeightsNotFoundError`` line naming the file needed and where it is usually
found. ``huggingface_hub`` and ``transformers`` are imported only when a Hub id is resolved.
"""

from __future__ import annotations

import json
import os
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

import torch

from hypernoise.hub import hub_offline
from hypernoise.io import json_problem, load_json
from hypernoise.errors import ConfigError, HypernoiseError, InputFileError, WeightsNotFoundError

PathLike = Union[str, os.PathLike]

#: name -> where the reward loads its weights from by default (shown by ``hypernoise rewards``)
REWARD_SOURCES: dict[str, str] = {}

#: written into converted folders, so a folder is never loaded as the wrong reward
MARKER_FILE = "hypernoise_reward.json"
#: the marker's "format": 2 since HPS folders carry ViT-H-14's 16 vision heads (format 1 wrote 20)
MARKER_FORMAT = 2
#: conversion options a marker records -> the ``hypernoise convert-reward`` flag that gives them
MARKER_OPTIONS = {"tokenizer": "--tokenizer", "head_file": "--head-file", "clip_pretrained": "--clip-pretrained",
                  "allow_pickle": "--allow-pickle"}

_WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".json"}


def reward_source(name: str) -> str:
    """Where reward ``name`` loads its weights from (``"no weights"`` for pixel rewards)."""
    return REWARD_SOURCES.get(name, "no weights")


def offline() -> bool:
    """Whether only the local cache may be searched: the library's one rule (``hub.hub_offline``)."""
    return hub_offline()


def looks_like_path(pretrained: PathLike) -> bool:
    """Whether ``pretrained`` must be a local path (it cannot be a Hub id ``owner/name``)."""
    text = str(pretrained)
    return (
        isinstance(pretrained, os.PathLike)
        or text.startswith((".", "/", "~", "\\"))
        or Path(text).suffix.lower() in _WEIGHT_SUFFIXES
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


def _where(what: str, filename: str, usual: str) -> str:
    mode = " (HF_HUB_OFFLINE is set: only the local cache was searched)" if offline() else ""
    return (f"{what}: {filename} not found{mode}; it is usually at {usual}. "
            f"Pass pretrained=<file or folder holding it> or a Hub id whose files are cached")


def resolve_file(pretrained: Optional[PathLike], filename: str, *, what: str, usual: str,
                 cache_dir: Optional[PathLike] = None) -> Path:
    """The local path of ``filename`` for ``pretrained`` (a file, a folder holding it, or a Hub
    repository id holding it). ``usual`` says where the file is usually found, for the error."""
    if pretrained is None:
        raise WeightsNotFoundError(_where(what, filename, usual))
    path = Path(os.path.expanduser(str(pretrained)))
    if path.is_file():
        return path
    if path.is_dir():
        if (path / filename).is_file():
            return path / filename
        raise WeightsNotFoundError(f"{what}: folder {path} holds no {filename}; it is usually at {usual}")
    if looks_like_path(pretrained):
        raise WeightsNotFoundError(f"{what}: no such file or folder {path}; need {filename}, usually at {usual}")
    return _hub_file(str(pretrained), filename, what=what, usual=usual, cache_dir=cache_dir)


def _hub_file(repo_id: str, filename: str, *, what: str, usual: str, cache_dir) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=offline()))
    except (OSError, ValueError, EntryNotFoundError) as err:
        detail = type(err).__name__
        raise WeightsNotFoundError(f"{_where(what, filename, usual)} [{repo_id}: {detail}]") from None


def load_pretrained(cls: Any, pretrained: PathLike, *, what: str, usual: str,
                    cache_dir: Optional[PathLike] = None, **kwargs) -> Any:
    """``cls.from_pretrained(pretrained)`` (a transformers model, config or tokenizer class) with
    the same resolution rules and errors as ``resolve_file``. A model must find every weight it
    has in the checkpoint, at its shape: transformers would otherwise initialise the rest
    randomly with only a log message."""
    path = Path(os.path.expanduser(str(pretrained)))
    if not path.exists() and looks_like_path(pretrained):
        raise WeightsNotFoundError(f"{what}: no such folder {path}; it is usually at {usual}")
    source = str(path) if path.exists() else str(pretrained)
    is_model = isinstance(cls, type) and issubclass(cls, torch.nn.Module)
    if is_model:
        kwargs["output_loading_info"] = True
    try:
        loaded = cls.from_pretrained(source, cache_dir=cache_dir, local_files_only=offline(), **kwargs)
    except RuntimeError as err:  # transformers refuses weights of other shapes
        if "mismatched" not in str(err) and "loading state_dict" not in str(err):
            raise
        raise InputFileError(f"{what}: {source} holds weights of other shapes than this model "
                             f"({_first_line(err)}); is it the right checkpoint?") from None
    except (OSError, ValueError) as err:
        if path.exists() and not isinstance(err, OSError):
            raise  # a real configuration problem, not a missing file
        if path.exists():
            raise WeightsNotFoundError(f"{what}: cannot load {path} ({_first_line(err)}); "
                                       f"it is usually at {usual}") from None
        raise WeightsNotFoundError(f"{_where(what, str(pretrained), usual)} [{_first_line(err)}]") from None
    except HypernoiseError:
        raise
    except Exception as err:  # a weights file that is not one (pickle's UnpicklingError, a truncated zip, ...)
        if not path.exists():
            raise
        raise InputFileError(f"{what}: the weights in {path} cannot be read ({type(err).__name__}: "
                             f"{_first_line(err)}); is it a complete checkpoint? download it again") from None
    return _complete(*loaded, what=what, source=source) if is_model else loaded


def _complete(model: Any, info: dict, *, what: str, source: str) -> Any:
    """``model`` if transformers found all its weights at their shapes, else ``InputFileError``."""
    mismatched = [str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or []]
    bad = sorted(info.get("missing_keys") or []) + sorted(mismatched)
    if bad:
        raise InputFileError(f"{what}: {source} lacks weights of this model or has them at other shapes "
                             f"({', '.join(bad[:3])}); is it the right checkpoint?")
    return model


@contextmanager
def quiet_transformers():
    """Silence transformers' warnings (e.g. its report of checkpoint weights a model does not use)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]


def load_state_dict_file(path: PathLike, key: Optional[str] = None, *,
                         allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch file; ``key`` selects a nested dict
    (``"state_dict"``); a leading ``module.`` (DataParallel) is stripped from every key.

    Torch files are read with ``weights_only=True`` unless ``allow_pickle`` (only for files you
    trust: unpickling runs code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
        except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError
            hint = "" if allow_pickle else " (if it holds Python objects and you trust it, pass allow_pickle=True)"
            raise InputFileError(f"cannot read {path}: {type(err).__name__}{hint}") from None
    if key is not None and isinstance(state, dict) and key in state:
        state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputFileError(f"{path} is not a state dict of tensors" + (f" (under key {key!r})" if key else ""))
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def write_marker(folder: PathLike, reward: str, **info) -> None:
    """Record in a converted folder which reward it holds (and from what)."""
    record = {"reward": reward, "format": MARKER_FORMAT, **info}
    Path(folder, MARKER_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read_marker(folder: PathLike, reward: str) -> Optional[dict]:
    """The folder's marker record, or None; ``ConfigError`` if it holds another reward."""
    marker = Path(folder, MARKER_FILE)
    if not marker.is_file():
        return None
    try:
        record = load_json(marker.read_text())
    except ValueError as e:  # not UTF-8, not JSON, too deep or large
        raise InputFileError(f"{marker} is corrupt ({json_problem(e)}); convert the weights again") from None
    if not isinstance(record, dict):
        raise InputFileError(f"{marker} is corrupt (not a JSON object); convert the weights again")
    if record.get("reward") != reward:
        raise ConfigError(f"{folder} holds converted {record.get('reward')!r} weights, not {reward!r}; "
                          f"pass the folder to the {record.get('reward')!r} reward")
    return record


def reconvert_command(reward: str, folder: PathLike, record: Optional[dict], default_source: str) -> str:
    """The ``hypernoise convert-reward`` command that writes ``folder`` again from the source and
    options its marker ``record`` names (``default_source`` without one)."""
    record = record or {}
    words = ["hypernoise", "convert-reward", reward, str(record.get("source") or default_source), "--out", str(folder)]
    for key, flag in MARKER_OPTIONS.items():
        value = record.get(key)
        words += [] if not value else [flag] if value is True else [flag, str(value)]
    return shlex.join(words + ["--overwrite"])


def model_from_state_dict(cls: Any, config: Any, state_dict: dict[str, torch.Tensor], *, what: str,
                          **kwargs) -> Any:
    """A transformers model of class ``cls`` holding exactly ``state_dict``: every weight the model
    has must be given and every given tensor must be used (``InputFileError`` otherwise, instead
    of transformers' silent random initialisation of missing weights)."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in cls(config, **kwargs).state_dict().items()}
    missing, unused = sorted(expected.keys() - state_dict.keys()), sorted(state_dict.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state_dict.keys() if state_dict[k].shape != expected[k]]
    if missing or unused or wrong:
        raise InputFileError(f"{what}: checkpoint does not match the model (missing {missing[:3]}, "
                             f"unused {unused[:3]}, wrong shape {sorted(wrong)[:3]}); is it the right file?")
    return cls.from_pretrained(None, config=config, state_dict=state_dict, **kwargs)
