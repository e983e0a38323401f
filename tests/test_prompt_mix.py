"""The authors' prompt mix, rebuilt from small copies of their files in the same formats.

The reference is the authors' reader (ExplainableML/HyperNoise training/prompt_dataset.py, task
"all", lines 44-51 and 95-107 @1d5d3db8), restated here: T2I-CompBench's seven training files in
the order color, complex, texture, shape, spatial, non_spatial, numeracy (blank lines skipped),
then every line of ABC-6K.txt stripped, then the values of pickapic_prompts.json, concatenated
with every duplicate kept.
"""

import json

import pytest

from hypernoise.cli.main import main
from hypernoise.errors import InputFileError
from hypernoise.prompts import load_prompts, paper_mix

#: the authors' order of T2I-CompBench's training files (prompt_dataset.py:96-100 @1d5d3db8)
THEIR_ORDER = ["color_train.txt", "complex_train.txt", "texture_train.txt", "shape_train.txt", "spatial_train.txt",
               "non_spatial_train.txt", "numeracy_train.txt"]


@pytest.fixture
def copies(tmp_path):
    """Small copies: a T2I-CompBench dataset folder (with files the authors do not read), ABC-6K.txt
    and pickapic_prompts.json (an object of prompts), with duplicates inside and across sets."""
    dataset = tmp_path / "T2I-CompBench" / "examples" / "dataset"
    dataset.mkdir(parents=True)
    for i, name in enumerate(sorted(THEIR_ORDER)):  # written in name order, read in theirs
        (dataset / name).write_text(f"a {name[:-10]} prompt\n\n  a shared prompt  \nextra {i}\n")
    (dataset / "3d_spatial_train.txt").write_text("not in their mix\n")
    (dataset / "color_val.txt").write_text("a validation prompt\n")
    abc = tmp_path / "ABC-6K.txt"
    abc.write_text("a shared prompt\nan abc prompt\nan abc prompt\n")
    pick = tmp_path / "pickapic_prompts.json"
    pick.write_text(json.dumps({"7": "a pick prompt", "3": "an abc prompt", "9": "a pick prompt"}))
    return dataset, abc, pick


def _theirs(dataset, abc, pick) -> list:
    """The authors' reader, restated from prompt_dataset.py (see the module docstring)."""
    compbench = [line.strip() for name in THEIR_ORDER for line in (dataset / name).read_text().splitlines()
                 if line.strip()]
    abc_prompts = [line.strip() for line in abc.read_text().splitlines()]
    return compbench + abc_prompts + list(json.loads(pick.read_text()).values())


def test_the_mix_is_the_authors_with_duplicates_kept(copies):
    mix = paper_mix(*copies)
    assert mix.prompts == _theirs(*copies)
    assert mix.counts == {"T2I-CompBench": 21, "ABC-6K": 3, "Pick-a-Pic": 3}
    assert mix.duplicates == 7 + 2 + 1  # "a shared prompt" x 8 (7 repeats), "an abc prompt" x 3, "a pick prompt" x 2
    dropped = paper_mix(*copies, keep_duplicates=False).prompts
    assert dropped == list(dict.fromkeys(_theirs(*copies)))


def test_prompt_mix_command_writes_the_mix_that_train_reads(copies, tmp_path, capsys):
    out = tmp_path / "mix.json"
    dataset, abc, pick = copies
    assert main(["prompt-mix", "--compbench", str(dataset), "--abc-6k", str(abc), "--pickapic", str(pick),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "T2I-CompBench 21, ABC-6K 3, Pick-a-Pic 3; 27 prompts" in printed and "10 duplicates kept" in printed
    assert json.loads(out.read_text()) == _theirs(*copies)
    assert load_prompts(str(out), keep_duplicates=True) == _theirs(*copies)
    assert load_prompts(str(out)) == list(dict.fromkeys(_theirs(*copies)))  # the default drops repeats
    code = main(["prompt-mix", "--compbench", str(dataset), "--abc-6k", str(abc), "--pickapic", str(pick),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err


def test_blank_abc_lines_are_counted_and_a_missing_file_is_named(copies, tmp_path, capsys):
    dataset, abc, pick = copies
    abc.write_text("an abc prompt\n\nanother\n   \n")
    assert paper_mix(dataset, abc, pick).blank_lines == 2  # the authors' readlines keeps both as ""
    (dataset / "numeracy_train.txt").unlink()
    with pytest.raises(InputFileError, match="lacks numeracy_train.txt"):
        paper_mix(dataset, abc, pick)
    code = main(["prompt-mix", "--compbench", str(dataset), "--abc-6k", str(abc), "--pickapic", str(pick),
                 "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "numeracy_train.txt" in err


def test_load_prompts_keeps_duplicates_when_asked(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("one\ntwo\none\n")
    assert load_prompts(f"{a},{a}") == ["one", "two"]
    assert load_prompts(f"{a},{a}", keep_duplicates=True) == ["one", "two", "one"] * 2
