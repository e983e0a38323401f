"""Prompt sets of the field, read from one spec, mixed, deduplicated.

    load_prompts("pickapic_prompts.json,compbench/,ABC-6K.txt*2") -> list[str]

A spec is one or more sources separated by commas, each optionally weighted ``*N`` (its prompts
listed N times: a positive integer). A source is:
    FILE.txt               one prompt per line (ABC-6K, T2I-CompBench ``*_train.txt``)
    FILE.jsonl             JSON objects with a ``prompt`` field (GenEval ``evaluation_metadata.jsonl``);
                           plain lines in it are prompts too
    FILE.json              an object of prompts (the authors' ``pickapic_prompts.json``: its values),
                           a list of prompts, or a list of objects with ``prompt``
    FOLDER/                its ``*_train.txt`` files (T2I-CompBench's ``examples/dataset``), else its
                           ``*.txt`` files, in name order
    hf:NAME[:SPLIT][:COLUMN]  a Hugging Face dataset through ``datasets`` (split ``train``, column
                           ``prompt``, ``caption`` or ``text``); honours HF_HUB_OFFLINE
Prompts are stripped; duplicates are dropped, the first occurrence kept (before weights repeat a
source). The order is the sources' own: the trainer shuffles with a seeded permutation that is
the same on every process and after ``--resume`` (``training/data.PromptSampler``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from hypernoise.errors import InputFileError
from hypernoise.io import read_prompts

HF_PREFIX = "hf:"
#: 60 ordinary prompts written for this project: what real generators train on when given none
BUNDLED = Path(__file__).resolve().parent / "assets" / "prompts" / "everyday.txt"
_HF_COLUMNS = ("prompt", "caption", "text")


def load_prompts(spec: str) -> list[str]:
    """Every prompt of ``spec`` (see the module docstring), deduplicated, weights applied."""
    sources = [_weighted(part.strip()) for part in spec.split(",") if part.strip()]
    if not sources:
        raise InputFileError(f"prompt spec {spec!r} names no source; pass a file, a folder or hf:NAME")
    seen: set[str] = set()
    out: list[str] = []
    for source, weight in sources:
        fresh = [p for p in dict.fromkeys(read_source(source)) if p not in seen]
        seen.update(fresh)
        out += fresh * weight
    return out


def source_paths(spec: str) -> list[str]:
    """The local paths a spec reads (weights and hf: sources left out): inputs a command must not delete."""
    parts = [_weighted(part.strip())[0] for part in spec.split(",") if part.strip()]
    return [p for p in parts if not p.startswith(HF_PREFIX)]


def bundled_prompts() -> list[str]:
    """The bundled everyday prompts (``BUNDLED``): a smoke-test set, not a training set."""
    return read_prompts(BUNDLED)


def _weighted(part: str) -> tuple[str, int]:
    source, star, weight = part.rpartition("*")
    if not star:
        return part, 1
    if not weight.isdigit() or int(weight) < 1:
        raise InputFileError(f"prompt source weight in {part!r} must be a positive integer, e.g. {source}*2")
    return source, int(weight)


def read_source(source: str) -> list[str]:
    """The prompts of one source (not deduplicated)."""
    if source.startswith(HF_PREFIX):
        return _read_hf(source[len(HF_PREFIX):])
    path = Path(source).expanduser()
    reader = _READERS.get("folder" if path.is_dir() else path.suffix.lower(), read_prompts)
    prompts = [p.strip() for p in reader(path) if p and p.strip()]
    if not prompts:
        raise InputFileError(f"prompt source {source} holds no prompt")
    return prompts


def _read_json(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"prompt file {path} is not readable JSON ({type(e).__name__}); pass an object or a "
                             f"list of prompts") from None
    items = list(data.values()) if isinstance(data, dict) else data if isinstance(data, list) else None
    prompts = [item.get("prompt") if isinstance(item, dict) else item for item in items or []]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputFileError(f"prompt file {path} is not an object or list of prompts (strings, or objects with "
                             f"a \"prompt\" string)")
    return prompts


def _read_folder(path: Path) -> list[str]:
    files = sorted(path.glob("*_train.txt")) or sorted(path.glob("*.txt"))
    if not files:
        raise InputFileError(f"prompt folder {path} has no *_train.txt or *.txt file")
    return [p for f in files for p in read_prompts(f)]


def _read_hf(spec: str) -> list[str]:
    name, _, rest = spec.partition(":")
    split, _, column = rest.partition(":")
    try:
        import datasets
    except ImportError:
        raise InputFileError(f"hf:{spec} needs the `datasets` package; pip install datasets, or pass a file") from None
    try:
        table = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # not cached offline, no such dataset or split, no network
        raise InputFileError(f"hf:{spec}: the dataset could not be loaded ({type(e).__name__}: {str(e)[:120]}); "
                             f"download it first or pass a file") from None
    column = column or next((c for c in _HF_COLUMNS if c in table.column_names), None)
    if column not in table.column_names:
        raise InputFileError(f"hf:{spec} has no column {column or '/'.join(_HF_COLUMNS)}; name one: "
                             f"hf:{name}:{split or 'train'}:COLUMN (columns: {', '.join(table.column_names)})")
    return [str(p) for p in table[column]]


_READERS: dict[str, Callable[[Path], list[str]]] = {".json": _read_json, "folder": _read_folder}
