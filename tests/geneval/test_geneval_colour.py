"""The colour classifier against an independent open_clip-style reference, preprocessing included.

The checkpoint is a random open_clip ViT-L/14 in its ORIGINAL key layout at the real widths
(vision 1024 wide, 16 heads, 14 px patches, 224 px; text 768 wide, 12 heads; projection 768), one
vision and two text layers, QuickGELU as OpenAI's weights. The library reads it as a transformers
``CLIPModel`` folder written by the library's own open_clip -> CLIPModel mapping
(``hypernoise.rewards.hps``). The reference side reads the open_clip tensors directly
(``tests/rewards/reward_reference.py``: ``open_clip_image``, ``open_clip_text``) and does what
GenEval's stack does, written here from the originals' rules:

- ImageCrops (evaluate_images.py:81-106): the object where its mask is set, a flat background
  elsewhere (or the image, "original"), cropped to the box with coordinates rounded half to even;
- open_clip 2.20's eval transform: torchvision 0.13 Resize(224) on a PIL image (short side 224,
  long side int(224 * long / short), PIL bicubic), CenterCrop(224) (offsets round((side - 224) /
  2)), ToTensor (/255), Normalize (OpenAI mean / std);
- open_clip's SimpleTokenizer (lower case, words split by its regex, byte-level BPE; with this
  vocabulary's empty merge list every character is a token, the last of a word with "</w>"),
  start / end of text, zeros to 77;
- clip_benchmark's zero_shot_classifier and run_classification: per colour the renormalised mean
  of the unit text embeddings of the three templates; logits 100 * unit image features @ it.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewards"))
from reward_reference import (VIT_L_14_OPENAI, byte_alphabet, clip_char_vocab, make_open_clip_state_dict,  # noqa: E402
                              open_clip_image, open_clip_text)

from hypernoise.errors import InputFileError, WeightsNotFoundError  # noqa: E402
from hypernoise.geneval import COLORS, CLASSNAMES, GenEvalOptions, judge, load_colour_classifier  # noqa: E402
from hypernoise.geneval.colour import COLOUR_TEMPLATES  # noqa: E402

torch.set_num_threads(1)

ARCH = VIT_L_14_OPENAI
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
TOLERANCE = 1e-4  # on the logits 100 * cos


# ----------------------------------------------------------------------------------- checkpoint
@pytest.fixture(scope="module")
def classifier(clip_folder):
    return load_colour_classifier(str(clip_folder), device="cpu")


# ----------------------------------------------------------------------------------- reference
def reference_tokens(text: str, context: int = 77) -> torch.Tensor:
    """open_clip's tokenizer on this vocabulary: [sot, characters..., eot, 0...] [context]."""
    vocab, chars = clip_char_vocab(), byte_alphabet()
    ids = [vocab["<|startoftext|>"]]
    for word in re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+", " ".join(text.lower().split())):
        pieces = [chars[b] for b in word.encode("utf-8")]
        ids += [vocab[p] for p in pieces[:-1]] + [vocab[pieces[-1] + "</w>"]]
    ids.append(vocab["<|endoftext|>"])
    return torch.tensor(ids + [0] * (context - len(ids)))


_REFERENCE_CLASSIFIERS: dict[tuple[int, str], torch.Tensor] = {}


def reference_classifier(sd, classname: str) -> torch.Tensor:
    """clip_benchmark's zero_shot_classifier -> [768, 10] (cached per checkpoint and class)."""
    key = (id(sd), classname)
    if key not in _REFERENCE_CLASSIFIERS:
        _REFERENCE_CLASSIFIERS[key] = _reference_classifier(sd, classname)
    return _REFERENCE_CLASSIFIERS[key]


def _reference_classifier(sd, classname: str) -> torch.Tensor:
    columns = []
    for colour in COLORS:
        ids = torch.stack([reference_tokens(t.format(c=colour, classname=classname)) for t in COLOUR_TEMPLATES])
        with torch.no_grad():
            mean = F.normalize(open_clip_text(sd, ids, ARCH), dim=-1).mean(dim=0)
        columns.append(mean / mean.norm())
    return torch.stack(columns, dim=1)


