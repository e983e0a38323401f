"""Contrastive image-text rewards on transformers' ``CLIPModel``: CLIP score and PickScore.

    score(x, c) = s * cos(E_img(x), E_txt(c))     [B]

with s = exp(logit_scale) of the model (100 for OpenAI / LAION CLIP, ~100 for PickScore), as
ReNO uses them (its weights 0.01 and 0.05 assume this scale). s is taken in the dtype the model
runs in, as the original code takes it (ExplainableML/HyperNoise rewards/clip.py:53,
pickscore.py:52; ReNO rewards/clip.py:52, pickscore.py:51): 100 in float32, 99.0 in bf16
(exp of log(100) rounded to 4.59375, then to bf16). HPSv2 (``hps.py``) is the same reward with
s = 1 and its own preprocessing.

Text features are computed once per prompt without gradients and cached; image features are
differentiable with respect to the pixels. transformers is imported inside the builders.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hypernoise.errors import InputFileError, WeightsNotFoundError
from hypernoise.generators.cache import bound_tokenizer_cache
from hypernoise.rewards.base import Reward
from hypernoise.rewards.hub import REWARD_SOURCES, load_pretrained, offline, read_marker, reconvert_command
from hypernoise.rewards.preprocess import ImageTransform, PromptCache
from hypernoise.rewards.registry import REWARDS

LAION_VIT_H = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
OPENAI_VIT_L = "openai/clip-vit-large-patch14"
PICKSCORE = "yuvalkirstain/PickScore_v1"

REWARD_SOURCES["clip"] = f"hub {LAION_VIT_H} (CLIPModel + tokenizer); or {OPENAI_VIT_L}, or a local folder"
REWARD_SOURCES["pickscore"] = f"hub {PICKSCORE} (CLIPModel) + tokenizer {LAION_VIT_H}; or a local folder"


@dataclass(frozen=True)
class ClipWidths:
    """What identifies a CLIP ViT in a checkpoint: tower widths, patch size, projection width."""

    vision_width: int
    patch: int
    text_width: int
    embed_dim: int


@dataclass(frozen=True)
class ClipArchitecture:
    """A published CLIP ViT: its widths and its heads, as open_clip's
    ``src/open_clip/model_configs/<name>.json`` gives them. Vision heads = width // head_width
    (head_width 64 where the file omits it); text heads are listed. Depth, MLP width, vocabulary
    and context length are not: they are read from each checkpoint."""

    widths: ClipWidths
    vision_head_width: int
    text_heads: int
    hidden_act: str = "gelu"  # open_clip's nn.GELU; OpenAI's own weights use quick_gelu

    @property
    def vision_heads(self) -> int:
        return self.widths.vision_width // self.vision_head_width

    def heads(self) -> dict[str, int]:
        return {"vision": self.vision_heads, "text": self.text_heads}


#: open_clip's published ViT configurations (mlfoundations/open_clip, src/open_clip/model_configs).
#: ViT-H-14 (HPSv2, LAION CLIP, PickScore) has vision heads of width 80, not 64: 16 heads, not 20.
CLIP_ARCHITECTURES: dict[str, ClipArchitecture] = {
    "ViT-B-32": ClipArchitecture(ClipWidths(768, 32, 512, 512), vision_head_width=64, text_heads=8),
    "ViT-B-16": ClipArchitecture(ClipWidths(768, 16, 512, 512), vision_head_width=64, text_heads=8),
    "ViT-L-14": ClipArchitecture(ClipWidths(1024, 14, 768, 768), vision_head_width=64, text_heads=12),
    "ViT-H-14": ClipArchitecture(ClipWidths(1280, 14, 1024, 1024), vision_head_width=80, text_heads=16),
    "ViT-g-14": ClipArchitecture(ClipWidths(1408, 14, 1024, 1024), vision_head_width=88, text_heads=16),
    "ViT-bigG-14": ClipArchitecture(ClipWidths(1664, 14, 1280, 1280), vision_head_width=104, text_heads=20),
}


def matches(widths: dict[str, Optional[int]], name: str) -> bool:
    """Whether ``widths`` (``ClipWidths`` fields; a None value matches any) are architecture ``name``'s."""
    given = {k: v for k, v in widths.items() if v is not None}
    return given.items() <= asdict(CLIP_ARCHITECTURES[name].widths).items()


