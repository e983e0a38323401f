"""Prompt sets of the field: the authors' formats load, sources mix with weights, bad sources are one line."""

import json

import pytest

from hypernoise.errors import InputFileError
from hypernoise.prompts import load_prompts


def test_the_authors_prompt_formats_load_and_mix(tmp_path):
    pick = tmp_path / "pickapic_prompts.json"
    pick.write_text(json.dumps({"17": "a cat in a hat", "42": "a red car"}))  # the authors' file: an object of prompts
    bench = tmp_path / "dataset"
    bench.mkdir()
    (bench / "color_train.txt").write_text("a blue bench\na red car\n")
    (bench / "spatial_train.txt").write_text("a dog left of a tree\n")
    (bench / "color_val.txt").write_text("not a training prompt\n")
    geneval = tmp_path / "evaluation_metadata.jsonl"
    geneval.write_text(json.dumps({"tag": "single_object", "prompt": "a photo of a bench"}) + "\n")
    prompts = load_prompts(f"{pick},{bench},{geneval}*2")
    assert prompts == ["a cat in a hat", "a red car", "a blue bench", "a dog left of a tree",
                       "a photo of a bench", "a photo of a bench"]  # deduplicated, then the weight repeats


@pytest.mark.parametrize("content, spec, message", [
    ("[1, 2]", "p.json", "not an object or list of prompts"),
    ("{not json", "p.json", "not readable JSON"),
    ("a\n", "p.txt*0", "must be an integer from 1 to 1000"),
    (None, "missing.txt", "does not exist"),
    (None, "", "names no source"),
    (None, "hf:surely/not-a-dataset", "hf:surely/not-a-dataset"),
])
def test_a_bad_prompt_source_is_one_clear_line(tmp_path, monkeypatch, content, spec, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if content is not None:
        (tmp_path / spec.split("*")[0]).write_text(content)
    with pytest.raises(InputFileError, match=message) as info:
        load_prompts(spec)
    assert "\n" not in str(info.value)
