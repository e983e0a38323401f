"""GenEval's detector checkpoint: the official mmdet 2.x ``.pth`` read as it is, or a converted folder.

The official file (``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_*.pth``) is
``{"state_dict": {mmdet name: tensor}, "meta": ...}``. ``KEY_TABLE`` maps its names onto this
package's modules, once, in both directions; ``infer_config`` reads the architecture from the
tensor shapes (so smaller checkpoints of the same layout load too). A file of another layout is
refused with one line naming what differs.

    read_detector_weights(path) -> (DetectorConfig, {module name: tensor})   a .pth or a folder
    convert_detector(src, out_dir) -> Path                                     .pth -> safetensors folder
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from hypernoise.errors import InputFileError
from hypernoise.io import output_folder, save_tensors

#: a converted folder's files and format tag
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
FORMAT = "hypernoise-geneval-detector"
FORMAT_VERSION = 1

#: mmdet 2.x name prefix -> module name prefix; ``{s}``-style fields stand for integers.
#: (mmdet/models/backbones/swin.py, mmdet/models/plugins/msdeformattn_pixel_decoder.py,
#: mmdet/models/dense_heads/mask2former_head.py, mmcv/cnn/bricks/transformer.py)
KEY_TABLE = (
    ("backbone.patch_embed.projection.", "backbone.patch_embed.proj."),
    ("backbone.patch_embed.norm.", "backbone.patch_embed.norm."),
    ("backbone.stages.{s}.blocks.{b}.norm1.", "backbone.stages.{s}.blocks.{b}.norm1."),
    ("backbone.stages.{s}.blocks.{b}.norm2.", "backbone.stages.{s}.blocks.{b}.norm2."),
    ("backbone.stages.{s}.blocks.{b}.attn.w_msa.qkv.", "backbone.stages.{s}.blocks.{b}.attn.qkv."),
    ("backbone.stages.{s}.blocks.{b}.attn.w_msa.proj.", "backbone.stages.{s}.blocks.{b}.attn.proj."),
    ("backbone.stages.{s}.blocks.{b}.attn.w_msa.relative_position_bias_table",
     "backbone.stages.{s}.blocks.{b}.attn.relative_position_bias_table"),
    ("backbone.stages.{s}.blocks.{b}.ffn.layers.0.0.", "backbone.stages.{s}.blocks.{b}.mlp.fc1."),
    ("backbone.stages.{s}.blocks.{b}.ffn.layers.1.", "backbone.stages.{s}.blocks.{b}.mlp.fc2."),
    ("backbone.stages.{s}.downsample.norm.", "backbone.stages.{s}.downsample.norm."),
    ("backbone.stages.{s}.downsample.reduction.", "backbone.stages.{s}.downsample.reduction."),
    ("backbone.norm{s}.", "backbone.out_norms.{s}."),
    ("panoptic_head.pixel_decoder.input_convs.{i}.conv.", "pixel_decoder.input_convs.{i}.conv."),
    ("panoptic_head.pixel_decoder.input_convs.{i}.gn.", "pixel_decoder.input_convs.{i}.norm."),
    ("panoptic_head.pixel_decoder.encoder.layers.{l}.attentions.0.", "pixel_decoder.encoder.{l}.attn."),
    ("panoptic_head.pixel_decoder.encoder.layers.{l}.ffns.0.layers.0.0.", "pixel_decoder.encoder.{l}.ffn.fc1."),
    ("panoptic_head.pixel_decoder.encoder.layers.{l}.ffns.0.layers.1.", "pixel_decoder.encoder.{l}.ffn.fc2."),
    ("panoptic_head.pixel_decoder.encoder.layers.{l}.norms.0.", "pixel_decoder.encoder.{l}.attn_norm."),
    ("panoptic_head.pixel_decoder.encoder.layers.{l}.norms.1.", "pixel_decoder.encoder.{l}.ffn_norm."),
    ("panoptic_head.pixel_decoder.level_encoding.", "pixel_decoder.level_embed."),
    ("panoptic_head.pixel_decoder.lateral_convs.{i}.conv.", "pixel_decoder.lateral_convs.{i}.conv."),
    ("panoptic_head.pixel_decoder.lateral_convs.{i}.gn.", "pixel_decoder.lateral_convs.{i}.norm."),
    ("panoptic_head.pixel_decoder.output_convs.{i}.conv.", "pixel_decoder.output_convs.{i}.conv."),
    ("panoptic_head.pixel_decoder.output_convs.{i}.gn.", "pixel_decoder.output_convs.{i}.norm."),
    ("panoptic_head.pixel_decoder.mask_feature.", "pixel_decoder.mask_feature."),
    ("panoptic_head.transformer_decoder.layers.{l}.attentions.0.attn.", "decoder.layers.{l}.cross_attn."),
    ("panoptic_head.transformer_decoder.layers.{l}.attentions.1.attn.", "decoder.layers.{l}.self_attn."),
    ("panoptic_head.transformer_decoder.layers.{l}.ffns.0.layers.0.0.", "decoder.layers.{l}.ffn.fc1."),
    ("panoptic_head.transformer_decoder.layers.{l}.ffns.0.layers.1.", "decoder.layers.{l}.ffn.fc2."),
    ("panoptic_head.transformer_decoder.layers.{l}.norms.0.", "decoder.layers.{l}.cross_norm."),
    ("panoptic_head.transformer_decoder.layers.{l}.norms.1.", "decoder.layers.{l}.self_norm."),
    ("panoptic_head.transformer_decoder.layers.{l}.norms.2.", "decoder.layers.{l}.ffn_norm."),
    ("panoptic_head.transformer_decoder.post_norm.", "decoder.post_norm."),
    ("panoptic_head.query_feat.", "decoder.query_feat."),
    ("panoptic_head.query_embed.", "decoder.query_pos."),
    ("panoptic_head.level_embed.", "decoder.level_embed."),
    ("panoptic_head.cls_embed.", "decoder.cls_embed."),
    ("panoptic_head.mask_embed.", "decoder.mask_embed."),
)
#: mmdet buffers that are not weights: WindowMSA recomputes its index from the window size
IGNORED_KEYS = re.compile(r"backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.relative_position_index")
#: names that mark mmdet 3.x's renamed transformer layers (self_attn/ffn/cross_attn, not attentions.N/ffns.0)
MMDET3_MARKERS = (".encoder.layers.0.self_attn.", ".transformer_decoder.layers.0.cross_attn.")
_NAMED = 3


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's architecture. Defaults: ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``.

    Shapes give everything except the attention heads and sampling points of the pixel decoder
    and the decoder, which keep the config's values (8, 4, 8)."""

    embed_dim: int = 96
    depths: tuple = (2, 2, 18, 2)
    swin_heads: tuple = (3, 6, 12, 24)
    window: int = 7
    patch: int = 4
    mlp_ratio: int = 4
    feat_channels: int = 256
    encoder_layers: int = 6
    encoder_levels: int = 3
    encoder_heads: int = 8
    encoder_points: int = 4
    encoder_ffn: int = 1024
    decoder_layers: int = 9
    decoder_levels: int = 3
    decoder_heads: int = 8
    decoder_ffn: int = 2048
    num_queries: int = 100
    num_classes: int = 80
    gn_groups: int = 32

    @classmethod
    def from_dict(cls, data: Mapping) -> "DetectorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown detector config fields {unknown[:_NAMED]}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# -- the key table --------------------------------------------------------------------------------

