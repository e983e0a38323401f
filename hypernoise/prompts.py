"""Prompt sets of the field, read from one spec, mixed, deduplicated.

    load_prompts("pickapic_prompts.json,compbench/,ABC-6K.txt*2") -> list[str]

A spec is one or more sources separated by commas, each optionally weighted ``*N`` (its prompts
listed N times: an integer from 1 to ``MAX_WEIGHT``). A spec that is itself an existing path
(``my,prompts.txt``) is that one file. Every source must name something: an empty spec, an empty
part (``a.txt,,b.txt``) or a weight with nothing before it (``*2``) is an error. A source is:
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

import re
from pathlib import Path
from typing import Callable

from hypernoise.errors import InputFileError
from hypernoise.io import read_prompts, short

HF_PREFIX = "hf:"
#: 60 ordinary prompts written for this project: what real generators train on when given none
BUNDLED = Path(__file__).resolve().parent / "assets" / "prompts" / "everyday.txt"
_HF_COLUMNS = ("prompt", "caption", "text")
#: the largest weight ``*N``: a source listed more often than this is a typo, not a mix
MAX_WEIGHT = 1000
_WEIGHT = re.compile(r"[0-9]+")


def load_prompts(spec: str) -> list[str]:
    """Every prompt of ``spec`` (see the module docstring), deduplicated, weights applied."""
    sources = _sources(spec)
    seen: set[str] = set()
    out: list[str] = []
    for source, weight in sources:
        fresh = [p for p in dict.fromkeys(read_source(source)) if p not in seen]
        seen.update(fresh)
        out += fresh * weight
    return out


def source_paths(spec: str) -> list[str]:
    """The local paths a spec reads (weights and hf: sources left out): inputs a command must not delete."""
    return [p for p, _ in _sources(spec) if not p.startswith(HF_PREFIX)]


def _sources(spec: str) -> list[tuple[str, int]]:
    """(source, weight) of each part of ``spec``: the whole spec when it is an existing path."""
    if not spec.strip():
        raise InputFileError(f"prompt spec {spec!r} names no source; pass a file, a folder or hf:NAME")
    whole = _whole_path(spec.strip()) if "," in spec else None
    if whole is not None:
        return [whole]  # a file name with a comma in it
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise InputFileError(f"prompt spec {short(spec)} has an empty part between commas; name a file, a folder or "
                             f"hf:NAME in each")
    sources = [_weighted(part) for part in parts]
    missing = [s for s, _ in sources if not s.startswith(HF_PREFIX) and not Path(s).expanduser().exists()]
    if len(sources) > 1 and missing:
        raise InputFileError(f"prompt file {short(missing[0], 80)} does not exist; `prompts` splits at commas, so "
                             f"{short(spec, 80)} names {len(sources)} sources (a file whose name holds a comma is read "
                             f"whole when it is the only source, or link it under a name without one)")
    return sources


def _whole_path(spec: str):
    """(path, weight) when ``spec`` as a whole (``my,prompts.txt``, ``my,prompts.txt*2``) is an existing path."""
    source, star, weight = spec.rpartition("*")
    if star and _WEIGHT.fullmatch(weight) and Path(source).expanduser().exists():
        return _weighted(spec)
    return (spec, 1) if Path(spec).expanduser().exists() else None


def bundled_prompts() -> list[str]:
    """The bundled everyday prompts (``BUNDLED``): a smoke-test set, not a training set."""
    return read_prompts(BUNDLED)


def _weighted(part: str) -> tuple[str, int]:
    source, star, weight = part.rpartition("*")
    if not star:
        return part, 1
    if not source.strip():
        raise InputFileError(f"prompt source {short(part)} is a weight with no source before it; write FILE*{weight}")
    if not _WEIGHT.fullmatch(weight) or not 1 <= int(weight) <= MAX_WEIGHT:
        raise InputFileError(f"prompt source weight in {short(part)} must be an integer from 1 to {MAX_WEIGHT} (the "
                             f"times its prompts are listed), e.g. {source[:40]}*2")
    return source, int(weight)


def read_source(source: str) -> list[str]:
    """The prompts of one source (not deduplicated)."""
    if source.startswith(HF_PREFIX):
        return _read_hf(source[len(HF_PREFIX):])
    path = Path(source).expanduser()
    reader = _READERS.get("folder" if path.is_dir() else "file", read_prompts)
    prompts = [p.strip() for p in reader(path) if p and p.strip()]
    if not prompts:
        raise InputFileError(f"prompt source {source} holds no prompt")
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


#: what reads a source that is a local path: a folder's files, or a file (text, JSONL or JSON: ``io.read_prompts``)
_READERS: dict[str, Callable[[Path], list[str]]] = {"folder": _read_folder, "file": read_prompts}
