"""ImageReward v1.0 on transformers' BLIP classes.

    h = BERT_xattn(tokens(c) | cross-attending to ViT(x))[:, 0]      (the [CLS] state)
    imagereward(x, c) = (MLP(h) - 0.16717...) / 1.03333...            [B], roughly -2 .. 2

``ImageReward.pt`` (Hub repo THUDM/ImageReward, with ``med_config.json``) holds a timm ViT-L/16
(``blip.visual_encoder``; 16 heads, BLIP's ``create_vit('large')``; LayerNorm eps 1e-6), a
BERT-base with cross-attention (``blip.text_encoder``; 12 heads, from ``med_config.json``) and the
head ``mlp.layers.{0,2,4,6,7}``. Head counts are not stored in the file. They map onto
``BlipVisionModel``, ``BlipTextModel(add_pooling_layer=False)`` built with ``is_decoder=True`` (so
the cross-attention modules exist; it is then called with ``is_decoder=False``: bidirectional
self-attention, as ImageReward runs it) and ``MLPHead`` (NOTES.md "Reward checkpoints").
Prompts: bert-base-uncased tokenizer plus ``[DEC]`` and ``[ENC]`` (vocabulary 30524), padded to
35 tokens; images: short side to 224, centre crop, CLIP mean / std.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from hypernoise.errors import InputFileError, WeightsNotFoundError
from hypernoise.rewards.aesthetic import MLPHead
from hypernoise.rewards.base import Reward
from hypernoise.rewards.clip import check_vocabulary, finish
from hypernoise.rewards.hub import (REWARD_SOURCES, load_pretrained, load_state_dict_file, model_from_state_dict,
                                    read_marker, reconvert_command, resolve_file)
from hypernoise.rewards.preprocess import ImageTransform, PromptCache
from hypernoise.rewards.registry import REWARDS

IR_REPO = "THUDM/ImageReward"
IR_FILE = "ImageReward.pt"
MED_CONFIG = "med_config.json"
IR_USUAL = f"https://huggingface.co/{IR_REPO} ({IR_FILE}, {MED_CONFIG})"
BERT = "bert-base-uncased"
#: ImageReward's published normalisation of the head's raw output
IR_MEAN = 0.16717362830052426
IR_STD = 1.0333394966054072
MAX_TOKENS = 35

REWARD_SOURCES["imagereward"] = f"hub {IR_REPO}, files {IR_FILE} + {MED_CONFIG} (BLIP, converted on load) + " \
                                f"tokenizer {BERT}; or a converted folder"

#: timm ViT (inside a block) -> BlipEncoderLayer
_VIT_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
              "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_VIT_TOP = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
            "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
            "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
            "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
_VIT_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")
#: BLIP pre-training projections kept in the file but unused by ImageReward
_UNUSED = ("blip.vision_proj.", "blip.text_proj.")

#: BLIP's ViTs (``create_vit`` in salesforce/BLIP models/blip.py): name -> (width, patch, heads).
#: ImageReward uses "large" (``BLIP_Pretrain(image_size=224, vit='large')``).
BLIP_VITS: dict[str, tuple[int, int, int]] = {"base": (768, 16, 12), "large": (1024, 16, 16)}
#: BLIP's published configs/med_config.json (BERT-base), for a checkpoint found without its own
BLIP_MED_CONFIG = {"hidden_size": 768, "num_attention_heads": 12, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
                   "pad_token_id": 0}


def _vit_name(key: str) -> str:
    if key in _VIT_TOP:
        return _VIT_TOP[key]
    block = _VIT_KEY.match(key)
    if not block or block.group(2) not in _VIT_BLOCK:
        raise InputFileError(f"ImageReward: unexpected key blip.visual_encoder.{key}; not an ImageReward checkpoint")
    index, module, param = block.groups()
    return f"encoder.layers.{index}.{_VIT_BLOCK[module]}.{param}"


def split_imagereward(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """ImageReward.pt -> (BlipVisionModel, BlipTextModel, MLPHead) state dicts."""
    vision, text, head = {}, {}, {}
    for key, value in state_dict.items():
        if key.startswith("blip.visual_encoder."):
            vision[_vit_name(key[len("blip.visual_encoder."):])] = value
        elif key.startswith("blip.text_encoder."):
            if not key.endswith("embeddings.position_ids"):  # an index buffer, rebuilt by transformers
                text[key[len("blip.text_encoder."):]] = value
        elif key.startswith("mlp.layers."):
            head[key[len("mlp."):]] = value
        elif not key.startswith(_UNUSED):
            raise InputFileError(f"ImageReward: unexpected key {key}; not an ImageReward checkpoint")
    return vision, text, head


def _count(state_dict: dict, pattern: str) -> int:
    return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})


def blip_vit_heads(width: int, patch: int) -> int:
    """Heads of BLIP's ViT of this width and patch size (``BLIP_VITS``); ``InputFileError`` for others."""
    for vit_width, vit_patch, heads in BLIP_VITS.values():
        if (vit_width, vit_patch) == (width, patch):
            return heads
    known = ", ".join(f"{n} ({w} wide, patch {p})" for n, (w, p, _) in BLIP_VITS.items())
    raise InputFileError(f"ImageReward: a ViT {width} wide with {patch} px patches is none of BLIP's ({known}); "
                         f"not an ImageReward checkpoint")


