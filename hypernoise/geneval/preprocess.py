"""mmdet 2.x's test pipeline for GenEval's detector, in torch: keep-ratio resize, normalise, pad.

    Resize((1333, 800), keep_ratio=True)   mmcv ``imrescale``: OpenCV ``INTER_LINEAR`` on uint8
    Normalize(mean, std, to_rgb=True)      float32 ``(x - mean) / std`` on RGB
    Pad(size_divisor=32)                   zeros at the bottom and right, after normalising

(``configs/mask2former/mask2former_r50_lsj_8x2_50e_coco.py``'s ``test_pipeline``.)

The resize reproduces OpenCV's uint8 bilinear bit for bit (``modules/imgproc/src/resize.cpp``:
``cv::hal::resize`` with ``HResizeLinear`` / ``VResizeLinear<uchar, int, short, ...>``): 11-bit
fixed-point weights, an integer horizontal pass, then a vertical pass that drops 4 and 16 bits
before its final rounding. A float bilinear resize differs by 1 on ~12 % of the values, which
moves the detector's logits by up to ~1, so exactness matters here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hypernoise.errors import ConfigError

#: mmdet's img_norm_cfg (ImageNet statistics, RGB order)
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
#: the test pipeline's Resize img_scale (long edge, short edge) and Pad size_divisor
SCALE = (1333, 800)
SIZE_DIVISOR = 32
#: OpenCV's INTER_RESIZE_COEF_BITS = 11: weights are integers summing to about 2048
COEF_SCALE = 2048

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class ImageMeta:
    """What post-processing needs of one image: sizes as (height, width).

    ``ori_shape``: the image as given; ``img_shape``: after the keep-ratio resize;
    ``pad_shape``: the network input (``img_shape`` padded to a multiple of 32)."""

    ori_shape: tuple
    img_shape: tuple
    pad_shape: tuple


def rescale_size(height: int, width: int, scale: Sequence[int] = SCALE) -> tuple:
    """mmcv ``rescale_size`` for a (long, short) scale: the keep-ratio size (height, width).

    ``sf = min(long / max(h, w), short / min(h, w))``; each side becomes ``int(side * sf + 0.5)``
    (mmcv ``_scale_size``)."""
    sf = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * float(sf) + 0.5), int(width * float(sf) + 0.5)


def to_uint8_rgb(image: ImageLike) -> torch.Tensor:
    """A PIL image (any mode, converted to RGB) or a uint8 RGB array [H, W, 3] -> uint8 tensor [H, W, 3]."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8, copy=True))
    array = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    if array.dtype != torch.uint8 or array.dim() != 3 or array.shape[-1] != 3 or min(array.shape[:2]) < 1:
        raise ConfigError(f"expected a PIL image or a uint8 RGB array [H, W, 3], got {array.dtype} "
                          f"{list(array.shape)}")
    return array.cpu()


def _axis_taps(src: int, dst: int, clamp_weights: bool) -> tuple:
    """OpenCV's INTER_LINEAR taps along one axis: (index0, index1, weight0, weight1), each [dst].

    The source coordinate is ``float((d + 0.5) * scale - 0.5)`` with ``scale = 1 / (dst / src)``
    in double precision, as ``cv::hal::resize`` computes it; weights are ``round((1 - f) * 2048)``
    and ``round(f * 2048)`` (saturate_cast rounds half to even). Along x (``clamp_weights``) a
    coordinate outside the image takes the border pixel with weight 2048; along y OpenCV only
    clamps the row index and keeps the fraction, so the weights stay as computed."""
    scale = 1.0 / (dst / src)
    coord = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    first = torch.floor(coord)
    frac = coord - first
    first = first.to(torch.int64)
    if clamp_weights:
        outside = (first < 0) | (first >= src - 1)
        frac = torch.where(outside, torch.zeros_like(frac), frac)
        first = first.clamp(0, src - 1)
    w0 = torch.round((1.0 - frac) * COEF_SCALE).to(torch.int32)
    w1 = torch.round(frac * COEF_SCALE).to(torch.int32)
    return first.clamp(0, src - 1), (first + 1).clamp(0, src - 1), w0, w1


def _resize_linear(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """OpenCV's fixed-point bilinear: uint8 [H, W, C] -> uint8 [height, width, C].

    Horizontal pass ``S = p0 * a0 + p1 * a1`` (int, scale 2048); vertical pass
    ``((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) + 2) >> 2`` (``VResizeLinear<uchar>``)."""
    x0, x1, a0, a1 = _axis_taps(image.shape[1], width, clamp_weights=True)
    y0, y1, b0, b1 = _axis_taps(image.shape[0], height, clamp_weights=False)
    rows = torch.unique(torch.cat([y0, y1]))  # only the source rows that are read
    src = image[rows].to(torch.int32)
    horizontal = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
    where = torch.full((image.shape[0],), -1, dtype=torch.int64)
    where[rows] = torch.arange(len(rows))
    top, bottom = horizontal[where[y0]] >> 4, horizontal[where[y1]] >> 4
    out = ((b0[:, None, None] * top) >> 16) + ((b1[:, None, None] * bottom) >> 16)
    return ((out + 2) >> 2).to(torch.uint8)


def _resize_area_half(image: torch.Tensor) -> torch.Tensor:
    """An exact 2x downscale: OpenCV switches INTER_LINEAR to its fast INTER_AREA path
    (``resizeAreaFast_``), the mean of each 2x2 block as ``(a + b + c + d + 2) >> 2``."""
    h, w, c = image.shape
    blocks = image.to(torch.int32).view(h // 2, 2, w // 2, 2, c).sum(dim=(1, 3))
    return ((blocks + 2) >> 2).to(torch.uint8)


def resize_like_cv2(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`` for uint8 [H, W, C],
    bit for bit (the same size is a copy; an exact 2x downscale is OpenCV's area average)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.clone()
    if h == 2 * height and w == 2 * width:
        return _resize_area_half(image)
    return _resize_linear(image, height, width)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> float32 [3, H, W], ``(x - mean) / std`` in float32 (mmcv imnormalize)."""
    mean = torch.tensor(MEAN, dtype=torch.float32)
    std = torch.tensor(STD, dtype=torch.float32)
    return ((image.to(torch.float32) - mean) / std).permute(2, 0, 1).contiguous()


def padded_size(height: int, width: int, divisor: int = SIZE_DIVISOR) -> tuple:
    """The size mmdet's ``Pad(size_divisor=32)`` pads (height, width) to."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def image_size(image: ImageLike) -> tuple:
    """(height, width) of a PIL image or an array [H, W, 3], without decoding or resizing it."""
    return (image.height, image.width) if isinstance(image, Image.Image) else tuple(np.shape(image)[:2])


def network_size(image: ImageLike, scale: Sequence[int] = SCALE) -> tuple:
    """The padded network input size (height, width) that ``preprocess_image`` will give ``image``."""
    return padded_size(*rescale_size(*image_size(image), scale=scale))


def preprocess_image(image: ImageLike, scale: Sequence[int] = SCALE) -> tuple:
    """One image -> (network input float32 [3, Hp, Wp], ImageMeta): resize, normalise, pad with 0."""
    pixels = to_uint8_rgb(image)
    ori = tuple(pixels.shape[:2])
    size = rescale_size(*ori, scale=scale)
    normalised = normalize(resize_like_cv2(pixels, *size))
    pad = padded_size(*size)
    padded = F.pad(normalised, (0, pad[1] - size[1], 0, pad[0] - size[0]), value=0.0)
    return padded, ImageMeta(ori_shape=ori, img_shape=size, pad_shape=pad)
