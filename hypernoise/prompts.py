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
source), unless ``keep_duplicates`` (the authors keep theirs). The order is the sources' own: the
trainer shuffles with a seeded permutation that is the same on every process and after
``--resume`` (``training/data.PromptSampler``).

The authors' training mix (``paper_mix``, ``hypernoise prompt-mix``): ExplainableML/HyperNoise
training/prompt_dataset.py:44-51 (@1d5d3db8; the same lines at e9211f55) reads T2I-CompBench's
seven ``*_train.txt`` in the order of its lines 96-100 (blank lines skipped, line 106), then
``assets/ABC-6K.txt`` (every line, stripped, line 50), then the values of
``assets/pickapic_prompts.json`` (line 47), each set once, and concatenates them with every
duplicate kept (line 51).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hypernoise.errors import InputFileError
from hypernoise.io import read_prompts, read_text, short

HF_PREFIX = "hf:"
#: 60 ordinary prompts written for this project: what real generators train on when given none
BUNDLED = Path(__file__).resolve().parent / "assets" / "prompts" / "everyday.txt"
_HF_COLUMNS = ("prompt", "caption", "text")
#: the largest weight ``*N``: a source listed more often than this is a typo, not a mix
MAX_WEIGHT = 1000
_WEIGHT = re.compile(r"[0-9]+")


def load_prompts(spec: str, keep_duplicates: bool = False) -> list[str]:
    """Every prompt of ``spec`` (see the module docstring), weights applied; deduplicated (the first
    occurrence kept) unless ``keep_duplicates``."""
    sources = _sources(spec)
    seen: set[str] = set()
    out: list[str] = []
    for source, weight in sources:
        prompts = read_source(source)
        fresh = prompts if keep_duplicates else [p for p in dict.fromkeys(prompts) if p not in seen]
        seen.update(fresh)
        out += fresh * weight
    return out


#: T2I-CompBench training files of the authors' mix, in their order (prompt_dataset.py:96-100)
COMPBENCH_TRAIN = ("color_train.txt", "complex_train.txt", "texture_train.txt", "shape_train.txt",
                   "spatial_train.txt", "non_spatial_train.txt", "numeracy_train.txt")


@dataclass
class PromptMix:
    """A mix of prompt sets: the prompts in order and what each source gave."""

    prompts: list
    #: source name -> prompts it gave
    counts: dict
    #: prompts that repeat an earlier one (kept, or dropped with ``keep_duplicates`` False)
    duplicates: int
    #: blank lines of ABC-6K (the authors keep each as an empty prompt; dropped here)
    blank_lines: int


def paper_mix(compbench: Path, abc6k: Path, pickapic: Path, keep_duplicates: bool = True) -> PromptMix:
    """The authors' training prompts (module docstring) from the user's copies: ``compbench`` the
    folder of T2I-CompBench's ``*_train.txt`` (``examples/dataset``), ``abc6k`` ``ABC-6K.txt``,
    ``pickapic`` ``pickapic_prompts.json``. Duplicates are kept, as the authors keep them, unless
    ``keep_duplicates`` is False. A missing file is an ``InputFileError`` naming it."""
    folder = Path(compbench).expanduser()
    missing = [f for f in COMPBENCH_TRAIN if not (folder / f).is_file()]
    if missing:
        raise InputFileError(f"T2I-CompBench folder {folder} lacks {', '.join(missing)}; pass its examples/dataset "
                             f"folder, which holds the {len(COMPBENCH_TRAIN)} *_train.txt files of the authors' mix")
    parts = {"T2I-CompBench": [p for f in COMPBENCH_TRAIN for p in read_source(str(folder / f))],
             "ABC-6K": read_source(str(abc6k)), "Pick-a-Pic": read_source(str(pickapic))}
    everything = [p for part in parts.values() for p in part]
    unique = list(dict.fromkeys(everything))
    return PromptMix(everything if keep_duplicates else unique, {k: len(v) for k, v in parts.items()},
                     len(everything) - len(unique), _blank_lines(Path(abc6k)))


def _blank_lines(path: Path) -> int:
    """Blank lines of a text file: the authors' ``[line.strip() for line in f.readlines()]`` makes
    each an empty prompt (prompt_dataset.py:50)."""
    return sum(1 for line in read_text(path.expanduser()).splitlines() if not line.strip())


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
