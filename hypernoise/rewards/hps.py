"""HPSv2.1 (Human Preference Score v2.1) on transformers' ``CLIPModel``.

    hps(x, c) = cos(E_img(x), E_txt(c))     [B], about 0.25-0.35 for typical images

HPSv2 reports the plain cosine (no logit scale); ReNO's weight 5 assumes it. The checkpoint
``HPS_v2.1_compressed.pt`` (Hub repo xswu/HPSv2, key ``state_dict``) is an open_clip ViT-H-14;
``open_clip_to_transformers`` renames it onto ``CLIPModel`` (NOTES.md "Reward checkpoints"):
fused ``in_proj`` split into q, k, v along dim 0; ``visual.proj`` and ``text_projection``
transposed (open_clip multiplies ``x @ proj``, nn.Linear computes ``x @ W.T``); exact GELU.
Head counts are not stored in the file: they come from open_clip's published configuration
(``clip.CLIP_ARCHITECTURES``; ViT-H-14: 16 vision heads of width 80, 16 text heads of 64).
Preprocessing is HPS's own: long side to 224, pad to a square with black, CLIP mean / std.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from hypernoise.errors import InputFileError, UnknownNameError
from hypernoise.rewards.clip import (CLIP_ARCHITECTURES, LAION_VIT_H, ClipArchitecture, ClipWidths,
                                     ContrastiveReward, describe_widths, find_architecture, finish, load_clip_model,
                                     load_clip_tokenizer, matches)
from hypernoise.rewards.hub import (MARKER_FORMAT, REWARD_SOURCES, load_state_dict_file, model_from_state_dict,
                                    read_marker, reconvert_command, resolve_file)
from hypernoise.rewards.preprocess import ImageTransform
from hypernoise.rewards.registry import REWARDS

HPS_REPO = "xswu/HPSv2"
HPS_FILE = "HPS_v2.1_compressed.pt"
HPS_USUAL = f"https://huggingface.co/{HPS_REPO} ({HPS_FILE})"
#: HPSv2.1 is open_clip's ViT-H-14 (HPSv2's ``create_model_and_transforms('ViT-H-14', ...)``)
HPS_ARCH = "ViT-H-14"

REWARD_SOURCES["hps"] = f"hub {HPS_REPO}, file {HPS_FILE} (open_clip ViT-H-14, converted on load) + tokenizer " \
                        f"{LAION_VIT_H}; or a converted folder"

#: open_clip names outside the transformer blocks -> (CLIPModel name, transpose?)
_TOP_LEVEL = {
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
    "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "visual.ln_pre.weight": ("vision_model.pre_layrnorm.weight", False),
    "visual.ln_pre.bias": ("vision_model.pre_layrnorm.bias", False),
    "visual.ln_post.weight": ("vision_model.post_layernorm.weight", False),
    "visual.ln_post.bias": ("vision_model.post_layernorm.bias", False),
    "visual.proj": ("visual_projection.weight", True),
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "ln_final.weight": ("text_model.final_layer_norm.weight", False),
    "ln_final.bias": ("text_model.final_layer_norm.bias", False),
    "text_projection": ("text_projection.weight", True),
    "logit_scale": ("logit_scale", False),
}

#: inside a residual block, open_clip -> CLIPEncoderLayer (the fused in_proj is split apart)
_BLOCK = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}

_TOWERS = {"visual.transformer.resblocks.": "vision_model.encoder.layers.",
           "transformer.resblocks.": "text_model.encoder.layers."}

_BLOCK_KEY = re.compile(r"^(visual\.transformer\.resblocks\.|transformer\.resblocks\.)(\d+)\.(.+)$")


def _rename_block_entry(tower: str, index: str, rest: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    prefix = f"{_TOWERS[tower]}{index}."
    if rest.startswith("attn.in_proj_"):  # rows [q; k; v] of the fused projection
        kind = rest[len("attn.in_proj_"):]
        q, k, v = value.chunk(3, dim=0)
        return {f"{prefix}self_attn.{n}_proj.{kind}": t for n, t in zip("qkv", (q, k, v))}
    module, _, param = rest.rpartition(".")
    if module not in _BLOCK:
        raise InputFileError(f"HPS: unexpected key {tower}{index}.{rest}; not an open_clip ViT checkpoint")
    return {f"{prefix}{_BLOCK[module]}.{param}": value}


def open_clip_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an open_clip CLIP state dict (ViT image tower, built-in text tower) to
    transformers' ``CLIPModel`` names. Unknown keys raise ``InputFileError``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        block = _BLOCK_KEY.match(key)
        if block:
            out.update(_rename_block_entry(*block.groups(), value))
        elif key in _TOP_LEVEL:
            name, transpose = _TOP_LEVEL[key]
            out[name] = value.t().contiguous() if transpose else value
        elif key != "attn_mask":  # open_clip's causal mask buffer, rebuilt by transformers
            raise InputFileError(f"HPS: unexpected key {key}; not an open_clip ViT checkpoint")
    return out


def _count_blocks(state_dict: dict, tower: str) -> int:
    indices = {int(m.group(2)) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(1) == tower}
    return len(indices)


def open_clip_widths(state_dict: dict[str, torch.Tensor]) -> ClipWidths:
    """Vision width, patch size, text width and projection width of an open_clip checkpoint."""
    conv = state_dict["visual.conv1.weight"]  # [vision_width, 3, patch, patch]
    return ClipWidths(vision_width=conv.shape[0], patch=conv.shape[-1],
                      text_width=state_dict["token_embedding.weight"].shape[1],
                      embed_dim=state_dict["text_projection"].shape[1])  # [text_width, embed_dim]


def open_clip_architecture(state_dict: dict[str, torch.Tensor], arch: Optional[str] = None) -> ClipArchitecture:
    """The published architecture of an open_clip checkpoint: ``arch`` (a ``CLIP_ARCHITECTURES``
    name), whose widths must be the checkpoint's, else the one the checkpoint's widths identify."""
    if arch is not None and arch not in CLIP_ARCHITECTURES:
        known = ", ".join(CLIP_ARCHITECTURES)
        raise UnknownNameError(f"unknown open_clip architecture {arch!r}; choose one of: {known}")
    widths = asdict(open_clip_widths(state_dict))
    name = arch or find_architecture(widths)
    if name is None:
        raise InputFileError(f"open_clip checkpoint of no known architecture ({describe_widths(widths)}); add its "
                             f"published widths and heads to hypernoise.rewards.clip.CLIP_ARCHITECTURES and pass "
                             f"arch=<its name> (known: {', '.join(CLIP_ARCHITECTURES)})")
    if not matches(widths, name):
        raise InputFileError(f"open_clip checkpoint is not a {name}: it has {describe_widths(widths)}, {name} has "
                             f"{describe_widths(asdict(CLIP_ARCHITECTURES[name].widths))}")
    return CLIP_ARCHITECTURES[name]


def clip_config_from_open_clip(state_dict: dict[str, torch.Tensor], arch: Optional[str] = None, *,
                               hidden_act: Optional[str] = None, layer_norm_eps: float = 1e-5):
    """The ``CLIPConfig`` of an open_clip ViT checkpoint.

    Widths and heads are the published architecture's (``open_clip_architecture``: ``arch``, or
    the one the checkpoint's widths identify); depth, MLP width, image size, vocabulary and
    context length are read off the tensors. open_clip pools text at the highest token id, so
    end-of-text is the last id of the vocabulary. ``hidden_act`` overrides the architecture's
    (``"quick_gelu"`` for OpenAI's own weights).
    """
    from transformers import CLIPConfig

    sd, published = state_dict, open_clip_architecture(state_dict, arch)
    widths = published.widths
    grid = math.isqrt(sd["visual.positional_embedding"].shape[0] - 1)  # [1 + grid^2, vision_width]
    vocab = sd["token_embedding.weight"].shape[0]
    common = dict(hidden_act=hidden_act or published.hidden_act, layer_norm_eps=layer_norm_eps,
                  projection_dim=widths.embed_dim)
    vision = dict(hidden_size=widths.vision_width, patch_size=widths.patch, image_size=grid * widths.patch,
                  intermediate_size=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                  num_hidden_layers=_count_blocks(sd, "visual.transformer.resblocks."),
                  num_attention_heads=published.vision_heads, **common)
    text = dict(vocab_size=vocab, hidden_size=widths.text_width,
                max_position_embeddings=sd["positional_embedding"].shape[0],
                intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                num_hidden_layers=_count_blocks(sd, "transformer.resblocks."),
                num_attention_heads=published.text_heads,
                bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0, **common)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=widths.embed_dim,
                      logit_scale_init_value=float(sd["logit_scale"]))


def load_open_clip_checkpoint(path, arch: Optional[str] = None, *, hidden_act: Optional[str] = None,
                              allow_pickle: bool = False):
    """A transformers ``CLIPModel`` from an open_clip checkpoint file (``HPS_v2.1_compressed.pt``);
    ``arch`` names its architecture (default: identified by its widths)."""
    from transformers import CLIPModel

    original = load_state_dict_file(path, key="state_dict", allow_pickle=allow_pickle)
    missing = [k for k in ("visual.conv1.weight", "token_embedding.weight", "text_projection") if k not in original]
    if missing:
        raise InputFileError(f"{path}: no open_clip CLIP weights (missing {missing}); expected {HPS_FILE}")
    config = clip_config_from_open_clip(original, arch, hidden_act=hidden_act)
    return model_from_state_dict(CLIPModel, config, open_clip_to_transformers(original), what=f"HPS {path}")


def _reconvert(folder: Path, record: Optional[dict]) -> str:
    """How a converted HPS folder with a wrong config came about, and the command that replaces it."""
    fmt = (record or {}).get("format", MARKER_FORMAT)
    origin = (f"it was converted with the wrong head count by an earlier hypernoise (conversion format {fmt})"
              if fmt < MARKER_FORMAT else "it was not written by this hypernoise's converter")
    return f"{origin}; convert again: {reconvert_command('hps', folder, record, HPS_FILE)}"


def load_hps_model(pretrained, *, cache_dir=None, allow_pickle: bool = False):
    """``CLIPModel`` of HPS from a converted folder (``config.json``), the original ``.pt`` file,
    a folder holding it, or a Hub repo holding it (default xswu/HPSv2)."""
    folder = Path(os.path.expanduser(str(pretrained)))
    if folder.is_dir() and (folder / "config.json").is_file():
        record = read_marker(folder, "hps")
        return load_clip_model(str(folder), what="hps", usual=HPS_USUAL, arch=HPS_ARCH, fix=_reconvert(folder, record))
    path = resolve_file(pretrained, HPS_FILE, what="HPSv2.1 weights", usual=HPS_USUAL, cache_dir=cache_dir)
    return load_open_clip_checkpoint(path, HPS_ARCH, allow_pickle=allow_pickle)


@REWARDS.register("hps", help="HPSv2.1: cos(image, prompt), logit-scale free (about 0.25-0.35); "
                              "open_clip ViT-H-14 mapped onto transformers CLIPModel")
def build_hps(pretrained: Optional[str] = None, tokenizer: Optional[str] = None, device=None, dtype=None,
              gradient_checkpointing: bool = False, cache_dir=None, allow_pickle: bool = False,
              **_) -> ContrastiveReward:
    """HPSv2.1. ``pretrained``: ``HPS_v2.1_compressed.pt``, a folder holding it, a converted folder
    (``convert_reward("hps", ...)``) or a Hub repo (default xswu/HPSv2). ``tokenizer``: default the
    converted folder's own, else the LAION ViT-H-14 tokenizer (open_clip's BPE tokenizer)."""
    pretrained = pretrained or HPS_REPO
    model = load_hps_model(pretrained, cache_dir=cache_dir, allow_pickle=allow_pickle)
    tok = load_clip_tokenizer(tokenizer, pretrained, LAION_VIT_H, what="hps", cache_dir=cache_dir,
                              vocab_size=model.config.text_config.vocab_size)
    transform = ImageTransform(size=model.config.vision_config.image_size, fit="pad")
    reward = ContrastiveReward(model, tok, transform, use_logit_scale=False, name="hps", source=str(pretrained))
    return finish(reward, model.vision_model.encoder.layers, device=device, dtype=dtype,
                  gradient_checkpointing=gradient_checkpointing)