def _pattern(template: str) -> re.Pattern:
    """A table template as a regex matching a key's prefix; ``{x}`` fields capture integers."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>\d+)" for i, p in enumerate(parts))
    return re.compile(regex)


_FORWARD = [(_pattern(src), dst) for src, dst in KEY_TABLE]
_BACKWARD = [(_pattern(dst), src) for src, dst in KEY_TABLE]


def _translate(key: str, rules) -> str | None:
    """The key with its prefix rewritten by the first matching rule; None when no rule matches."""
    for pattern, template in rules:
        found = pattern.match(key)
        if found and (found.end() == len(key) or found.group(0).endswith(".")):
            return template.format(**found.groupdict()) + key[found.end():]
    return None


def module_name(mmdet_key: str) -> str | None:
    """mmdet 2.x key -> this package's module key (None when the table has no row for it)."""
    return _translate(mmdet_key, _FORWARD)


def mmdet_name(module_key: str) -> str | None:
    """This package's module key -> the mmdet 2.x key it is read from."""
    return _translate(module_key, _BACKWARD)


# -- reading ------------------------------------------------------------------------------------

def _load_pth(path: Path) -> dict:
    """The state dict inside a ``.pth`` (``{"state_dict": ...}`` or a bare state dict), on the CPU."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not its format
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputFileError(f"{path} is not a PyTorch checkpoint torch can load safely ({reason[:160]})") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(f"{path} holds no state dict of tensors (expected mmdet's {{'state_dict': ...}})")
    return state


def _check_layout(state: Mapping, path: Path) -> None:
    """Refuse, in one line, a checkpoint that is not mmdet 2.x Mask2Former."""
    if any(marker in key for key in state for marker in MMDET3_MARKERS):
        raise InputFileError(
            f"{path} is an mmdet 3.x checkpoint: its transformer layers are named self_attn/cross_attn/ffn "
            f"where mmdet 2.x has attentions.N/ffns.0; use the mmdet 2.x file GenEval downloads "
            f"(mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth)")
    has_head = any(key.startswith("panoptic_head.") for key in state)
    if not has_head or "backbone.patch_embed.projection.weight" not in state:
        sample = ", ".join(list(state)[:_NAMED])
        raise InputFileError(f"{path} is not an mmdet 2.x Mask2Former Swin checkpoint (no backbone.patch_embed / "
                             f"panoptic_head.* keys; its first keys: {sample})")


def _count(state: Mapping, regex: str) -> int:
    """1 + the largest integer the regex's group captures over the keys (0 when none match)."""
    found = [int(m.group(1)) for key in state for m in [re.match(regex, key)] if m]
    return max(found) + 1 if found else 0


