"""Aesthetic: LAION's head on normalised CLIP image embeddings, head file chosen by name.

At the real widths (OpenAI ViT-L/14 image tower, one layer, 768-d projection; head
768-1024-128-64-16-1) the reference is a plain-torch forward (``reward_reference``) of the
folder's tensors with heads and quick GELU copied from openai/clip-vit-large-patch14's config.json.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from reward_reference import VIT_L_14_OPENAI, hf_clip_image, mlp_head, normalise_pixels

from hypernoise.errors import InputFileError, WeightsNotFoundError
from hypernoise.rewards import build_reward

IMAGE = 32
TOLERANCE = 1e-4
GRAD_TOLERANCE = 1e-4  # relative to the largest pixel gradient


def reference_aesthetic_224(clip_dir, head_path, images_01, arch=VIT_L_14_OPENAI):
    """head(e / |e|) with e the folder's projected image embedding, images at 224 px."""
    from safetensors.torch import load_file

    embeds = hf_clip_image(load_file(str(clip_dir / "model.safetensors")), normalise_pixels(images_01), arch)
    return mlp_head(F.normalize(embeds, dim=-1), torch.load(head_path))


def test_aesthetic_matches_the_reference_at_real_widths(aesthetic_head_file, openai_vit_l_dir, images_224):
    reward = build_reward("aesthetic", pretrained=aesthetic_head_file, clip_pretrained=openai_vit_l_dir)
    scores = reward(images_224, ["ignored", "prompts"])
    (grad,) = torch.autograd.grad(scores.sum(), images_224)
    ref_images = images_224.detach().clone().requires_grad_(True)
    ref = reference_aesthetic_224(openai_vit_l_dir, aesthetic_head_file, ref_images)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_images)

    torch.testing.assert_close(scores, ref.detach(), atol=TOLERANCE, rtol=0)
    assert grad.abs().max() > 0
    torch.testing.assert_close(grad, ref_grad, atol=GRAD_TOLERANCE * ref_grad.abs().max().item(), rtol=0)
    with torch.no_grad():  # the comparison can fail: exact GELU or 8 heads instead of the published ones
        for wrong in ({**VIT_L_14_OPENAI, "act": "gelu"}, {**VIT_L_14_OPENAI, "vision_heads": 8}):
            other = reference_aesthetic_224(openai_vit_l_dir, aesthetic_head_file, images_224, wrong)
            assert (scores - other).abs().max() > 50 * TOLERANCE


def test_an_image_tower_whose_config_has_the_wrong_head_count_is_refused(aesthetic_head_file, openai_vit_l_dir,
                                                                         tmp_path):
    folder = tmp_path / "tower"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(openai_vit_l_dir / "model.safetensors")
    config = json.loads((openai_vit_l_dir / "config.json").read_text())
    config["vision_config"]["num_attention_heads"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputFileError, match="vision tower 8 heads, but ViT-L-14 has vision 16"):
        build_reward("aesthetic", pretrained=aesthetic_head_file, clip_pretrained=folder)


def reference_aesthetic(clip_dir, head_path, images):
    """CLIPModel.forward's normalised ``image_embeds`` through the head's raw tensors."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(clip_dir)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    ids = torch.tensor([[model.config.text_config.eos_token_id]] * len(images))
    embeds = model(input_ids=ids, pixel_values=(images - mean) / std).image_embeds
    head = torch.load(head_path)
    for i in (0, 2, 4, 6, 7):
        embeds = embeds @ head[f"layers.{i}.weight"].T + head[f"layers.{i}.bias"]
    return embeds[:, 0]


@pytest.mark.parametrize("head_file", ["sac+logos+ava1-l14-linearMSE.pth", "ava+logos-l14-linearMSE.pth"])
def test_aesthetic_scores_the_chosen_head_on_normalised_embeddings(head_file, aesthetic_heads, clip_model_dir):
    reward = build_reward("aesthetic", pretrained=aesthetic_heads, head_file=head_file, clip_pretrained=clip_model_dir)
    images = torch.rand(2, 3, IMAGE, IMAGE, requires_grad=True)
    scores = reward(images, ["ignored", "prompts"])
    (grad,) = torch.autograd.grad(scores.sum(), images)
    with torch.no_grad():
        ref = reference_aesthetic(clip_model_dir, aesthetic_heads / head_file, images)
    assert scores.shape == (2,)
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_the_default_head_is_sac_logos_ava1(aesthetic_heads, clip_model_dir):
    images = torch.rand(1, 3, IMAGE, IMAGE)
    default = build_reward("aesthetic", pretrained=aesthetic_heads, clip_pretrained=clip_model_dir)
    explicit = build_reward("aesthetic", pretrained=aesthetic_heads / "sac+logos+ava1-l14-linearMSE.pth",
                            clip_pretrained=clip_model_dir)
    other = build_reward("aesthetic", pretrained=aesthetic_heads / "ava+logos-l14-linearMSE.pth",
                         clip_pretrained=clip_model_dir)
    with torch.no_grad():
        torch.testing.assert_close(default(images, [""]), explicit(images, [""]))
        assert (default(images, [""]) - other(images, [""])).abs().max() > 1e-3


def test_missing_head_names_the_file_and_where_to_get_it():
    with pytest.raises(WeightsNotFoundError) as err:
        build_reward("aesthetic")
    message = str(err.value)
    assert "sac+logos+ava1-l14-linearMSE.pth" in message and "improved-aesthetic-predictor" in message
    assert "\n" not in message


def test_a_head_of_the_wrong_width_is_refused(tmp_path, clip_model_dir):
    widths = [768, 1024, 128, 64, 16, 1]  # the released heads: ViT-L/14's 768-d embeddings
    head = {}
    for i, (a, b) in zip((0, 2, 4, 6, 7), zip(widths[:-1], widths[1:])):
        head[f"layers.{i}.weight"], head[f"layers.{i}.bias"] = torch.randn(b, a), torch.randn(b)
    torch.save(head, tmp_path / "head.pth")
    with pytest.raises(InputFileError, match="768"):
        build_reward("aesthetic", pretrained=tmp_path / "head.pth", clip_pretrained=clip_model_dir)
