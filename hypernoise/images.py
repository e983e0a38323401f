"""Images on disk and on screen: PIL conversion, PNGs that remember how they were made, and the
side-by-side grid of base and HyperNoise images from the same noise. torch and PIL only (PIL
imported when used).

    to_pil([3, H, W] in [0, 1]) -> PIL.Image
    save_png(image, path, prompt, seed, extra) -> path       (prompt, seed, extra in the PNG's text)
    compare_grid(base_images, hn_images, prompts) -> PIL.Image
    labelled_grid([(label, images), ...], captions) -> PIL.Image   (one labelled row per method)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

ImageLike = Union[torch.Tensor, "PIL.Image.Image"]  # noqa: F821  (PIL imported lazily)


def to_pil(image: ImageLike):
    """[3, H, W] in [0, 1] -> an RGB PIL image (rounded as diffusers' ``numpy_to_pil`` does)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels)


def save_png(image: ImageLike, path, prompt: str, seed: int, extra: Optional[dict] = None) -> Path:
    """Write a PNG whose text metadata holds ``prompt``, ``seed`` and each ``extra`` item.

    Non-string extra values are stored as JSON. Parent folders are created. Returns the path.
    """
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("prompt", str(prompt))
    info.add_text("seed", str(int(seed)))
    for key, value in (extra or {}).items():
        info.add_itxt(str(key), value if isinstance(value, str) else json.dumps(value, default=str))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:  # written whole or not at all: no truncated or 0-byte PNG when the disk fills
        to_pil(image).save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _caption(text: str, width_px: int, char_px: int = 6) -> str:
    room = max(4, width_px // char_px)
    return text if len(text) <= room else text[: room - 3] + "..."


def compare_grid(base_images: Sequence[ImageLike], hn_images: Sequence[ImageLike], prompts: Sequence[str],
                 pad: int = 4, min_size: int = 128):
    """A PIL image: the prompts on top, the base row, then the HyperNoise row from the same noise.

    Column i shows ``prompts[i]``, ``base_images[i]`` and ``hn_images[i]``; all images one size,
    enlarged by an integer factor (nearest neighbour) to at least ``min_size`` px.
    """
    if not (len(base_images) == len(hn_images) == len(prompts)) or not prompts:
        raise ValueError(f"compare_grid needs one base image, one HyperNoise image and one prompt per column, "
                         f"got {len(base_images)}, {len(hn_images)}, {len(prompts)}")
    return labelled_grid([("base", base_images), ("HyperNoise", hn_images)], prompts, pad, min_size)


def labelled_grid(rows: Sequence[tuple[str, Sequence[ImageLike]]], captions: Sequence[str], pad: int = 4,
                  min_size: int = 128):
    """A PIL image: ``captions`` on top, then one row per (label, images), the label on its left
    (``compare_grid`` is base over HyperNoise; the demo adds ReNO and best-of-N rows). All images
    one size, enlarged by an integer factor (nearest neighbour) to at least ``min_size`` px."""
    from PIL import Image, ImageDraw

    if not rows or not captions or any(len(images) != len(captions) for _, images in rows):
        raise ValueError(f"labelled_grid needs one image per caption in every row, got {len(captions)} captions and "
                         f"rows of {[len(images) for _, images in rows]}")
    cells = [[to_pil(im) for im in images] for _, images in rows]
    w, h = cells[0][0].size
    zoom = -(-min_size // max(1, min(w, h)))  # small images (the 32 px world) are enlarged, pixel for pixel
    if zoom > 1:
        cells = [[im.resize((w * zoom, h * zoom), Image.NEAREST) for im in row] for row in cells]
        w, h = w * zoom, h * zoom
    label_w, caption_h = 80, 16
    grid = Image.new("RGB", (label_w + len(captions) * (w + pad) + pad, caption_h + len(rows) * (h + pad) + pad),
                     "white")
    draw = ImageDraw.Draw(grid)
    for i, caption in enumerate(captions):
        x = label_w + pad + i * (w + pad)
        draw.text((x, 2), _caption(caption, w), fill="black")
        for r, row in enumerate(cells):
            grid.paste(row[i], (x, caption_h + pad + r * (h + pad)))
    for r, (label, _) in enumerate(rows):
        draw.text((4, caption_h + pad + r * (h + pad) + h // 2 - 5), label, fill="black")
    return grid
