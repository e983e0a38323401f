"""GenEval's prompts and vocabulary: the 553 official metadata rows and the 80 detector class names.

    CLASSNAMES            80 COCO names in the detector's label order (``evaluation/object_names.txt``)
    COLORS, RELATIONS     the ten colours and four relations the rules know
    TASKS                 the six tags, in the order they first appear in the metadata file
    load_metadata(path)   -> list[dict], one row a line, checked; default: the shipped 553 rows

A row is ``{"tag", "include": [clause...], "exclude": [clause...], "prompt"}``; a clause is
``{"class", "count"}`` plus, in ``include``, optionally ``"color"`` and ``"position": [relation,
index of an earlier include clause]``. The data files ship in ``hypernoise/assets/geneval``
(MIT, from djghosh13/geneval; see the README there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from hypernoise.errors import InputFileError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "geneval"
METADATA_FILE = ASSETS / "evaluation_metadata.jsonl"
CLASSNAMES_FILE = ASSETS / "object_names.txt"


def _read_classnames() -> tuple[str, ...]:
    """evaluate_images.py:70-71 reads the same file, one name a line, stripped."""
    return tuple(line.strip() for line in CLASSNAMES_FILE.read_text(encoding="utf-8").splitlines() if line.strip())


#: the detector's 80 labels in order; GenEval renames COCO's mouse, remote and keyboard to
#: computer mouse, tv remote and computer keyboard
CLASSNAMES: tuple[str, ...] = _read_classnames()
#: evaluate_images.py:76
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
#: the relations ``relative_position`` can return (evaluate_images.py:153-156)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
#: the six tasks in the order of their first row in evaluation_metadata.jsonl (summary_scores.py
#: groups by tag with sort=False, so this is also the order of its task breakdown)
TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
#: the paper's Table 1 headers of the six tasks
TASK_HEADERS = {"single_object": "single", "two_object": "two", "counting": "counting", "colors": "colors",
                "position": "position", "color_attr": "attribution"}

PathLike = Union[str, Path]


def load_metadata(path: Optional[PathLike] = None) -> list[dict]:
    """The metadata rows of ``path`` (default: the 553 official prompts), in file order.

    Each non-blank line must be one JSON object in GenEval's format (module docstring); a
    malformed one is an ``InputFileError`` naming the file and line. Rows are returned as parsed
    (key order kept: ``rules.image_record`` writes them back with ``json.dumps``)."""
    path = Path(path) if path is not None else METADATA_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputFileError(f"GenEval metadata {path} is not UTF-8 (byte {err.start}); re-save it as UTF-8") from None
    except OSError as err:
        raise InputFileError(f"cannot read GenEval metadata {path}: {err.strerror or type(err).__name__}") from None
    rows = [_parse_row(line, path, number) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise InputFileError(f"GenEval metadata {path} holds no row; write one JSON object a line")
    return rows


def _parse_row(line: str, path: Path, number: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputFileError(f"{path}:{number}: malformed JSON ({err.msg}); one JSON object a line") from None
    problem = row_problem(row)
    if problem:
        raise InputFileError(f"{path}:{number}: {problem}")
    return row


def row_problem(row) -> Optional[str]:
    """What is wrong with a metadata row, in a few words, or None when it is well formed."""
    if not isinstance(row, dict):
        return "not a JSON object"
    if row.get("tag") not in TASKS:
        return f"tag {row.get('tag')!r} is not one of {', '.join(TASKS)}"
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        return "no non-empty \"prompt\" field"
    for key in ("include", "exclude"):
        clauses = row.get(key, [])
        if not isinstance(clauses, list):
            return f"\"{key}\" is not a list of clauses"
        for index, clause in enumerate(clauses):
            problem = _clause_problem(clause, index, key == "include")
            if problem:
                return f"{key}[{index}]: {problem}"
    return None


def _clause_problem(clause, index: int, include: bool) -> Optional[str]:
    if not isinstance(clause, dict):
        return "not a JSON object"
    if clause.get("class") not in CLASSNAMES:
        return f"class {clause.get('class')!r} is not one of the detector's 80 class names"
    count = clause.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return f"count {count!r} is not a positive integer"
    extra = set(clause) - {"class", "count"} - ({"color", "position"} if include else set())
    if extra:
        return f"unknown key {sorted(extra)[0]!r}"
    if "color" in clause and clause["color"] not in COLORS:
        return f"color {clause['color']!r} is not one of {', '.join(COLORS)}"
    if "position" in clause:
        return _position_problem(clause["position"], index)
    return None


def _position_problem(position, index: int) -> Optional[str]:
    """A position is [relation, target]; the target is an earlier include clause (the rules look
    it up among the groups matched so far, evaluate_images.py:193-194)."""
    if not (isinstance(position, list) and len(position) == 2):
        return "position is not [relation, index of an earlier include clause]"
    relation, target = position
    if relation not in RELATIONS:
        return f"relation {relation!r} is not one of {', '.join(RELATIONS)}"
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < index:
        return f"position target {target!r} is not the index of an earlier include clause"
    return None