def _shape(state: Mapping, key: str, path: Path) -> tuple:
    if key not in state:
        raise InputFileError(f"{path} lacks {key}, which every mmdet 2.x Mask2Former Swin checkpoint has")
    return tuple(state[key].shape)


def infer_config(state: Mapping, path: Path = Path("checkpoint")) -> DetectorConfig:
    """The architecture from the mmdet key names and tensor shapes (Swin depths, widths, heads,
    window; decoder layers, queries, classes)."""
    embed, _, patch, _ = _shape(state, "backbone.patch_embed.projection.weight", path)
    depths = tuple(_count(state, rf"backbone\.stages\.{s}\.blocks\.(\d+)\.") for s in
                   range(_count(state, r"backbone\.stages\.(\d+)\.")))
    tables = [_shape(state, f"backbone.stages.{s}.blocks.0.attn.w_msa.relative_position_bias_table", path)
              for s in range(len(depths))]
    hidden = _shape(state, "backbone.stages.0.blocks.0.ffn.layers.0.0.weight", path)[0]
    head = "panoptic_head."
    feat = _shape(state, head + "pixel_decoder.mask_feature.weight", path)[1]
    return DetectorConfig(
        embed_dim=embed, depths=depths, swin_heads=tuple(t[1] for t in tables), patch=patch,
        window=(round(tables[0][0] ** 0.5) + 1) // 2, mlp_ratio=hidden // embed, feat_channels=feat,
        encoder_layers=_count(state, r"panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\."),
        encoder_levels=_shape(state, head + "pixel_decoder.level_encoding.weight", path)[0],
        encoder_ffn=_shape(state, head + "pixel_decoder.encoder.layers.0.ffns.0.layers.0.0.weight", path)[0],
        decoder_layers=_count(state, r"panoptic_head\.transformer_decoder\.layers\.(\d+)\."),
        decoder_levels=_shape(state, head + "level_embed.weight", path)[0],
        decoder_ffn=_shape(state, head + "transformer_decoder.layers.0.ffns.0.layers.0.0.weight", path)[0],
        num_queries=_shape(state, head + "query_feat.weight", path)[0],
        num_classes=_shape(state, head + "cls_embed.weight", path)[0] - 1)


