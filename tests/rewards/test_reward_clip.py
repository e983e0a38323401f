"""CLIP score and PickScore: exp(logit_scale) * cos, on CLIP's crop preprocessing.

At the real widths of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (also PickScore_v1's architecture) and
openai/clip-vit-large-patch14, one layer per tower, the reference is a plain-torch CLIP forward
(``reward_reference``) over the folder's tensors with heads and activations copied from the
published config.json files. The crop preprocessing is checked on a tiny model against
``CLIPModel.forward``'s ``logits_per_image`` fed pixels prepared with PIL and numpy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from reward_reference import VIT_H_14, VIT_L_14_OPENAI, hf_clip_image, hf_clip_text, normalise_pixels, scaled_cosine

from hypernoise.errors import InputFileError, WeightsNotFoundError
from hypernoise.rewards import build_reward

IMAGE, CONTEXT = 32, 16  # the tiny CLIPModel's sizes (conftest.py)
PROMPTS = ["a red cube on a table", "two cats"]
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


TOLERANCE = 1e-4
GRAD_TOLERANCE = 1e-4  # relative to the largest pixel gradient
#: reward, folder fixture, the published architecture of the folder
REAL_WIDTHS = {"clip-laion-vit-h": ("clip", "laion_vit_h_dir", VIT_H_14),
               "pickscore-vit-h": ("pickscore", "laion_vit_h_dir", VIT_H_14),
               "clip-openai-vit-l": ("clip", "openai_vit_l_dir", VIT_L_14_OPENAI)}


def reference_clip_score(folder, tokenizer, images_01, prompts, arch):
    """exp(logit_scale) * cos of the folder's CLIPModel tensors, images at 224 px."""
    from safetensors.torch import load_file

    sd = load_file(str(folder / "model.safetensors"))
    ids = tokenizer(prompts, padding="max_length", max_length=arch["context"], truncation=True,
                    return_tensors="pt").input_ids
    image, text = hf_clip_image(sd, normalise_pixels(images_01), arch), hf_clip_text(sd, ids, arch)
    return scaled_cosine(image, text, sd["logit_scale"].exp())


@pytest.mark.parametrize("case", sorted(REAL_WIDTHS))
def test_scores_and_pixel_gradients_match_the_reference_at_real_widths(case, request, clip_tokenizer_dir,
                                                                       images_224):
    from transformers import CLIPTokenizer

    name, fixture, arch = REAL_WIDTHS[case]
    folder = request.getfixturevalue(fixture)
    reward = build_reward(name, pretrained=folder)
    scores = reward(images_224, PROMPTS)
    (grad,) = torch.autograd.grad(scores.sum(), images_224)
    ref_images = images_224.detach().clone().requires_grad_(True)
    ref = reference_clip_score(folder, CLIPTokenizer.from_pretrained(clip_tokenizer_dir), ref_images, PROMPTS, arch)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_images)

    assert reward.rewards[0].scale == pytest.approx(100.0)  # exp(logit_scale), as ReNO uses these rewards
    torch.testing.assert_close(scores, ref.detach(), atol=TOLERANCE, rtol=0)
    assert grad.abs().max() > 0
    torch.testing.assert_close(grad, ref_grad, atol=GRAD_TOLERANCE * ref_grad.abs().max().item(), rtol=0)


def _with_config(folder, target, **changes):
    """``folder`` with its tensors and tokenizer linked and config.json changed (``vision_config``, ``text_config``)."""
    target.mkdir()
    for f in folder.iterdir():
        if f.name != "config.json":
            (target / f.name).symlink_to(f)
    config = json.loads((folder / "config.json").read_text())
    for tower, values in changes.items():
        config[tower].update(values)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("name", ["clip", "pickscore"])
def test_a_folder_whose_config_has_the_wrong_head_count_is_refused(name, laion_vit_h_dir, clip_tokenizer_dir,
                                                                   tmp_path):
    """20 vision heads (heads of 64) for ViT-H-14's 1280-wide tower: the score would differ by far
    more than rounding, so such a folder is refused with one line, not scored."""
    from transformers import CLIPTokenizer

    wrong = _with_config(laion_vit_h_dir, tmp_path / "wrong", vision_config={"num_attention_heads": 20})
    with pytest.raises(InputFileError) as err:
        build_reward(name, pretrained=wrong)
    message = str(err.value)
    assert "vision tower 20 heads" in message and "ViT-H-14" in message and "convert-reward" in message
    assert "\n" not in message

    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    tok = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    with torch.no_grad():
        right = build_reward(name, pretrained=laion_vit_h_dir)(images, PROMPTS[:1])
        twenty = reference_clip_score(laion_vit_h_dir, tok, images, PROMPTS[:1], {**VIT_H_14, "vision_heads": 20})
    assert (right - twenty).abs().max() > 50 * TOLERANCE


def test_a_folder_with_unpublished_widths_keeps_its_configs_heads(clip_model_dir):
    """Heads are in config.json; only the published architectures' are checked."""
    config = build_reward("clip", pretrained=clip_model_dir).rewards[0].model.config
    assert config.vision_config.num_attention_heads == 2 and config.vision_config.hidden_size == 64


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
