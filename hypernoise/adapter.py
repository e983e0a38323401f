"""Saving and loading a trained noise hypernetwork as an adapter folder.

    adapter/
      adapter_config.json         peft's LoRA config (LoRA hypernetworks)
      adapter_model.safetensors   the trained weights (peft key layout for LoRA)
      hypernoise.json             generator, latent shape, hypernetwork and training settings,
                                  the pipeline call arguments it conditions under, library version

An adapter argument may also be a Hugging Face Hub id (``owner/name[@revision][/subfolder]``,
``hypernoise.hub``), fetched through the Hugging Face cache; an existing local path wins.

Loading checks that the folder belongs to the generator it is loaded into. A peft folder with no
``hypernoise.json`` (the paper's released adapters) loads as a LoRA hypernetwork on the
generator's backbone, with ``adapter_model.safetensors`` or ``adapter_model.bin``, keys with or
without peft's ``base_model.model.`` prefix, and peft < 0.16's dense LoRA on grouped convolutions
(see ``hypernet.lora``); its final projection returns only its LoRA delta, as the reference's
patched ``proj_out`` does. Every LoRA tensor must match a layer: a partial load is an error.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file

from hypernoise import __version__
from hypernoise.errors import AdapterError, plain
from hypernoise.io import json_problem, load_json, replace_folder, save_tensors
from hypernoise.generators.base import Generator
from hypernoise.hub import resolve_adapter_source
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings, MLPHypernetwork, NoiseHypernetwork
from hypernoise.registry import Registry
from hypernoise.training.checkpoint import json_kind

META_FILE = "hypernoise.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"

#: hypernetwork type (as written in hypernoise.json) -> builder(generator, config dict)
HYPERNETS: Registry = Registry("hypernetwork type")
#: the type ``methods.finetune`` writes: a LoRA of the generator itself, not a noise hypernetwork
FINETUNE_KIND = "finetune-lora"
#: adapter types that are not hypernetworks -> what the folder is and where it is used instead
OTHER_KINDS = {FINETUNE_KIND: "a fine-tuning adapter (a LoRA of the generator itself, written by `hypernoise train "
                              "--method finetune`), not a noise hypernetwork; use it with `hypernoise evaluate "
                              "--method finetune --adapter {folder}`"}


@HYPERNETS.register("mlp", help="standalone MLP on the flattened noise")
def _build_mlp(generator: Generator, config: dict) -> NoiseHypernetwork:
    return MLPHypernetwork(generator.latent_shape, hidden=int(config["hidden"]), depth=int(config["depth"]),
                           passes=config.get("passes", 1))


@HYPERNETS.register("lora", help="LoRA on the generator's backbone")
def _build_lora(generator: Generator, config: dict) -> NoiseHypernetwork:
    settings = LoraSettings(rank=int(config["rank"]), alpha=float(config["alpha"]),
                            target_modules=config.get("target_modules"), init=config.get("init", "gaussian"),
                            adapter_name=config.get("adapter_name", "hypernoise_adapter"),
                            grouped_convs=bool(config.get("grouped_convs", False)))
    return LoRAHypernetwork(generator, settings, passes=config.get("passes", 1))


def save_adapter(folder, hypernet: NoiseHypernetwork, generator: Generator, settings: Optional[dict] = None) -> Path:
    """Write the adapter folder atomically (a temporary folder renamed into place).

    ``hypernet``: anything with ``trainable_state_dict()`` and ``config()``; a module with a
    ``peft_config`` (LoRA hypernetwork, fine-tuning LoRA) also gets peft's adapter_config.json.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_adapter(tmp, hypernet, generator, settings)
    except BaseException:  # a full disk, a file-size limit, a signal: no half-written folder is left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, folder)  # files of the old folder not written anew (a user's README.md) are kept
    return folder


#: the safetensors metadata key under which diffusers' ``load_lora_adapter`` reads a LoRA's config
DIFFUSERS_LORA_METADATA = "lora_adapter_metadata"


def _write_adapter(tmp: Path, hypernet: NoiseHypernetwork, generator: Generator, settings: Optional[dict]) -> None:
    weights = {k: v.detach().float().contiguous().cpu() for k, v in hypernet.trainable_state_dict().items()}
    save_tensors(weights, tmp / WEIGHTS_FILE, metadata={"format": "pt", **_diffusers_metadata(hypernet)})
    if getattr(hypernet, "peft_config", None) is not None:
        hypernet.peft_config.save_pretrained(str(tmp))
    meta = {**generator.describe(), "output_kind": generator.output_kind, **_call_defaults(generator),
            "hypernetwork": hypernet.config(), "settings": settings or {},
            "library": "hypernoise", "library_version": __version__}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1, default=str))


def _call_defaults(generator: Generator) -> dict:
    """The pipeline ``__call__`` arguments the generator conditions under (``call_defaults`` of the
    diffusers families), recorded so that ``hypernoise.attach`` calls the pipeline as it trained."""
    defaults = getattr(generator, "call_defaults", None)
    return {"call_defaults": dict(defaults)} if defaults is not None else {}