def reference_crop(image: Image.Image, box, mask, bgcolor: str, crop: bool) -> np.ndarray:
    """ImageCrops: uint8 [h, w, 3] of the object, with numpy rather than PIL's composite / crop."""
    pixels = np.asarray(image.convert("RGB"))
    if mask is not None:
        background = pixels if bgcolor == "original" else np.broadcast_to(
            np.array(Image.new("RGB", (1, 1), bgcolor)).reshape(3), pixels.shape)
        pixels = np.where(mask[..., None], pixels, background)
    if crop:
        x0, y0, x1, y1 = (int(np.round(v)) for v in np.asarray(box)[:4])  # half to even, as round()
        pixels = pixels[y0:y1, x0:x1]
    return np.ascontiguousarray(pixels)


def reference_pixels(crop: np.ndarray, size: int = 224) -> torch.Tensor:
    """torchvision 0.13 Resize(size) + CenterCrop(size) on a PIL image, ToTensor, Normalize."""
    h, w = crop.shape[:2]
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    resized = Image.fromarray(crop)
    if (new_w, new_h) != (w, h):
        resized = resized.resize((new_w, new_h), Image.Resampling.BICUBIC)
    array = np.asarray(resized)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    array = array[top:top + size, left:left + size].astype(np.float32) / 255
    return torch.from_numpy(((array - MEAN) / STD).transpose(2, 0, 1).copy())


def reference_logits(sd, image, objects, classname, bgcolor="#999", crop=True) -> torch.Tensor:
    pixels = torch.stack([reference_pixels(reference_crop(image, box, mask, bgcolor, crop)) for box, mask in objects])
    with torch.no_grad():
        features = F.normalize(open_clip_image(sd, pixels, ARCH), dim=-1)
    return 100.0 * features @ reference_classifier(sd, classname)


