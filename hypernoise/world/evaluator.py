"""World GenEval: an object detector for the shapes world, GenEval's rules, and a fidelity distance.

Detection (``WorldEvaluator.detect``), per image:
1. a segmentation network (the shipped one: the mean of two, trained from seeds 0 and 1, so that
   calls on in-between generated shapes do not hinge on one seed) labels each pixel background or
   one of 18 shape-colour classes;
2. the foreground splits into 4-connected components; a component is an object only if
   - it covers at least ``min_area`` pixels,
   - its mean colour differs from the ring of background around it by at least ``min_contrast``
     (RGB distance; a faint blob is not an object), and
   - the network is sure of its shape: mean shape probability >= ``min_confidence``
     (an unsure shape matches no shape word);
3. each object gets the majority shape and colour of its pixels and its centroid.
Scoring (``evaluate_images``) applies rules.py to the objects, per prompt. ``geneval_summary``
averages per category and takes overall = the mean of the six category means, as GenEval does.

Fidelity (``fidelity``): the Fréchet distance between generated and real procedural images in the
network's feature space (the pooled middle layer), real images rendered for the same prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from hypernoise.errors import ConfigError
from hypernoise.metrics import frechet_distance  # the one Fréchet distance of the library
from hypernoise.world.grammar import CATEGORIES, COLORS, SHAPES, parse_prompt
from hypernoise.world.models import SegmentationNet
from hypernoise.world.render import make_dataset
from hypernoise.world.rules import satisfies
from hypernoise.world.weights import ASSETS, load_weights


class NetEnsemble(torch.nn.Module):
    """Segmentation networks averaged in probability: (log mean probs [B, 19, H, W], features of
    the first member [B, F]) -- the same outputs as one ``SegmentationNet``."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, images: torch.Tensor):
        outs = [m(images) for m in self.members]
        probs = torch.stack([o[0].softmax(1) for o in outs]).mean(0)
        return probs.clamp(min=1e-12).log(), outs[0][1]


@dataclass(frozen=True)
class Detection:
    shape: str
    color: str
    cx: float
    cy: float
    area: int
    confidence: float
    contrast: float


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """4-connected component ids [B, H, W] of a bool mask [B, H, W] (0 = background).

    Every foreground pixel starts with its own id and takes the largest id among its neighbours
    until nothing changes (at most H*W rounds; a few dozen for compact blobs).
    """
    b, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.long).view(1, h, w).expand(b, -1, -1) * mask
    while True:
        p = F.pad(ids, (1, 1, 1, 1))
        nxt = torch.stack([ids, p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]]).amax(0) * mask
        if torch.equal(nxt, ids):
            return ids
        ids = nxt


def _ring(component: torch.Tensor, foreground: torch.Tensor, width: int = 2) -> torch.Tensor:
    grown = F.max_pool2d(component[None, None].float(), 2 * width + 1, 1, width)[0, 0] > 0
    return grown & ~foreground