def _diffusers_metadata(hypernet) -> dict:
    """A fine-tuning LoRA's config where diffusers' ``load_lora_adapter`` reads it, so that it loads
    with its alpha (from the weights alone diffusers infers the rank, not alpha: scaling 1); none
    for a noise hypernetwork, which is not a LoRA of the images."""
    config = getattr(hypernet, "peft_config", None)
    if config is None or hypernet.config().get("type") != FINETUNE_KIND:
        return {}
    targets = config.target_modules
    lora = {"r": int(config.r), "lora_alpha": float(config.lora_alpha), "lora_dropout": float(config.lora_dropout),
            "target_modules": targets if isinstance(targets, str) else sorted(targets)}
    return {DIFFUSERS_LORA_METADATA: json.dumps(lora, sort_keys=True)}


def resolve_adapter_folder(folder, subfolder: Optional[str] = None) -> Path:
    """``folder`` as an adapter folder path, or an ``AdapterError`` that names the folder to pass
    instead: a training run's folder (which holds ``adapter/``) or a file inside an adapter folder
    (its ``.safetensors``, its json) is answered with "pass RUN/adapter", not "does not exist".
    A Hub id (no such local path) is fetched through the Hugging Face cache (``hub``)."""
    if not isinstance(folder, (str, os.PathLike)):
        raise AdapterError(f"an adapter is a folder or a Hub id (OWNER/NAME), not {type(folder).__name__} "
                           f"({str(folder)[:40]}); pass the adapter/ folder that `hypernoise train` wrote")
    return check_local_folder(resolve_adapter_source(folder, subfolder))


def check_local_folder(folder: Path) -> Path:
    """``folder`` if it can be an adapter folder; else the ``AdapterError`` that names the folder
    to pass (``resolve_adapter_folder``'s checks, for a local path)."""
    folder = Path(folder)
    markers = (META_FILE, PEFT_CONFIG_FILE)
    if folder.is_file():
        parent = folder.parent
        if any((parent / m).is_file() for m in markers):
            raise AdapterError(f"{folder} is a file inside the adapter folder; pass the folder itself: {parent}")
        raise AdapterError(f"{folder} is a file, not an adapter folder; pass the adapter/ folder that "
                           f"`hypernoise train` wrote (RUN/adapter)")
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} does not exist; pass the adapter/ folder that `hypernoise train` "
                           f"wrote (RUN/adapter)")
    if not any((folder / m).is_file() for m in markers):
        inner = folder / "adapter"
        if inner.is_dir() and any((inner / m).is_file() for m in markers):
            raise AdapterError(f"{folder} is a training run folder, not its adapter; pass {inner}")
    return folder


def adapter_kind(folder) -> str:
    """The type an adapter folder records (``"lora"``, ``"mlp"``, ``FINETUNE_KIND``; ``"lora"`` for a
    bare peft folder), read from its metadata alone."""
    meta = read_metadata(resolve_adapter_folder(folder))
    return str(((meta or {}).get("hypernetwork") or {}).get("type", "lora"))


