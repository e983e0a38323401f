"""Generation for users: images per (prompt, seed), and the sample folder a training run writes
(PNGs and the side-by-side grid live in ``hypernoise.images``).

Seeds: the image for (prompt, seed) starts from the noise a CPU ``torch.Generator`` seeded with
``seed`` draws first; the same generator then feeds any stochastic sampler step (SANA-Sprint's
multi-step re-noising), as diffusers pipelines use one generator for both. So an image depends
only on (prompt, seed, steps, weights), not on the batch it was made in (up to the rounding of
batched kernels), and the base and HyperNoise images of a seed share their noise.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from hypernoise.generators.base import Generator
from hypernoise.hypernet.base import NoiseHypernetwork
from hypernoise.adapter import FINETUNE_KIND
from hypernoise.images import ImageLike, compare_grid, labelled_grid, save_png, to_pil  # noqa: F401  (re-exported)
from hypernoise.methods.base import sample, seeded_noise

#: the top-level entries ``hypernoise generate`` writes in its folder: one PNG per (prompt, seed)
#: ("000-a-red-apple-seed0.png"), the HyperNoise and base images of --compare and their grid
OUTPUTS = ("[0-9][0-9][0-9]*-*-seed*.png", "hypernoise", "base", "compare.png")


@torch.no_grad()
def _generate_batch(generator: Generator, prompts: list[str], seeds: list[int], num_steps: Optional[int],
                    hypernet: Optional[NoiseHypernetwork], base: bool, passes: Optional[int]) -> torch.Tensor:
    drawn = [seeded_noise(generator, s) for s in seeds]
    noise, rng = torch.cat([n for n, _ in drawn]), [r for _, r in drawn]
    cond = generator.encode(prompts)
    if base and hypernet is not None:  # g itself: a LoRA hypernetwork lives in g's backbone
        with hypernet.adapters_disabled():
            return sample(generator, None, noise, cond, num_steps=num_steps, rng=rng).images
    return sample(generator, hypernet, noise, cond, passes=passes, num_steps=num_steps, rng=rng).images


def generate_images(generator: Generator, prompts: Sequence[str], seeds: Sequence[int],
                    num_steps: Optional[int] = None, hypernet: Optional[NoiseHypernetwork] = None,
                    batch_size: int = 4, base: bool = False, passes: Optional[int] = None,
                    on_image: Optional[Callable[[int, torch.Tensor], None]] = None,
                    merged: bool = False) -> list[torch.Tensor]:
    """One image per (prompt, seed), prompt-major (all seeds of the first prompt first).

    Returns float tensors [3, H, W] in [0, 1] on the CPU: g(x0, c) without a hypernetwork,
    g(x0 + f_phi(x0, c), c) with one, x0 the noise of the seed (see the module docstring).
    ``base=True`` with a hypernetwork: g(x0, c) with its adapters off -- the base images of a
    generator that carries a LoRA hypernetwork in its backbone. ``passes``: K of the map
    (default: the hypernetwork's). ``on_image(index, image)`` is called as each batch is done
    (``generate`` saves every image at once, so an interrupted run keeps what it finished).
    ``merged``: run the hypernetwork in its merged inference mode (``NoiseHypernetwork.merged``:
    each pass of f_phi costs one plain backbone forward, for the memory of about one more backbone
    while generating); the images are the same up to rounding.
    """
    pairs = [(p, int(s)) for p in prompts for s in seeds]
    images: list[torch.Tensor] = []
    size = max(1, int(batch_size))
    with hypernet.merged() if merged and hypernet is not None else contextlib.nullcontext():
        for start in range(0, len(pairs), size):
            chunk = pairs[start : start + size]
            batch = _generate_batch(generator, [p for p, _ in chunk], [s for _, s in chunk], num_steps, hypernet,
                                    base, passes)
            for image in batch.float().cpu().unbind(0):
                if on_image is not None:
                    on_image(len(images), image)
                images.append(image)
    return images


#: adapter type -> (method name of its sample PNGs, label of its row in the grid); a noise hypernetwork otherwise
SAMPLE_ROWS = {FINETUNE_KIND: ("finetune", "fine-tuned")}


def write_samples(generator: Generator, hypernet, prompts: Sequence[str], out_dir,
                  seed: int = 0, num_steps: Optional[int] = None, max_prompts: int = 8) -> Optional[Path]:
    """``out_dir/samples/compare.png`` (base row over the trained row, same noise) and one PNG per
    image (``NN-base.png``, ``NN-<method>.png``); only for image generators. ``hypernet``: a noise
    hypernetwork, or a fine-tuning LoRA (``methods.finetune``: g with it on). Returns the grid's path."""
    if generator.output_kind != "image":
        return None
    prompts = [p for p in dict.fromkeys(prompts) if p.strip()][:max_prompts] or list(prompts)[:1]
    folder = Path(out_dir) / "samples"
    method, label = SAMPLE_ROWS.get(getattr(hypernet, "kind", None), ("hypernoise", "HyperNoise"))
    base = generate_images(generator, prompts, [seed], num_steps, hypernet, base=True)
    trained = generate_images(generator, prompts, [seed], num_steps, None if method == "finetune" else hypernet)
    for i, (prompt, b, h) in enumerate(zip(prompts, base, trained)):
        save_png(b, folder / f"{i:02d}-base.png", prompt, seed, {"method": "base"})
        save_png(h, folder / f"{i:02d}-{method}.png", prompt, seed, {"method": method})
    labelled_grid([("base", base), (label, trained)], prompts).save(folder / "compare.png")
    return folder / "compare.png"
