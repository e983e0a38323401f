"""HPSv2.1: the open_clip ViT-H-14 checkpoint mapped onto CLIPModel must score exactly as open_clip would.

The checkpoint has ViT-H-14's real widths (vision 1280 wide in 16 heads of 80, text 1024 wide in
16 heads of 64, 224 px in 14 px patches, projection 1024) at shallow depth. The reference is an
open_clip-style forward in plain torch (``reward_reference``) reading the ORIGINAL keys, with head
counts copied from open_clip's published model configs; it shares no code with the library.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from reward_reference import VIT_H_14, normalise_pixels, open_clip_image, open_clip_text, scaled_cosine

from hypernoise.errors import InputFileError, UnknownNameError
from hypernoise.rewards import build_reward
from hypernoise.rewards.hps import clip_config_from_open_clip, open_clip_architecture

PROMPTS = ["a red cube on a table", "two cats"]
TOLERANCE = 1e-4  # float32: the two implementations agree to ~1e-7
GRAD_TOLERANCE = 1e-4  # relative to the largest pixel gradient

#: open_clip's published src/open_clip/model_configs/<name>.json: vision width, patch, vision
#: head_width (64 where the file omits it), text width, text heads, embed_dim
OPEN_CLIP_CONFIGS = {
    "ViT-B-32": (768, 32, 64, 512, 8, 512),
    "ViT-B-16": (768, 16, 64, 512, 8, 512),
    "ViT-L-14": (1024, 14, 64, 768, 12, 768),
    "ViT-H-14": (1280, 14, 80, 1024, 16, 1024),
    "ViT-g-14": (1408, 14, 88, 1024, 16, 1024),
    "ViT-bigG-14": (1664, 14, 104, 1280, 20, 1280),
}


def reference_features(sd, tokenizer, images_01, prompts, arch=VIT_H_14):
    """open_clip's image and text features [B, 1024] (not normalised)."""
    ids = tokenizer(prompts, padding="max_length", max_length=arch["context"], truncation=True,
                    return_tensors="pt").input_ids
    return open_clip_image(sd, normalise_pixels(images_01), arch), open_clip_text(sd, ids, arch)


def reference_hps(sd, tokenizer, images_01, prompts, arch=VIT_H_14):
    """HPS's score: the cosine of open_clip's features, no logit scale."""
    return scaled_cosine(*reference_features(sd, tokenizer, images_01, prompts, arch))


def features_error(reward, reference, images):
    """Largest difference of the reward's normalised image / text features from the reference's."""
    with torch.no_grad():
        image, text = (f / f.norm(dim=-1, keepdim=True) for f in reference)
        return max((reward.image_features(images) - image).abs().max().item(),
                   (reward.text_features(PROMPTS) - text).abs().max().item())


@pytest.fixture(scope="module")
def tokenizer(clip_tokenizer_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(clip_tokenizer_dir)


@pytest.fixture(scope="module")
def hps(hps_checkpoint, clip_tokenizer_dir):
    return build_reward("hps:1", pretrained=hps_checkpoint, tokenizer=clip_tokenizer_dir)


@pytest.fixture(scope="module")
def fixed_images():
    return torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def reference(open_clip_state_dict, tokenizer, fixed_images):
    with torch.no_grad():
        return reference_features(open_clip_state_dict, tokenizer, fixed_images, PROMPTS)


def test_hps_matches_open_clip_reference_scores_and_pixel_gradients(hps, open_clip_state_dict, tokenizer,
                                                                    images_224):
    scores = hps(images_224, PROMPTS)
    (grad,) = torch.autograd.grad(scores.sum(), images_224)

    ref_images = images_224.detach().clone().requires_grad_(True)
    ref = reference_hps(open_clip_state_dict, tokenizer, ref_images, PROMPTS)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_images)

    assert scores.shape == (2,) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, ref.detach(), atol=TOLERANCE, rtol=0)
    assert grad.abs().max() > 0 and torch.isfinite(grad).all()
    torch.testing.assert_close(grad, ref_grad, atol=GRAD_TOLERANCE * ref_grad.abs().max().item(), rtol=0)


