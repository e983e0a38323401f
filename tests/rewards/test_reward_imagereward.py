"""ImageReward: the BLIP checkpoint mapped onto transformers' classes must score as ImageReward does.

The reference is a hand-written BLIP forward (timm ViT + BERT with cross-attention + MLP head)
in plain torch, reading the ORIGINAL ``ImageReward.pt`` keys; it shares no code with the library.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hypernoise.rewards import build_reward

PATCH, TEXT_HEADS = 8, 2  # the tiny checkpoint's patch size and med_config heads (conftest.py)
MEAN_IR, STD_IR = 0.16717362830052426, 1.0333394966054072
PROMPTS = ["two cats", "a red cube on the table " * 8]  # the second is cut at 35 tokens
TOLERANCE = 2e-5
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=eps)


def _lin(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _attend(q, k, v, heads, mask=None):
    b, n, d = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, d // heads).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)


def reference_vit(sd, pixels):
    v = "blip.visual_encoder."
    x = F.conv2d(pixels, sd[f"{v}patch_embed.proj.weight"], sd[f"{v}patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[f"{v}cls_token"].expand(len(x), 1, -1), x], dim=1) + sd[f"{v}pos_embed"]
    for i in range(2):
        p = f"{v}blocks.{i}."
        q, k, val = _lin(_ln(x, sd, f"{p}norm1", 1e-6), sd, f"{p}attn.qkv").chunk(3, dim=-1)
        x = x + _lin(_attend(q, k, val, heads=x.shape[-1] // 64), sd, f"{p}attn.proj")
        x = x + _lin(F.gelu(_lin(_ln(x, sd, f"{p}norm2", 1e-6), sd, f"{p}mlp.fc1")), sd, f"{p}mlp.fc2")
    return _ln(x, sd, f"{v}norm", 1e-6)


def reference_bert(sd, ids, mask, image_embeds, heads, causal=False):
    e = "blip.text_encoder."
    positions = sd[f"{e}embeddings.position_embeddings.weight"][:ids.shape[1]]
    x = sd[f"{e}embeddings.word_embeddings.weight"][ids] + positions
    x = _ln(x, sd, f"{e}embeddings.LayerNorm", 1e-12)
    keep = mask.bool()[:, None, None, :]
    if causal:
        keep = keep & torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()
    for i in range(2):
        p = f"{e}encoder.layer.{i}."
        a = f"{p}attention."
        q, k, v = (_lin(x, sd, f"{a}self.{n}") for n in ("query", "key", "value"))
        h = _attend(q, k, v, heads, keep)
        x = _ln(_lin(h, sd, f"{a}output.dense") + x, sd, f"{a}output.LayerNorm", 1e-12)
        c = f"{p}crossattention."
        h = _attend(_lin(x, sd, f"{c}self.query"), _lin(image_embeds, sd, f"{c}self.key"),
                    _lin(image_embeds, sd, f"{c}self.value"), heads)
        x = _ln(_lin(h, sd, f"{c}output.dense") + x, sd, f"{c}output.LayerNorm", 1e-12)
        h = _lin(F.gelu(_lin(x, sd, f"{p}intermediate.dense")), sd, f"{p}output.dense")
        x = _ln(h + x, sd, f"{p}output.LayerNorm", 1e-12)
    return x[:, 0]


def reference_imagereward(sd, tokenizer, images_01, prompts, heads=TEXT_HEADS, causal=False, normalise=True):
    tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    image_embeds = reference_vit(sd, (images_01 - CLIP_MEAN) / CLIP_STD)
    h = reference_bert(sd, tokens.input_ids, tokens.attention_mask, image_embeds, heads, causal)
    for i in (0, 2, 4, 6, 7):  # no activations between the head's linear layers
        h = _lin(h, sd, f"mlp.layers.{i}")
    return (h[:, 0] - MEAN_IR) / STD_IR if normalise else h[:, 0]


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
                                                                          tokenizer, images):
    scores = imagereward(images, PROMPTS)
    (grad,) = torch.autograd.grad(scores.sum(), images)
    ref_images = images.detach().clone().requires_grad_(True)
    ref = reference_imagereward(imagereward_state_dict, tokenizer, ref_images, PROMPTS)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_images)

    assert scores.shape == (2,) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, ref, atol=TOLERANCE, rtol=0)
    assert grad.abs().max() > 0
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("variant", [dict(causal=True), dict(heads=1), dict(normalise=False)],
                         ids=["causal-text", "bert-default-heads", "unnormalised"])
def test_the_reference_comparison_catches_each_mistake(variant, imagereward, imagereward_state_dict, tokenizer,
                                                       images):
    """Running the text encoder as a decoder, ignoring med_config's heads, or skipping the
    normalisation each moves the score far beyond the tolerance."""
    with torch.no_grad():
        wrong = reference_imagereward(imagereward_state_dict, tokenizer, images, PROMPTS, **variant)
        assert (imagereward(images, PROMPTS) - wrong).abs().max() > 20 * TOLERANCE


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
