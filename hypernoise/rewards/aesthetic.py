"""LAION's improved aesthetic predictor: an MLP head on L2-normalised CLIP ViT-L/14 image embeddings.

    aesthetic(x) = head(e / ||e||),  e = E_img(x) of openai/clip-vit-large-patch14    [B], ~1-10

The prompt is ignored. The head file comes from
https://github.com/christophschuhmann/improved-aesthetic-predictor; repositories disagree on
which: ``sac+logos+ava1-l14-linearMSE.pth`` (the default here, as DDPO and AlignProp) or
``ava+logos-l14-linearMSE.pth`` (ReNO); choose with ``head_file=``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hypernoise.errors import InputFileError
from hypernoise.rewards.base import Reward
from hypernoise.rewards.clip import OPENAI_VIT_L, check_clip_config, finish
from hypernoise.rewards.hub import (REWARD_SOURCES, load_pretrained, load_state_dict_file, quiet_transformers,
                                    read_marker, resolve_file)
from hypernoise.rewards.preprocess import ImageTransform
from hypernoise.rewards.registry import REWARDS

AESTHETIC_HEAD = "sac+logos+ava1-l14-linearMSE.pth"
AESTHETIC_HEAD_RENO = "ava+logos-l14-linearMSE.pth"
AESTHETIC_USUAL = "https://github.com/christophschuhmann/improved-aesthetic-predictor"

REWARD_SOURCES["aesthetic"] = f"head {AESTHETIC_HEAD} (or {AESTHETIC_HEAD_RENO}) from {AESTHETIC_USUAL}, " \
                              f"given as pretrained=PATH; image tower hub {OPENAI_VIT_L}"


class MLPHead(nn.Module):
    """LAION's 5-layer linear head (also ImageReward's): Linear layers at ``layers.{0,2,4,6,7}``
    with dropout between them and no activation, so in eval mode it is one affine map in five
    factors. Widths are read from the state dict: in -> 1024 -> 128 -> 64 -> 16 -> 1 for the
    released heads. Input [B, in] -> output [B, 1]."""

    LINEAR = (0, 2, 4, 6, 7)
    DROPOUT = {1: 0.2, 3: 0.2, 5: 0.1}

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        if len(widths) != len(self.LINEAR) + 1:
            raise ValueError(f"MLPHead needs {len(self.LINEAR) + 1} widths, got {list(widths)}")
        linears = iter(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.layers = nn.Sequential(*(nn.Dropout(self.DROPOUT[i]) if i in self.DROPOUT else next(linears)
                                      for i in range(self.LINEAR[-1] + 1)))

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], prefix: str = "layers.") -> "MLPHead":
        """A head holding ``state_dict``'s ``{prefix}{0,2,4,6,7}.{weight,bias}`` tensors."""
        try:
            weights = [state_dict[f"{prefix}{i}.weight"] for i in cls.LINEAR]
        except KeyError as err:
            raise InputFileError(f"not a LAION-style MLP head: missing {err.args[0]}") from None
        head = cls([weights[0].shape[1]] + [w.shape[0] for w in weights])
        own = {k[len(prefix) - len("layers."):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        head.load_state_dict(own, strict=True)
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AestheticScore(Reward):
    """head(normalised CLIP image embedding) [B]; prompts are not used."""

    name = "aesthetic"

    def __init__(self, vision, head: MLPHead, transform: ImageTransform, source: str = ""):
        super().__init__()
        self.vision = vision  # transformers CLIPVisionModelWithProjection
        self.head = head
        self.transform = transform
        self.source = source
        self.freeze()

    def forward(self, images: torch.Tensor, prompts: Sequence[str] = ()) -> torch.Tensor:
        weight = self.vision.visual_projection.weight
        pixels = self.transform(images).to(device=weight.device, dtype=weight.dtype)
        embeds = self.vision(pixel_values=pixels).image_embeds
        embeds = F.normalize(embeds.float(), dim=-1).to(weight.dtype)
        return self.head(embeds).squeeze(-1).float()


def load_head(pretrained, head_file: str, *, cache_dir=None, allow_pickle: bool = False) -> MLPHead:
    """The MLP head from a ``.pth`` / ``.safetensors`` file, a folder holding ``head_file`` or
    ``head.safetensors``, or a Hub repo holding ``head_file``."""
    if pretrained is not None and Path(os.path.expanduser(str(pretrained)), "head.safetensors").is_file():
        path = Path(os.path.expanduser(str(pretrained)), "head.safetensors")
    else:
        path = resolve_file(pretrained, head_file, what="aesthetic head", usual=AESTHETIC_USUAL, cache_dir=cache_dir)
    return MLPHead.from_state_dict(load_state_dict_file(path, allow_pickle=allow_pickle))


def load_vision_tower(pretrained: Optional[str], clip_pretrained: Optional[str], *, cache_dir=None):
    """``CLIPVisionModelWithProjection``: a converted folder's ``vision_model/``, else
    ``clip_pretrained`` (default openai/clip-vit-large-patch14; a full CLIPModel loads too)."""
    from transformers import AutoConfig, CLIPVisionModelWithProjection

    bundled = Path(os.path.expanduser(str(pretrained)), "vision_model") if pretrained else None
    if clip_pretrained is None and bundled is not None and bundled.is_dir():
        clip_pretrained = str(bundled)
    source, where = clip_pretrained or OPENAI_VIT_L, dict(what="aesthetic image tower", usual=f"hub {OPENAI_VIT_L}")
    config = load_pretrained(AutoConfig, source, cache_dir=cache_dir, **where)
    check_clip_config(config, what=f"aesthetic image tower {source}", fix=f"use {OPENAI_VIT_L}'s own config.json")
    if not hasattr(config, "vision_config"):
        return load_pretrained(CLIPVisionModelWithProjection, source, config=config, cache_dir=cache_dir, **where)
    # a full CLIPModel: the projection width is set at its top level, and the text tower is not needed
    config.vision_config.projection_dim = config.projection_dim
    with quiet_transformers():
        return load_pretrained(CLIPVisionModelWithProjection, source, config=config.vision_config,
                               cache_dir=cache_dir, **where)


@REWARDS.register("aesthetic", help="LAION improved aesthetic predictor on CLIP ViT-L/14 (about 1-10; "
                                    "ignores the prompt)")
def build_aesthetic(pretrained: Optional[str] = None, head_file: str = AESTHETIC_HEAD,
                    clip_pretrained: Optional[str] = None, device=None, dtype=None,
                    gradient_checkpointing: bool = False, cache_dir=None, allow_pickle: bool = False,
                    **_) -> AestheticScore:
    """Aesthetic score. ``pretrained``: the head file, a folder holding it (or a converted folder),
    or a Hub repo holding ``head_file``; ``clip_pretrained``: the ViT-L/14 (default
    openai/clip-vit-large-patch14, or the converted folder's own copy)."""
    if pretrained is not None and Path(os.path.expanduser(str(pretrained))).is_dir():
        read_marker(os.path.expanduser(str(pretrained)), "aesthetic")
    head = load_head(pretrained, head_file, cache_dir=cache_dir, allow_pickle=allow_pickle)
    vision = load_vision_tower(pretrained, clip_pretrained, cache_dir=cache_dir)
    if vision.config.projection_dim != head.layers[0].in_features:
        raise InputFileError(f"aesthetic head takes {head.layers[0].in_features}-d embeddings but the image tower "
                             f"gives {vision.config.projection_dim}-d; the head needs a ViT-L/14 ({OPENAI_VIT_L})")
    transform = ImageTransform(size=vision.config.image_size, fit="crop")
    reward = AestheticScore(vision, head, transform, source=str(pretrained))
    return finish(reward, vision.vision_model.encoder.layers, device=device, dtype=dtype,
                  gradient_checkpointing=gradient_checkpointing)