def vision_config_from_timm(vision: dict[str, torch.Tensor]):
    """``BlipVisionConfig`` of BLIP's timm ViT (renamed state dict): heads from ``BLIP_VITS``,
    depth, MLP width and image size from the tensor shapes."""
    from transformers import BlipVisionConfig

    conv = vision["embeddings.patch_embedding.weight"]  # [width, 3, patch, patch]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = math.isqrt(vision["embeddings.position_embedding"].shape[1] - 1)  # [1, 1 + grid^2, width]
    return BlipVisionConfig(hidden_size=width, patch_size=patch, image_size=grid * patch,
                            intermediate_size=vision["encoder.layers.0.mlp.fc1.weight"].shape[0],
                            num_hidden_layers=_count(vision, r"encoder\.layers\.(\d+)\."),
                            num_attention_heads=blip_vit_heads(width, patch), layer_norm_eps=1e-6, hidden_act="gelu")


def text_config_from_med(text: dict[str, torch.Tensor], med_config: Optional[dict] = None):
    """``BlipTextConfig`` (``is_decoder=True`` for the cross-attention modules) from the tensor
    shapes and ImageReward's ``med_config.json`` (heads, LayerNorm eps; BLIP's published
    ``BLIP_MED_CONFIG`` where it is not found). The cross-attention width is read from the
    tensors: BLIP replaces the file's ``encoder_width`` with its ViT's width."""
    from transformers import BlipTextConfig

    med = {**BLIP_MED_CONFIG, **(med_config or {})}
    vocab, width = text["embeddings.word_embeddings.weight"].shape
    if int(med["hidden_size"]) != width:
        said = "its med_config.json" if med_config else f"BLIP's med_config (no {MED_CONFIG} was found)"
        raise InputFileError(f"ImageReward: the text encoder is {width} wide but {said} says hidden_size "
                             f"{med['hidden_size']}; put the checkpoint's own {MED_CONFIG} beside it")
    return BlipTextConfig(
        vocab_size=vocab, hidden_size=width, is_decoder=True,
        encoder_hidden_size=text["encoder.layer.0.crossattention.self.key.weight"].shape[1],
        intermediate_size=text["encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_hidden_layers=_count(text, r"encoder\.layer\.(\d+)\."),
        num_attention_heads=int(med["num_attention_heads"]),
        max_position_embeddings=text["embeddings.position_embeddings.weight"].shape[0],
        layer_norm_eps=float(med["layer_norm_eps"]), hidden_act=med["hidden_act"],
        pad_token_id=int(med["pad_token_id"]), bos_token_id=vocab - 2, sep_token_id=None)


def load_imagereward_checkpoint(path, med_config: Optional[dict] = None, *, allow_pickle: bool = False):
    """(BlipVisionModel, BlipTextModel, MLPHead) from ``ImageReward.pt``."""
    from transformers import BlipTextModel, BlipVisionModel

    vision_sd, text_sd, head_sd = split_imagereward(load_state_dict_file(path, allow_pickle=allow_pickle))
    if not vision_sd or not text_sd or not head_sd:
        raise InputFileError(f"{path}: no ImageReward weights (blip.visual_encoder, blip.text_encoder, mlp); "
                             f"expected {IR_FILE}")
    vision = model_from_state_dict(BlipVisionModel, vision_config_from_timm(vision_sd), vision_sd,
                                   what=f"ImageReward vision {path}")
    text = model_from_state_dict(BlipTextModel, text_config_from_med(text_sd, med_config), text_sd,
                                 what=f"ImageReward text {path}", add_pooling_layer=False)
    return vision, text, MLPHead.from_state_dict(head_sd)


def _med_config_for(pretrained, checkpoint: Path, cache_dir) -> Optional[dict]:
    """``med_config.json`` next to the checkpoint or in the same Hub repo; None if absent
    (the shapes then decide, with BERT-base's heads and eps)."""
    beside = checkpoint.with_name(MED_CONFIG)
    if beside.is_file():
        return json.loads(beside.read_text())
    if Path(os.path.expanduser(str(pretrained))).exists():
        return None
    try:
        return json.loads(resolve_file(pretrained, MED_CONFIG, what="ImageReward config", usual=IR_USUAL,
                                       cache_dir=cache_dir).read_text())
    except WeightsNotFoundError:
        return None


def _check_vision_heads(config, folder: Path, record: Optional[dict]) -> None:
    """Refuse a converted folder whose vision config has other heads than BLIP's ViT of its width."""
    heads = blip_vit_heads(config.hidden_size, config.patch_size)
    if config.num_attention_heads != heads:
        raise InputFileError(f"imagereward {folder}: vision_model/config.json gives {config.num_attention_heads} "
                             f"heads but BLIP's ViT of width {config.hidden_size} has {heads}; convert again: "
                             f"{reconvert_command('imagereward', folder, record, IR_FILE)}")


def load_imagereward_parts(pretrained, *, cache_dir=None, allow_pickle: bool = False):
    """(vision, text, head) from a converted folder, ``ImageReward.pt``, a folder holding it, or a
    Hub repo holding it (default THUDM/ImageReward)."""
    from transformers import BlipTextModel, BlipVisionModel

    folder = Path(os.path.expanduser(str(pretrained)))
    if (folder / "vision_model").is_dir():
        record = read_marker(folder, "imagereward")
        vision = load_pretrained(BlipVisionModel, folder / "vision_model", what="imagereward", usual=IR_USUAL)
        _check_vision_heads(vision.config, folder, record)
        text = load_pretrained(BlipTextModel, folder / "text_model", what="imagereward", usual=IR_USUAL,
                               add_pooling_layer=False)
        return vision, text, MLPHead.from_state_dict(load_state_dict_file(folder / "head.safetensors"))
    path = resolve_file(pretrained, IR_FILE, what="ImageReward weights", usual=IR_USUAL, cache_dir=cache_dir)
    med = _med_config_for(pretrained, path, cache_dir)
    return load_imagereward_checkpoint(path, med, allow_pickle=allow_pickle)


def load_imagereward_tokenizer(tokenizer: Optional[str], pretrained, *, vocab_size: int, cache_dir=None):
    """bert-base-uncased (or ``tokenizer``, or a converted folder's ``tokenizer/``) with
    ImageReward's two extra tokens: ``[DEC]`` (id 30522) and ``[ENC]`` (id 30523)."""
    from transformers import BertTokenizer

    bundled = Path(os.path.expanduser(str(pretrained)), "tokenizer")
    source = tokenizer or (str(bundled) if bundled.is_dir() else BERT)
    tok = load_pretrained(BertTokenizer, source, what="imagereward tokenizer", usual=f"hub {BERT}",
                          cache_dir=cache_dir)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    check_vocabulary(tok, vocab_size, what=f"imagereward tokenizer {source} (+ [DEC], [ENC])", usual=f"hub {BERT}")
    return tok


class ImageReward(Reward):
    """ImageReward v1.0 score [B] (normalised; higher is better).

    Args:
        vision: ``BlipVisionModel``; text: ``BlipTextModel`` with cross-attention; head: ``MLPHead``.
        tokenizer: BERT tokenizer with ``[DEC]`` and ``[ENC]``; prompts padded to ``max_length``.
        transform: images [B, 3, H, W] in [0, 1] -> pixel values for ``vision``.
    """

    name = "imagereward"

    def __init__(self, vision: nn.Module, text: nn.Module, head: MLPHead, tokenizer, transform: ImageTransform,
                 *, max_length: int = MAX_TOKENS, source: str = "", cache_size: int = 4096):
        super().__init__()
        self.vision, self.text, self.head = vision, text, head
        self.tokenizer = tokenizer
        self.transform = transform
        self.max_length = max_length
        self.source = source
        self.token_cache = PromptCache(cache_size)
        self.freeze()

    def _tokenize(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                                return_tensors="pt")
        return torch.stack([tokens.input_ids, tokens.attention_mask], dim=1)  # [n, 2, L]

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"imagereward: {images.shape[0]} images but {len(prompts)} prompts")
        weight = self.vision.embeddings.patch_embedding.weight
        pixels = self.transform(images).to(device=weight.device, dtype=weight.dtype)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state  # [B, 1 + patches, D_v]
        tokens = self.token_cache.get(list(prompts), self._tokenize).to(weight.device)
        # every image token is attended to (ImageReward passes an all-ones mask), so no mask
        hidden = self.text(input_ids=tokens[:, 0], attention_mask=tokens[:, 1], encoder_hidden_states=image_embeds,
                           is_decoder=False).last_hidden_state[:, 0]
        raw = self.head(hidden).squeeze(-1).float()
        return (raw - IR_MEAN) / IR_STD


