"""GenEval's colour classifier: zero-shot CLIP ViT-L/14 (OpenAI weights) over the ten colours.

What ``evaluation/evaluate_images.py`` (djghosh13/geneval at 16f1681) does with open_clip 2.20 and
clip_benchmark 1.4.0, on transformers' ``CLIPModel``:

    object_crops(image, objects, bgcolor, crop) -> [PIL image]      ImageCrops, :81-106
    clip_pixels(image, size) -> [3, size, size]                     open_clip's eval image_transform
    ColourClassifier(model, tokenizer)(image, objects, classname) -> [colour]     :109-127
        .classifier(classname) -> [D, 10]     clip_benchmark's zero_shot_classifier, cached per class
        .logits(image, objects, classname) -> [N, 10]   clip_benchmark's run_classification
    load_colour_classifier(source, device, dtype, options)

Each object (box, mask) is pasted through its mask onto a flat ``bgcolor`` background (or the
image itself for "original"), cropped to its box, resized (short side 224, bicubic, PIL) and
centre-cropped, then classified: argmax over colours of 100 * cos(image, colour prompt ensemble),
the ensemble being the renormalised mean of "a photo of a {c} {classname}", "a photo of a
{c}-colored {classname}" and "a photo of a {c} object". The weights must be OpenAI's (QuickGELU),
as open_clip's ``pretrained="openai"`` builds them; ``openai/clip-vit-large-patch14`` on the Hub
holds the same tensors. No threshold lives here: the rules (``rules.py``) decide.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hypernoise.devices import parse_dtype, resolve_device
from hypernoise.errors import InputFileError
from hypernoise.geneval.metadata import COLORS
from hypernoise.geneval.rules import GenEvalOptions
from hypernoise.rewards.clip import OPENAI_VIT_L, load_clip_model, load_clip_tokenizer
from hypernoise.rewards.hub import load_pretrained
from hypernoise.rewards.preprocess import CLIP_MEAN, CLIP_STD

#: :113-117, formatted with c = each colour
COLOUR_TEMPLATES = ("a photo of a {c} {classname}", "a photo of a {c}-colored {classname}", "a photo of a {c} object")
#: :123, the DataLoader's batch size (results do not depend on it)
BATCH_SIZE = 16
#: open_clip's ``create_model_and_transforms(clip_arch, pretrained="openai")``, :66-67
CLIP_ARCH = "ViT-L-14"
_USUAL = f"hub {OPENAI_VIT_L}"


# ----------------------------------------------------------------------------------- images
def object_crops(image: Image.Image, objects: Sequence, bgcolor: str = "#999", crop: bool = True) -> list:
    """What the classifier sees of each object (ImageCrops, :81-106): the RGB image where the
    object's bool mask [H, W] is set, ``bgcolor`` elsewhere (the image itself for "original"; the
    whole image when the mask is None), then ``crop(box[:4])`` when ``crop`` (PIL rounds the
    float coordinates half to even). objects: [(box [>=4], mask or None)] -> [PIL RGB image]."""
    rgb = image.convert("RGB")
    blank = rgb.copy() if bgcolor == "original" else Image.new("RGB", image.size, color=bgcolor)
    return [_object_view(rgb, blank, box, mask, crop) for box, mask in objects]


def _object_view(rgb: Image.Image, blank: Image.Image, box, mask, crop: bool) -> Image.Image:
    view = rgb
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != rgb.size[::-1]:
            raise ValueError(f"a mask of shape {mask.shape} for an image of {rgb.size[1]} x {rgb.size[0]} pixels")
        view = Image.composite(rgb, blank, Image.fromarray(mask))
    if not crop:
        return view
    view = view.crop(tuple(np.asarray(box)[:4]))  # Pillow >= 10 wants a tuple; 9.4 took the array
    if min(view.size) == 0:
        raise ValueError(f"box {np.asarray(box)[:4].tolist()} crops to {view.size[0]} x {view.size[1]} pixels")
    return view


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """torchvision's ``Resize(size)`` on a PIL image (0.13, as open_clip 2.20 calls it): the short
    side to ``size``, the long side to ``int(size * long / short)``, PIL bicubic; unchanged when
    that is its size already."""
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)
    target = (size, new_long) if w <= h else (new_long, size)
    return image if target == (w, h) else image.resize(target, Image.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's ``CenterCrop(size)`` on a PIL image at least ``size`` on each side: offsets
    ``int(round((side - size) / 2))`` (Python's round, half to even)."""
    w, h = image.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def clip_pixels(image: Image.Image, size: int = 224) -> torch.Tensor:
    """open_clip's eval transform (Resize, CenterCrop, RGB, ToTensor, Normalize with OpenAI's
    mean / std): a PIL image -> float32 [3, size, size]."""
    image = center_crop(resize_short_side(image, size), size).convert("RGB")
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