def find_architecture(widths: dict[str, Optional[int]]) -> Optional[str]:
    """The name of the architecture in ``CLIP_ARCHITECTURES`` with these widths, or None."""
    return next((name for name in CLIP_ARCHITECTURES if matches(widths, name)), None)


def describe_widths(widths: dict[str, Optional[int]]) -> str:
    """``"vision_width 1280, patch 14, ..."`` for error messages."""
    return ", ".join(f"{k} {v}" for k, v in widths.items() if v is not None)


def _config_widths(config) -> dict[str, Optional[int]]:
    """Widths of a transformers ``CLIPConfig`` or ``CLIPVisionConfig`` (no text width for the latter)."""
    vision, text = getattr(config, "vision_config", config), getattr(config, "text_config", None)
    return dict(vision_width=vision.hidden_size, patch=vision.patch_size,
                text_width=None if text is None else text.hidden_size, embed_dim=config.projection_dim)


def _config_heads(config) -> dict[str, int]:
    heads = {"vision": getattr(config, "vision_config", config).num_attention_heads}
    if hasattr(config, "text_config"):
        heads["text"] = config.text_config.num_attention_heads
    return heads


def check_clip_config(config, *, what: str, fix: str, arch: Optional[str] = None) -> None:
    """Refuse (``InputFileError``) a transformers CLIP config whose head counts are not those of
    the published architecture of its widths: ``arch`` if given (the widths must then be its
    widths), else the one its widths identify. Configs of unpublished widths pass as they are."""
    widths = _config_widths(config)
    name = arch or find_architecture(widths)
    if name is None:
        return
    if not matches(widths, name):
        raise InputFileError(f"{what}: not a {name} ({describe_widths(widths)}); {fix}")
    published = CLIP_ARCHITECTURES[name].heads()
    wrong = [f"{tower} tower {n} heads" for tower, n in _config_heads(config).items() if n != published[tower]]
    if wrong:
        want = ", ".join(f"{tower} {n}" for tower, n in published.items())
        raise InputFileError(f"{what}: config.json gives the {' and the '.join(wrong)}, but {name} has "
                             f"{want}; {fix}")


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
        self.use_logit_scale, self._scale = use_logit_scale, None
        self.name = name
        self.source = source
        self.text_cache = PromptCache(cache_size)
        self.max_length = model.config.text_config.max_position_embeddings
        self.freeze()

    @property
    def _param(self) -> torch.Tensor:
        return self.model.visual_projection.weight

    @property
    def scale(self) -> float:
        """s = exp(logit_scale), computed in the model's dtype as the original code does (module
        docstring): 100 for log(100) in float32 or fp16, 99.0 in bf16; 1 without a logit scale."""
        if not self.use_logit_scale:
            return 1.0
        if self._scale is None:  # read once per device / dtype (no sync per call)
            self._scale = float(self.model.logit_scale.detach().exp())
        return self._scale

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
        self.text_cache.clear()  # cached features (and s) were computed on the old device / dtype
        self._scale = None
        return super()._apply(fn, *args, **kwargs)


def load_clip_model(pretrained: str, *, what: str, usual: str, cache_dir=None, arch: Optional[str] = None,
                    fix: str = "convert the original weights again with hypernoise convert-reward"):
    """A transformers ``CLIPModel`` from a Hub id or a local folder (``WeightsNotFoundError`` if it
    is missing). Its config is checked first (``check_clip_config``: ``arch``, else the published
    architecture of its widths); ``fix`` ends the error saying how to get a correct folder."""
    from transformers import CLIPConfig, CLIPModel

    where = dict(what=what, usual=usual, cache_dir=cache_dir)
    config = load_pretrained(CLIPConfig, pretrained, **where)
    check_clip_config(config, what=f"{what} {pretrained}", fix=fix, arch=arch)
    return load_pretrained(CLIPModel, pretrained, config=config, **where)


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
    bound_tokenizer_cache(tok)  # a reward reads every training prompt: memory flat over many distinct ones
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
    record = read_marker(pretrained, name) if os.path.isdir(str(pretrained)) else None
    fix = f"convert the original again: {reconvert_command(name, pretrained, record, 'SOURCE')}"
    model = load_clip_model(pretrained, what=name, usual=usual, cache_dir=cache_dir, fix=fix)
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
