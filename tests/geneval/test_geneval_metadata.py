"""The shipped GenEval data: the 553 official prompts, the 80 class names, their licence; and
the reader's errors on a user's metadata file."""

from __future__ import annotations

import collections
import hashlib
import json

import pytest

from hypernoise.errors import InputFileError
from hypernoise.geneval import CLASSNAMES, load_metadata
from hypernoise.geneval.metadata import ASSETS, COLORS, RELATIONS, TASKS

#: sha256 of the files at djghosh13/geneval af4902f24d3c (prompts/evaluation_metadata.jsonl,
#: evaluation/object_names.txt, LICENSE)
SHA256 = {"evaluation_metadata.jsonl": "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13",
          "object_names.txt": "608f6a0e5c8ca1c7a92b818430141fe268c85b7930b50f4160f1d65893b5bacd",
          "LICENSE": "e6082bfcbdf460dd19f8c55cc261055414df2a278768b4991c5382d65be2b52a"}


def test_the_shipped_files_are_the_official_ones():
    for name, digest in SHA256.items():
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, name
    readme = (ASSETS / "README.md").read_text()
    assert "djghosh13/geneval" in readme and "af4902f24d3c" in readme and "MIT" in readme
    assert "Dhruba Ghosh" in (ASSETS / "LICENSE").read_text()


def test_553_prompts_in_six_tasks():
    rows = load_metadata()
    assert len(rows) == 553
    assert collections.Counter(r["tag"] for r in rows) == {"single_object": 80, "two_object": 99, "counting": 80,
                                                           "colors": 94, "position": 100, "color_attr": 100}
    assert TASKS == tuple(dict.fromkeys(r["tag"] for r in rows))  # order of first appearance
    assert rows[0] == {"tag": "single_object", "include": [{"class": "bench", "count": 1}],
                       "prompt": "a photo of a bench"}


def test_80_class_names_with_geneval_renames():
    assert len(CLASSNAMES) == 80 and len(set(CLASSNAMES)) == 80
    assert CLASSNAMES[:3] == ("person", "bicycle", "car") and CLASSNAMES[-1] == "toothbrush"
    # COCO's mouse, remote, keyboard (labels 64-66) under GenEval's names
    assert CLASSNAMES[64:67] == ("computer mouse", "tv remote", "computer keyboard")
    assert not {"mouse", "remote", "keyboard"} & set(CLASSNAMES)


def test_every_class_colour_and_relation_named_in_the_metadata_is_known():
    clauses = [c for r in load_metadata() for key in ("include", "exclude") for c in r.get(key, [])]
    assert {c["class"] for c in clauses} <= set(CLASSNAMES)
    assert {c["color"] for c in clauses if "color" in c} == set(COLORS)
    assert {c["position"][0] for c in clauses if "position" in c} == set(RELATIONS)


def test_a_user_file_in_the_same_format_loads(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"tag": "colors", "include": [{"class": "tv remote", "count": 1, "color": "pink"}], "prompt": "p"},
            {"tag": "position", "include": [{"class": "cat", "count": 1},
                                            {"class": "dog", "count": 1, "position": ["above", 0]}], "prompt": "q"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_metadata(path) == rows


@pytest.mark.parametrize("line, match", [
    ('{"tag": "single_object", "include": [', "malformed JSON"),
    ('["a photo"]', "not a JSON object"),
    ('{"tag": "counting2", "include": [], "prompt": "p"}', "tag 'counting2'"),
    ('{"tag": "single_object", "include": [{"class": "mouse", "count": 1}], "prompt": "p"}', "class 'mouse'"),
    ('{"tag": "single_object", "include": [{"class": "cat", "count": 0}], "prompt": "p"}', "count 0"),
    ('{"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "grey"}], "prompt": "p"}', "color 'grey'"),
    ('{"tag": "position", "include": [{"class": "cat", "count": 1, "position": ["above", 0]}], "prompt": "p"}',
     "earlier include clause"),
    ('{"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, '
     '"position": ["near", 0]}], "prompt": "p"}', "relation 'near'"),
    ('{"tag": "single_object", "include": [{"class": "cat", "count": 1}]}', "prompt"),
])
def test_a_malformed_line_is_named(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"tag": "single_object", "include": [], "prompt": "ok"}) + "\n" + line + "\n")
    with pytest.raises(InputFileError, match=match) as err:
        load_metadata(path)
    assert f"{path}:2:" in str(err.value) and "\n" not in str(err.value)


def test_a_missing_or_empty_file(tmp_path):
    with pytest.raises(InputFileError, match="cannot read"):
        load_metadata(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputFileError, match="no row"):
        load_metadata(tmp_path / "empty.jsonl")
