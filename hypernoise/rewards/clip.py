"""Contrastive image-text rewards on transformers' ``CLIPModel``: CLIP score and PickScore.

    score(x, c) = s * cos(E_img(x), E_txt(c))     [B]

with s = exp(logit_scale) of the model (100 for OpenAI / LAION CLIP, ~100 for PickScore), as
ReNO uses them (its weights 0.01 and 0.05 assume this scale). HPSv2 (``hps.py``) is the same
reward with s = 1 and its own preprocessing.

Text features are computed once per prompt without gradients and cached; image features are
differentiable with respect to the pixels. transformers is imported inside the builders.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hypernoise.errors import WeightsNotFoundError
from hypernoise.rewards.base import Reward
from hypernoise.rewards.hub import REWARD_SOURCES, load_pretrained, offline, read_marker
from hypernoise.rewards.preprocess import ImageTransform, PromptCache
from hypernoise.rewards.registry import REWARDS

LAION_VIT_H = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
OPENAI_VIT_L = "openai/clip-vit-large-patch14"
PICKSCORE = "yuvalkirstain/PickScore_v1"

REWARD_SOURCES["clip"] = f"hub {LAION_VIT_H} (CLIPModel + tokenizer); or {OPENAI_VIT_L}, or a local folder"
REWARD_SOURCES["pickscore"] = f"hub {PICKSCORE} (CLIPModel) + tokenizer {LAION_VIT_H}; or a local folder"


class Checkpointed(nn.Module):
    """Runs ``layer`` under activation checkpointing whenever autograd records: its activations
    are recomputed in the backward pass instead of stored (transformers' own switch only acts
    in training mode; reward models stay in eval mode)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(self.layer, *args, use_reentrant=False, **kwargs)
        return self.layer(*args, **kwargs)


def checkpoint_layers(layers: nn.ModuleList) -> None:
    """Wrap every layer of a transformer stack in ``Checkpointed`` (in place, idempotent)."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, Checkpointed):
            layers[i] = Checkpointed(layer)


class ContrastiveReward(Reward):
    """s * cos(image features, text features) of a ``CLIPModel`` [B], higher is better.

    Args:
        model: a transformers ``CLIPModel`` (frozen here).
        tokenizer: its tokenizer; prompts are padded / truncated to the model's context length.
        transform: images [B, 3, H, W] in [0, 1] -> pixel values for ``model``.
        use_logit_scale: s = exp(model.logit_scale) if True, else s = 1.
        name: the registry name (used in logs and specs).
        source: where the weights came from (for logs).
        cache_size: how many prompts' text features to keep.
    """

    def __init__(self, model: nn.Module, tokenizer, transform: ImageTransform, *, use_logit_scale: bool,
                 name: str, source: str = "", cache_size: int = 4096):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.transform = transform
        # read once in float32: a bf16 copy of logit_scale = log(100) would give exp() = 98.9
        self.scale = float(model.logit_scale.detach().float().exp()) if use_logit_scale else 1.0
        self.name = name
        self.source = source
        self.text_cache = PromptCache(cache_size)
        self.max_length = model.config.text_config.max_position_embeddings
        self.freeze()

    @property
    def _param(self) -> torch.Tensor:
        return self.model.visual_projection.weight

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [B, P], differentiable w.r.t. ``images``."""
        pixels = self.transform(images).to(device=self._param.device, dtype=self._param.dtype)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    @torch.no_grad()
    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_length,
                                truncation=True, return_tensors="pt").to(self._param.device)
        pooled = self.model.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)

    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings [B, P] (float32, cached per prompt, no gradient)."""
        return self.text_cache.get(list(prompts), self._encode_text).to(self._param.device)

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{self.name}: {images.shape[0]} images but {len(prompts)} prompts")
        image = self.image_features(images)
        text = self.text_features(prompts)
        return self.scale * (image * text).sum(-1)

    def _apply(self, fn, *args, **kwargs):
        self.text_cache.clear()  # cached features were computed on the old device / dtype
        return super()._apply(fn, *args, **kwargs)


def load_clip_model(pretrained: str, *, what: str, usual: str, cache_dir=None):
    """A transformers ``CLIPModel`` from a Hub id or a local folder (``WeightsNotFoundError``
    if it is missing)."""
    from transformers import CLIPModel

    return load_pretrained(CLIPModel, pretrained, what=what, usual=usual, cache_dir=cache_dir)


def load_clip_tokenizer(tokenizer: Optional[str], pretrained: str, default: str, *, what: str, vocab_size: int,
                        cache_dir=None):
    """The tokenizer given, else the one saved with the model folder, else ``default``; its
    vocabulary must be the model's (``vocab_size`` tokens)."""
    from transformers import CLIPTokenizer

    if tokenizer is None:
        has_own = os.path.isdir(str(pretrained)) and any(
            os.path.exists(os.path.join(str(pretrained), f)) for f in ("tokenizer.json", "vocab.json"))
        tokenizer = str(pretrained) if has_own else default
    tok = load_pretrained(CLIPTokenizer, tokenizer, what=f"{what} tokenizer", usual=f"hub {default}",
                          cache_dir=cache_dir)
    check_vocabulary(tok, vocab_size, what=f"{what} tokenizer {tokenizer}", usual=f"hub {default}")
    return tok


