"""World GenEval: right on ground truth, strict on faint or absent objects, GenEval's averaging."""

import random

import pytest
import torch

from hypernoise.world import render
from hypernoise.world.evaluator import (connected_components, evaluate_images, fidelity, frechet_distance,
                                        geneval_summary)
from hypernoise.world.grammar import CATEGORIES, benchmark_prompts


def test_ground_truth_test_prompts_are_judged_right_in_every_category():
    data = render.make_dataset(180, seed=11, prompts=benchmark_prompts(30))
    summary = geneval_summary(evaluate_images(data.images, data.prompts))
    for c in CATEGORIES:
        assert summary[c] >= 0.95, (c, summary)


def test_wrong_prompts_are_judged_wrong():
    data = render.make_dataset(6, seed=12, prompts=["a photo of three circles", "a photo of a red square",
                                                  "a photo of a circle left of a square"])
    swapped = ["a photo of two circles", "a photo of a blue square", "a photo of a circle right of a square"] * 2
    assert not any(r["correct"] for r in evaluate_images(data.images, swapped))


def test_faint_objects_and_empty_backgrounds_are_not_objects():
    rng = random.Random(0)
    obj = render.SceneObject("circle", "red", 16.0, 16.0, 6.0)
    solid, _ = render.render([obj], rng)
    empty, _ = render.render([], random.Random(0))
    faint = 0.85 * empty + 0.15 * solid
    records = evaluate_images(torch.stack([solid, faint, empty]), ["a photo of a circle"] * 3)
    assert [r["correct"] for r in records] == [True, False, False]


def test_connected_components_split_separate_blobs():
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, :2, :2] = True
    mask[0, 4:, 3:] = True
    mask[0, 2, 5] = True  # touches nothing 4-connected
    ids = connected_components(mask)
    assert len(ids.unique()) == 4  # background + 3 blobs
    assert len(ids[0, :2, :2].unique()) == 1


def test_overall_is_the_mean_of_category_means():
    records = [{"category": "counting", "correct": True}] * 3 + [{"category": "colors", "correct": False}]
    summary = geneval_summary(records)
    assert summary["counting"] == 1.0 and summary["colors"] == 0.0 and summary["overall"] == 0.5
    assert summary["position"] is None


def test_fidelity_separates_real_from_noise():
    data = render.make_dataset(200, seed=13)
    real = fidelity(data.images, data.prompts)
    noise = fidelity(torch.rand(200, 3, 32, 32), data.prompts)
    assert real < noise / 5


def test_frechet_distance_is_zero_on_identical_sets():
    a = torch.randn(100, 5, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
