"""Every value of every paper preset and ReNO preset, held against one table in the docs.

The reference is the docs' tables (docs/training.md, "Paper run vs this library"; docs/comparisons.md,
"ReNO's own settings"), whose values were taken from the authors' files with a file:line for each.
A preset value that differs from its row fails here, and so does a preset field with no row: code
and docs cannot drift. Rows of behaviour (``call.*``, ``generator.*``) are held on tiny pipelines
by tests/generators/test_paper_preset.py.
"""

from __future__ import annotations

import re

import pytest
from paper_table import BEHAVIOUR, FAMILIES, PAPER, RENO, RENO_RUN_KEEPING, RUN_KEEPING, flat, read_table

from hypernoise.presets import PAPER_PROCESSES, PRESETS, preset_config, reno_preset


def _same(a, b) -> bool:
    return (tuple(a) == tuple(b)) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b


def _check(rows: dict, column: str, values: dict, keeping: set) -> None:
    fields = {k for k in rows if not k.startswith(BEHAVIOUR)}
    assert not fields - set(values), f"table rows that are no field of the preset: {sorted(fields - set(values))}"
    unpinned = set(values) - keeping - fields
    assert not unpinned, f"{column}: preset fields with no row in the table: {sorted(unpinned)}"
    wrong = {k: (values[k], rows[k][column]) for k in fields if not _same(values[k], rows[k][column])}
    assert not wrong, f"{column}: preset value != table value: {wrong}"


@pytest.mark.parametrize("column, family", list(FAMILIES.items()))
def test_every_paper_preset_value_is_the_tables(column, family):
    rows = read_table(*PAPER)
    _check(rows, column, flat(preset_config(family, "paper")), RUN_KEEPING)
    assert PAPER_PROCESSES[family] == rows["paper.processes"][column]


@pytest.mark.parametrize("column, family", [("SD-Turbo", "sd-turbo"), ("FLUX-Schnell", "flux-schnell")])
def test_every_reno_preset_value_is_the_tables(column, family):
    _check(read_table(*RENO), column, flat(reno_preset(family)), RENO_RUN_KEEPING)


def test_the_table_reader_sees_a_changed_value():
    """A mutation of a pinned value (the issue's examples) is caught, not read past."""
    rows = read_table(*PAPER)
    values = flat(preset_config("sana-sprint", "paper"))
    for key, mutated in (("model.max_sequence_length", 120), ("model.guidance_scale", 3.0),
                         ("reward_dtype", "float32"), ("model.dtype", "float32"), ("train.num_steps", 4),
                         ("train.steps", 1000)):
        with pytest.raises(AssertionError, match=key.replace(".", r"\.")):
            _check(rows, "SANA-Sprint", {**values, key: mutated}, RUN_KEEPING)
    flux = flat(preset_config("flux-schnell", "paper"))
    with pytest.raises(AssertionError, match="gradient_accumulation_steps"):
        _check(rows, "FLUX-Schnell", {**flux, "train.gradient_accumulation_steps": 2}, RUN_KEEPING)


def test_only_the_paper_presets_call_themselves_the_authors():
    """Each family's own preset says it is this library's choice; only `paper` presets claim a run of theirs."""
    for key in PRESETS:
        help_text = PRESETS.help(key)
        generator, _, name = key.partition("/")
        if name == "paper":
            assert help_text.startswith("the authors' "), key
            continue
        claim = help_text.replace("`--preset paper` is the authors' run", "")
        assert not re.search(r"paper's|authors'|the paper\b", claim), f"{key}: {help_text}"
        if generator in FAMILIES.values():
            assert help_text.startswith("this library's choice"), key