@REWARDS.register("imagereward", help="ImageReward v1.0 (normalised, roughly -2..2); BLIP on transformers' "
                                      "BlipVisionModel + BlipTextModel")
def build_imagereward(pretrained: Optional[str] = None, tokenizer: Optional[str] = None, device=None, dtype=None,
                      gradient_checkpointing: bool = False, cache_dir=None, allow_pickle: bool = False,
                      **_) -> ImageReward:
    """ImageReward v1.0. ``pretrained``: ``ImageReward.pt`` (``med_config.json`` read from beside
    it), a folder holding both, a converted folder, or a Hub repo (default THUDM/ImageReward);
    ``tokenizer``: default bert-base-uncased (a converted folder's own first)."""
    pretrained = pretrained or IR_REPO
    vision, text, head = load_imagereward_parts(pretrained, cache_dir=cache_dir, allow_pickle=allow_pickle)
    tok = load_imagereward_tokenizer(tokenizer, pretrained, vocab_size=text.config.vocab_size, cache_dir=cache_dir)
    reward = ImageReward(vision, text, head, tok, ImageTransform(size=vision.config.image_size, fit="crop"),
                         source=str(pretrained))
    return finish(reward, vision.encoder.layers, device=device, dtype=dtype,
                  gradient_checkpointing=gradient_checkpointing)