class WorldEvaluator(torch.nn.Module):
    """The detector + GenEval rules (see the module docstring). Images [B, 3, 32, 32] in [0, 1]."""

    def __init__(self, net: SegmentationNet, min_area: int = 12, min_contrast: float = 0.32,
                 min_confidence: float = 0.7):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.min_area, self.min_contrast, self.min_confidence = min_area, min_contrast, min_confidence

    @classmethod
    def from_pretrained(cls, path=None, **thresholds) -> "WorldEvaluator":
        path = Path(path) if path is not None else ASSETS / "evaluator.safetensors"
        meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
        arch, members = meta.get("net", {}), int(meta.get("members", 1))
        net = SegmentationNet(**arch) if members == 1 else NetEnsemble([SegmentationNet(**arch) for _ in range(members)])
        load_weights(net, path)
        return cls(net, **thresholds)

    def train(self, mode: bool = True) -> "WorldEvaluator":
        return super().train(False)

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> list[list[Detection]]:
        """Objects found in each image (see the module docstring)."""
        logits, _ = self.net(images.float().clamp(0, 1))
        probs = logits.softmax(1)
        fg = probs[:, 0] < 0.5
        comps = connected_components(fg)
        return [self._objects(images[i].float(), probs[i], fg[i], comps[i]) for i in range(len(images))]

    def _objects(self, image, probs, fg, comps) -> list[Detection]:
        cls = probs[1:].view(len(SHAPES), len(COLORS), *probs.shape[1:])
        cls = cls / cls.sum((0, 1), keepdim=True).clamp(min=1e-8)  # p(shape, colour | object pixel)
        out = []
        for cid in comps.unique():
            comp = comps == cid
            area = int(comp.sum())
            if cid == 0 or area < self.min_area:
                continue
            ring = _ring(comp, fg)
            if not ring.any():
                continue
            contrast = float((image[:, comp].mean(1) - image[:, ring].mean(1)).norm())
            shape_p = cls.sum(1)[:, comp].mean(1)
            color_p = cls.sum(0)[:, comp].mean(1)
            conf = float(shape_p.max())
            if contrast < self.min_contrast or conf < self.min_confidence:
                continue
            ys, xs = torch.nonzero(comp, as_tuple=True)
            out.append(Detection(SHAPES[int(shape_p.argmax())], COLORS[int(color_p.argmax())],
                                 float(xs.float().mean()) + 0.5, float(ys.float().mean()) + 0.5, area, conf, contrast))
        return out

    def evaluate_images(self, images: torch.Tensor, prompts: Sequence[str]) -> list[dict]:
        """Per-sample records ``{"prompt", "category", "correct", "objects"}`` under GenEval's rules."""
        if len(images) != len(prompts):
            raise ConfigError(f"{len(images)} images but {len(prompts)} prompts; give one prompt per image")
        specs = [parse_prompt(p) for p in prompts]
        records = []
        for i in range(0, len(images), 256):
            for spec, objs, p in zip(specs[i:i + 256], self.detect(images[i:i + 256]), prompts[i:i + 256]):
                records.append({"prompt": p, "category": spec.category, "correct": bool(satisfies(objs, spec)),
                                "objects": [f"{o.color} {o.shape}" for o in objs]})
        return records

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled middle-layer features [B, F] (the fidelity space)."""
        return torch.cat([self.net(images[i:i + 256].float().clamp(0, 1))[1] for i in range(0, len(images), 256)])

    def fidelity(self, images: torch.Tensor, reference: torch.Tensor) -> float:
        """Fréchet distance between ``images`` and ``reference`` images in feature space."""
        return frechet_distance(self.features(images).double(), self.features(reference).double())


_DEFAULT: dict = {}


def default_evaluator() -> WorldEvaluator:
    """The shipped evaluator, loaded once."""
    if "e" not in _DEFAULT:
        _DEFAULT["e"] = WorldEvaluator.from_pretrained()
    return _DEFAULT["e"]


def evaluate_images(images: torch.Tensor, prompts: Sequence[str], evaluator: Optional[WorldEvaluator] = None) -> list[dict]:
    """Per-sample GenEval records for images [B, 3, 32, 32] in [0, 1] and their prompts."""
    return (evaluator or default_evaluator()).evaluate_images(images, prompts)


def geneval_summary(records: Sequence[dict]) -> dict:
    """Per-category accuracy and overall = mean of the category means (categories without
    samples are left out of the mean and reported as None)."""
    out = {}
    for c in CATEGORIES:
        hits = [r["correct"] for r in records if r["category"] == c]
        out[c] = sum(hits) / len(hits) if hits else None
    present = [v for v in out.values() if v is not None]
    return {"overall": sum(present) / len(present) if present else None, **out}


def fidelity(images: torch.Tensor, prompts: Sequence[str], evaluator: Optional[WorldEvaluator] = None,
             seed: int = 12345) -> float:
    """Fréchet distance to real procedural images rendered (seeded) for the same prompts."""
    reference = make_dataset(len(prompts), seed=seed, prompts=list(prompts)).images
    return (evaluator or default_evaluator()).fidelity(images, reference)