def test_a_20_head_reading_of_the_vision_tower_fails_the_comparison(hps, open_clip_state_dict, tokenizer,
                                                                   fixed_images):
    """Heads of width 64 (20 for the 1280-wide tower, the earlier conversion) change the score far
    beyond the tolerance: the comparison above can fail."""
    with torch.no_grad():
        twenty = reference_hps(open_clip_state_dict, tokenizer, fixed_images, PROMPTS, {**VIT_H_14, "vision_heads": 20})
        assert (hps(fixed_images, PROMPTS) - twenty).abs().max() > 50 * TOLERANCE


def _swap_text_qk(model):
    attn = model.text_model.encoder.layers[1].self_attn
    attn.q_proj.weight, attn.k_proj.weight = attn.k_proj.weight, attn.q_proj.weight


def _swap_vision_qk(model):
    attn = model.vision_model.encoder.layers[0].self_attn
    attn.q_proj.weight, attn.k_proj.weight = attn.k_proj.weight, attn.q_proj.weight


def _untranspose_text(model):  # square at ViT-H-14's widths; visual.proj (1280 x 1024) would not even load
    model.text_projection.weight.data = model.text_projection.weight.data.t().contiguous()


def _quick_gelu(model):
    from transformers.activations import ACT2FN

    for layer in model.text_model.encoder.layers:
        layer.mlp.activation_fn = ACT2FN["quick_gelu"]


def _twenty_vision_heads(model):
    for layer in model.vision_model.encoder.layers:
        layer.self_attn.num_heads, layer.self_attn.head_dim = 20, 64
        layer.self_attn.scale = 64 ** -0.5


@pytest.mark.parametrize("corrupt", [_swap_text_qk, _swap_vision_qk, _untranspose_text, _quick_gelu,
                                     _twenty_vision_heads])
def test_the_reference_comparison_catches_each_mapping_mistake(corrupt, hps, reference, fixed_images):
    """Each plausible conversion bug moves the features (unit vectors of 1024 entries of ~0.03)
    beyond the score tolerance, and by 1000 times the correct mapping's rounding (quick GELU for
    exact GELU, the smallest, by ~8e-4)."""
    reward = copy.deepcopy(hps.rewards[0])
    correct = features_error(reward, reference, fixed_images)
    corrupt(reward.model)
    reward.text_cache.clear()
    wrong = features_error(reward, reference, fixed_images)
    assert correct < 1e-6 and wrong > max(1000 * correct, 2 * TOLERANCE)


def test_hps_config_has_open_clips_published_heads_and_the_checkpoints_depth(hps):
    config = hps.rewards[0].model.config
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_attention_heads, vision.patch_size, vision.image_size) == (1280, 16, 14, 224)
    assert (text.hidden_size, text.num_attention_heads, config.projection_dim) == (1024, 16, 1024)
    assert (vision.num_hidden_layers, text.num_hidden_layers) == (1, 2)  # read off the shallow checkpoint
    assert vision.hidden_act == text.hidden_act == "gelu"
    assert text.eos_token_id == text.vocab_size - 1 and text.max_position_embeddings == 77


