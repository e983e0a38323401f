"""Generation for users: images per (prompt, seed), PNGs that remember how they were made, and a
side-by-side grid of base and HyperNoise images from the same noise.

Seeds: the image for (prompt, seed) starts from the noise a CPU ``torch.Generator`` seeded with
``seed`` draws first; the same generator then feeds any stochastic sampler step (SANA-Sprint's
multi-step re-noising), as diffusers pipelines use one generator for both. So an image depends
only on (prompt, seed, steps, weights), not on the batch it was made in (up to the rounding of
batched kernels), and the base and HyperNoise images of a seed share their noise.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from hypernoise.generators.base import Generator
from hypernoise.hypernet.base import NoiseHypernetwork

ImageLike = Union[torch.Tensor, "PIL.Image.Image"]  # noqa: F821  (PIL imported lazily)


def seeded_noise(generator: Generator, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """Noise [1, *latent_shape] for ``seed`` (drawn on the CPU) and the generator that drew it."""
    rng = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((1, *generator.latent_shape), generator=rng, dtype=torch.float32)
    return noise.to(device=generator.device, dtype=generator.dtype), rng


def _accepts_rng(generator: Generator) -> bool:
    return "rng" in inspect.signature(generator.generate).parameters


@torch.no_grad()
def _generate_batch(generator: Generator, prompts: list[str], seeds: list[int], num_steps: Optional[int],
                    hypernet: Optional[NoiseHypernetwork], base: bool) -> torch.Tensor:
    drawn = [seeded_noise(generator, s) for s in seeds]
    noise = torch.cat([n for n, _ in drawn])
    kwargs = {"rng": [r for _, r in drawn]} if _accepts_rng(generator) else {}
    cond = generator.encode(prompts)
    if hypernet is None:
        return generator.generate(noise, cond, num_steps, **kwargs)
    x0 = noise if base else hypernet.modulate(noise, cond)  # x0 + f_phi(x0, c), adapters on
    with hypernet.adapters_disabled():  # g itself: a LoRA hypernetwork lives in g's backbone
        return generator.generate(x0, cond, num_steps, **kwargs)


def generate_images(generator: Generator, prompts: Sequence[str], seeds: Sequence[int],
                    num_steps: Optional[int] = None, hypernet: Optional[NoiseHypernetwork] = None,
                    batch_size: int = 4, base: bool = False) -> list[torch.Tensor]:
    """One image per (prompt, seed), prompt-major (all seeds of the first prompt first).

    Returns float tensors [3, H, W] in [0, 1] on the CPU: g(x0, c) without a hypernetwork,
    g(x0 + f_phi(x0, c), c) with one, x0 the noise of the seed (see the module docstring).
    ``base=True`` with a hypernetwork: g(x0, c) with its adapters off -- the base images of a
    generator that carries a LoRA hypernetwork in its backbone.
    """
    pairs = [(p, int(s)) for p in prompts for s in seeds]
    images: list[torch.Tensor] = []
    for start in range(0, len(pairs), max(1, int(batch_size))):
        chunk = pairs[start : start + max(1, int(batch_size))]
        batch = _generate_batch(generator, [p for p, _ in chunk], [s for _, s in chunk], num_steps, hypernet, base)
        images.extend(batch.float().cpu().unbind(0))
    return images


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
    to_pil(image).save(path, format="PNG", pnginfo=info)
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
    from PIL import Image, ImageDraw

    if not (len(base_images) == len(hn_images) == len(prompts)) or not prompts:
        raise ValueError(f"compare_grid needs one base image, one HyperNoise image and one prompt per column, "
                         f"got {len(base_images)}, {len(hn_images)}, {len(prompts)}")
    rows = [[to_pil(im) for im in base_images], [to_pil(im) for im in hn_images]]
    w, h = rows[0][0].size
    zoom = -(-min_size // max(1, min(w, h)))  # small images (the 32 px world) are enlarged, pixel for pixel
    if zoom > 1:
        rows = [[im.resize((w * zoom, h * zoom), Image.NEAREST) for im in row] for row in rows]
        w, h = w * zoom, h * zoom
    label_w, caption_h = 80, 16
    grid = Image.new("RGB", (label_w + len(prompts) * (w + pad) + pad, caption_h + 2 * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for i, prompt in enumerate(prompts):
        x = label_w + pad + i * (w + pad)
        draw.text((x, 2), _caption(prompt, w), fill="black")
        for r, row in enumerate(rows):
            grid.paste(row[i], (x, caption_h + pad + r * (h + pad)))
    for r, label in enumerate(("base", "HyperNoise")):
        draw.text((4, caption_h + pad + r * (h + pad) + h // 2 - 5), label, fill="black")
    return grid
