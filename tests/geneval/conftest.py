"""Fixtures for the GenEval tests.

Colour classifier (``open_clip_sd``, ``clip_folder``): a random open_clip ViT-L/14 at the real
widths and the CLIPModel folder the library's converter writes from it.

Detector (``tiny_mmdet_state``, ``tiny_detector_path``): a tiny checkpoint in the exact mmdet 2.x
layout of ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`` (the same key names, written here after
mmdet's module tree, not from the library's key table), at small widths and depths so that
it builds and runs in seconds on one CPU thread. Weights are random with fan-in scaling.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewards"))  # reward_reference: open_clip's forward

torch.set_num_threads(1)

#: the tiny detector: Swin depths and heads per stage, widths, layers, queries (80 COCO classes)
TINY_DETECTOR = dict(embed=32, depths=(2, 2, 4, 2), heads=(1, 2, 4, 8), window=7, feat=32, enc_layers=2,
                     enc_ffn=64, dec_layers=3, dec_ffn=64, queries=12, classes=80)


def _mmdet_window_index(window: int) -> torch.Tensor:
    """mmdet WindowMSA.relative_position_index (double_step_seq, then flip(1))."""
    seq = (torch.arange(0, (2 * window - 1) * window, 2 * window - 1)[:, None] + torch.arange(window)).reshape(1, -1)
    return (seq + seq.T).flip(1).contiguous()


def _swin_shapes(embed, depths, heads, window) -> dict:
    """mmdet/models/backbones/swin.py parameter names and shapes."""
    shapes = {"backbone.patch_embed.projection.weight": (embed, 3, 4, 4), "backbone.patch_embed.projection.bias": (embed,),
              "backbone.patch_embed.norm.weight": (embed,), "backbone.patch_embed.norm.bias": (embed,)}
    c = embed
    for s, depth in enumerate(depths):
        for b in range(depth):
            p = f"backbone.stages.{s}.blocks.{b}."
            shapes.update({p + "norm1.weight": (c,), p + "norm1.bias": (c,),
                           p + "attn.w_msa.relative_position_bias_table": ((2 * window - 1) ** 2, heads[s]),
                           p + "attn.w_msa.relative_position_index": "index",
                           p + "attn.w_msa.qkv.weight": (3 * c, c), p + "attn.w_msa.qkv.bias": (3 * c,),
                           p + "attn.w_msa.proj.weight": (c, c), p + "attn.w_msa.proj.bias": (c,),
                           p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                           p + "ffn.layers.0.0.weight": (4 * c, c), p + "ffn.layers.0.0.bias": (4 * c,),
                           p + "ffn.layers.1.weight": (c, 4 * c), p + "ffn.layers.1.bias": (c,)})
        if s < len(depths) - 1:
            p = f"backbone.stages.{s}.downsample."
            shapes.update({p + "norm.weight": (4 * c,), p + "norm.bias": (4 * c,), p + "reduction.weight": (2 * c, 4 * c)})
            c *= 2
    for i in range(len(depths)):
        shapes.update({f"backbone.norm{i}.weight": (embed * 2 ** i,), f"backbone.norm{i}.bias": (embed * 2 ** i,)})
    return shapes


def _head_shapes(embed, feat, enc_layers, enc_ffn, dec_layers, dec_ffn, queries, classes) -> dict:
    """mmdet 2.x Mask2FormerHead / MSDeformAttnPixelDecoder / mmcv transformer layer names and shapes."""
    pd, td, shapes = "panoptic_head.pixel_decoder.", "panoptic_head.transformer_decoder.", {}
    widths = [embed * 2 ** i for i in range(4)]
    for i in range(3):  # input_convs from the coarsest map
        shapes.update({pd + f"input_convs.{i}.conv.weight": (feat, widths[3 - i], 1, 1),
                       pd + f"input_convs.{i}.conv.bias": (feat,), pd + f"input_convs.{i}.gn.weight": (feat,),
                       pd + f"input_convs.{i}.gn.bias": (feat,)})
    for layer in range(enc_layers):
        p = pd + f"encoder.layers.{layer}."
        shapes.update({p + "attentions.0.sampling_offsets.weight": (8 * 3 * 4 * 2, feat),
                       p + "attentions.0.sampling_offsets.bias": (8 * 3 * 4 * 2,),
                       p + "attentions.0.attention_weights.weight": (8 * 3 * 4, feat),
                       p + "attentions.0.attention_weights.bias": (8 * 3 * 4,),
                       p + "attentions.0.value_proj.weight": (feat, feat), p + "attentions.0.value_proj.bias": (feat,),
                       p + "attentions.0.output_proj.weight": (feat, feat), p + "attentions.0.output_proj.bias": (feat,),
                       p + "ffns.0.layers.0.0.weight": (enc_ffn, feat), p + "ffns.0.layers.0.0.bias": (enc_ffn,),
                       p + "ffns.0.layers.1.weight": (feat, enc_ffn), p + "ffns.0.layers.1.bias": (feat,),
                       p + "norms.0.weight": (feat,), p + "norms.0.bias": (feat,),
                       p + "norms.1.weight": (feat,), p + "norms.1.bias": (feat,)})
    shapes.update({pd + "level_encoding.weight": (3, feat), pd + "lateral_convs.0.conv.weight": (feat, embed, 1, 1),
                   pd + "lateral_convs.0.gn.weight": (feat,), pd + "lateral_convs.0.gn.bias": (feat,),
                   pd + "output_convs.0.conv.weight": (feat, feat, 3, 3), pd + "output_convs.0.gn.weight": (feat,),
                   pd + "output_convs.0.gn.bias": (feat,), pd + "mask_feature.weight": (feat, feat, 1, 1),
                   pd + "mask_feature.bias": (feat,)})
    for layer in range(dec_layers):
        p = td + f"layers.{layer}."
        for a in range(2):
            shapes.update({p + f"attentions.{a}.attn.in_proj_weight": (3 * feat, feat),
                           p + f"attentions.{a}.attn.in_proj_bias": (3 * feat,),
                           p + f"attentions.{a}.attn.out_proj.weight": (feat, feat),
                           p + f"attentions.{a}.attn.out_proj.bias": (feat,)})
        shapes.update({p + "ffns.0.layers.0.0.weight": (dec_ffn, feat), p + "ffns.0.layers.0.0.bias": (dec_ffn,),
                       p + "ffns.0.layers.1.weight": (feat, dec_ffn), p + "ffns.0.layers.1.bias": (feat,)})
        shapes.update({p + f"norms.{n}.{w}": (feat,) for n in range(3) for w in ("weight", "bias")})
    shapes.update({td + "post_norm.weight": (feat,), td + "post_norm.bias": (feat,),
                   "panoptic_head.query_embed.weight": (queries, feat), "panoptic_head.query_feat.weight": (queries, feat),
                   "panoptic_head.level_embed.weight": (3, feat), "panoptic_head.cls_embed.weight": (classes + 1, feat),
                   "panoptic_head.cls_embed.bias": (classes + 1,)})
    for i in (0, 2, 4):
        shapes.update({f"panoptic_head.mask_embed.{i}.weight": (feat, feat), f"panoptic_head.mask_embed.{i}.bias": (feat,)})
    return shapes


_NORM = re.compile(r"(norm\d?|norms\.\d|gn|post_norm)\.(weight|bias)$")
_EMBEDDING = re.compile(r"(query_embed|query_feat|level_embed|level_encoding)\.weight$|bias_table$")


def _value(key: str, shape, g: torch.Generator, window: int) -> torch.Tensor:
    """Random values: norms ~1, embeddings N(0, 1), biases small, weights N(0, 1 / fan_in)
    (class head x3 for peaky probabilities; sampling offsets a fraction of a pixel)."""
    if shape == "index":
        return _mmdet_window_index(window)
    randn = torch.randn(shape, generator=g)
    if _NORM.search(key):
        return 1 + 0.1 * randn if key.endswith("weight") else 0.02 * randn
    if _EMBEDDING.search(key):
        return randn
    if len(shape) == 1:
        return (0.3 if "sampling_offsets" in key or "cls_embed" in key else 0.02) * randn
    if "sampling_offsets" in key:
        return 0.02 * randn
    return (3.0 if "cls_embed" in key else 1.0) / math.sqrt(math.prod(shape[1:])) * randn


def make_tiny_mmdet_detector_state(seed: int = 0, **overrides) -> dict:
    """A tiny detector's ``state_dict`` with mmdet 2.x names (``TINY_DETECTOR`` sizes, overridable)."""
    cfg = {**TINY_DETECTOR, **overrides}
    shapes = _swin_shapes(cfg["embed"], cfg["depths"], cfg["heads"], cfg["window"])
    shapes.update(_head_shapes(cfg["embed"], cfg["feat"], cfg["enc_layers"], cfg["enc_ffn"], cfg["dec_layers"],
                               cfg["dec_ffn"], cfg["queries"], cfg["classes"]))
    g = torch.Generator().manual_seed(seed)
    return {key: _value(key, shape, g, cfg["window"]) for key, shape in shapes.items()}


