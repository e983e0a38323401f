"""GenEval's decision rules over detections, as ``evaluation/evaluate_images.py`` states them.

Line numbers cite djghosh13/geneval's ``evaluation/evaluate_images.py`` at commit 16f1681.

    select_objects(detections, tag, options) -> {classname: [(box [5], mask | None), ...]}   :228-244
    evaluate(image, objects, metadata, colour_fn, options) -> (correct, reason)             :160-220
    judge(image, detections, metadata, colour_fn) = evaluate(image, select_objects(...))
    image_record(filename, image, detections, metadata, ...) -> the results.jsonl record     :246-258

``detections`` are mmdet 2.x's per-image result: ``(bboxes, masks)`` with ``bboxes`` a list of 80
float arrays [N, 5] (x0, y0, x1, y1, score, image pixels) and ``masks`` a list of 80 lists of bool
arrays [H, W] (or ``bboxes`` alone: no masks). ``colour_fn(image, objects, classname) -> [colour]``
names the colour of each of ``objects`` (the (box, mask) pairs kept for the class): the CLIP
classifier of ``hypernoise.geneval.colour`` or any replacement. Images are PIL images (the caller
applies the EXIF orientation, :227). No network runs here.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
from PIL import ImageColor

from hypernoise.errors import ConfigError
from hypernoise.geneval.metadata import CLASSNAMES, COLORS

__all__ = ["COLORS", "GenEvalOptions", "compute_iou", "relative_position", "select_objects", "evaluate", "judge",
           "image_record"]

#: (box [5], mask [H, W] or None): one kept detection
Object = tuple
ColourFn = Callable[[object, Sequence[Object], str], Sequence[str]]


# ----------------------------------------------------------------------------------- options
def _parse_crop(text: str) -> bool:
    """:101 crops when the option is exactly "1"; "0" turns it off. Other spellings are refused
    rather than read as the official script would ("true" would silently mean no crop there)."""
    if text not in ("0", "1"):
        raise ValueError("crop is 1 (the object's box) or 0 (the whole image)")
    return text == "1"


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _colour(value) -> bool:
    if not isinstance(value, str):
        return False
    if value == "original":
        return True
    try:
        ImageColor.getrgb(value)
    except ValueError:
        return False
    return True


def _option(default, help: str, official: str, parse: Callable, valid: Callable, expect: str):
    return field(default=default, metadata={"help": help, "official": official, "parse": parse, "valid": valid,
                                            "expect": expect})


@dataclass(frozen=True)
class GenEvalOptions:
    """The official script's ``--options`` (same names, same defaults), checked on creation.

    ``GenEvalOptions.from_strings({"threshold": "0.5"})`` reads them as the script's
    ``--options threshold=0.5`` gives them. Each field's metadata holds its help text and the
    line of ``evaluate_images.py`` that reads it."""

    threshold: float = _option(
        0.3, "detection score a box must exceed to count (strict >)", "evaluate_images.py:286",
        float, lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1")
    counting_threshold: float = _option(
        0.9, "the score threshold of the counting task", "evaluate_images.py:287",
        float, lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1")
    max_objects: int = _option(
        16, "most boxes kept per class (the best scoring)", "evaluate_images.py:288",
        int, lambda v: _integer(v) and v >= 1, "a positive integer")
    max_overlap: float = _option(
        1.0, "greedy NMS drops boxes whose IoU with a kept box is >= this; 1: no NMS", "evaluate_images.py:289",
        float, lambda v: _number(v) and 0 < v <= 1, "a number above 0, at most 1")
    position_threshold: float = _option(
        0.1, "margin of the position rules, a fraction of the two boxes' summed sizes", "evaluate_images.py:290",
        float, lambda v: _number(v) and v >= 0, "a number >= 0")
    bgcolor: str = _option(
        "#999", "what the colour classifier sees around an object's mask: a PIL colour or 'original'",
        "evaluate_images.py:84", str, _colour, "a PIL colour (#999, gray, #808080) or 'original'")
    crop: bool = _option(
        True, "the colour classifier sees the object's box (True) or the whole image (False)",
        "evaluate_images.py:101", _parse_crop, lambda v: isinstance(v, bool), "True or False")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.metadata["valid"](value):
                raise ConfigError(f"GenEval option `{f.name}` must be {f.metadata['expect']}, got {value!r}",
                                  field=f.name)
            if f.metadata["parse"] in (float, int):  # plain Python numbers (numpy scalars come in too)
                object.__setattr__(self, f.name, f.metadata["parse"](value))

    @classmethod
    def from_strings(cls, strings: Union[Mapping[str, str], Sequence[str]]) -> "GenEvalOptions":
        """Options from the official ``--options`` strings: a mapping ``{"threshold": "0.3"}`` or
        items ``["threshold=0.3", ...]``. Unknown keys and unparsable values are a one-line
        ``ConfigError``; keys not given keep their defaults."""
        items = strings.items() if isinstance(strings, Mapping) else (_split_item(s) for s in strings)
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, text in items:
            if key not in known:
                raise ConfigError(_unknown_key(key, known), field=key)
            try:
                values[key] = known[key].metadata["parse"](str(text).strip())
            except ValueError:
                raise ConfigError(f"GenEval option `{key}` must be {known[key].metadata['expect']}, got {text!r}",
                                  field=key) from None
        return cls(**values)


#: official --options keys that choose networks, not rules (evaluate_images.py:62, :66)
_NETWORK_KEYS = {"model": "the detector (load_detector)", "clip_model": "the colour classifier's CLIP "
                                                                        "(load_colour_classifier)"}


def _unknown_key(key: str, known) -> str:
    if key in _NETWORK_KEYS:
        return f"GenEval option `{key}` chooses {_NETWORK_KEYS[key]}, not a rule; pass it there"
    return f"unknown GenEval option `{key}`; known: {', '.join(known)}"


def _split_item(item: str) -> tuple[str, str]:
    key, sep, value = str(item).partition("=")
    if not sep:
        raise ConfigError(f"GenEval options are KEY=VALUE items (threshold=0.3), got {item!r}")
    return key.strip(), value


# ----------------------------------------------------------------------------------- geometry
def compute_iou(box_a, box_b) -> float:
    """IoU of two boxes (x0, y0, x1, y1, ...) with GenEval's +1 convention (a box covers x1 - x0 + 1
    by y1 - y0 + 1 pixels, as pre-2.0 mmdet counted; mmdet 2.x itself does not add 1). 0 when the
    union is empty. Mirrors :130-137 operation for operation (float32 boxes stay float32)."""
    def area(box):
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    overlap = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]),
                    min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - overlap
    return overlap / union if union else 0


#: relation -> (axis of the unit offset: 0 = x, 1 = y; sign the offset must have), in the order
#: :153-156 tests them (y grows downwards: "above" is a negative dy)
_DIRECTIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}


def relative_position(obj_a: Object, obj_b: Object, position_threshold: float = 0.1) -> tuple[str, ...]:
    """Where object A lies relative to B (:140-157): the relations among left of, right of, above,
    below whose unit-offset component passes 0.5, after each component of the centre offset is
    shrunk towards 0 by ``position_threshold`` x (width_a + width_b) (heights for y). Empty when
    the shrunk offset is below 1e-3 on both axes (boxes too close to tell).

    Objects are (box, mask) pairs; only box[:4] is read, in the box's own dtype as numpy computes
    it. Returned in the order above (the original returns a set, whose iteration order, and so the
    order of two relations in a reason string, varies with Python's hash seed)."""
    corners = np.array([obj_a[0], obj_b[0]])[:, :4].reshape(2, 2, 2)  # object, corner, (x, y)
    centre_a, centre_b = corners.mean(axis=1)
    size_a, size_b = np.abs(corners[:, 1] - corners[:, 0])
    offset = centre_a - centre_b
    shrunk = np.maximum(np.abs(offset) - position_threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return ()
    unit = shrunk / np.linalg.norm(offset)
    return tuple(name for name, (axis, sign) in _DIRECTIONS.items() if sign * unit[axis] > 0.5)


# ----------------------------------------------------------------------------------- selection
def split_detections(detections, n_classes: int = len(CLASSNAMES)):
    """``(bboxes, masks or None)`` from mmdet's result, read as :225-226 reads it (a tuple is
    (bboxes, masks); anything else is bboxes alone), with the shapes checked."""
    bboxes = detections[0] if isinstance(detections, tuple) else detections
    masks = detections[1] if isinstance(detections, tuple) and len(detections) > 1 else None
    if len(bboxes) != n_classes:
        raise ValueError(f"detections hold {len(bboxes)} classes of boxes, expected {n_classes} (mmdet's result: "
                         f"(bboxes, masks), one [N, 5] array per class)")
    bboxes = [np.asarray(b) for b in bboxes]
    bad = next((i for i, b in enumerate(bboxes) if b.ndim != 2 or b.shape[1] != 5), None)
    if bad is not None:
        raise ValueError(f"detections: boxes of class {bad} have shape {bboxes[bad].shape}, expected [N, 5]")
    if masks is not None and len(masks) != n_classes:
        raise ValueError(f"detections hold {len(masks)} classes of masks, expected {n_classes}")
    bad = next((i for i in range(n_classes) if masks is not None and len(masks[i]) != len(bboxes[i])), None)
    if bad is not None:
        raise ValueError(f"detections: class {bad} has {len(bboxes[bad])} boxes but {len(masks[bad])} masks")
    return bboxes, masks


def _ranked(scores: np.ndarray, threshold: float, max_objects: int) -> list[int]:
    """Indices by descending score (numpy's argsort, reversed: ties as the original orders them),
    above ``threshold`` (strict, compared in the scores' dtype), the first ``max_objects`` (:232-234)."""
    order = np.argsort(scores)[::-1]
    order = order[scores[order] > threshold]
    return order[:max_objects].tolist()


def _greedy_nms(boxes: np.ndarray, order: list[int], max_overlap: float) -> list[int]:
    """Keep the best remaining box, drop the others overlapping it by IoU >= ``max_overlap``,
    repeat (:236-242); ``max_overlap == 1`` keeps every box."""
    kept = []
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [i for i in order if max_overlap == 1 or compute_iou(boxes[best], boxes[i]) < max_overlap]
    return kept


def select_objects(detections, tag: str, options: Optional[GenEvalOptions] = None,
                   classnames: Sequence[str] = CLASSNAMES) -> dict[str, list[Object]]:
    """The detections the rules look at (:228-244): per class, boxes sorted by score, those above
    the threshold (``counting_threshold`` when ``tag == "counting"``), at most ``max_objects``,
    then greedy NMS when ``max_overlap < 1``. -> {classname: [(box [5], mask or None), ...]} in
    class order, best first; classes with nothing kept are absent."""
    options = options or GenEvalOptions()
    bboxes, masks = split_detections(detections, len(classnames))
    threshold = options.counting_threshold if tag == "counting" else options.threshold
    selected = {}
    for index, classname in enumerate(classnames):
        boxes = bboxes[index]
        order = _ranked(boxes[:, 4], threshold, options.max_objects)
        kept = _greedy_nms(boxes, order, options.max_overlap)
        if kept:
            selected[classname] = [(boxes[i], None if masks is None else masks[index][i]) for i in kept]
    return selected


# ----------------------------------------------------------------------------------- clauses
@dataclass
class _Context:
    """What the clause checks read: the image, the kept objects, the objects each earlier include
    clause matched (None where it failed), the colour hook and the options."""

    image: object
    objects: dict
    groups: list
    colour_fn: Optional[ColourFn]
    options: GenEvalOptions


def _count_problem(clause: dict, found: list, ctx: _Context) -> Optional[str]:
    """:177-179: fewer than ``count`` objects of the class."""
    if len(found) < clause["count"]:
        return f"expected {clause['class']}>={clause['count']}, found {len(found)}"
    return None


def _colour_problem(clause: dict, found: list, ctx: _Context) -> Optional[str]:
    """:181-190: fewer than ``count`` of the found objects have the colour; the reason lists the
    colours seen, in ``COLORS`` order."""
    colours = list(ctx.colour_fn(ctx.image, found, clause["class"]))
    if len(colours) != len(found):
        raise ValueError(f"colour_fn named {len(colours)} colours for {len(found)} objects")
    want, n = clause["color"], clause["count"]
    if colours.count(want) >= n:
        return None
    seen = ", ".join(f"{colours.count(c)} {c}" for c in COLORS if c in colours)
    return f"expected {want} {clause['class']}>={n}, found {colours.count(want)} {want}; and {seen}"


def _position_problem(clause: dict, found: list, ctx: _Context) -> Optional[str]:
    """:191-209: the target clause must have matched, and every found object must stand in the
    relation to every object of the target group; the first pair that does not is the reason."""
    relation, target = clause["position"]
    group = ctx.groups[target]
    if group is None:
        return f"no target for {clause['class']} to be {relation}"
    for obj in found:
        for target_obj in group:
            relations = relative_position(obj, target_obj, ctx.options.position_threshold)
            if relation not in relations:
                return f"expected {clause['class']} {relation} target, found {' and '.join(relations)} target"
    return None


#: the checks of an include clause, in the original's order, each run when its key is present
#: (None: always) and only while the earlier ones passed (:177-209)
INCLUDE_CHECKS: tuple[tuple[Optional[str], Callable], ...] = (
    (None, _count_problem), ("color", _colour_problem), ("position", _position_problem))


def _include_problem(clause: dict, ctx: _Context) -> tuple[list, Optional[str]]:
    """(the clause's objects: the class's first ``count``, its first failure or None)."""
    found = ctx.objects.get(clause["class"], [])[:clause["count"]]
    for key, check in INCLUDE_CHECKS:
        problem = check(clause, found, ctx) if key is None or key in clause else None
        if problem:
            return found, problem
    return found, None


def _exclude_problem(clause: dict, objects: dict) -> Optional[str]:
    """:215-219: ``count`` or more objects of an excluded class (all kept ones count, not only
    the first ``count``)."""
    n = len(objects.get(clause["class"], []))
    return f"expected {clause['class']}<{clause['count']}, found {n}" if n >= clause["count"] else None


def evaluate(image, objects: Mapping[str, list], metadata: Mapping, colour_fn: Optional[ColourFn] = None,
             options: Optional[GenEvalOptions] = None) -> tuple[bool, str]:
    """Whether ``image`` with its kept ``objects`` (``select_objects``) satisfies ``metadata``
    (:160-220): include clauses in order (count, then colour, then position against an earlier
    clause's objects), then exclude clauses. -> (correct, the failures' reasons joined by newlines,
    worded as the original words them; "" when correct).

    ``colour_fn`` is required when an include clause names a colour: ``ConfigError`` before any
    clause is checked otherwise (nothing is loaded implicitly)."""
    if colour_fn is None and any("color" in c for c in metadata.get("include", [])):
        raise ConfigError("this prompt has a colour clause: pass colour_fn (e.g. "
                          "hypernoise.geneval.load_colour_classifier()) to judge colours")
    ctx = _Context(image, dict(objects), [], colour_fn, options or GenEvalOptions())
    reasons = []
    for clause in metadata.get("include", []):
        found, problem = _include_problem(clause, ctx)
        ctx.groups.append(None if problem else found)
        reasons += [problem] if problem else []
    reasons += [p for c in metadata.get("exclude", []) if (p := _exclude_problem(c, ctx.objects))]
    return not reasons, "\n".join(reasons)


def _resolve_options(options: Optional[GenEvalOptions], overrides: dict) -> GenEvalOptions:
    options = options or GenEvalOptions()
    unknown = set(overrides) - {f.name for f in fields(GenEvalOptions)}
    if unknown:
        raise ConfigError(_unknown_key(sorted(unknown)[0], [f.name for f in fields(GenEvalOptions)]))
    return replace(options, **overrides) if overrides else options


def judge(image, detections, metadata: Mapping, colour_fn: Optional[ColourFn] = None,
          options: Optional[GenEvalOptions] = None, **overrides) -> tuple[bool, str]:
    """GenEval's verdict on one image: ``evaluate(image, select_objects(detections, tag), ...)``.

    ``options`` (default ``GenEvalOptions()``) with ``overrides`` of its fields
    (``judge(..., threshold=0.5)``). ``colour_fn`` is required for prompts with a colour clause
    (``ConfigError`` otherwise; no classifier is loaded implicitly)."""
    options = _resolve_options(options, overrides)
    objects = select_objects(detections, metadata["tag"], options)
    return evaluate(image, objects, metadata, colour_fn, options)


def image_record(filename: str, image, detections, metadata: Mapping, colour_fn: Optional[ColourFn] = None,
                 options: Optional[GenEvalOptions] = None) -> dict:
    """The official results.jsonl record of one image (:246-258), fields in its order: filename,
    tag, prompt, correct, reason, metadata (``json.dumps`` of the metadata), details
    (``json.dumps`` of {class: [box as a list of 5 floats, ...]} for the kept objects)."""
    options = options or GenEvalOptions()
    objects = select_objects(detections, metadata["tag"], options)
    correct, reason = evaluate(image, objects, metadata, colour_fn, options)
    details = {name: [np.asarray(box).tolist() for box, _ in kept] for name, kept in objects.items()}
    return {"filename": filename, "tag": metadata["tag"], "prompt": metadata["prompt"], "correct": correct,
            "reason": reason, "metadata": json.dumps(metadata), "details": json.dumps(details)}