def map_keys(state: Mapping, path: Path = Path("checkpoint")) -> dict:
    """{mmdet key: tensor} -> {module key: tensor}; unknown keys are refused (the first few named)."""
    mapped, unknown = {}, []
    for key, value in state.items():
        if IGNORED_KEYS.fullmatch(key):
            continue
        name = module_name(key)
        if name is None:
            unknown.append(key)
        else:
            mapped[name] = value
    if unknown:
        raise InputFileError(f"{path} has {len(unknown)} key(s) an mmdet 2.x Mask2Former Swin checkpoint does not "
                             f"have: {', '.join(unknown[:_NAMED])}")
    return mapped


def check_against(weights: Mapping, expected: Mapping, path: Path) -> None:
    """Refuse weights whose key set or shapes differ from the model's (``expected``: its state dict)."""
    missing = [mmdet_name(k) or k for k in expected if k not in weights]
    extra = [mmdet_name(k) or k for k in weights if k not in expected]
    if missing or extra:
        what = (f"lacks {len(missing)} key(s): {', '.join(missing[:_NAMED])}" if missing else
                f"has {len(extra)} unexpected key(s): {', '.join(extra[:_NAMED])}")
        raise InputFileError(f"{path} {what} (for the architecture inferred from its shapes)")
    wrong = [k for k, v in expected.items() if tuple(weights[k].shape) != tuple(v.shape)]
    if wrong:
        k = wrong[0]
        raise InputFileError(f"{path}: {mmdet_name(k) or k} has shape {list(weights[k].shape)}, expected "
                             f"{list(expected[k].shape)} ({len(wrong)} tensor(s) differ)")


def read_pth(path) -> tuple:
    """An mmdet 2.x ``.pth`` -> (DetectorConfig, {module key: float tensor})."""
    path = Path(path)
    state = _load_pth(path)
    _check_layout(state, path)
    return infer_config(state, path), map_keys(state, path)


def read_folder(path) -> tuple:
    """A folder written by ``convert_detector`` -> (DetectorConfig, {module key: tensor})."""
    path = Path(path)
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or "architecture" not in meta:
            raise ValueError(f"{CONFIG_FILE} is not a {FORMAT} config")
        config = DetectorConfig.from_dict(meta["architecture"])
        weights = load_file(str(path / WEIGHTS_FILE))
    except (OSError, ValueError, TypeError, SafetensorError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputFileError(f"{path} is not a converted detector folder ({CONFIG_FILE} + {WEIGHTS_FILE}): "
                             f"{reason}") from None
    return config, weights


def _existing(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"detector checkpoint {path} does not exist")
    return path


def read_detector_weights(path) -> tuple:
    """A ``.pth`` or a converted folder -> (DetectorConfig, {module key: tensor})."""
    path = _existing(path)
    return read_folder(path) if path.is_dir() else read_pth(path)


# -- converting -----------------------------------------------------------------------------------

def convert_detector(src, out_dir, overwrite: bool = False) -> Path:
    """Write the ``.pth`` at ``src`` as a folder ``out_dir`` (``model.safetensors`` with module
    names, ``config.json`` with the inferred architecture) that ``load_detector`` reads fast.

    ``out_dir`` is an output folder like every command's (``io.output_folder``: locked while
    written, its manifest kept; a folder holding anything is refused unless ``overwrite``, which
    removes only what hypernoise wrote there). The checkpoint is read before anything is written;
    the files are written into a hidden folder inside it and moved into place when complete, the
    config last (a folder without it is not a detector folder)."""
    config, weights = read_pth(src)
    with output_folder(out_dir, overwrite=overwrite, inputs={"source": str(src)},
                       command="hypernoise convert-geneval", writes=(WEIGHTS_FILE, CONFIG_FILE)) as out:
        staging = Path(tempfile.mkdtemp(prefix=".tmp-convert-", dir=out))
        try:
            save_tensors({k: v.contiguous() for k, v in weights.items()}, staging / WEIGHTS_FILE)
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "source": Path(src).name,
                    "architecture": asdict(config)}
            (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")
            for name in (WEIGHTS_FILE, CONFIG_FILE):
                os.replace(staging / name, out / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Path(out_dir)
