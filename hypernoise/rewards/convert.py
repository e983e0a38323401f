"""Convert original reward checkpoints, once, into folders of safetensors.

A converted folder loads without the original files, without pickle and without the conversion
step, and works as ``pretrained=`` for its reward::

    convert_reward("hps", "HPS_v2.1_compressed.pt", "weights/hps")
    build_reward("hps:5", pretrained="weights/hps")

Layouts (each with ``hypernoise_reward.json`` naming the reward, the source and the conversion
format, ``hub.MARKER_FORMAT``):
    hps, clip, pickscore   config.json + model.safetensors (CLIPModel) + tokenizer files
    imagereward            vision_model/ (BlipVisionModel), text_model/ (BlipTextModel),
                           head.safetensors (MLPHead), tokenizer/ (BERT + [DEC], [ENC])
    aesthetic              head.safetensors (MLPHead), vision_model/ (CLIPVisionModelWithProjection)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

from hypernoise.io import output_folder, save_tensors, write_errors_as_oserror
from hypernoise.registry import Registry
from hypernoise.rewards.aesthetic import AESTHETIC_HEAD, load_head, load_vision_tower
from hypernoise.rewards.clip import LAION_VIT_H, PICKSCORE, load_clip_model, load_clip_tokenizer
from hypernoise.rewards.hps import load_hps_model
from hypernoise.rewards.hub import MARKER_FILE, MARKER_OPTIONS, write_marker
from hypernoise.rewards.imagereward import load_imagereward_parts, load_imagereward_tokenizer

PathLike = Union[str, os.PathLike]

CONVERTERS: Registry = Registry("reward converter")


def convert_reward(name: str, source: PathLike, out_dir: PathLike, *, overwrite: bool = False, **options) -> Path:
    """Convert reward ``name``'s original weights at ``source`` into the folder ``out_dir``.

    Args:
        name: ``hps``, ``imagereward``, ``aesthetic``, ``clip`` or ``pickscore``.
        source: the original weights, as the reward's ``pretrained=`` takes them: a file
            (``HPS_v2.1_compressed.pt``, ``ImageReward.pt``, ``sac+logos+ava1-l14-linearMSE.pth``), a
            folder holding it, or a Hub id (``xswu/HPSv2``, ``THUDM/ImageReward``, a CLIP model id).
        out_dir: the folder to write; it must not exist or be empty unless ``overwrite``.
        overwrite: replace an existing folder's contents.
        **options: passed to the converter: ``tokenizer`` (id or folder to bundle), ``cache_dir``,
            ``allow_pickle`` (torch files holding Python objects, trusted only), and for
            ``aesthetic`` ``head_file`` and ``clip_pretrained``.

    Returns the folder. Raises ``UnknownNameError`` (no such converter), ``WeightsNotFoundError``,
    ``InputFileError`` (not the expected checkpoint) or ``OutputExistsError``. ``out_dir`` is an
    output folder like every command's (``io.output_folder``: locked while written, its manifest
    kept, ``overwrite`` removing only what hypernoise wrote there, never a file or a folder of the
    user's). The conversion is written into a hidden folder inside it first; its files are moved
    into place when complete, the marker last.
    """
    convert = CONVERTERS.get(name)
    out = Path(out_dir).expanduser()
    inputs = {"source": str(source), **{k: str(options[k]) for k in ("tokenizer", "clip_pretrained") if options.get(k)}}
    with output_folder(out, overwrite=overwrite, inputs=inputs, command="hypernoise convert-reward") as folder:
        staging = Path(tempfile.mkdtemp(prefix=".tmp-convert-", dir=folder))
        try:
            with write_errors_as_oserror(folder):  # transformers' save_pretrained writes through safetensors
                convert(source, staging, **options)
            write_marker(staging, name, source=_where_from(source), **_recorded(options))
            for entry in sorted(staging.iterdir(), key=lambda p: p.name == MARKER_FILE):  # the marker last
                os.replace(entry, folder / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _where_from(source: PathLike) -> str:
    """``source`` as the marker records it: an absolute path for a local file or folder (so the
    command that converts it again works from anywhere), else the Hub id."""
    path = Path(str(source)).expanduser()
    return str(path.resolve()) if path.exists() else str(source)


def _recorded(options: dict) -> dict:
    """The options given that the marker records (``MARKER_OPTIONS``), local paths made absolute,
    so that the folder can be converted again alike."""
    return {k: _where_from(options[k]) if k in ("tokenizer", "clip_pretrained") else options[k]
            for k in MARKER_OPTIONS if options.get(k)}


@CONVERTERS.register("hps", help="HPS_v2.1_compressed.pt (open_clip) -> CLIPModel safetensors + tokenizer")
def convert_hps(source, out: Path, tokenizer: Optional[str] = None, cache_dir=None, allow_pickle: bool = False,
                **_) -> None:
    model = load_hps_model(source, cache_dir=cache_dir, allow_pickle=allow_pickle)
    tok = load_clip_tokenizer(tokenizer, source, LAION_VIT_H, what="hps", cache_dir=cache_dir,
                              vocab_size=model.config.text_config.vocab_size)
    model.save_pretrained(out)
    tok.save_pretrained(out)


@CONVERTERS.register("imagereward", help="ImageReward.pt + med_config.json -> BLIP safetensors + tokenizer")
def convert_imagereward(source, out: Path, tokenizer: Optional[str] = None, cache_dir=None,
                        allow_pickle: bool = False, **_) -> None:
    vision, text, head = load_imagereward_parts(source, cache_dir=cache_dir, allow_pickle=allow_pickle)
    vision.save_pretrained(out / "vision_model")
    text.save_pretrained(out / "text_model")
    save_tensors({k: v.contiguous() for k, v in head.state_dict().items()}, out / "head.safetensors")
    tok = load_imagereward_tokenizer(tokenizer, source, vocab_size=text.config.vocab_size, cache_dir=cache_dir)
    tok.save_pretrained(out / "tokenizer")


@CONVERTERS.register("aesthetic", help="LAION head .pth -> head.safetensors + the CLIP ViT-L/14 image tower")
def convert_aesthetic(source, out: Path, head_file: Optional[str] = None, clip_pretrained: Optional[str] = None,
                      cache_dir=None, allow_pickle: bool = False, **_) -> None:
    head = load_head(source, head_file or AESTHETIC_HEAD, cache_dir=cache_dir, allow_pickle=allow_pickle)
    save_tensors({k: v.contiguous() for k, v in head.state_dict().items()}, out / "head.safetensors")
    load_vision_tower(source, clip_pretrained, cache_dir=cache_dir).save_pretrained(out / "vision_model")


def _convert_clip_like(default: str, default_tokenizer: Optional[str]):
    def convert(source, out: Path, tokenizer: Optional[str] = None, cache_dir=None, **_) -> None:
        source = source or default
        model = load_clip_model(source, what="CLIP model", usual=f"hub {default}", cache_dir=cache_dir)
        tok = load_clip_tokenizer(tokenizer, source, default_tokenizer or str(source), what="CLIP",
                                  cache_dir=cache_dir, vocab_size=model.config.text_config.vocab_size)
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return convert


CONVERTERS.register("clip", help="a CLIPModel (Hub id or folder) -> safetensors + tokenizer")(
    _convert_clip_like(LAION_VIT_H, None))
CONVERTERS.register("pickscore", help="PickScore_v1 -> safetensors + the LAION ViT-H-14 tokenizer")(
    _convert_clip_like(PICKSCORE, LAION_VIT_H))