def check_vocabulary(tokenizer, vocab_size: int, *, what: str, usual: str) -> None:
    """transformers 5 builds an empty tokenizer when its files are missing; catch that (and a
    tokenizer of another model) before it silently scores every prompt alike."""
    if len(tokenizer) != vocab_size:
        mode = " (HF_HUB_OFFLINE is set: only the local cache was searched)" if offline() else ""
        raise WeightsNotFoundError(f"{what} has {len(tokenizer)} tokens but the model {vocab_size}: its files are "
                                   f"missing{mode} or belong to another model; it is usually at {usual}")


def finish(reward: Reward, layers: nn.ModuleList, *, device=None, dtype=None,
           gradient_checkpointing: bool = False) -> Reward:
    """Common last steps of the builders: optional checkpointing of ``layers``, device, dtype."""
    if gradient_checkpointing:
        checkpoint_layers(layers)
    if isinstance(dtype, str):  # "bfloat16", "float16", "float32" from config files
        dtype = getattr(torch, dtype)
    reward.to(device=device, dtype=dtype or torch.float32)
    return reward.freeze()


def build_contrastive(name: str, pretrained: str, tokenizer: Optional[str], default_tokenizer: str, *,
                      usual: str, device=None, dtype=None, gradient_checkpointing=False,
                      cache_dir=None) -> ContrastiveReward:
    """A CLIP-family reward s * cos from a ``CLIPModel`` folder or Hub id (CLIP, PickScore)."""
    if os.path.isdir(str(pretrained)):
        read_marker(pretrained, name)
    model = load_clip_model(pretrained, what=name, usual=usual, cache_dir=cache_dir)
    tok = load_clip_tokenizer(tokenizer, pretrained, default_tokenizer, what=name, cache_dir=cache_dir,
                              vocab_size=model.config.text_config.vocab_size)
    transform = ImageTransform(size=model.config.vision_config.image_size, fit="crop")
    reward = ContrastiveReward(model, tok, transform, use_logit_scale=True, name=name, source=str(pretrained))
    return finish(reward, model.vision_model.encoder.layers, device=device, dtype=dtype,
                  gradient_checkpointing=gradient_checkpointing)


@REWARDS.register("clip", help="CLIP score exp(logit_scale) * cos(image, prompt) = 100 cos, "
                               "transformers CLIPModel (default LAION ViT-H-14)")
def build_clip(pretrained: Optional[str] = None, tokenizer: Optional[str] = None, device=None, dtype=None,
               gradient_checkpointing: bool = False, cache_dir=None, **_) -> ContrastiveReward:
    """CLIP score. ``pretrained``: a CLIPModel Hub id or folder (default LAION ViT-H-14, as ReNO;
    ``openai/clip-vit-large-patch14`` also works); ``tokenizer`` defaults to the model's own."""
    pretrained = pretrained or LAION_VIT_H
    return build_contrastive("clip", pretrained, tokenizer, default_tokenizer=str(pretrained),
                             usual=f"hub {LAION_VIT_H}", device=device, dtype=dtype,
                             gradient_checkpointing=gradient_checkpointing, cache_dir=cache_dir)


@REWARDS.register("pickscore", help="PickScore_v1: exp(logit_scale) * cos(image, prompt) (about 20 for "
                                    "typical images), transformers CLIPModel")
def build_pickscore(pretrained: Optional[str] = None, tokenizer: Optional[str] = None, device=None, dtype=None,
                    gradient_checkpointing: bool = False, cache_dir=None, **_) -> ContrastiveReward:
    """PickScore_v1 (a fine-tuned LAION ViT-H-14). ``pretrained``: Hub id or folder (default
    yuvalkirstain/PickScore_v1); ``tokenizer``: default the LAION ViT-H-14 tokenizer, which PickScore
    was trained with (a folder's own tokenizer files are used first)."""
    return build_contrastive("pickscore", pretrained or PICKSCORE, tokenizer, default_tokenizer=LAION_VIT_H,
                             usual=f"hub {PICKSCORE}", device=device, dtype=dtype,
                             gradient_checkpointing=gradient_checkpointing, cache_dir=cache_dir)
