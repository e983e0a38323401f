"""GenEval's decision rules, branch by branch, against what the official code says.

Every expected verdict and reason below is derived by reading djghosh13/geneval's
``evaluation/evaluate_images.py`` (commit 16f1681; ``:N`` is its line N), not by running this
library: selection :228-244 (sort by score, keep score > threshold, first 16, greedy NMS when
max_overlap < 1), ``evaluate`` :160-220 (include clauses: count :177-179, colour :181-190,
position :191-209; exclude clauses :215-219), ``relative_position`` :140-157 and ``compute_iou``
:130-137. Metadata rows are the shipped official ones where one exists.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hypernoise.errors import ConfigError
from hypernoise.geneval import COLORS, CLASSNAMES, GenEvalOptions, judge, load_metadata
from hypernoise.geneval.rules import compute_iou, evaluate, image_record, relative_position, select_objects

SIZE = 64
IMAGE = Image.new("RGB", (SIZE, SIZE), "white")
ROWS = {row["prompt"]: row for row in load_metadata()}


def row(prompt: str) -> dict:
    """The shipped official metadata row of ``prompt``."""
    return ROWS[prompt]


def detections(boxes: dict[str, list], masks: bool = True):
    """mmdet 2.x's result for one image: ({class: [[x0, y0, x1, y1, score], ...]}) ->
    (80 float32 arrays [N, 5], 80 lists of bool masks [SIZE, SIZE]); bboxes alone without masks."""
    bboxes = [np.zeros((0, 5), np.float32) for _ in CLASSNAMES]
    for name, rows in boxes.items():
        bboxes[CLASSNAMES.index(name)] = np.array(rows, dtype=np.float32)
    if not masks:
        return bboxes
    return bboxes, [[np.zeros((SIZE, SIZE), bool) for _ in b] for b in bboxes]


class ColourStub:
    """colour_fn naming each object's colour from its box's x0; records what it was given."""

    def __init__(self, by_x0: dict[float, str]):
        self.by_x0, self.calls = by_x0, []

    def __call__(self, image, objects, classname):
        self.calls.append((classname, list(objects)))
        return [self.by_x0[float(box[0])] for box, _ in objects]


def verdict(prompt_or_row, boxes, colour_fn=None, **options):
    metadata = row(prompt_or_row) if isinstance(prompt_or_row, str) else prompt_or_row
    return judge(IMAGE, detections(boxes), metadata, colour_fn, **options)


# ----------------------------------------------------------------------------------- single / two objects
def test_single_object_found_and_not_found():
    # :176-179 found_objects = the first 1 bench; len 1 >= 1: no reason, correct stays True
    assert verdict("a photo of a bench", {"bench": [[2, 2, 30, 30, 0.95]]}) == (True, "")
    # no bench kept (a cow does not count): "expected bench>=1, found 0"
    assert verdict("a photo of a bench", {"cow": [[2, 2, 30, 30, 0.95]]}) == (False, "expected bench>=1, found 0")


def test_threshold_is_strict_in_the_scores_dtype():
    # :233 keeps score > 0.3; float32(0.3) compared with 0.3 in float32 is equal, so dropped
    assert verdict("a photo of a bench", {"bench": [[2, 2, 30, 30, 0.3]]}) == (False, "expected bench>=1, found 0")
    assert verdict("a photo of a bench", {"bench": [[2, 2, 30, 30, 0.3001]]}) == (True, "")
    # a threshold option moves the boundary (:286)
    assert verdict("a photo of a bench", {"bench": [[2, 2, 30, 30, 0.45]]}, threshold=0.5)[0] is False


def test_two_objects():
    row_ = "a photo of a bench and a sports ball"
    both = {"bench": [[0, 0, 20, 20, 0.9]], "sports ball": [[30, 30, 40, 40, 0.4]]}
    assert verdict(row_, both) == (True, "")
    # the second include clause fails on its own: one reason
    assert verdict(row_, {"bench": [[0, 0, 20, 20, 0.9]]}) == (False, "expected sports ball>=1, found 0")
    # both fail: reasons in clause order, joined by a newline (:220)
    assert verdict(row_, {}) == (False, "expected bench>=1, found 0\nexpected sports ball>=1, found 0")


# ----------------------------------------------------------------------------------- counting
def test_counting_uses_the_counting_threshold():
    two = "a photo of two clocks"  # include clock >= 2, exclude clock 3 (shipped row)
    assert row(two)["exclude"] == [{"class": "clock", "count": 3}]
    # tag counting: threshold 0.9 (:230); the 0.85 clock is dropped, 2 kept: include 2 >= 2,
    # exclude len 2 >= 3 is false -> correct
    scores = [[0, 0, 9, 9, 0.95], [20, 0, 29, 9, 0.92], [40, 0, 49, 9, 0.85]]
    assert verdict(two, {"clock": scores}) == (True, "")
    # one clock at >= 0.9: "expected clock>=2, found 1"; float32(0.9) is not > 0.9 either
    assert verdict(two, {"clock": [[0, 0, 9, 9, 0.95], [20, 0, 29, 9, 0.85]]}) == (False, "expected clock>=2, found 1")
    assert verdict(two, {"clock": [[0, 0, 9, 9, 0.95], [20, 0, 29, 9, 0.9]]}) == (False, "expected clock>=2, found 1")
    # the same boxes under a single_object prompt: threshold 0.3, both kept, 1 asked -> correct
    assert verdict("a photo of a clock", {"clock": [[0, 0, 9, 9, 0.95], [20, 0, 29, 9, 0.85]]}) == (True, "")


def test_counting_one_too_many_fails_on_the_exclude_clause():
    three = "a photo of three sports balls"  # include >= 3, exclude 4
    balls = [[0, 0, 9, 9, 0.99], [10, 0, 19, 9, 0.97], [20, 0, 29, 9, 0.96]]
    # the include rule alone is ">= 3" on found objects, but exclude counts every kept ball
    # (:217 len(objects[class]) >= 4): a fourth at 0.95 -> "expected sports ball<4, found 4"
    assert verdict(three, {"sports ball": balls + [[30, 0, 39, 9, 0.95]]}) == (False, "expected sports ball<4, found 4")
    # a fourth at 0.85 is below the counting threshold: not kept, correct
    assert verdict(three, {"sports ball": balls + [[30, 0, 39, 9, 0.85]]}) == (True, "")
    two = "a photo of two clocks"
    clocks = [[0, 0, 9, 9, 0.95], [20, 0, 29, 9, 0.93], [40, 0, 49, 9, 0.91]]
    assert verdict(two, {"clock": clocks}) == (False, "expected clock<3, found 3")


def test_at_most_16_objects_per_class():
    # :234 keeps the first 16 of the score-sorted boxes above the threshold
    scores = np.linspace(0.4, 0.99, 20)
    boxes = {"bench": [[i, 0, i + 5, 5, s] for i, s in enumerate(scores)]}
    objects = select_objects(detections(boxes), "single_object")
    kept = [float(box[4]) for box, _ in objects["bench"]]
    assert kept == sorted(np.float32(scores).tolist(), reverse=True)[:16]
    # exclusion counts the kept ones only: 20 clocks above 0.9 -> found 16
    clocks = {"clock": [[i, 0, i + 5, 5, 0.91 + 0.004 * i] for i in range(20)]}
    assert verdict("a photo of two clocks", clocks) == (False, "expected clock<3, found 16")
    assert verdict("a photo of two clocks", clocks, max_objects=2) == (True, "")


# ----------------------------------------------------------------------------------- NMS
def test_compute_iou_counts_pixels_inclusively():
    # :131 area = (x1 - x0 + 1) * (y1 - y0 + 1): [0,0,9,9] is 100 px, [0,0,9,19] 200 px,
    # overlap 100 -> 100 / 200
    assert compute_iou([0, 0, 9, 9], [0, 0, 9, 19]) == 0.5
    # boxes sharing the column x = 9: overlap 1 x 10 px
    assert compute_iou([0, 0, 9, 9], [9, 0, 18, 9]) == pytest.approx(10 / 190)
    assert compute_iou([0, 0, 9, 9], [20, 20, 29, 29]) == 0


def test_greedy_nms_only_below_max_overlap_one():
    two = "a photo of two clocks"
    a, b = [0, 0, 9, 9, 0.95], [0, 0, 9, 19, 0.93]  # IoU 0.5 with the +1 convention (81/171 without)
    # :241 keeps b when IoU < max_overlap: 0.5 < 0.5 is false -> b dropped, 1 clock
    assert verdict(two, {"clock": [a, b]}, max_overlap=0.5) == (False, "expected clock>=2, found 1")
    assert verdict(two, {"clock": [a, b]}, max_overlap=0.55) == (True, "")
    assert verdict(two, {"clock": [a, b]}) == (True, "")  # max_overlap 1: no NMS
    # greedy: c overlaps only the dropped b (IoU 1/3), so it is compared with a alone and kept
    c = [0, 10, 9, 29, 0.91]
    objects = select_objects(detections({"clock": [c, b, a]}), "counting", GenEvalOptions(max_overlap=0.3))
    assert [box.tolist() for box, _ in objects["clock"]] == np.float32([a, c]).tolist()


# ----------------------------------------------------------------------------------- colour
def test_colour_clause():
    blue = "a photo of a blue fire hydrant"
    hydrant = {"fire hydrant": [[4, 4, 20, 30, 0.8]]}
    assert verdict(blue, hydrant, ColourStub({4: "blue"})) == (True, "")
    # :184-190: 0 blue < 1 -> "expected blue fire hydrant>=1, found 0 blue; and " + the colours seen
    assert verdict(blue, hydrant, ColourStub({4: "red"})) == (False, "expected blue fire hydrant>=1, found 0 blue; "
                                                                     "and 1 red")
    # not found: the count reason only, the classifier is not asked (:177-181)
    stub = ColourStub({})
    assert verdict(blue, {}, stub) == (False, "expected fire hydrant>=1, found 0")
    assert stub.calls == []


def test_colour_counts_are_listed_in_colors_order_and_only_the_first_count_objects_are_asked():
    three_red = {"tag": "colors", "include": [{"class": "car", "count": 3, "color": "red"}],
                 "prompt": "a photo of three red cars"}  # no shipped colour clause has count > 1
    cars = {"car": [[0, 0, 9, 9, 0.9], [10, 0, 19, 9, 0.8], [20, 0, 29, 9, 0.7], [30, 0, 39, 9, 0.6]]}
    stub = ColourStub({0: "white", 10: "red", 20: "blue", 30: "red"})
    # :176 the first 3 cars by score are classified: white, red, blue -> 1 red < 3; the colours
    # seen, counted, in COLORS order (red, ..., blue, ..., white)
    assert verdict(three_red, cars, stub) == (False, "expected red car>=3, found 1 red; and 1 red, 1 blue, 1 white")
    assert [float(box[0]) for box, _ in stub.calls[0][1]] == [0, 10, 20]
    assert COLORS.index("red") < COLORS.index("blue") < COLORS.index("white")


def test_colour_attribution_checks_each_clause():
    row_ = "a photo of a purple wine glass and a black apple"
    boxes = {"wine glass": [[0, 0, 9, 9, 0.9]], "apple": [[30, 30, 39, 39, 0.9]]}
    assert verdict(row_, boxes, ColourStub({0: "purple", 30: "black"})) == (True, "")
    assert verdict(row_, boxes, ColourStub({0: "purple", 30: "red"})) == (
        False, "expected black apple>=1, found 0 black; and 1 red")
    assert verdict(row_, boxes, ColourStub({0: "green", 30: "red"})) == (
        False, "expected purple wine glass>=1, found 0 purple; and 1 green\n"
               "expected black apple>=1, found 0 black; and 1 red")


def test_colour_hook_gets_the_kept_boxes_with_their_masks():
    bboxes, masks = detections({"fire hydrant": [[4, 4, 20, 30, 0.5], [30, 4, 40, 30, 0.9]]})
    stub = ColourStub({30: "blue"})
    judge(IMAGE, (bboxes, masks), row("a photo of a blue fire hydrant"), stub)
    (classname, objects), = stub.calls
    index = CLASSNAMES.index("fire hydrant")
    assert classname == "fire hydrant" and len(objects) == 1
    assert objects[0][1] is masks[index][1]  # the best-scoring box and its own mask
    # bboxes alone (mmdet without masks): the objects carry None
    judge(IMAGE, bboxes, row("a photo of a blue fire hydrant"), stub)
    assert stub.calls[-1][1][0][1] is None


def test_colour_clause_without_a_classifier_is_a_config_error():
    with pytest.raises(ConfigError, match="colour_fn"):
        verdict("a photo of a blue fire hydrant", {"fire hydrant": [[4, 4, 20, 30, 0.8]]})


# ----------------------------------------------------------------------------------- position
# (prompt, box of the clause's object A, box of the target B): A stands in the relation to B;
# the centres are 30 px apart on one axis, the boxes 10 px wide: offset 30, margin 0.1 * 20 = 2,
# shrunk 28, unit component 28 / 30 > 0.5 on that axis and 0 on the other (:142-156)
RELATIONS = [
    ("a photo of a laptop left of a cow", "laptop", "cow", [0, 0, 10, 10], [30, 0, 40, 10], "left of", "right of"),
    ("a photo of a dog right of a teddy bear", "dog", "teddy bear", [30, 0, 40, 10], [0, 0, 10, 10], "right of",
     "left of"),
    ("a photo of a wine glass above a kite", "wine glass", "kite", [0, 0, 10, 10], [0, 30, 10, 40], "above", "below"),
    ("a photo of a couch below a cup", "couch", "cup", [0, 30, 10, 40], [0, 0, 10, 10], "below", "above"),
]


@pytest.mark.parametrize("prompt, a, b, box_a, box_b, relation, opposite", RELATIONS)
def test_each_relation_true_and_false(prompt, a, b, box_a, box_b, relation, opposite):
    assert row(prompt)["include"][1]["position"] == [relation, 0]
    assert verdict(prompt, {a: [box_a + [0.9]], b: [box_b + [0.9]]}) == (True, "")
    # swapped boxes: the only relation found is the opposite one (:201-206)
    assert verdict(prompt, {a: [box_b + [0.9]], b: [box_a + [0.9]]}) == (
        False, f"expected {a} {relation} target, found {opposite} target")


def test_relative_position_geometry():
    obj = lambda *box: (np.float32(box), None)  # noqa: E731
    assert relative_position(obj(30, 0, 40, 10), obj(0, 0, 10, 10)) == ("right of",)
    # diagonal: offset (30, 30), shrunk (28, 28), unit 0.66 on both axes: two relations
    assert relative_position(obj(30, 30, 40, 40), obj(0, 0, 10, 10)) == ("right of", "below")
    # offset 1 < margin 2: shrunk to 0 on both axes -> no relation (:148-149)
    assert relative_position(obj(0, 1, 10, 11), obj(0, 0, 10, 10)) == ()
    # offset 4, margin 2: shrunk 2, divided by the raw offset's norm 4 -> 0.5, not > 0.5 (:151)
    assert relative_position(obj(0, 4, 10, 14), obj(0, 0, 10, 10)) == ()
    assert relative_position(obj(0, 5, 10, 15), obj(0, 0, 10, 10)) == ("below",)
    assert relative_position(obj(0, 1, 10, 11), obj(0, 0, 10, 10), position_threshold=0.0) == ("below",)


def test_the_margin_makes_a_near_overlap_no_relation():
    couch_below_cup = "a photo of a couch below a cup"
    near = {"couch": [[0, 1, 10, 11, 0.9]], "cup": [[0, 0, 10, 10, 0.9]]}
    # relative_position returns set(); " and ".join(set()) is "" -> two spaces (:204-205)
    assert verdict(couch_below_cup, near) == (False, "expected couch below target, found  target")
    assert verdict(couch_below_cup, near, position_threshold=0.0) == (True, "")
    # two relations, the expected one missing: both named (the original's set order varies with
    # Python's hash seed; here always the order left of, right of, above, below)
    diagonal = {"wine glass": [[30, 30, 40, 40, 0.9]], "kite": [[0, 0, 10, 10, 0.9]]}
    assert verdict("a photo of a wine glass above a kite", diagonal) == (
        False, "expected wine glass above target, found right of and below target")


def test_position_is_checked_against_the_target_clause_objects_only():
    prompt = "a photo of a dog right of a teddy bear"
    # the target group is the first 1 teddy bear by score (:176, :211); a second one on the
    # dog's right is not part of it
    bears = [[0, 0, 10, 10, 0.9], [60, 0, 63, 10, 0.5]]
    assert verdict(prompt, {"dog": [[30, 0, 40, 10, 0.9]], "teddy bear": bears}) == (True, "")


def test_a_failed_target_group_gives_no_target():
    prompt = "a photo of a dog right of a teddy bear"
    # clause 0 fails -> matched_groups[0] = None (:213); clause 1 found -> "no target ..." (:194-196)
    assert verdict(prompt, {"dog": [[30, 0, 40, 10, 0.9]]}) == (
        False, "expected teddy bear>=1, found 0\nno target for dog to be right of")
    # clause 1 not found either: its count reason, no position check
    assert verdict(prompt, {}) == (False, "expected teddy bear>=1, found 0\nexpected dog>=1, found 0")


def test_a_failed_colour_skips_the_position_check():
    # :191 checks position only while the clause still matches (no shipped row has both keys)
    metadata = {"tag": "position", "include": [{"class": "cup", "count": 1},
                                               {"class": "dog", "count": 1, "color": "brown",
                                                "position": ["right of", 0]}], "prompt": "a brown dog right of a cup"}
    boxes = {"cup": [[30, 0, 40, 10, 0.9]], "dog": [[0, 0, 10, 10, 0.9]]}  # the dog is left of the cup
    assert verdict(metadata, boxes, ColourStub({0: "black"})) == (
        False, "expected brown dog>=1, found 0 brown; and 1 black")
    assert verdict(metadata, boxes, ColourStub({0: "brown"})) == (
        False, "expected dog right of target, found left of target")


# ----------------------------------------------------------------------------------- records, options
def test_image_record_is_the_official_record():
    metadata = row("a photo of a bench")
    record = image_record("run/00000/samples/0000.png", IMAGE, detections({"bench": [[1.5, 2.25, 30, 40, 0.95]]}),
                          metadata)
    assert list(record) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert record["correct"] is True and record["reason"] == "" and record["tag"] == "single_object"
    assert record["metadata"] == json.dumps(metadata)
    # :254-256: box.tolist() of the float32 row, so the score reads as float32's value
    assert record["details"] == '{"bench": [[1.5, 2.25, 30.0, 40.0, 0.949999988079071]]}'
    empty = image_record("x.png", IMAGE, detections({}), metadata)
    assert (empty["correct"], empty["reason"], empty["details"]) == (False, "expected bench>=1, found 0", "{}")


def test_options_from_the_official_strings():
    options = GenEvalOptions.from_strings({"threshold": "0.5", "max_objects": "4", "crop": "0", "bgcolor": "original"})
    assert (options.threshold, options.max_objects, options.crop, options.bgcolor) == (0.5, 4, False, "original")
    assert GenEvalOptions.from_strings(["max_overlap=0.6", "position_threshold=0.2"]).max_overlap == 0.6
    assert GenEvalOptions() == GenEvalOptions(threshold=0.3, counting_threshold=0.9, max_objects=16, max_overlap=1.0,
                                              position_threshold=0.1, bgcolor="#999", crop=True)


@pytest.mark.parametrize("strings, match", [
    ({"treshold": "0.5"}, "unknown GenEval option `treshold`"),
    ({"threshold": "high"}, "`threshold` must be a number from 0 to 1"),
    ({"threshold": "1.5"}, "`threshold` must be a number from 0 to 1"),
    ({"max_objects": "2.5"}, "`max_objects` must be a positive integer"),
    ({"max_overlap": "0"}, "`max_overlap`"),
    ({"crop": "true"}, "`crop`"),
    ({"bgcolor": "#99"}, "`bgcolor`"),
    ({"clip_model": "ViT-B-32"}, "chooses the colour classifier"),
    (["threshold"], "KEY=VALUE"),
])
def test_bad_options_are_one_line_config_errors(strings, match):
    with pytest.raises(ConfigError, match=match) as err:
        GenEvalOptions.from_strings(strings)
    assert "\n" not in str(err.value)


def test_judge_refuses_an_unknown_option():
    with pytest.raises(ConfigError, match="treshold"):
        verdict("a photo of a bench", {}, treshold=0.5)
    with pytest.raises(ConfigError, match="max_objects"):
        verdict("a photo of a bench", {}, max_objects=0)


def test_evaluate_takes_selected_objects():
    objects = select_objects(detections({"bench": [[0, 0, 9, 9, 0.9]]}), "single_object")
    assert evaluate(IMAGE, objects, row("a photo of a bench")) == (True, "")
    with pytest.raises(ValueError, match="80"):
        select_objects([np.zeros((0, 5))] * 3, "single_object")
