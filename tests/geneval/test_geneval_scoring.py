"""Scoring a folder in GenEval's layout: which files count, the official records, the summary as
summary_scores.py computes it, resuming, and the evaluation judge.

The detector here is a stub that reads the image it is given (a solid colour stands for a set of
detections), so these tests check the scoring around the networks, not the networks (those are
test_geneval_parity / test_geneval_detector's).
"""

import json

import numpy as np
import pytest
from PIL import Image

from hypernoise.errors import ConfigError, InputFileError, Interrupted
from hypernoise.geneval.metadata import CLASSNAMES
from hypernoise.geneval.rules import GenEvalOptions
from hypernoise.geneval.scoring import (RESULTS_FILE, SUMMARY_FILE, GenEvalJudge, Scorer, find_samples,
                                        format_summary, score_folder, summarize)

CAT, DOG = CLASSNAMES.index("cat"), CLASSNAMES.index("dog")

#: solid colour of an image -> what the stub detector finds in it: [(class index, box, score)]
SCENES = {
    (255, 0, 0): [(CAT, (10, 10, 30, 30), 0.95)],                               # one cat
    (0, 255, 0): [(DOG, (10, 10, 30, 30), 0.95)],                               # one dog
    (0, 0, 255): [(CAT, (2, 10, 12, 30), 0.95), (DOG, (40, 10, 60, 30), 0.95)],  # cat left of dog
    (9, 9, 9): [],                                                              # nothing
}

ROWS = {
    "cat": {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
    "cat_dog": {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
                "prompt": "a photo of a cat and a dog"},
    "left": {"tag": "position", "include": [{"class": "dog", "count": 1},
                                            {"class": "cat", "count": 1, "position": ["left of", 0]}],
             "prompt": "a photo of a cat left of a dog"},
}


class StubDetector:
    """mmdet's per-image (bboxes, masks) from the image's colour; counts the images it sees."""

    def __init__(self, fail_at_call=None):
        self.calls, self.seen, self.fail_at_call = 0, 0, fail_at_call

    def detect(self, images, batch_size=1):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise KeyboardInterrupt
        self.seen += len(images)
        return [self._one(im) for im in images]

    @staticmethod
    def _one(image):
        w, h = image.size
        bboxes = [np.zeros((0, 5), np.float32) for _ in CLASSNAMES]
        masks = [[] for _ in CLASSNAMES]
        for label, (x0, y0, x1, y1), score in SCENES[image.getpixel((0, 0))]:
            bboxes[label] = np.concatenate([bboxes[label], np.array([[x0, y0, x1, y1, score]], np.float32)])
            mask = np.zeros((h, w), bool)
            mask[y0:y1, x0:x1] = True
            masks[label].append(mask)
        return bboxes, masks


def _layout(root, prompts):
    """GenEval's layout: prompts = [(row, [colour of each sample])]."""
    for i, (row, colours) in enumerate(prompts):
        folder = root / f"{i:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(row) + "\n")
        for j, colour in enumerate(colours):
            Image.new("RGB", (64, 64), colour).save(folder / "samples" / f"{j:05d}.png")
    return root


RED, GREEN, BLUE, NONE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)


@pytest.fixture
def layout(tmp_path):
    return _layout(tmp_path / "images", [(ROWS["cat"], [RED, GREEN, RED, NONE]),
                                         (ROWS["cat_dog"], [BLUE, RED, BLUE, BLUE]),
                                         (ROWS["left"], [BLUE, GREEN, NONE, BLUE])])


def test_find_samples_reads_what_evaluate_images_reads(layout):
    (layout / "notes").mkdir()                                     # not digits: skipped
    (layout / "00000" / "samples" / "readme.txt").write_text("x")  # not <digits>.png: skipped
    (layout / "00000" / "samples" / "00010.png.bak").write_bytes(b"")  # the official regex matches its start
    samples = find_samples(layout)
    names = [s.filename.split("images/")[1] for s in samples]
    assert names[:5] == ["00000/samples/00000.png", "00000/samples/00001.png", "00000/samples/00002.png",
                         "00000/samples/00003.png", "00000/samples/00010.png.bak"]
    assert len(samples) == 13 and samples[5].metadata == ROWS["cat_dog"]


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "00001" / "metadata.jsonl").unlink(), "metadata.jsonl is missing"),
    (lambda root: (root / "00001" / "metadata.jsonl").write_text("{not json"), "is not one JSON object"),
    (lambda root: (root / "00001" / "metadata.jsonl").write_text('{"prompt": "x"}'), "tag None is not one of"),
])
def test_a_broken_layout_is_one_line_naming_the_file(layout, damage, message):
    damage(layout)
    with pytest.raises(InputFileError, match=message) as e:
        find_samples(layout)
    assert "00001" in str(e.value) and "\n" not in str(e.value)


def test_a_folder_without_the_layout_says_what_it_expects(tmp_path):
    with pytest.raises(InputFileError, match="expected <index>/metadata.jsonl"):
        find_samples(tmp_path)
    with pytest.raises(InputFileError, match="does not exist"):
        find_samples(tmp_path / "nowhere")


