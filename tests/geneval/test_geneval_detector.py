"""The GenEval detector on a tiny checkpoint of the official mmdet 2.x layout (``conftest.py``):
loading, batching, mmdet's output format, refusing other layouts, conversion, device and dtype.

Images are long and thin so that mmdet's (1333, 800) keep-ratio resize makes small network inputs
(12 x 96 -> 167 x 1333, padded to 192 x 1344) and each forward takes a fraction of a second."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hypernoise.errors import ConfigError, InputFileError, OutputExistsError
from hypernoise.geneval.checkpoint import convert_detector
from hypernoise.geneval.detector import Detector, load_detector

#: two sizes that pad to the same network input (192 x 1344) and one that pads to 352 x 1344
SAME_A, SAME_B, OTHER = (12, 96), (16, 128), (24, 96)


def _image(seed: int, hw) -> np.ndarray:
    """A smooth gradient plus noise, uint8 RGB [H, W, 3]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, hw[1])[None, :, None] * rng.uniform(0.2, 1, 3)
    return np.clip(ramp + rng.normal(0, 20, (*hw, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def detector(tiny_detector_path) -> Detector:
    return load_detector(tiny_detector_path, device="cpu")


def _assert_same_results(a, b, what: str) -> None:
    for c, (boxes_a, boxes_b) in enumerate(zip(a[0], b[0])):
        assert boxes_a.shape == boxes_b.shape, f"{what}: class {c}"
        np.testing.assert_allclose(boxes_a, boxes_b, rtol=0, atol=1e-6, err_msg=f"{what}: class {c}")
        assert all(np.array_equal(m, n) for m, n in zip(a[1][c], b[1][c])), f"{what}: class {c} masks"


def test_loading_infers_the_architecture_from_the_checkpoint(detector):
    c = detector.config
    assert (c.embed_dim, c.depths, c.swin_heads, c.window, c.patch, c.mlp_ratio) == (32, (2, 2, 4, 2), (1, 2, 4, 8), 7, 4, 4)
    assert (c.feat_channels, c.encoder_layers, c.encoder_ffn, c.decoder_layers, c.decoder_ffn) == (32, 2, 64, 3, 64)
    assert (c.num_queries, c.num_classes, c.encoder_levels, c.decoder_levels) == (12, 80, 3, 3)


def test_forward_returns_the_last_layer_logits_at_stride_4(detector):
    pixels, metas = detector.preprocess([_image(0, SAME_A), _image(1, SAME_B)])
    assert pixels.shape == (2, 3, 192, 1344) and [m.img_shape for m in metas] == [(167, 1333), (167, 1333)]
    with torch.inference_mode():
        class_logits, mask_logits = detector(pixels)
    assert class_logits.shape == (2, 12, 81) and mask_logits.shape == (2, 12, 48, 336)
    assert torch.isfinite(class_logits).all() and torch.isfinite(mask_logits).all()


def test_preprocess_refuses_a_batch_of_different_padded_sizes(detector):
    with pytest.raises(ConfigError, match="detect"):
        detector.preprocess([_image(0, SAME_A), _image(1, OTHER)])


def test_detect_returns_mmdet_results_per_class_at_the_original_size(detector):
    (bboxes, masks), = detector.detect([_image(0, SAME_A)])
    assert len(bboxes) == 80 and len(masks) == 80
    assert all(b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 5 for b in bboxes)
    assert all(len(m) == len(b) for m, b in zip(masks, bboxes))
    assert sum(len(b) for b in bboxes) == 100  # top-100 of 12 queries x 80 classes
    flat = [m for per_class in masks for m in per_class]
    assert all(m.dtype == bool and m.shape == SAME_A for m in flat)
    boxes = np.concatenate(bboxes)
    assert (boxes[:, 4] >= 0).all() and (boxes[:, 4] <= 1).all()
    assert (boxes[:, [0, 2]] <= SAME_A[1]).all() and (boxes[:, [1, 3]] <= SAME_A[0]).all()
    # each box is its mask's extent (mmdet mask2bbox: x1 = last column + 1)
    for box, mask in zip(np.concatenate([b for b in bboxes if len(b)]), [m for per in masks for m in per]):
        ys, xs = np.nonzero(mask)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0]
        np.testing.assert_array_equal(box[:4], expected)


def test_batched_detect_equals_one_image_at_a_time(detector):
    images = [_image(0, SAME_A), _image(1, OTHER), _image(2, SAME_B), _image(3, SAME_A)]
    calls = []
    batched = detector.detect(images, batch_size=3, progress=lambda done, total: calls.append((done, total)))
    single = [detector.detect([image], batch_size=1)[0] for image in images]
    for i, (a, b) in enumerate(zip(batched, single)):
        _assert_same_results(a, b, f"image {i}")
    assert calls[-1] == (4, 4) and len(calls) == 2  # one batch of 3 (same size), one of 1


def _write(tmp_path, state, name="model.pth"):
    path = tmp_path / name
    torch.save({"state_dict": state, "meta": {}}, path)
    return path


def _refusal(path) -> str:
    with pytest.raises(InputFileError) as info:
        load_detector(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_an_mmdet3_checkpoint_is_refused_naming_the_renamed_layers(tmp_path, tiny_mmdet_state):
    renamed = {k.replace("attentions.0.", "self_attn.").replace("ffns.0.", "ffn."): v
               for k, v in tiny_mmdet_state().items()}
    message = _refusal(_write(tmp_path, renamed))
    assert "mmdet 3.x" in message and "attentions.N" in message


def test_a_checkpoint_missing_a_key_is_refused_naming_it(tmp_path, tiny_mmdet_state):
    state = tiny_mmdet_state()
    del state["panoptic_head.transformer_decoder.layers.1.attentions.0.attn.in_proj_bias"]
    assert "panoptic_head.transformer_decoder.layers.1.attentions.0.attn.in_proj_bias" in _refusal(_write(tmp_path, state))


def test_a_checkpoint_with_an_unknown_key_is_refused_naming_it(tmp_path, tiny_mmdet_state):
    state = tiny_mmdet_state()
    state["panoptic_head.decoder_input_projs.0.weight"] = torch.zeros(32, 32, 1, 1)
    assert "panoptic_head.decoder_input_projs.0.weight" in _refusal(_write(tmp_path, state))


def test_a_checkpoint_with_a_wrong_shape_is_refused_naming_it(tmp_path, tiny_mmdet_state):
    state = tiny_mmdet_state()
    state["backbone.stages.1.blocks.0.attn.w_msa.proj.weight"] = torch.zeros(64, 63)
    assert "backbone.stages.1.blocks.0.attn.w_msa.proj.weight" in _refusal(_write(tmp_path, state))


def test_files_that_are_not_detector_checkpoints_are_refused(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint\n")
    assert "not a PyTorch checkpoint" in _refusal(tmp_path / "notes.pth")
    torch.save({"state_dict": {"model.fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    assert "not an mmdet 2.x Mask2Former" in _refusal(tmp_path / "other.pth")
    assert "does not exist" in _refusal(tmp_path / "missing.pth")


def test_a_bare_state_dict_loads_like_the_official_file(tmp_path, tiny_mmdet_state, detector):
    bare = tmp_path / "bare.pth"
    torch.save(tiny_mmdet_state(), bare)
    loaded = load_detector(bare, device="cpu")
    for (name, a), b in zip(detector.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_converted_folder_gives_identical_outputs_and_is_never_overwritten(tmp_path, tiny_detector_path, detector):
    out = convert_detector(tiny_detector_path, tmp_path / "converted")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".hypernoise")) == ["config.json",
                                                                                            "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # no temporary folder left behind
    converted = load_detector(out, device="cpu")
    assert converted.config == detector.config
    pixels, _ = detector.preprocess([_image(5, SAME_A)])
    with torch.inference_mode():
        for a, b in zip(detector(pixels), converted(pixels)):
            assert torch.equal(a, b)
    before = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        convert_detector(tiny_detector_path, out)
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    (tmp_path / "empty").mkdir()
    assert load_detector(convert_detector(tiny_detector_path, tmp_path / "empty"), device="cpu").config == detector.config
    convert_detector(tiny_detector_path, out, overwrite=True)  # replaces what hypernoise wrote
    assert load_detector(out, device="cpu").config == detector.config
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):  # a file of the user's: nothing removed
        convert_detector(tiny_detector_path, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").exists()


def test_device_and_dtype_arguments_are_respected(tiny_detector_path, detector):
    model = load_detector(tiny_detector_path, device=torch.device("cpu"), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    pixels, _ = model.preprocess([_image(0, SAME_A)])
    assert pixels.dtype == torch.bfloat16
    with torch.inference_mode():
        class_logits, mask_logits = model(pixels)
        reference_class, reference_mask = detector(pixels.float())
    assert class_logits.dtype == mask_logits.dtype == torch.bfloat16
    # bf16 agrees with float32 to bf16 precision (sampling positions stay float32: bf16 cannot address pixels)
    assert (mask_logits.float() - reference_mask).abs().mean() < 0.1 * reference_mask.abs().mean()
    assert (class_logits.float() - reference_class).abs().max() < 0.05 * reference_class.abs().max()
    (bboxes, _), = model.detect([_image(0, SAME_A)])
    assert sum(len(b) for b in bboxes) == 100 and bboxes[0].dtype == np.float32
    with pytest.raises(ConfigError, match="dtype"):
        load_detector(tiny_detector_path, device="cpu", dtype="int8")
