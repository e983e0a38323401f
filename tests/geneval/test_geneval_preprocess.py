"""mmdet's test pipeline for the GenEval detector: keep-ratio size, OpenCV-exact resize, normalise, pad.

OpenCV (``opencv-python-headless``, the ``test`` extra) is the oracle for the resize; the library
itself never imports it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hypernoise.errors import ConfigError
from hypernoise.geneval.preprocess import preprocess_image, rescale_size, resize_like_cv2, to_uint8_rgb

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def _image(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw, expected", [
    ((512, 512), (800, 800)),      # upscale, square
    ((1024, 1024), (800, 800)),    # downscale
    ((500, 640), (800, 1024)),     # short side to 800
    ((480, 1920), (333, 1333)),    # long side capped at 1333: sf = 1333 / 1920
    ((1920, 480), (1333, 333)),
    ((1, 1), (800, 800)),
    ((3, 1000), (4, 1333)),        # 3 * 1.333 + 0.5 -> 4 (mmcv's int(x * sf + 0.5))
])
def test_keep_ratio_size_follows_mmcv_rescale_size(hw, expected):
    assert rescale_size(*hw) == expected


def _sizes() -> list:
    """(src h, src w, dst h, dst w): edge cases, then random up- and downscales."""
    cases = [(1, 1, 7, 5), (1, 9, 3, 1), (9, 1, 1, 9), (2, 2, 1, 1), (5, 7, 5, 3), (3, 3, 100, 2), (100, 2, 1, 100),
             (64, 64, 32, 32), (66, 34, 33, 17), (512, 512, 800, 800), (1024, 1024, 800, 800), (500, 640, 800, 1024),
             (1600, 1600, 800, 800), (97, 131, 800, 1081), (1000, 3, 13, 2), (40, 60, 36, 54)]
    rng = np.random.default_rng(1)
    cases += [tuple(int(v) for v in rng.integers(1, 160, 4)) for _ in range(150)]
    cases += [(int(h) * k, int(w) * k, int(h), int(w)) for h, w, k in zip(*rng.integers(1, 60, (2, 30)), rng.integers(2, 5, 30))]
    return cases


def test_resize_matches_opencv_inter_linear_bit_for_bit():
    cv2 = pytest.importorskip("cv2")
    mismatched = []
    for i, (h, w, dh, dw) in enumerate(_sizes()):
        image = _image(i, h, w)
        ours = resize_like_cv2(torch.from_numpy(image), dh, dw).numpy()
        ref = cv2.resize(image, (dw, dh), interpolation=cv2.INTER_LINEAR).reshape(dh, dw, 3)
        if not np.array_equal(ours, ref):
            mismatched.append(((h, w, dh, dw), int((ours != ref).sum())))
    assert not mismatched, f"{len(mismatched)} sizes differ from cv2.resize, first: {mismatched[:3]}"


def test_network_input_is_normalised_rgb_padded_with_zeros_to_a_multiple_of_32():
    cv2 = pytest.importorskip("cv2")
    image = _image(0, 47, 101)  # sf = min(1333/101, 800/47) = 13.198 -> 620 x 1333, padded to 640 x 1344
    pixels, meta = preprocess_image(image)
    assert (meta.ori_shape, meta.img_shape, meta.pad_shape) == ((47, 101), (620, 1333), (640, 1344))
    assert pixels.dtype == torch.float32 and pixels.shape == (3, 640, 1344)
    resized = cv2.resize(image, (1333, 620), interpolation=cv2.INTER_LINEAR)
    expected = ((resized.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_array_equal(pixels[:, :620, :1333].numpy(), expected)
    assert not pixels[:, 620:].any() and not pixels[:, :, 1333:].any()  # mmdet pads after Normalize


def test_pil_images_of_any_mode_are_read_as_their_rgb_conversion():
    rgb = _image(3, 20, 30)
    rgba = Image.fromarray(np.dstack([rgb, np.full((20, 30), 7, np.uint8)]), "RGBA")
    for image in (rgba, Image.fromarray(rgb).convert("L"), Image.fromarray(rgb).convert("P")):
        np.testing.assert_array_equal(to_uint8_rgb(image).numpy(), np.asarray(image.convert("RGB")))
    np.testing.assert_array_equal(preprocess_image(Image.fromarray(rgb))[0], preprocess_image(rgb)[0])


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32), np.zeros((0, 8, 3), np.uint8)])
def test_arrays_that_are_not_uint8_rgb_are_refused(bad):
    with pytest.raises(ConfigError, match="uint8 RGB"):
        preprocess_image(bad)