def test_score_folder_writes_the_official_records_and_summary(layout, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    summary = score_folder(layout, out, Scorer(StubDetector(), batch_size=3), progress=False)
    records = [json.loads(l) for l in (out / RESULTS_FILE).read_text().splitlines()]
    assert [list(r) for r in records[:1]] == [["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]]
    assert records[0]["filename"] == f"{layout}/00000/samples/00000.png"
    assert json.loads(records[0]["metadata"]) == ROWS["cat"]
    # the verdicts, read off the scenes: cat? [y, n, y, n]; cat and dog? [y, n, y, y]; cat left of dog? [y, n, n, y]
    assert [r["correct"] for r in records] == [True, False, True, False, True, False, True, True,
                                               True, False, False, True]
    assert records[1]["reason"] == "expected cat>=1, found 0"
    # summary_scores.py: per task mean, overall = mean of the task means; prompts = distinct metadata
    assert summary["tasks"]["single_object"] == {"accuracy": 0.5, "correct": 2, "images": 4}
    assert summary["overall"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert summary["images"] == 12 and summary["prompts"] == 3
    assert summary["correct_images"] == pytest.approx(7 / 12) and summary["correct_prompts"] == 1.0
    assert summary["geneval"]["counting"] is None and summary["geneval"]["position"] == 0.5
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary
    assert "| overall |" in format_summary(summary)


def test_summary_matches_summary_scores_on_a_hand_made_file():
    """Four tasks of unequal size: the overall is the mean of the task means, not of the images."""
    def rec(tag, prompt, correct):
        return {"tag": tag, "metadata": json.dumps({"tag": tag, "prompt": prompt}), "correct": correct}

    records = [rec("counting", "a", True)] * 9 + [rec("counting", "b", False)] + [rec("colors", "c", False)]
    s = summarize(records)
    assert s["overall"] == pytest.approx((0.9 + 0.0) / 2)
    assert s["correct_images"] == pytest.approx(9 / 11) and s["correct_prompts"] == pytest.approx(1 / 3)
    assert list(s["tasks"]) == ["counting", "colors"]  # groupby(sort=False): order of first appearance


def test_an_interrupted_score_resumes_with_the_images_not_yet_scored(layout, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    full.mkdir(), part.mkdir()
    score_folder(layout, full, Scorer(StubDetector(), batch_size=4), progress=False)
    with pytest.raises(Interrupted) as e:
        score_folder(layout, part, Scorer(StubDetector(fail_at_call=2), batch_size=4), progress=False)
    assert "4 of 12 images" in e.value.message and "`resume` latest" in e.value.message
    partial = json.loads((part / SUMMARY_FILE).read_text())
    assert partial["partial"] is True and partial["images"] == 4 and partial["n_images_planned"] == 12
    with open(part / RESULTS_FILE, "a") as f:  # a record torn by a kill
        f.write('{"filename": "torn')
    detector = StubDetector()
    summary = score_folder(layout, part, Scorer(detector, batch_size=4), resume=True, progress=False)
    assert detector.seen == 8
    assert (part / RESULTS_FILE).read_text() == (full / RESULTS_FILE).read_text()
    assert summary == json.loads((full / SUMMARY_FILE).read_text())


def test_a_resume_with_other_rules_is_refused(layout, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Interrupted):
        score_folder(layout, out, Scorer(StubDetector(fail_at_call=2), batch_size=4), progress=False)
    before = (out / RESULTS_FILE).read_bytes()
    with pytest.raises(ConfigError, match="`options` differs"):
        score_folder(layout, out, Scorer(StubDetector(), options=GenEvalOptions(threshold=0.5), batch_size=4), resume=True,
                     progress=False)
    assert (out / RESULTS_FILE).read_bytes() == before


def test_the_judge_gives_the_records_of_the_written_pngs(layout):
    """GenEvalJudge on tensors (evaluation's images) = the same images scored from their PNGs."""
    import torch

    samples = find_samples(layout)
    scorer = Scorer(StubDetector(), batch_size=3)
    images = torch.stack([torch.from_numpy(np.array(Image.open(s.path))).permute(2, 0, 1).float() / 255
                          for s in samples])
    judged = GenEvalJudge(scorer, [r for r in ROWS.values()]).evaluate_images(images, [s.metadata["prompt"]
                                                                                       for s in samples])
    from_png = scorer([Image.open(s.path).convert("RGB") for s in samples], [s.metadata for s in samples],
                      [s.filename for s in samples])
    strip = lambda r: {k: v for k, v in r.items() if k not in ("filename", "category")}
    assert [strip(r) for r in judged] == [strip(r) for r in from_png]
    assert [r["category"] for r in judged] == [s.metadata["tag"] for s in samples]


def test_the_judge_refuses_a_prompt_without_metadata():
    import torch

    judge = GenEvalJudge(Scorer(StubDetector()), [ROWS["cat"]])
    with pytest.raises(ConfigError, match="no metadata for the prompt 'a red bus'"):
        judge.evaluate_images(torch.zeros(1, 3, 8, 8), ["a red bus"])
