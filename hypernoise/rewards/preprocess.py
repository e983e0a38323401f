"""Reward-model inputs built with differentiable torch ops, and a cache of prompt encodings.

Reward models were trained on images prepared by PIL + torchvision; the same steps are done here
on tensors so gradients reach the pixels:

    images [B, 3, H, W] in [0, 1]
      -> resize (bicubic, antialiased: matches PIL's bicubic within ~1e-5; without antialias the
         error is up to ~0.1)
      -> fit to a square: "crop" (short side to `size`, centre crop; CLIP, PickScore,
         ImageReward, aesthetic) or "pad" (long side to `size`, zero-pad to a square; HPSv2)
      -> normalise with the model's mean / std
      -> pixel_values [B, 3, size, size]

No clamping: it would zero the gradient of out-of-range pixels.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

#: OpenAI CLIP's normalisation, shared by every reward model here.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_bicubic(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bicubic resize of [B, C, H, W] to [B, C, height, width]; a no-op at equal size."""
    if tuple(images.shape[-2:]) == (height, width):
        return images
    return F.interpolate(images, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


def resize_short_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the short side is ``size``; the long side keeps the aspect ratio (truncated, as
    torchvision's ``Resize(size)``)."""
    h, w = images.shape[-2:]
    if h <= w:
        return resize_bicubic(images, size, int(size * w / h))
    return resize_bicubic(images, int(size * h / w), size)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window (offsets rounded as torchvision's ``CenterCrop``)."""
    h, w = images.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top:top + size, left:left + size]


def resize_long_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the long side is ``size`` (open_clip's ``ResizeMaxSize``: sides rounded)."""
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    return resize_bicubic(images, round(h * scale), round(w * scale))


def pad_to_square(images: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
    """Pad [.., h, w] (h, w <= size) to [.., size, size], the extra split as open_clip does:
    half (rounded down) before, the rest after."""
    h, w = images.shape[-2:]
    pad_h, pad_w = size - h, size - w
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)


def crop_fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Short side to ``size``, then centre crop: CLIP's and BLIP's evaluation transform."""
    return center_crop(resize_short_side(images, size), size)


def pad_fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Long side to ``size``, then pad with black (0 before normalisation): HPSv2's transform."""
    return pad_to_square(resize_long_side(images, size), size)


#: how an image of any aspect ratio is brought to the model's square input
FITS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"crop": crop_fit, "pad": pad_fit}


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel, for [B, 3, H, W]."""
    mean_t = images.new_tensor(mean).view(1, -1, 1, 1)
    std_t = images.new_tensor(std).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


@dataclass(frozen=True)
class ImageTransform:
    """A reward model's preprocessing: images [B, 3, H, W] in [0, 1] -> pixel values
    [B, 3, size, size], computed in float32 (bicubic kernels are not exact in bf16)."""

    size: int = 224
    fit: str = "crop"
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"unknown fit {self.fit!r}; choose one of: {', '.join(FITS)}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
        square = FITS[self.fit](images.float(), self.size)
        return normalize(square, self.mean, self.std)


class PromptCache:
    """Per-prompt encodings (text features, token ids), computed once and reused.

    Least recently used entries are dropped beyond ``maxsize``. Entries are stored detached on the
    device they were computed on; ``get`` returns the rows for ``prompts`` stacked, [B, ...].
    """

    def __init__(self, maxsize: int = 4096):
        self.maxsize = maxsize
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, prompts: Sequence[str], encode: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """Rows for ``prompts``; ``encode(list_of_new_prompts) -> [n, ...]`` fills the misses once."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._entries))
        if missing:
            for prompt, row in zip(missing, encode(missing).detach()):
                self._entries[prompt] = row
        rows = []
        for prompt in prompts:
            self._entries.move_to_end(prompt)
            rows.append(self._entries[prompt])
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return torch.stack(rows)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
