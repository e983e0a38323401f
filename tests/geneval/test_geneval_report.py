"""What GenEval saw, drawn (geneval.report): one grid per task with the wrong images first, each
image with the boxes its record kept, a frame in the verdict's colour; the accuracies as bars."""

import json

import numpy as np
import pytest
from PIL import Image

from hypernoise.geneval.report import CORRECT, FRAME, PALETTE, TILE, WRONG, annotate, boxes, write_report

GREY = (128, 128, 128)


def _record(folder, name, tag, correct, details=None, reason="expected car>=1, found 0"):
    path = folder / f"{name}.png"
    Image.new("RGB", (96, 64), GREY).save(path)
    return {"filename": str(path), "tag": tag, "prompt": "a photo of a car", "correct": correct,
            "reason": "" if correct else reason, "metadata": json.dumps({"tag": tag}),
            "details": json.dumps(details or {})}


def test_the_kept_boxes_are_drawn_where_the_record_puts_them(tmp_path):
    record = _record(tmp_path, "a", "two_object", True,
                     {"car": [[10, 8, 60, 50, 0.9]], "dog": [[62, 30, 90, 60, 0.5]]})
    assert [name for name, _ in boxes(record)] == ["car", "dog"]
    drawn = np.asarray(annotate(Image.open(record["filename"]), record))
    assert tuple(drawn[40, 10]) == PALETTE[0] and tuple(drawn[30, 60]) == PALETTE[0]  # car's left and right edges
    assert tuple(drawn[45, 62]) == PALETTE[1]  # dog's left edge, the next colour
    assert tuple(drawn[4, 4]) == GREY and tuple(drawn[30, 35]) == GREY  # outside and inside: untouched


def test_each_task_gets_a_grid_with_the_wrong_images_first_and_missing_images_left_out(tmp_path):
    records = [_record(tmp_path, "c1", "counting", True), _record(tmp_path, "c2", "counting", True),
               _record(tmp_path, "w1", "counting", False), _record(tmp_path, "s1", "single_object", True)]
    gone = _record(tmp_path, "gone", "counting", False)
    (tmp_path / "gone.png").unlink()
    paths = write_report(records + [gone], tmp_path / "out", per_task=2, columns=4)
    assert sorted(p.name for p in paths) == ["counting.png", "single_object.png", "tasks.png"]

    counting = np.asarray(Image.open(tmp_path / "out" / "report" / "counting.png"))
    single = Image.open(tmp_path / "out" / "report" / "single_object.png")
    assert counting.shape[1] == 2 * single.size[0] and counting.shape[0] == single.size[1]  # two tiles of the three
    tile_w, top = single.size[0], (TILE - TILE * 64 // 96) // 2  # a 96 x 64 image scaled into the square
    assert tuple(counting[top + 1, 1]) == WRONG and tuple(counting[top + 1, tile_w + 1]) == CORRECT  # wrong first
    assert tuple(counting[top + FRAME + 5, FRAME + 5]) == GREY  # the image itself inside the frame
    assert tuple(np.asarray(single)[top + 1, 1]) == CORRECT


def test_the_task_bars_are_written_and_nothing_is_drawn_without_records(tmp_path):
    records = [_record(tmp_path, "a", "colors", False), _record(tmp_path, "b", "colors", True)]
    (path,) = [p for p in write_report(records, tmp_path / "out") if p.name == "tasks.png"]
    assert Image.open(path).size[0] > 200
    assert write_report([], tmp_path / "empty") == []


@pytest.mark.parametrize("details", ["not json", json.dumps({"car": [[1, 2]]})])
def test_damaged_details_draw_no_boxes(tmp_path, details):
    record = {**_record(tmp_path, "a", "colors", True), "details": details}
    assert boxes(record) == []
    assert np.array_equal(np.asarray(annotate(Image.open(record["filename"]), record)),
                          np.asarray(Image.open(record["filename"])))


def test_a_task_of_many_images_opens_only_the_ones_it_shows(tmp_path, monkeypatch):
    import hypernoise.geneval.report as report

    records = [_record(tmp_path, f"r{i}", "position", i % 2 == 0) for i in range(10)]
    opened = []
    real = report._tile
    monkeypatch.setattr(report, "_tile", lambda record: opened.append(record["filename"]) or real(record))
    write_report(records, tmp_path / "out", per_task=3)
    assert len(opened) == 3 and all(not r["correct"] for r in records if r["filename"] in opened)


def test_the_comparison_puts_the_images_a_method_fixes_first_one_column_per_method(tmp_path):
    from hypernoise.geneval.report import write_comparison

    def slot(method, index, correct):
        folder = tmp_path / method / f"{index:05d}" / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        return _record(folder, "00000", "counting", correct)

    slots = [(0, True, True), (1, True, False), (2, False, False), (3, False, True)]  # (index, base, HN)
    base = [slot("base", i, b) for i, b, _ in slots] + [slot("base", 4, False)]
    hn = [slot("hypernoise", i, h) for i, _, h in slots]  # no image 4 under HyperNoise: left out
    path = write_comparison({"base": base, "hypernoise": hn}, tmp_path / "compare.png", rows=2)
    sheet = np.asarray(Image.open(path))
    tile_w, tile_h = Image.open(write_report(hn[:1], tmp_path / "one")[0]).size
    header = sheet.shape[0] - 2 * tile_h
    assert sheet.shape[1] == 2 * tile_w and header > 0  # two methods, two rows of the four shared images
    top = header + (TILE - TILE * 64 // 96) // 2 + 1  # inside the first row's frames
    assert tuple(sheet[top, 1]) == WRONG and tuple(sheet[top, tile_w + 1]) == CORRECT  # what HN fixes, first
    assert tuple(sheet[top + tile_h, 1]) == CORRECT and tuple(sheet[top + tile_h, tile_w + 1]) == WRONG  # then a loss
    assert write_comparison({"base": base[4:], "hypernoise": hn}, tmp_path / "none.png") is None


def test_the_docs_comparison_of_two_evaluate_runs_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "geneval.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", docs, re.S) if "write_comparison" in c]
    monkeypatch.chdir(tmp_path)
    for run, correct in (("base", False), ("hn", True)):
        folder = Path("eval") / run / "00000" / "samples"
        folder.mkdir(parents=True)
        record = {**_record(folder, "00000", "colors", correct), "filename": str(folder / "00000.png")}
        (Path("eval") / run / "results.jsonl").write_text(json.dumps(record) + "\n")
    exec(compile(code, "docs/geneval.md", "exec"), {})
    assert Image.open("compare.png").size[0] > 2 * TILE
