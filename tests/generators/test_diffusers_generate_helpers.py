"""What `hypernoise generate` builds on: seeded images, PNG metadata, the base-vs-HyperNoise grid."""

import numpy as np
import pytest
import torch
from PIL import Image

from hypernoise.methods.generate import compare_grid, generate_images, save_png, to_pil
from tiny_pipelines import PROMPTS


@pytest.mark.parametrize("family, steps", [("sd-turbo", 1), ("sana-sprint", 2)])
def test_a_seed_gives_the_image_the_pipeline_gives_for_that_seed(shared_generators, family, steps):
    gen = shared_generators[family]
    ours = generate_images(gen, PROMPTS[:1], [42], num_steps=steps)[0]
    kwargs = dict(guidance_scale=0.0) if family == "sd-turbo" else dict(
        complex_human_instruction=None, max_sequence_length=16, use_resolution_binning=False,
        height=gen.height, width=gen.width)
    theirs = gen.pipeline(PROMPTS[0], num_inference_steps=steps, generator=torch.Generator().manual_seed(42),
                          output_type="pt", **kwargs).images[0]
    assert torch.equal(ours, theirs)


def test_images_do_not_depend_on_batching_and_come_prompt_major(shared_generators):
    gen = shared_generators["sana-sprint"]
    together = generate_images(gen, PROMPTS, [3, 4], num_steps=2, batch_size=4)
    alone = generate_images(gen, PROMPTS[1:], [3], num_steps=2, batch_size=1)[0]
    assert len(together) == 4 and together[0].shape == (3, gen.height, gen.width)
    # order (p0, 3), (p0, 4), (p1, 3), (p1, 4); batched kernels may round differently, nothing more
    torch.testing.assert_close(together[2], alone, rtol=0, atol=1e-5)
    assert (together[2] - together[3]).abs().max() > 1e-3


def test_png_keeps_prompt_seed_and_extra_metadata(tmp_path):
    image = torch.rand(3, 8, 12, generator=torch.Generator().manual_seed(0))
    path = save_png(image, tmp_path / "out" / "00000.png", "a red apple, ünïcode", 7,
                    {"generator": "sana-sprint", "num_steps": 2})
    with Image.open(path) as png:
        assert png.size == (12, 8)
        assert png.text["prompt"] == "a red apple, ünïcode" and png.text["seed"] == "7"
        assert png.text["generator"] == "sana-sprint" and png.text["num_steps"] == "2"
        pixels = np.asarray(png.convert("RGB"))
    assert np.array_equal(pixels, np.asarray(to_pil(image)))
    assert np.abs(pixels / 255.0 - image.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6


def test_compare_grid_puts_base_above_hypernoise_per_prompt():
    base = [torch.zeros(3, 16, 16), torch.full((3, 16, 16), 0.25)]
    hn = [torch.ones(3, 16, 16), torch.full((3, 16, 16), 0.75)]
    label_w, caption_h, pad = 80, 16, 4
    for min_size, s in ((16, 16), (40, 48)):  # 16 px cells enlarged 3x to reach 40 px
        grid = compare_grid(base, hn, ["first", "second"], pad=pad, min_size=min_size)
        assert grid.size == (label_w + 2 * (s + pad) + pad, caption_h + 2 * (s + pad) + pad)
        _check_cells(np.asarray(grid), base, hn, s, label_w, caption_h, pad)
    with pytest.raises(ValueError, match="one prompt per column"):
        compare_grid(base, hn[:1], ["first", "second"])


def _check_cells(cells, base, hn, s, label_w, caption_h, pad):
    for col, (b, h) in enumerate(zip(base, hn)):
        x = label_w + pad + col * (s + pad)
        top = cells[caption_h + pad: caption_h + pad + s, x: x + s]
        bottom = cells[caption_h + 2 * pad + s: caption_h + 2 * pad + 2 * s, x: x + s]
        assert np.all(top == round(float(b[0, 0, 0]) * 255)) and np.all(bottom == round(float(h[0, 0, 0]) * 255))
