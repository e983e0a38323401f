"""Reward preprocessing on tensors must reproduce PIL + torchvision's pipelines, with gradients.

The reference resizes each channel with PIL's own bicubic filter (mode "F", 32-bit float) and
crops / pads with numpy index arithmetic written out here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hypernoise.rewards.preprocess import CLIP_MEAN, CLIP_STD, ImageTransform, PromptCache, resize_bicubic

MEAN = np.array(CLIP_MEAN, dtype=np.float32).reshape(3, 1, 1)
STD = np.array(CLIP_STD, dtype=np.float32).reshape(3, 1, 1)


def pil_resize(image: torch.Tensor, height: int, width: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(c.numpy(), mode="F").resize((width, height), Image.BICUBIC))
                     for c in image])


def reference_crop(image: torch.Tensor, size: int) -> np.ndarray:
    """torchvision Resize(size) (short side, long side truncated) + CenterCrop(size), then normalise."""
    h, w = image.shape[-2:]
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    resized = pil_resize(image, nh, nw)
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    return (resized[:, top:top + size, left:left + size] - MEAN) / STD


def reference_pad(image: torch.Tensor, size: int) -> np.ndarray:
    """open_clip ResizeMaxSize(size, fill=0): long side to size, black border split floor/ceil."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    out = np.zeros((3, size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[:, top:top + nh, left:left + nw] = pil_resize(image, nh, nw)
    return (out - MEAN) / STD


@pytest.mark.parametrize("shape", [(64, 64), (40, 90), (90, 41), (17, 23)])
@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_transform_matches_pil_bicubic_with_crop_or_pad(fit, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    images = torch.rand(2, 3, *shape, generator=gen)
    reference = reference_crop if fit == "crop" else reference_pad
    out = ImageTransform(size=32, fit=fit)(images)
    expected = torch.from_numpy(np.stack([reference(im, 32) for im in images]))
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)  # 1e-5 in [0, 1] units, / std


def test_resize_without_antialias_would_not_match_pil():
    """The reason for antialias=True: plain bicubic downscaling differs from PIL by far more."""
    image = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    ours = resize_bicubic(image, 24, 24)[0].numpy()
    plain = torch.nn.functional.interpolate(image, size=(24, 24), mode="bicubic", align_corners=False)[0].numpy()
    pil = pil_resize(image[0], 24, 24)
    assert np.abs(ours - pil).max() < 1e-5
    assert np.abs(plain - pil).max() > 1e-2


def test_pad_leaves_a_black_border_and_passes_gradients_only_from_the_image():
    images = torch.rand(1, 3, 20, 40, requires_grad=True)
    out = ImageTransform(size=32, fit="pad")(images)
    black = torch.from_numpy((0 - MEAN) / STD).view(1, 3, 1, 1).float()
    torch.testing.assert_close(out[:, :, :8], black.expand(1, 3, 8, 32))  # 16 rows of image, 8 above, 8 below
    torch.testing.assert_close(out[:, :, 24:], black.expand(1, 3, 8, 32))
    out.sum().backward()
    assert torch.isfinite(images.grad).all() and (images.grad != 0).all()


def test_transform_rejects_non_rgb_batches_and_unknown_fits():
    with pytest.raises(ValueError, match="B, 3, H, W"):
        ImageTransform()(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="crop, pad"):
        ImageTransform(fit="stretch")


def test_prompt_cache_encodes_each_prompt_once_and_evicts_the_oldest():
    seen = []

    def encode(prompts):
        seen.append(list(prompts))
        return torch.tensor([[float(len(p))] for p in prompts])

    cache = PromptCache(maxsize=2)
    out = cache.get(["aa", "b", "aa"], encode)
    assert seen == [["aa", "b"]] and out.squeeze(1).tolist() == [2.0, 1.0, 2.0]
    cache.get(["b", "aa"], encode)
    assert len(seen) == 1
    cache.get(["ccc"], encode)  # "b" is the least recently used
    assert len(cache) == 2
    cache.get(["aa"], encode)
    cache.get(["b"], encode)
    assert seen[-1] == ["b"] and len(seen) == 3