def shapes_only(vision_width, patch, text_width, embed, vocab=10, mlp=8):
    """An open_clip state dict of these widths on the meta device (shapes only, no memory)."""
    meta = dict(device="meta")
    return {"visual.conv1.weight": torch.empty(vision_width, 3, patch, patch, **meta),
            "visual.positional_embedding": torch.empty((224 // patch) ** 2 + 1, vision_width, **meta),
            "token_embedding.weight": torch.empty(vocab, text_width, **meta),
            "positional_embedding": torch.empty(77, text_width, **meta),
            "text_projection": torch.empty(text_width, embed, **meta),
            "visual.transformer.resblocks.0.mlp.c_fc.weight": torch.empty(mlp, vision_width, **meta),
            "transformer.resblocks.0.mlp.c_fc.weight": torch.empty(mlp, text_width, **meta),
            "logit_scale": torch.tensor(4.6)}


@pytest.mark.parametrize("name", sorted(OPEN_CLIP_CONFIGS))
def test_every_published_architecture_is_identified_with_its_published_heads(name):
    vision_width, patch, head_width, text_width, text_heads, embed = OPEN_CLIP_CONFIGS[name]
    state = shapes_only(vision_width, patch, text_width, embed)
    config = clip_config_from_open_clip(state)
    assert config.vision_config.num_attention_heads == vision_width // head_width
    assert config.text_config.num_attention_heads == text_heads
    assert clip_config_from_open_clip(state, name).to_dict() == config.to_dict()


def test_an_unknown_architecture_is_one_line_naming_its_shapes():
    with pytest.raises(InputFileError) as err:
        open_clip_architecture(shapes_only(1152, 14, 768, 768))
    message = str(err.value)
    assert "vision_width 1152" in message and "text_width 768" in message and "arch=" in message
    assert "\n" not in message


def test_a_named_architecture_must_have_the_checkpoints_widths():
    with pytest.raises(InputFileError, match="not a ViT-L-14.*vision_width 1280"):
        open_clip_architecture(shapes_only(1280, 14, 1024, 1024), "ViT-L-14")
    with pytest.raises(UnknownNameError, match="ViT-H-14"):
        open_clip_architecture(shapes_only(1280, 14, 1024, 1024), "ViT-X")


def test_hps_pads_non_square_images_like_open_clip(hps, open_clip_state_dict, tokenizer):
    """Long side to 224 with PIL bicubic, black padding split as open_clip's ResizeMaxSize does."""
    image = torch.rand(1, 3, 150, 250, generator=torch.Generator().manual_seed(5))
    new_h = round(150 * 224 / 250)  # 134
    channels = [np.asarray(Image.fromarray(c.numpy(), mode="F").resize((224, new_h), Image.BICUBIC))
                for c in image[0]]
    pad = 224 - new_h
    padded = torch.zeros(1, 3, 224, 224)
    padded[:, :, pad // 2:pad // 2 + new_h] = torch.from_numpy(np.stack(channels))
    with torch.no_grad():
        ref = reference_hps(open_clip_state_dict, tokenizer, padded, PROMPTS[:1])
        torch.testing.assert_close(hps(image, PROMPTS[:1]), ref, atol=1e-4, rtol=0)


def test_hps_is_frozen_in_eval_and_encodes_each_prompt_once(hps, fixed_images):
    reward = hps.rewards[0]
    assert not any(p.requires_grad for p in hps.parameters())
    hps.train()
    assert not any(m.training for m in hps.modules())

    calls = []
    handle = reward.model.text_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        reward.text_cache.clear()
        with torch.no_grad():
            first = hps(fixed_images, PROMPTS)
            second = hps(fixed_images.flip(0), PROMPTS[::-1])
    finally:
        handle.remove()
    assert len(calls) == 1  # the second call reused both cached prompts
    torch.testing.assert_close(first.flip(0), second)


def test_hps_vision_checkpointing_recomputes_layers_with_identical_results(hps_checkpoint, clip_tokenizer_dir,
                                                                          hps, images):
    ckpt = build_reward("hps:1", pretrained=hps_checkpoint, tokenizer=clip_tokenizer_dir, gradient_checkpointing=True)
    runs = []
    layer = ckpt.rewards[0].model.vision_model.encoder.layers[0]
    handle = layer.layer.register_forward_pre_hook(lambda *a: runs.append(1))
    try:
        scores = ckpt(images[:1], PROMPTS[:1])
        (grad,) = torch.autograd.grad(scores.sum(), images)
    finally:
        handle.remove()
    plain = hps(images[:1], PROMPTS[:1])
    (plain_grad,) = torch.autograd.grad(plain.sum(), images)
    assert len(runs) == 2  # once forward, once recomputed during backward
    torch.testing.assert_close(scores, plain)
    torch.testing.assert_close(grad, plain_grad)
