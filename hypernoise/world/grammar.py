"""The prompt grammar of the shapes world, and its train/test split.

Six categories, as in GenEval (Ghosh et al., 2023):

    single_object  "a photo of a {shape}"
    colors         "a photo of a {color} {shape}"
    two_object     "a photo of a {shape} and a {shape}"            (two different shapes)
    counting       "a photo of {two|three} {shape}s"
    position       "a photo of a {shape} {left of|right of|above|below} a {shape}"  (different shapes)
    color_attr     "a photo of a {color} {shape} and a {color} {shape}"  (two different objects)

shape in SHAPES, color in COLORS. ``parse_prompt`` turns a prompt into a ``PromptSpec`` (the exact
meaning the renderer draws and the evaluator checks) and raises ``ConfigError`` on anything else.

Split: every prompt of the grammar (363 in all) is either a train or a test prompt, never both.
Per category a fixed, seeded choice is held out for test: 1 of 3 single_object, 6 of 18 colors,
2 of 6 two_object, 2 of 6 counting, 8 of 24 position, 20 of 306 color_attr. ``benchmark_prompts``
balances evaluation by cycling each category's test prompts up to the same number of entries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from hypernoise.errors import ConfigError
from hypernoise.io import short

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {"two": 2, "three": 3}
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
PREFIX = "a photo of"

#: number of test prompts held out per category (the rest are train prompts)
TEST_SIZES = {"single_object": 1, "colors": 6, "two_object": 2, "counting": 2, "position": 8, "color_attr": 20}
SPLIT_SEED = 2025

#: every word the grammar uses; the text encoders' vocabulary is built from it
VOCABULARY = tuple(dict.fromkeys(
    PREFIX.split() + ["and", "left", "right", "above", "below"] + list(NUMBERS)
    + list(COLORS) + list(SHAPES) + [s + "s" for s in SHAPES]))


@dataclass(frozen=True)
class ObjectSpec:
    """One named object: a shape and, where the prompt names it, a colour."""

    shape: str
    color: Optional[str] = None

    def text(self) -> str:
        return f"{self.color} {self.shape}" if self.color else self.shape


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for. ``count`` is set for counting prompts, ``relation`` for position
    prompts (objects[0] is the subject: "objects[0] <relation> objects[1]")."""

    category: str
    objects: tuple
    count: Optional[int] = None
    relation: Optional[str] = None

    def text(self) -> str:
        a = self.objects
        if self.category == "counting":
            word = {v: k for k, v in NUMBERS.items()}[self.count]
            return f"{PREFIX} {word} {a[0].shape}s"
        if self.category == "position":
            return f"{PREFIX} a {a[0].shape} {self.relation} a {a[1].shape}"
        return f"{PREFIX} " + " and ".join(f"a {o.text()}" for o in a)


def _fail(prompt: str, why: str) -> ConfigError:
    return ConfigError(f"prompt {short(prompt, 80)} is not in the shapes grammar: {why[:120]}; "
                       f"see docs/world.md (e.g. 'a photo of a red circle and a blue square')")


def _parse_object(words: list[str], prompt: str) -> ObjectSpec:
    """Parse ``a [color] shape`` (already split into words)."""
    if not words or words[0] != "a":
        raise _fail(prompt, "each object starts with 'a'")
    rest = words[1:]
    if len(rest) == 2 and rest[0] in COLORS and rest[1] in SHAPES:
        return ObjectSpec(rest[1], rest[0])
    if len(rest) == 1 and rest[0] in SHAPES:
        return ObjectSpec(rest[0])
    bad = [w for w in rest if w not in COLORS and w not in SHAPES]
    raise _fail(prompt, f"unknown word {bad[0]!r} (shapes: {', '.join(SHAPES)}; colours: {', '.join(COLORS)})"
                if bad else "an object is 'a [colour] shape'")


