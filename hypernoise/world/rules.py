"""GenEval's scoring rules, applied to a list of objects (ground truth or detected).

An object is anything with ``shape``, ``color``, ``cx``, ``cy`` (pixels; y grows downwards).

    single_object  at least one object of the shape
    colors         at least one object of the shape with the colour
    two_object     both shapes present
    counting       exactly ``count`` objects of the shape (other shapes are ignored)
    position       some subject A and reference B with A's centre at least ``MIN_OFFSET`` px
                   to the named side of B's centre (GenEval's "left of" etc. on box centres)
    color_attr     both coloured objects present as two different objects
"""

from __future__ import annotations

from typing import Sequence

from hypernoise.world.grammar import ObjectSpec, PromptSpec

#: centre offset (pixels at 32x32) that makes a relation hold
MIN_OFFSET = 3.0


def _matches(obj, want: ObjectSpec) -> bool:
    return obj.shape == want.shape and (want.color is None or obj.color == want.color)


def relation_holds(a, b, relation: str) -> bool:
    """Whether object ``a`` is ``relation`` object ``b`` (e.g. "left of")."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    offset = {"left of": -dx, "right of": dx, "above": -dy, "below": dy}[relation]
    return offset >= MIN_OFFSET


def satisfies(objects: Sequence, spec: PromptSpec) -> bool:
    """Whether a scene of ``objects`` is right for ``spec`` under GenEval's rules."""
    found = [[o for o in objects if _matches(o, want)] for want in spec.objects]
    if spec.category == "counting":
        return len(found[0]) == spec.count
    if spec.category == "position":
        return any(relation_holds(a, b, spec.relation) for a in found[0] for b in found[1] if a is not b)
    if spec.category == "color_attr":
        return any(a is not b for a in found[0] for b in found[1])
    return all(found)
