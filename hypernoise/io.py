"""User files: prompt lists in, output folders out. Every failure is a typed, one-line error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from hypernoise.errors import InputFileError, OutputExistsError


def read_prompts(path) -> list[str]:
    """Prompts from a UTF-8 file: one per line, or JSONL objects with a ``prompt`` field.

    Blank lines are skipped; a file with no prompt, an unreadable file, or a JSONL line with no
    (or an empty) ``prompt`` is an ``InputFileError`` naming the file and line.
    """
    return [r["prompt"] for r in read_prompt_records(path)]


def read_prompt_records(path) -> list[dict]:
    """Like ``read_prompts`` but keeps each JSONL object whole (GenEval metadata: tag, include...);
    plain-text lines become ``{"prompt": line}``."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"prompt file {path} does not exist; pass a text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputFileError(f"prompt file {path} is not UTF-8 (byte {e.start}); re-save it as UTF-8") from None
    except OSError as e:
        raise InputFileError(f"cannot read prompt file {path}: {e.strerror}") from None
    records = [_parse_line(line, path, i) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not records:
        raise InputFileError(f"prompt file {path} holds no prompt; write one prompt per line")
    return records


def _parse_line(line: str, path: Path, number: int) -> dict:
    stripped = line.strip()
    if not stripped.startswith("{"):
        return {"prompt": stripped}
    try:
        record = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise InputFileError(f"{path}:{number}: malformed JSON ({e.msg}); one JSON object per line") from None
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputFileError(f"{path}:{number}: no non-empty \"prompt\" field; give each JSONL line a prompt")
    return {**record, "prompt": prompt.strip()}


def prepare_output(path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create ``path`` for a new run, refusing to clobber an existing one.

    An existing non-empty folder is an ``OutputExistsError`` unless ``resume`` (continue the run
    there) or ``overwrite`` (its contents are removed). An unwritable place is an
    ``InputFileError``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output {path} exists and is a file; pass another `out`")
    if path.is_dir() and any(path.iterdir()) and not resume:
        if not overwrite:
            raise OutputExistsError(f"output folder {path} already holds results; pass `overwrite` to replace "
                                    f"them, `resume` latest to continue a run, or another `out`")
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputFileError(f"cannot write to output folder {path} ({e.strerror}); pass a writable `out`") from None
    return path


def write_json(path, data) -> None:
    """Write ``data`` as indented JSON, creating the parent folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1, default=str) + "\n")


def find_prompts(prompts: Optional[list], prompts_file: Optional[str]) -> Optional[list[str]]:
    """Prompts from ``--prompt`` values and/or ``--prompts FILE``; None when neither is given."""
    out = list(prompts or [])
    if any(not p.strip() for p in out):
        raise InputFileError("an empty `prompt` was given; pass non-empty text")
    if prompts_file:
        out += read_prompts(prompts_file)
    return out or None
