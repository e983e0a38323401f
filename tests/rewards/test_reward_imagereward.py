"""ImageReward: the BLIP checkpoint mapped onto transformers' classes must score as ImageReward does.

The checkpoint has ImageReward's real widths (ViT-L/16 1024 wide, 224 px; BERT 768 wide with
cross-attention to the 1024-wide image tokens; head 768-1024-128-64-16-1) at one layer per tower.
The reference (``reward_reference``) is a BLIP forward in plain torch reading the ORIGINAL
``ImageReward.pt`` keys, with heads from BLIP's published ViT-L and med_config values; it shares
no code with the library.
"""

from __future__ import annotations

import pytest
import torch
from reward_reference import (BLIP_MED, BLIP_VIT_L, IR_MEAN, IR_STD, blip_text, blip_vit, mlp_head,
                              normalise_pixels)

from hypernoise.errors import InputFileError
from hypernoise.rewards import build_reward
from hypernoise.rewards.imagereward import text_config_from_med, vision_config_from_timm

PROMPTS = ["two cats", "a red cube on the table " * 8]  # the second is cut at 35 tokens
TOLERANCE = 1e-4
GRAD_TOLERANCE = 1e-4  # relative to the largest pixel gradient


def reference_imagereward(sd, tokenizer, images_01, prompts, vit=BLIP_VIT_L, med=BLIP_MED, causal=False,
                          normalise=True):
    """ImageReward's score [B] of images at 224 px."""
    tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    image_embeds = blip_vit(sd, normalise_pixels(images_01), vit)
    h = blip_text(sd, tokens.input_ids, tokens.attention_mask, image_embeds, med, causal)
    raw = mlp_head(h, sd, prefix="mlp.layers.")
    return (raw - IR_MEAN) / IR_STD if normalise else raw


@pytest.fixture(scope="module")
def tokenizer(bert_tokenizer_dir):
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(bert_tokenizer_dir)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


@pytest.fixture(scope="module")
def imagereward(imagereward_checkpoint, bert_tokenizer_dir):
    return build_reward("imagereward:1", pretrained=imagereward_checkpoint, tokenizer=bert_tokenizer_dir)


def test_imagereward_matches_the_blip_reference_scores_and_pixel_gradients(imagereward, imagereward_state_dict,
                                                                          tokenizer, images_224):
    scores = imagereward(images_224, PROMPTS)
    (grad,) = torch.autograd.grad(scores.sum(), images_224)
    ref_images = images_224.detach().clone().requires_grad_(True)
    ref = reference_imagereward(imagereward_state_dict, tokenizer, ref_images, PROMPTS)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_images)

    assert scores.shape == (2,) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, ref.detach(), atol=TOLERANCE, rtol=0)
    assert grad.abs().max() > 0
    torch.testing.assert_close(grad, ref_grad, atol=GRAD_TOLERANCE * ref_grad.abs().max().item(), rtol=0)


@pytest.mark.parametrize("variant", [dict(causal=True), dict(vit={**BLIP_VIT_L, "heads": 8}),
                                     dict(med={**BLIP_MED, "heads": 16}), dict(normalise=False)],
                         ids=["causal-text", "vision-heads-of-128", "text-heads-of-48", "unnormalised"])
def test_the_reference_comparison_catches_each_mistake(variant, imagereward, imagereward_state_dict, tokenizer):
    """Running the text encoder as a decoder, another head count in either tower, or skipping the
    normalisation each moves the score far beyond the tolerance."""
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        wrong = reference_imagereward(imagereward_state_dict, tokenizer, images, PROMPTS[:1], **variant)
        assert (imagereward(images, PROMPTS[:1]) - wrong).abs().max() > 50 * TOLERANCE


def test_imagereward_config_has_blips_published_heads_and_the_checkpoints_depth(imagereward):
    reward = imagereward.rewards[0]
    vision, text = reward.vision.config, reward.text.config
    assert (vision.hidden_size, vision.num_attention_heads, vision.patch_size, vision.image_size) == (1024, 16, 16, 224)
    assert (text.hidden_size, text.num_attention_heads, text.encoder_hidden_size) == (768, 12, 1024)
    assert vision.num_hidden_layers == text.num_hidden_layers == 1  # read off the shallow checkpoint
    assert (vision.layer_norm_eps, text.layer_norm_eps) == (1e-6, 1e-12)


def test_a_vit_of_no_published_blip_width_is_refused():
    vision = {"embeddings.patch_embedding.weight": torch.empty(1280, 3, 16, 16, device="meta"),
              "embeddings.position_embedding": torch.empty(1, 197, 1280, device="meta"),
              "encoder.layers.0.mlp.fc1.weight": torch.empty(5120, 1280, device="meta")}
    with pytest.raises(InputFileError, match="1280 wide with 16 px patches is none of BLIP's"):
        vision_config_from_timm(vision)


def test_without_med_config_the_text_heads_are_blips_published_ones(imagereward_state_dict):
    text = {k[len("blip.text_encoder."):]: v for k, v in imagereward_state_dict.items()
            if k.startswith("blip.text_encoder.")}
    assert text_config_from_med(text).num_attention_heads == 12
    with pytest.raises(InputFileError, match="768 wide but its med_config.json says hidden_size 1024"):
        text_config_from_med(text, {"hidden_size": 1024, "num_attention_heads": 16})


def test_imagereward_tokens_are_bert_plus_dec_enc_cut_at_35(imagereward, bert_tokenizer_dir):
    reward = imagereward.rewards[0]
    words = len((bert_tokenizer_dir / "vocab.txt").read_text().split())
    assert reward.tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [words, words + 1]
    tokens = reward.token_cache.get(PROMPTS, reward._tokenize)
    assert tokens.shape == (2, 2, 35)  # (ids, mask) per prompt
    assert tokens[1, 1].all() and not tokens[0, 1].all()  # the long prompt fills all 35, the short is padded


def test_imagereward_is_frozen_and_checkpointing_changes_nothing(imagereward, imagereward_checkpoint,
                                                                bert_tokenizer_dir, images):
    assert not any(p.requires_grad for p in imagereward.parameters())
    imagereward.train()
    assert not any(m.training for m in imagereward.modules())
    ckpt = build_reward("imagereward", pretrained=imagereward_checkpoint, tokenizer=bert_tokenizer_dir,
                        gradient_checkpointing=True)
    a, b = imagereward(images, PROMPTS), ckpt(images, PROMPTS)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a.sum(), images)[0], torch.autograd.grad(b.sum(), images)[0])