# ----------------------------------------------------------------------------------- a scene
def scene():
    """A 97 x 83 image of coloured blobs with noise; three objects, boxes at odd coordinates (x.5
    rounds half to even), masks of the blobs' shapes."""
    gen = np.random.default_rng(0)
    h, w = 83, 97
    pixels = gen.integers(0, 256, (h, w, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    blobs = [((20, 25, 14), (230, 30, 30)), ((70, 30, 18), (30, 60, 220)), ((45, 65, 12), (240, 220, 40))]
    objects = []
    for (cx, cy, r), colour in blobs:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        pixels[mask] = colour
        box = np.array([cx - r - 0.5, cy - r + 0.5, cx + r + 1.5, cy + r + 2.5, 0.9], np.float32)
        objects.append((box, mask))
    return Image.fromarray(pixels), objects


CASES = [dict(bgcolor="#999", crop=True), dict(bgcolor="#999", crop=False), dict(bgcolor="original", crop=True),
         dict(bgcolor="black", crop=True)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['bgcolor']}-crop{int(c['crop'])}")
def test_logits_and_colours_match_open_clip(classifier, open_clip_sd, case):
    image, objects = scene()
    clf = copy.copy(classifier)  # shares the model and the cached text classifiers
    clf.bgcolor, clf.crop = case["bgcolor"], case["crop"]
    got = clf.logits(image, objects, "car")
    want = reference_logits(open_clip_sd, image, objects, "car", **case)
    assert got.shape == (3, 10)
    diff = (got - want).abs().max().item()
    print(f"colour logits {case}: max |diff| = {diff:.2e}")
    assert diff < TOLERANCE
    top2 = want.topk(2, dim=1).values
    assert bool(((top2[:, 0] - top2[:, 1]) > 10 * TOLERANCE).all())  # the argmax is decided
    assert clf(image, objects, "car") == [COLORS[i] for i in want.argmax(1).tolist()]


def test_objects_without_masks_are_cut_from_the_image(classifier, open_clip_sd):
    image, objects = scene()
    unmasked = [(box, None) for box, _ in objects]
    diff = (classifier.logits(image, unmasked, "car") - reference_logits(open_clip_sd, image, unmasked, "car"))
    assert diff.abs().max().item() < TOLERANCE


def test_the_text_side_matches_open_clip(classifier, open_clip_sd):
    texts = [t.format(c="purple", classname="computer keyboard") for t in COLOUR_TEMPLATES]
    ids = classifier.tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    for text, row in zip(texts, ids):
        want = reference_tokens(text)
        end = int(want.argmax()) + 1  # through end-of-text; open_clip pads with 0, transformers with eot
        assert row[:end].tolist() == want[:end].tolist()
    got = classifier.classifier("computer keyboard")
    assert (got - reference_classifier(open_clip_sd, "computer keyboard")).abs().max().item() < 1e-5
    assert classifier.classifier("computer keyboard") is got  # cached per class


def test_results_do_not_depend_on_the_batch_size(classifier):
    image, objects = scene()
    objects = objects + objects[:2]  # 5 crops: one batch of 16, or batches of 2, 2 and 1
    by_2 = copy.copy(classifier)
    by_2.batch_size = 2
    by_16 = classifier.logits(image, objects, "car")
    assert (by_2.logits(image, objects, "car") - by_16).abs().max().item() < 1e-5
    assert [COLORS[i] for i in by_16.argmax(1).tolist()] == classifier(image, objects, "car")
    assert classifier(image, [], "car") == []


def test_judge_with_the_classifier(classifier, open_clip_sd):
    image, objects = scene()
    want = COLORS[int(reference_logits(open_clip_sd, image, objects[:1], "fire hydrant").argmax())]
    other = next(c for c in COLORS if c != want)
    index = CLASSNAMES.index("fire hydrant")
    bboxes = [np.zeros((0, 5), np.float32) for _ in CLASSNAMES]
    masks = [[] for _ in CLASSNAMES]
    bboxes[index], masks[index] = objects[0][0][None], [objects[0][1]]
    metadata = {"tag": "colors", "include": [{"class": "fire hydrant", "count": 1, "color": other}],
                "prompt": f"a photo of a {other} fire hydrant"}
    assert judge(image, (bboxes, masks), metadata, classifier) == (
        False, f"expected {other} fire hydrant>=1, found 0 {other}; and 1 {want}")
    metadata["include"][0]["color"] = want
    assert judge(image, (bboxes, masks), metadata, classifier) == (True, "")


def test_options_set_the_crop(clip_folder):
    clf = load_colour_classifier(str(clip_folder), device="cpu", options=GenEvalOptions(bgcolor="original", crop=False))
    assert (clf.bgcolor, clf.crop, clf.autocast) == ("original", False, False)
    assert clf.model.visual_projection.weight.dtype == torch.float32


# ----------------------------------------------------------------------------------- loading errors
def test_a_missing_source_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError) as err:
        load_colour_classifier(str(tmp_path / "nowhere"), device="cpu")
    assert "\n" not in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        load_colour_classifier("nobody/no-such-clip", device="cpu", cache_dir=tmp_path / "cache")


def test_exact_gelu_is_refused(clip_folder, tmp_path):
    folder = tmp_path / "gelu"
    shutil.copytree(clip_folder, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["hidden_act"] = "gelu"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputFileError, match="quick_gelu"):
        load_colour_classifier(str(folder), device="cpu")


def test_a_crop_outside_the_pixels_is_refused(classifier):
    image, objects = scene()
    with pytest.raises(ValueError, match="crops to 0"):
        classifier(image, [(np.array([10.4, 5, 10.45, 30, 0.9], np.float32), None)], "car")
    with pytest.raises(ValueError, match="mask of shape"):
        classifier(image, [(objects[0][0], objects[0][1][:-1])], "car")
