"""The procedural renderer: prompt specs -> scenes -> RGB 32x32 images with exact labels.

A scene is 1-3 non-overlapping solid objects (``SceneObject``: shape, colour, centre, size) on a
varied background (a low-saturation colour with a linear gradient and faint pixel noise). Every
image comes with a label map [H, W] (0 = background, ``1 + shape_index * 6 + color_index`` for
object pixels) and its object list, so every prompt-level fact about it is known exactly.

``sample_scene(spec, rng)`` draws a scene that satisfies ``spec`` (rules.py); ``render`` draws it;
``make_dataset`` draws a balanced, seeded set over the six categories.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from hypernoise.world.grammar import CATEGORIES, COLORS, SHAPES, PromptSpec, all_specs, parse_prompt
from hypernoise.world.rules import satisfies

SIZE = 32
NUM_CLASSES = 1 + len(SHAPES) * len(COLORS)
#: RGB prototypes of the colour words, in [0, 1]
PALETTE = {
    "red": (0.90, 0.10, 0.10), "green": (0.10, 0.72, 0.20), "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.88, 0.10), "purple": (0.58, 0.18, 0.80), "orange": (1.00, 0.55, 0.05),
}
RADIUS = (3.5, 6.5)  # object size range, pixels
GAP = 2.0  # minimum distance between object outlines, pixels
POSITION_OFFSET = 8.0  # rendered position scenes separate the pair by this much along the axis


@dataclass(frozen=True)
class SceneObject:
    """One drawn object. ``morph``/``mix``: an in-between outline, (1 - mix) of ``shape`` and
    ``mix`` of ``morph`` (evaluator training only: a shape nobody should be sure of)."""

    shape: str
    color: str
    cx: float
    cy: float
    r: float
    morph: Optional[str] = None
    mix: float = 0.0

    @property
    def label(self) -> int:
        return 1 + SHAPES.index(self.shape) * len(COLORS) + COLORS.index(self.color)


# ---------------------------------------------------------------- scene sampling
def _objects_for(spec: PromptSpec, rng: random.Random) -> list[tuple[str, str]]:
    """(shape, colour) of every object a scene for ``spec`` holds; unnamed colours are random."""
    pick = lambda o: (o.shape, o.color or rng.choice(COLORS))  # noqa: E731
    if spec.category == "counting":
        return [pick(spec.objects[0]) for _ in range(spec.count)]
    return [pick(o) for o in spec.objects]


def _place(kinds, rng: random.Random, spec: PromptSpec) -> Optional[list[SceneObject]]:
    objs: list[SceneObject] = []
    for shape, color in kinds:
        r = rng.uniform(*RADIUS)
        for _ in range(50):
            cx, cy = rng.uniform(r + 1, SIZE - 1 - r), rng.uniform(r + 1, SIZE - 1 - r)
            if all(math.hypot(cx - o.cx, cy - o.cy) > r + o.r + GAP for o in objs):
                objs.append(SceneObject(shape, color, cx, cy, r))
                break
        else:
            return None
    return objs


def _clear_position(objs: list[SceneObject], relation: str) -> bool:
    a, b = objs
    dx, dy = a.cx - b.cx, a.cy - b.cy
    along, across = (dx, dy) if relation in ("left of", "right of") else (dy, dx)
    return abs(along) >= POSITION_OFFSET and abs(along) > abs(across)


def sample_scene(spec: PromptSpec, rng: random.Random) -> list[SceneObject]:
    """A random scene that is right for ``spec`` (position scenes: a clear, dominant offset)."""
    while True:
        objs = _place(_objects_for(spec, rng), rng, spec)
        if objs is None or not satisfies(objs, spec):
            continue
        if spec.category == "position" and not _clear_position(objs, spec.relation):
            continue
        return objs


# ---------------------------------------------------------------- drawing
_YY, _XX = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")


def _sdf(obj: SceneObject) -> torch.Tensor:
    """Signed distance [H, W] to the outline, negative inside (pixels)."""
    if obj.morph is not None:
        pure = lambda shape: _sdf(SceneObject(shape, obj.color, obj.cx, obj.cy, obj.r))  # noqa: E731
        return (1 - obj.mix) * pure(obj.shape) + obj.mix * pure(obj.morph)
    dx, dy = _XX - obj.cx, _YY - obj.cy
    if obj.shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - obj.r
    if obj.shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - 0.85 * obj.r
    # upright equilateral triangle, circumradius 1.2 r: the max of its edges' distances (outward
    # normals in image coordinates, y down)
    R = 1.2 * obj.r
    n = [(0.0, 1.0), (math.sqrt(3) / 2, -0.5), (-math.sqrt(3) / 2, -0.5)]
    return torch.stack([nx * dx + ny * dy for nx, ny in n]).amax(0) - R / 2


def _background(rng: random.Random) -> torch.Tensor:
    level = rng.uniform(0.12, 0.88)
    base = torch.tensor([level + rng.uniform(-0.08, 0.08) for _ in range(3)])
    angle, amp = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.15)
    ramp = ((_XX - SIZE / 2) * math.cos(angle) + (_YY - SIZE / 2) * math.sin(angle)) / SIZE
    return base[:, None, None] + amp * ramp


def _ghosts(objects: Sequence[SceneObject], rng: random.Random) -> list[SceneObject]:
    """0-2 extra objects, away from the real ones, to be drawn faintly (background by label)."""
    kinds = [(rng.choice(SHAPES), rng.choice(COLORS)) for _ in range(rng.randint(0, 2))]
    placed = _place([(o.shape, o.color) for o in objects] + kinds, rng, None)
    return [] if placed is None else placed[len(objects):]


def render(objects: Sequence[SceneObject], rng: random.Random, ghosts: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a scene: image [3, H, W] in [0, 1] and label map [H, W] (int64).

    ``ghosts`` adds faint (10-35 % opacity) objects labelled background: evaluator training data
    for "a faint blob is not an object".
    """
    img = _background(rng)
    labels = torch.zeros(SIZE, SIZE, dtype=torch.long)
    faint = _ghosts(objects, rng) if ghosts else []
    for obj in list(objects) + faint:
        d = _sdf(obj)
        opacity = rng.uniform(0.1, 0.35) if obj in faint else 1.0
        cover = (0.5 - d).clamp(0, 1) * opacity  # anti-aliased coverage of each pixel
        color = torch.tensor([c + rng.uniform(-0.05, 0.05) for c in PALETTE[obj.color]])
        img = img * (1 - cover) + color[:, None, None] * cover
        if obj not in faint:
            labels[cover > 0.5] = obj.label
    noise = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(rng.getrandbits(31)))
    return (img + 0.015 * noise).clamp(0, 1), labels


