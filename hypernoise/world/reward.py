"""The "shapes" reward: a differentiable prompt-faithfulness score for the shapes world.

    reward(images [B, 3, H, W] in [0, 1], prompts of the shapes grammar) -> scores [B], in [log 1e-4 * k, 0]

Its network (a ``SegmentationNet`` of its own: wider, other seed and data than the evaluator's)
gives per-pixel shape-colour probabilities P and per-shape object-centre heatmaps. The prompt is
scored by soft versions of GenEval's rules, each term a probability-like number in (0, 1]:

    presence(o)  = max over 3x3 windows of the mean mass of o's classes in P
    count(s)     = sum of shape s's centre heatmap / the mass of one object's centre (``per_object``)
    counting     exp(-(count(s) - N)^2 / (2 * 0.35^2))
    position     presence(a) presence(b) sigmoid((offset of the mass centroids along the axis - 3 px) / 1.5 px)
    other        the product of the named objects' presences

score = sum of log(max(term, 1e-4)). It was trained on procedural images blurred, noised and
contrast-jittered like generator output, so blur does not fool it. Images of another size are
resized to 32x32 first.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from hypernoise.rewards.base import Reward
from hypernoise.rewards.registry import REWARDS
from hypernoise.world.grammar import COLORS, SHAPES, ObjectSpec, PromptSpec, parse_prompt
from hypernoise.world.models import SegmentationNet
from hypernoise.world.render import SIZE
from hypernoise.world.rules import MIN_OFFSET
from hypernoise.world.weights import load_weights, resolve_weights

FLOOR = 1e-4
#: the reward network's architecture: 19 class logits + 3 centre heatmaps
NET = {"stem": 32, "width": 64, "num_classes": 22, "dilations": [1, 2, 4, 8]}


class ShapesReward(Reward):
    """Soft GenEval rules on a learned segmentation (see the module docstring)."""

    name = "shapes"

    def __init__(self, net: SegmentationNet, per_object: float):
        super().__init__()
        self.net, self.per_object = net, float(per_object)
        self._specs: dict[str, PromptSpec] = {}

    @classmethod
    def from_pretrained(cls, pretrained: Optional[str] = None) -> "ShapesReward":
        path = resolve_weights(pretrained, "reward")
        meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
        net = SegmentationNet(**meta.get("net", NET))
        load_weights(net, path)
        return cls(net, meta.get("per_object", 14.1)).freeze()

    def maps(self, images: torch.Tensor):
        """Class probabilities [B, 3, 6, H, W] (object classes; background dropped) and centre
        heatmaps [B, 3, H, W] in (0, 1). Images of another dtype (a bf16 generator's) are cast to
        the net's, as the CLIP-family rewards do."""
        images = images.to(next(self.net.parameters()).dtype)
        if images.shape[-2:] != (SIZE, SIZE):
            images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
        logits, _ = self.net(images)
        probs = logits[:, :19].softmax(1)[:, 1:]
        return probs.unflatten(1, (len(SHAPES), len(COLORS))), logits[:, 19:].sigmoid()

    def forward(self, samples: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        probs, heat = self.maps(samples)
        return torch.stack([self._score(probs[i], heat[i], self._spec(p)) for i, p in enumerate(prompts)])

    def _spec(self, prompt: str) -> PromptSpec:
        if prompt not in self._specs:
            self._specs[prompt] = parse_prompt(prompt)  # ConfigError for prompts outside the grammar
        return self._specs[prompt]

    def _score(self, probs: torch.Tensor, heat: torch.Tensor, spec: PromptSpec) -> torch.Tensor:
        masses = [_mass(probs, o) for o in spec.objects]
        if spec.category == "counting":
            count = heat[SHAPES.index(spec.objects[0].shape)].sum() / self.per_object
            terms = [torch.exp(-(count - spec.count) ** 2 / (2 * 0.35 ** 2))]
        else:
            terms = [_presence(m) for m in masses]
        if spec.category == "position":
            terms.append(_relation(masses[0], masses[1], spec.relation))
        return sum(torch.log(t.clamp(min=FLOOR)) for t in terms)


def _mass(probs: torch.Tensor, obj: ObjectSpec) -> torch.Tensor:
    """Probability mass [H, W] of the classes ``obj`` names (any colour if it names none)."""
    by_shape = probs[SHAPES.index(obj.shape)]
    return by_shape.sum(0) if obj.color is None else by_shape[COLORS.index(obj.color)]


def _presence(mass: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(mass[None, None], 3, 1).amax()


def _relation(a: torch.Tensor, b: torch.Tensor, relation: str) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=a.dtype, device=a.device),
                            torch.arange(SIZE, dtype=a.dtype, device=a.device), indexing="ij")
    centre = lambda m: ((m * xs).sum() / m.sum().clamp(min=1e-6), (m * ys).sum() / m.sum().clamp(min=1e-6))  # noqa: E731
    (ax, ay), (bx, by) = centre(a), centre(b)
    offset = {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[relation]
    return torch.sigmoid((offset - MIN_OFFSET) / 1.5)


@REWARDS.register("shapes", help="shapes-world prompt faithfulness: soft GenEval rules on a learned segmentation; world prompts only")
def build_shapes_reward(pretrained: Optional[str] = None, **_) -> ShapesReward:
    return ShapesReward.from_pretrained(pretrained)