def parse_prompt(prompt: str) -> PromptSpec:
    """Parse a grammar prompt into its ``PromptSpec``; anything else raises ``ConfigError``."""
    words = prompt.strip().lower().split()
    unknown = [w for w in words if w not in VOCABULARY]
    if unknown:
        raise _fail(prompt, f"unknown word {unknown[0]!r}")
    if words[:3] != PREFIX.split():
        raise _fail(prompt, f"prompts start with {PREFIX!r}")
    body = words[3:]
    if len(body) == 2 and body[0] in NUMBERS and body[1][:-1] in SHAPES and body[1].endswith("s"):
        return PromptSpec("counting", (ObjectSpec(body[1][:-1]),), count=NUMBERS[body[0]])
    for rel in RELATIONS:
        r = rel.split()
        for i in range(len(body) - len(r) + 1):
            if body[i:i + len(r)] == r:
                a, b = _parse_object(body[:i], prompt), _parse_object(body[i + len(r):], prompt)
                if a.color or b.color or a.shape == b.shape:
                    raise _fail(prompt, "position prompts name two different shapes without colours")
                return PromptSpec("position", (a, b), relation=rel)
    if "and" in body:
        i = body.index("and")
        a, b = _parse_object(body[:i], prompt), _parse_object(body[i + 1:], prompt)
        return _pair_spec(a, b, prompt)
    obj = _parse_object(body, prompt)
    return PromptSpec("colors" if obj.color else "single_object", (obj,))


def _pair_spec(a: ObjectSpec, b: ObjectSpec, prompt: str) -> PromptSpec:
    if a == b or (not a.color) != (not b.color):
        raise _fail(prompt, "'and' joins two different objects, both with or both without colours")
    if a.color:
        return PromptSpec("color_attr", (a, b))
    if a.shape == b.shape:
        raise _fail(prompt, "two_object prompts name two different shapes")
    return PromptSpec("two_object", (a, b))


def category_of(prompt: str) -> str:
    return parse_prompt(prompt).category


def all_specs(category: str) -> list[PromptSpec]:
    """Every prompt spec of one category, in a fixed order."""
    objs = [ObjectSpec(s) for s in SHAPES]
    colored = [ObjectSpec(s, c) for c in COLORS for s in SHAPES]
    pairs = [(a, b) for a in objs for b in objs if a != b]
    builders = {
        "single_object": lambda: [PromptSpec("single_object", (o,)) for o in objs],
        "colors": lambda: [PromptSpec("colors", (o,)) for o in colored],
        "two_object": lambda: [PromptSpec("two_object", p) for p in pairs],
        "counting": lambda: [PromptSpec("counting", (o,), count=n) for n in (2, 3) for o in objs],
        "position": lambda: [PromptSpec("position", p, relation=r) for r in RELATIONS for p in pairs],
        "color_attr": lambda: [PromptSpec("color_attr", (a, b)) for a in colored for b in colored if a != b],
    }
    if category not in builders:
        raise ConfigError(f"unknown category {category!r}; choose one of: {', '.join(CATEGORIES)}")
    return builders[category]()


def all_prompts(category: Optional[str] = None) -> list[str]:
    """Every prompt of the grammar (or of one category), in a fixed order."""
    cats = CATEGORIES if category is None else (category,)
    return [s.text() for c in cats for s in all_specs(c)]


def split_prompts(split: str, category: Optional[str] = None) -> list[str]:
    """The "train" or "test" prompts (disjoint; fixed by ``SPLIT_SEED``), optionally of one category."""
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}; choose train or test")
    cats = CATEGORIES if category is None else (category,)
    out = []
    for c in cats:
        prompts = all_prompts(c)
        held = set(random.Random(f"{SPLIT_SEED}-{c}").sample(prompts, TEST_SIZES[c]))
        out += [p for p in prompts if (p in held) == (split == "test")]
    return out


def balanced_train_prompts() -> list[str]:
    """The train prompts with every category weighted equally, as the benchmark weighs them: each
    category's train prompts cycled to the size of the largest (color_attr's 286), 1716 entries.
    The plain list would spend 94 % of training on color_attr."""
    per = [split_prompts("train", c) for c in CATEGORIES]
    n = max(len(p) for p in per)
    return [p[i % len(p)] for p in per for i in range(n)]


def benchmark_prompts(per_category: int = 20) -> list[str]:
    """Test prompts balanced over the six categories: each category's test prompts cycled to
    ``per_category`` entries (so a 1-prompt category repeats its prompt with fresh noises)."""
    out = []
    for c in CATEGORIES:
        test = split_prompts("test", c)
        out += [test[i % len(test)] for i in range(per_category)]
    return out