# ---------------------------------------------------------------- datasets
@dataclass
class WorldBatch:
    """images [N, 3, H, W] in [0, 1] (uint8 storage via ``to_uint8``), labels [N, H, W],
    prompts (len N), scenes (len N, lists of ``SceneObject``)."""

    images: torch.Tensor
    labels: torch.Tensor
    prompts: list
    scenes: list


def random_spec(rng: random.Random, category: Optional[str] = None) -> PromptSpec:
    """A uniformly chosen category (unless given), then a uniformly chosen prompt of it."""
    return rng.choice(_SPECS[category or rng.choice(CATEGORIES)])


_SPECS = {c: all_specs(c) for c in CATEGORIES}


def _morph(scene: list[SceneObject], prob: float, rng: random.Random) -> list[SceneObject]:
    out = []
    for o in scene:
        if rng.random() < prob:
            other = rng.choice([s for s in SHAPES if s != o.shape])
            o = SceneObject(o.shape, o.color, o.cx, o.cy, o.r, other, rng.uniform(0.3, 0.7))
        out.append(o)
    return out


def make_dataset(n: int, seed: int, prompts: Optional[Sequence[str]] = None, ghost_prob: float = 0.0,
                 morph_prob: float = 0.0) -> WorldBatch:
    """``n`` rendered scenes, seeded. Prompts: balanced over categories, or cycled from ``prompts``;
    a ``ghost_prob`` fraction of images also get faint distractors (see ``render``), and each
    object turns into an in-between shape with probability ``morph_prob`` (then the scene no
    longer has to match its prompt: evaluator training data only)."""
    rng = random.Random(seed)
    specs = ([parse_prompt(prompts[i % len(prompts)]) for i in range(n)] if prompts
             else [random_spec(rng) for _ in range(n)])
    images, labels, scenes = torch.empty(n, 3, SIZE, SIZE), torch.empty(n, SIZE, SIZE, dtype=torch.long), []
    for i, spec in enumerate(specs):
        scene = sample_scene(spec, rng)
        if morph_prob > 0:
            scene = _morph(scene, morph_prob, rng)
        images[i], labels[i] = render(scene, rng, ghosts=ghost_prob > 0 and rng.random() < ghost_prob)
        scenes.append(scene)
    return WorldBatch(images, labels, [s.text() for s in specs], scenes)