# ----------------------------------------------------------------------------------- classifier
class ColourClassifier:
    """GenEval's ``color_classification`` (:109-127) as a ``colour_fn`` for the rules:
    ``(image, objects, classname) -> [colour of each object]``.

    Args:
        model: a transformers ``CLIPModel`` (OpenAI ViT-L/14, QuickGELU, for GenEval's numbers).
        tokenizer: its ``CLIPTokenizer``.
        bgcolor, crop: how objects are cut out (``GenEvalOptions``' fields of the same names).
        batch_size: crops per forward pass (does not change the results).
        autocast: run the towers under float16 autocast on CUDA, as clip_benchmark does by
            default (``amp=True``) in the original; off: the model's own dtype (float32 by
            default: open_clip's float32 logits within 1e-4). Ignored off CUDA, as in the original.
        colours: the classes (default ``COLORS``, whose order breaks ties).
    """

    def __init__(self, model, tokenizer, *, bgcolor: str = "#999", crop: bool = True,
                 batch_size: int = BATCH_SIZE, autocast: bool = False, colours: Sequence[str] = COLORS):
        GenEvalOptions(bgcolor=bgcolor, crop=crop)  # the same checks as the options (ConfigError)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.bgcolor, self.crop = bgcolor, crop
        self.batch_size, self.autocast = batch_size, autocast
        self.colours = tuple(colours)
        self.image_size = model.config.vision_config.image_size
        self.context = model.config.text_config.max_position_embeddings
        self._classifiers: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.model.visual_projection.weight.device

    def _amp(self):
        enabled = self.autocast and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=enabled)

    @torch.no_grad()
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        """open_clip's ``encode_text``: texts -> projected end-of-text states [T, D] (float32)."""
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.context, truncation=True,
                                return_tensors="pt").to(self.device)
        with self._amp():
            pooled = self.model.text_model(input_ids=tokens.input_ids,
                                           attention_mask=tokens.attention_mask).pooler_output
            return self.model.text_projection(pooled).float()

    def classifier(self, classname: str) -> torch.Tensor:
        """clip_benchmark's ``zero_shot_classifier`` for ``classname`` -> [D, colours] (float32,
        cached): per colour, the mean of the three templates' unit text embeddings, renormalised."""
        if classname not in self._classifiers:
            texts = [t.format(c=c, classname=classname) for c in self.colours for t in COLOUR_TEMPLATES]
            feats = self._text_features(texts).view(len(self.colours), len(COLOUR_TEMPLATES), -1)
            mean = F.normalize(feats, dim=-1).mean(dim=1)
            self._classifiers[classname] = (mean / mean.norm(dim=-1, keepdim=True)).T.contiguous()
        return self._classifiers[classname]

    @torch.no_grad()
    def _image_logits(self, pixels: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
        """clip_benchmark's ``run_classification`` on one batch: 100 * unit image features @
        classifier -> [B, colours] float32."""
        weight = self.model.visual_projection.weight
        with self._amp():
            pooled = self.model.vision_model(pixel_values=pixels.to(weight.device, weight.dtype)).pooler_output
            feats = F.normalize(self.model.visual_projection(pooled).float(), dim=-1)
            return (100.0 * feats @ classifier).float()

    def logits(self, image: Image.Image, objects: Sequence, classname: str) -> torch.Tensor:
        """Per-colour logits of each object [N, colours] (float32, on the model's device)."""
        if not objects:
            return torch.zeros(0, len(self.colours), device=self.device)
        crops = object_crops(image, objects, self.bgcolor, self.crop)
        pixels = torch.stack([clip_pixels(c, self.image_size) for c in crops])
        classifier = self.classifier(classname)
        return torch.cat([self._image_logits(pixels[i:i + self.batch_size], classifier)
                          for i in range(0, len(pixels), self.batch_size)])

    def __call__(self, image: Image.Image, objects: Sequence, classname: str) -> list[str]:
        """The colour of each object: argmax of ``logits`` (the first colour on a tie, :127)."""
        return [self.colours[i] for i in self.logits(image, objects, classname).argmax(1).tolist()]


# ----------------------------------------------------------------------------------- loading
def check_quick_gelu(config, *, what: str) -> None:
    """Refuse a CLIP config whose towers do not use QuickGELU: OpenAI's weights were trained with
    it and open_clip's ``pretrained="openai"`` builds it; exact GELU moves features by ~3e-2."""
    acts = {tower: getattr(config, f"{tower}_config").hidden_act for tower in ("vision", "text")}
    wrong = {tower: act for tower, act in acts.items() if act != "quick_gelu"}
    if wrong:
        named = ", ".join(f"{tower} hidden_act {act!r}" for tower, act in wrong.items())
        raise InputFileError(f"{what}: config.json gives {named}, but GenEval's CLIP (OpenAI weights) uses "
                             f"quick_gelu; use {OPENAI_VIT_L}'s own config.json")


def load_colour_classifier(source: str = OPENAI_VIT_L, device=None, dtype=None,
                           options: Optional[GenEvalOptions] = None, *, tokenizer: Optional[str] = None,
                           cache_dir=None, arch: Optional[str] = CLIP_ARCH, batch_size: int = BATCH_SIZE,
                           autocast: bool = False) -> ColourClassifier:
    """The colour classifier on a ``CLIPModel``: a local folder (config.json, weights, tokenizer
    files) or a Hub id through the Hugging Face cache (default openai/clip-vit-large-patch14).

    The config must be ``arch``'s (default ViT-L-14: widths and heads, ``InputFileError``
    otherwise; None: any published CLIP) with QuickGELU in both towers. ``tokenizer``: default the
    folder's own, else the Hub's openai/clip-vit-large-patch14. ``device``: default the first
    accelerator; ``dtype``: default float32. ``options``: bgcolor and crop (default GenEval's).
    A missing source is a one-line ``WeightsNotFoundError``."""
    from transformers import CLIPConfig

    what = "GenEval colour classifier"
    config = load_pretrained(CLIPConfig, str(source), what=what, usual=_USUAL, cache_dir=cache_dir)
    check_quick_gelu(config, what=f"{what} {source}")  # before the weights load
    model = load_clip_model(str(source), what=what, usual=_USUAL, cache_dir=cache_dir, arch=arch,
                            fix=f"use {OPENAI_VIT_L}'s own config.json")
    default_tokenizer = OPENAI_VIT_L if os.path.isdir(os.path.expanduser(str(source))) else str(source)
    tok = load_clip_tokenizer(tokenizer, os.path.expanduser(str(source)), default_tokenizer, what=what,
                              cache_dir=cache_dir, vocab_size=model.config.text_config.vocab_size)
    model.to(device=resolve_device(device), dtype=parse_dtype(dtype) or torch.float32)
    options = options or GenEvalOptions()
    return ColourClassifier(model, tok, bgcolor=options.bgcolor, crop=options.crop, batch_size=batch_size,
                            autocast=autocast)
