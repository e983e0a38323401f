"""Reading the docs' preset tables (docs/training.md, "Paper run vs this library"; docs/comparisons.md,
"ReNO's own settings"): the reference that tests/test_paper_table.py and
tests/generators/test_paper_preset.py hold the presets and their behaviour against."""

from __future__ import annotations

import ast
import re
from dataclasses import asdict
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAPER = ("training.md", "### Paper run vs this library")
RENO = ("comparisons.md", "### ReNO's own settings")
FAMILIES = {"SANA-Sprint": "sana-sprint", "FLUX-Schnell": "flux-schnell", "SD-Turbo": "sd-turbo"}

#: fields that do not change what is trained (docs/training.md names them under the table)
RUN_KEEPING = {"model.device", "model.prompt_cache_mb", "reward_weights", "mlp_hidden", "preset",
               "train.trial_steps", "train.checkpoint_every", "train.checkpoints_total_limit", "train.log_every",
               "train.report_to", "train.progress", "train.lipschitz_every", "train.lipschitz_iters",
               "train.gradient_checkpointing", "train.max_nonfinite_streak", "train.validation_prompts",
               "train.validation_every", "train.validation_seeds"}
RENO_RUN_KEEPING = {"model.device", "model.prompt_cache_mb", "reno.keep_iterates"}
#: rows that are behaviour, not preset fields (held elsewhere, or below)
BEHAVIOUR = ("call.", "generator.", "paper.")
NO_VALUE = object()


def literal(cell: str):
    """The first code span of a table cell as a Python value (a bare word stays a string)."""
    match = re.search(r"`([^`]*)`", cell)
    if match is None:
        return NO_VALUE
    try:
        return ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return match.group(1)


def read_table(doc: str, heading: str) -> dict[str, dict[str, object]]:
    """{key: {column: value}} of the first table after ``heading`` in docs/``doc``."""
    lines = (DOCS / doc).read_text().split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| setting"))
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|"))))
        key = literal(cells["key"])
        assert key not in rows, f"{doc}: the key {key} has two rows"
        rows[key] = {column: literal(cells[column]) for column in header if column in FAMILIES}
    return rows


def flat(config) -> dict[str, object]:
    """A preset's values by dotted field name (``train.lr``)."""
    out = {}
    for name, value in asdict(config).items():
        if isinstance(value, dict) and name in ("model", "lora", "objective", "train", "reno"):
            out.update({f"{name}.{field}": v for field, v in value.items()})
        else:
            out[name] = value
    return out