def read_metadata(folder) -> Optional[dict]:
    """``hypernoise.json`` of an adapter folder (None where there is none), checked to be what
    ``save_adapter`` writes: an object whose ``hypernetwork`` and ``settings`` are objects, whose
    ``generator`` is a name and ``latent_shape`` a list of sizes. Anything else, of any JSON type,
    is an ``AdapterError``."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return None
    try:
        meta = load_json(path.read_text())
    except (OSError, ValueError) as e:  # unreadable, not UTF-8 (UnicodeDecodeError), not JSON, too deep or large
        why = e.strerror if isinstance(e, OSError) else json_problem(e)
        raise AdapterError(f"{path} is corrupt ({type(e).__name__}: {why}); re-save the adapter") from None

    def bad(what: str) -> AdapterError:
        return AdapterError(f"{path} is corrupt ({what}); re-save the adapter or pass another folder")

    if not isinstance(meta, dict):
        raise bad(f"it holds {json_kind(meta)}, not an object")
    for key in ("hypernetwork", "settings"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise bad(f"its {key} is {json_kind(meta[key])}, not an object")
    if meta.get("generator") is not None and not isinstance(meta["generator"], str):
        raise bad(f"its generator is {meta['generator']!r}, not a name")
    shape = meta.get("latent_shape")
    if shape is not None and (not isinstance(shape, list)
                              or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise bad(f"its latent_shape is {shape!r}, not a list of sizes")
    kind = (meta.get("hypernetwork") or {}).get("type")
    if kind is not None and not isinstance(kind, str):
        raise bad(f"its hypernetwork type is {kind!r}, not a name")
    return meta


def adapter_size(folder) -> tuple[Optional[int], Optional[int]]:
    """(height, width) of the images an adapter was trained on, as ``hypernoise.json`` records them
    ((None, None) where it does not: the paper's peft layout, a generator of one size)."""
    meta = read_metadata(resolve_adapter_folder(folder)) or {}
    size = tuple(meta.get(k) for k in ("height", "width"))
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    return size if ok else (None, None)


def check_compatible(meta: dict, generator: Generator, folder) -> None:
    """Raise ``AdapterError`` when an adapter was trained for another generator or noise shape
    (for the same generator at another image size: naming the size to pass)."""
    want_name, want_shape = meta.get("generator"), tuple(meta.get("latent_shape") or ())
    size = (meta.get("height"), meta.get("width"))
    if want_name == generator.name and want_shape != tuple(generator.latent_shape) and all(size):
        raise AdapterError(
            f"adapter {folder} was trained on {size[0]}x{size[1]} images (noise shape {list(want_shape)}), this "
            f"{generator.name} generator makes {getattr(generator, 'height', '?')}x{getattr(generator, 'width', '?')} "
            f"(noise shape {list(generator.latent_shape)}); pass `height` {size[0]} and `width` {size[1]}, or "
            f"leave them out to take the adapter's size")
    if want_name != generator.name or want_shape != tuple(generator.latent_shape):
        trained_on = meta.get("pretrained")
        weights = (f"and `pretrained` {trained_on} (the weights it was trained on)" if isinstance(trained_on, str)
                   and trained_on else "(and its `pretrained` weights)")
        raise AdapterError(
            f"adapter {folder} was trained for generator {want_name!r} with noise shape {list(want_shape)}, "
            f"not {generator.name!r} with {list(generator.latent_shape)}; pass `generator` {want_name} "
            f"{weights} or another adapter")


#: peft LoRA options a bare folder may carry that change the computation; hypernoise loads none of them
_UNSUPPORTED_PEFT = ("rank_pattern", "alpha_pattern", "use_rslora", "use_dora", "lora_bias", "fan_in_fan_out")


def _reference_config(folder: Path) -> dict:
    """A LoRA config from a bare peft folder (the paper's released layout: peft < 0.16, grouped
    convolutions with dense LoRA, ``adapter_model.bin``). Options that would change the result
    but are not loaded are refused rather than ignored."""
    try:
        cfg = load_json((folder / PEFT_CONFIG_FILE).read_text())
        if not isinstance(cfg, dict):
            raise TypeError(f"it holds {json_kind(cfg)}, not an object")
        rank = cfg["r"]
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"r is {rank!r}, not a positive integer")
        alpha = cfg.get("lora_alpha", 8)  # 8: peft's default lora_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"lora_alpha is {alpha!r}, not a positive number")
    except (OSError, KeyError, TypeError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise AdapterError(f"{folder / PEFT_CONFIG_FILE} is not a peft LoRA config ({type(e).__name__}: {e})") from None
    used = [k for k in _UNSUPPORTED_PEFT if cfg.get(k)]
    if used:
        raise AdapterError(f"adapter {folder} uses peft options hypernoise does not load ({', '.join(used)}); "
                           f"re-save it without them")
    targets = cfg.get("target_modules")
    return {"type": "lora", "rank": rank, "alpha": alpha,
            "target_modules": sorted(targets) if isinstance(targets, list) else targets,
            "adapter_name": "hypernoise_adapter"}


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    st, binary = folder / WEIGHTS_FILE, folder / "adapter_model.bin"
    try:
        if st.is_file():
            return load_file(str(st))
        if binary.is_file():
            return torch.load(binary, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AdapterError(f"adapter weights in {folder} are corrupt or truncated ({type(e).__name__}); re-save or re-download them") from None
    raise AdapterError(f"{folder} has no {WEIGHTS_FILE} (or adapter_model.bin); pass the adapter/ folder that training wrote")


def load_adapter(generator: Generator, folder, on_build: Optional[Callable] = None,
                 subfolder: Optional[str] = None) -> NoiseHypernetwork:
    """Build the hypernetwork recorded in ``folder`` (a folder, or a Hub id with an optional
    ``subfolder``) on ``generator`` and load its weights. ``on_build(hypernet)`` is called once
    the hypernetwork is built, before its weights load (so a caller can take it out again if
    loading fails)."""
    folder = resolve_adapter_folder(folder, subfolder)  # a run folder or a file inside adapter/: names the folder to pass
    meta = read_metadata(folder)
    if meta is not None:
        check_compatible(meta, generator, folder)
        config = meta.get("hypernetwork") or {}
    elif (folder / PEFT_CONFIG_FILE).is_file():
        config = _reference_config(folder)
    else:
        raise AdapterError(f"{folder} is not an adapter folder (no {META_FILE} or {PEFT_CONFIG_FILE})")
    kind = config.get("type", "lora")
    if kind in OTHER_KINDS:
        raise AdapterError(f"{folder} is {OTHER_KINDS[kind].format(folder=folder)}")
    weights = _read_weights(folder)
    try:
        hypernet = HYPERNETS.build(kind, generator=generator, config=config)  # ConfigError is a ValueError
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise AdapterError(f"adapter {folder} has an unusable hypernetwork config ({plain(str(e))})") from None
    if on_build is not None:
        on_build(hypernet)
    try:
        hypernet.load_trainable_state_dict(weights)
    except KeyError as e:
        raise AdapterError(f"adapter {folder} does not fit this generator: {e}") from None
    return hypernet.to(generator.device)
