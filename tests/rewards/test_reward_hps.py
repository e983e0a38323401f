"""HPSv2.1: the open_clip checkpoint mapped onto CLIPModel must score exactly as open_clip would.

The reference below is an independent open_clip-style forward in plain torch that reads the
ORIGINAL keys (fused in_proj, ``x @ proj``, argmax pooling); it shares no code with the library.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hypernoise.rewards import build_reward

PATCH, IMAGE, CONTEXT, WIDTH = 8, 32, 16, 128  # the tiny checkpoint's sizes (conftest.py)
PROMPTS = ["a red cube on a table", "two cats"]
TOLERANCE = 2e-5  # float32 rounding between two implementations of the same forward
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def _ln(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _resblock(x, sd, p, causal):
    b, n, d = x.shape
    heads = d // 64
    h = _ln(x, sd, f"{p}ln_1")
    q, k, v = (h @ sd[f"{p}attn.in_proj_weight"].T + sd[f"{p}attn.in_proj_bias"]).split(d, dim=-1)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if causal:
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    attn = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    x = x + attn @ sd[f"{p}attn.out_proj.weight"].T + sd[f"{p}attn.out_proj.bias"]
    h = F.gelu(_ln(x, sd, f"{p}ln_2") @ sd[f"{p}mlp.c_fc.weight"].T + sd[f"{p}mlp.c_fc.bias"])
    return x + h @ sd[f"{p}mlp.c_proj.weight"].T + sd[f"{p}mlp.c_proj.bias"]


def reference_image_features(sd, pixels):
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = _ln(x, sd, "visual.ln_pre")
    for i in range(2):
        x = _resblock(x, sd, f"visual.transformer.resblocks.{i}.", causal=False)
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def reference_text_features(sd, ids):
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    for i in range(2):
        x = _resblock(x, sd, f"transformer.resblocks.{i}.", causal=True)
    x = _ln(x, sd, "ln_final")
    return x[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]


def reference_features(sd, tokenizer, images_01, prompts):
    """open_clip's normalised image and text features [B, P]."""
    pixels = (images_01 - MEAN) / STD
    ids = tokenizer(prompts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt").input_ids
    return (F.normalize(reference_image_features(sd, pixels), dim=-1),
            F.normalize(reference_text_features(sd, ids), dim=-1))


def reference_hps(sd, tokenizer, images_01, prompts):
    """open_clip's HPS score: cosine of normalised features, no logit scale."""
    image, text = reference_features(sd, tokenizer, images_01, prompts)
    return (image * text).sum(-1)


def features_error(reward, sd, tokenizer, images):
    """Largest difference of the reward's image / text features from the reference's."""
    with torch.no_grad():
        image, text = reference_features(sd, tokenizer, images, PROMPTS)
        return max((reward.image_features(images) - image).abs().max().item(),
                   (reward.text_features(PROMPTS) - text).abs().max().item())


@pytest.fixture(scope="module")
def tokenizer(clip_tokenizer_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(clip_tokenizer_dir)


@pytest.fixture(scope="module")
def hps(hps_checkpoint, clip_tokenizer_dir):
    return build_reward("hps:1", pretrained=hps_checkpoint, tokenizer=clip_tokenizer_dir)


def test_hps_matches_open_clip_reference_scores_and_pixel_gradients(hps, open_clip_state_dict, tokenizer, images):
    scores = hps(images, PROMPTS)
    (grad,) = torch.autograd.grad(scores.sum(), images)

    ref_images = images.detach().clone().requires_grad_(True)
    ref = reference_hps(open_clip_state_dict, tokenizer, ref_images, PROMPTS)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_images)

    assert scores.shape == (2,) and torch.isfinite(scores).all()
    assert features_error(hps.rewards[0], open_clip_state_dict, tokenizer, images) < TOLERANCE
    torch.testing.assert_close(scores, ref, atol=2e-5, rtol=0)
    assert grad.abs().max() > 0 and torch.isfinite(grad).all()
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-3)