@pytest.fixture
def tiny_mmdet_state():
    """A fresh tiny mmdet 2.x state dict (callable: seed and size overrides), for tests that edit it."""
    return make_tiny_mmdet_detector_state


@pytest.fixture(scope="session")
def tiny_detector_path(tmp_path_factory):
    """A tiny ``.pth`` in the official file's form: ``{"state_dict": ..., "meta": ...}``."""
    path = tmp_path_factory.mktemp("tiny_detector") / "tiny_mask2former.pth"
    torch.save({"state_dict": make_tiny_mmdet_detector_state(), "meta": {"CLASSES": tuple(range(80))}}, path)
    return path


# ----------------------------------------------------------------------------------- colour classifier
@pytest.fixture(scope="session")
def open_clip_sd():
    """A random open_clip ViT-L/14 (OpenAI layout) at the real widths: one vision, two text layers."""
    from reward_reference import VIT_L_14_OPENAI, make_open_clip_state_dict

    return make_open_clip_state_dict(VIT_L_14_OPENAI, seed=7, vision_layers=1, text_layers=2)


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory, open_clip_sd):
    """A CLIPModel folder (config, weights, tokenizer) of the open_clip checkpoint, written by
    the library's converter with QuickGELU (OpenAI's activation)."""
    from reward_reference import clip_char_vocab
    from transformers import CLIPModel, CLIPTokenizer

    from hypernoise.rewards.hps import clip_config_from_open_clip, open_clip_to_transformers
    from hypernoise.rewards.hub import model_from_state_dict

    config = clip_config_from_open_clip(open_clip_sd, "ViT-L-14", hidden_act="quick_gelu")
    model = model_from_state_dict(CLIPModel, config, open_clip_to_transformers(open_clip_sd), what="test")
    folder = tmp_path_factory.mktemp("openai_vit_l14")
    model.save_pretrained(folder)
    CLIPTokenizer(vocab=clip_char_vocab(), merges=[]).save_pretrained(folder)
    return folder
