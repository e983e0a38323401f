"""Aesthetic: LAION's head on normalised CLIP image embeddings, head file chosen by name."""

from __future__ import annotations

import pytest
import torch

from hypernoise.errors import InputFileError, WeightsNotFoundError
from hypernoise.rewards import build_reward

IMAGE = 32


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