def _swap_qk(model):
    attn = model.text_model.encoder.layers[0].self_attn
    attn.q_proj.weight, attn.k_proj.weight = attn.k_proj.weight, attn.q_proj.weight


def _untranspose_visual(model):
    model.visual_projection.weight.data = model.visual_projection.weight.data.t().contiguous()


def _untranspose_text(model):
    model.text_projection.weight.data = model.text_projection.weight.data.t().contiguous()


def _swap_vision_qk(model):
    attn = model.vision_model.encoder.layers[1].self_attn
    attn.q_proj.weight, attn.k_proj.weight = attn.k_proj.weight, attn.q_proj.weight


def _quick_gelu(model):
    model.config.text_config.hidden_act = "quick_gelu"
    from transformers.activations import ACT2FN

    for layer in model.text_model.encoder.layers:
        layer.mlp.activation_fn = ACT2FN["quick_gelu"]


@pytest.mark.parametrize("corrupt", [_swap_qk, _swap_vision_qk, _untranspose_visual, _untranspose_text, _quick_gelu])
def test_the_reference_comparison_catches_each_mapping_mistake(corrupt, hps_checkpoint, clip_tokenizer_dir,
                                                               open_clip_state_dict, tokenizer, images):
    """Each plausible conversion bug moves the features far beyond the tolerance used above
    (quick GELU for exact GELU, the smallest, by ~1e-3)."""
    reward = build_reward("hps:1", pretrained=hps_checkpoint, tokenizer=clip_tokenizer_dir).rewards[0]
    corrupt(reward.model)
    reward.text_cache.clear()
    assert features_error(reward, open_clip_state_dict, tokenizer, images) > 20 * TOLERANCE


def test_hps_pads_non_square_images_like_open_clip(hps, open_clip_state_dict, tokenizer):
    """Long side to the model size with PIL bicubic, black padding split as ResizeMaxSize does."""
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 48, 80, generator=gen)
    new_h = round(48 * IMAGE / 80)  # 19
    channels = [np.asarray(Image.fromarray(c.numpy(), mode="F").resize((IMAGE, new_h), Image.BICUBIC))
                for c in image[0]]
    resized = torch.from_numpy(np.stack(channels))[None]
    pad = IMAGE - new_h
    padded = torch.zeros(1, 3, IMAGE, IMAGE)
    padded[:, :, pad // 2:pad // 2 + new_h] = resized
    with torch.no_grad():
        ref = reference_hps(open_clip_state_dict, tokenizer, padded, PROMPTS[:1])
        torch.testing.assert_close(hps(image, PROMPTS[:1]), ref, atol=1e-4, rtol=0)


def test_hps_is_frozen_in_eval_and_encodes_each_prompt_once(hps, images):
    reward = hps.rewards[0]
    assert not any(p.requires_grad for p in hps.parameters())
    hps.train()
    assert not any(m.training for m in hps.modules())

    calls = []
    handle = reward.model.text_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        reward.text_cache.clear()
        first = hps(images, PROMPTS)
        second = hps(images.flip(0), PROMPTS[::-1])
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
        scores = ckpt(images, PROMPTS)
        (grad,) = torch.autograd.grad(scores.sum(), images)
    finally:
        handle.remove()
    plain = hps(images, PROMPTS)
    (plain_grad,) = torch.autograd.grad(plain.sum(), images)
    assert len(runs) == 2  # once forward, once recomputed during backward
    torch.testing.assert_close(scores, plain)
    torch.testing.assert_close(grad, plain_grad)


def test_hps_config_is_read_off_the_checkpoint(hps):
    config = hps.rewards[0].model.config
    assert config.vision_config.image_size == IMAGE and config.vision_config.patch_size == PATCH
    assert config.vision_config.num_attention_heads == WIDTH // 64
    assert config.text_config.hidden_act == "gelu"
    assert config.text_config.eos_token_id == config.text_config.vocab_size - 1
