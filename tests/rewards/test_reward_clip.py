"""CLIP score and PickScore: exp(logit_scale) * cos, on CLIP's crop preprocessing.

Reference: ``CLIPModel.forward``'s ``logits_per_image`` diagonal (its own scaling and
normalisation), fed pixels prepared with PIL bicubic resizing and a numpy centre crop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hypernoise.errors import WeightsNotFoundError
from hypernoise.rewards import build_reward

IMAGE, CONTEXT = 32, 16  # the tiny CLIPModel's sizes (conftest.py)
PROMPTS = ["a red cube on a table", "two cats"]
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def pil_crop_pixels(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> CLIP pixel values: PIL bicubic short side to 32, centre crop, normalise."""
    h, w = image.shape[-2:]
    size = (int(IMAGE * w / h), IMAGE) if h <= w else (IMAGE, int(IMAGE * h / w))  # PIL takes (w, h)
    channels = np.stack([np.asarray(Image.fromarray(c.numpy(), mode="F").resize(size, Image.BICUBIC))
                         for c in image.detach()])
    top, left = round((size[1] - IMAGE) / 2), round((size[0] - IMAGE) / 2)
    crop = channels[:, top:top + IMAGE, left:left + IMAGE]
    return torch.from_numpy((crop - MEAN) / STD)


def reference_scores(model_dir, images, prompts):
    from transformers import CLIPModel, CLIPTokenizer

    model, tok = CLIPModel.from_pretrained(model_dir), CLIPTokenizer.from_pretrained(model_dir)
    pixels = torch.stack([pil_crop_pixels(im) for im in images])
    ids = tok(prompts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=pixels)
    return out.logits_per_image.diag()


@pytest.mark.parametrize("name", ["clip", "pickscore"])
def test_scores_are_scaled_cosines_of_the_model_on_cropped_images(name, clip_model_dir):
    reward = build_reward(f"{name}:1", pretrained=clip_model_dir)
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 40, 56, generator=gen).requires_grad_(True)  # wider than tall: crop needed

    scores = reward(images, PROMPTS)
    (grad,) = torch.autograd.grad(scores.sum(), images)

    assert scores.shape == (2,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, reference_scores(clip_model_dir, images, PROMPTS), atol=1e-3, rtol=1e-4)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    # the crop discards the left and right borders: they get no gradient
    assert grad[..., :2].abs().max() == 0 and grad[..., 20:36].abs().sum() > 0


def test_pickscore_default_tokenizer_is_laion_and_a_given_one_wins(clip_model_dir, clip_tokenizer_dir, monkeypatch):
    """A folder's own tokenizer is used; without one, PickScore asks for LAION's (offline here)."""
    import shutil

    bare = clip_model_dir.parent / "pickscore_bare"
    if not bare.exists():
        bare.mkdir()
        for f in ("config.json", "model.safetensors"):
            shutil.copy(clip_model_dir / f, bare / f)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
        build_reward("pickscore", pretrained=bare, cache_dir=bare.parent / "empty_cache")
    reward = build_reward("pickscore", pretrained=bare, tokenizer=clip_tokenizer_dir)
    assert reward(torch.rand(1, 3, IMAGE, IMAGE), PROMPTS[:1]).shape == (1,)


def test_clip_moves_to_a_dtype_and_keeps_float32_scores(clip_model_dir):
    reward = build_reward("clip", pretrained=clip_model_dir, dtype=torch.bfloat16)
    images = torch.rand(2, 3, IMAGE, IMAGE, requires_grad=True)
    scores = reward(images, PROMPTS)
    scores.sum().backward()
    assert next(reward.parameters()).dtype == torch.bfloat16
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert images.grad is not None and torch.isfinite(images.grad).all()


def test_prompt_count_must_match_images(clip_model_dir):
    reward = build_reward("clip", pretrained=clip_model_dir)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        reward(torch.rand(2, 3, IMAGE, IMAGE), PROMPTS[:1])
