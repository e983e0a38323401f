"""The renderer: scenes match their prompts, labels match the drawing, seeds reproduce."""

import random

import torch

from hypernoise.world import grammar, render
from hypernoise.world.rules import satisfies


def test_scenes_satisfy_their_prompts_and_labels_mark_each_object():
    data = render.make_dataset(120, seed=3)
    assert data.images.shape == (120, 3, 32, 32) and data.labels.shape == (120, 32, 32)
    assert 0 <= data.images.min() and data.images.max() <= 1
    for prompt, scene, labels in zip(data.prompts, data.scenes, data.labels):
        spec = grammar.parse_prompt(prompt)
        assert satisfies(scene, spec), prompt
        assert 1 <= len(scene) <= 3
        assert set(labels.unique().tolist()) == {0} | {o.label for o in scene}
        for obj in scene:  # the object's own label sits at its centre
            assert labels[int(obj.cy), int(obj.cx)] == obj.label


def test_object_colours_are_drawn_with_their_palette():
    rng = random.Random(0)
    obj = render.SceneObject("square", "blue", 16.0, 16.0, 6.0)
    image, labels = render.render([obj], rng)
    inside = image[:, labels == obj.label].mean(1)
    assert torch.allclose(inside, torch.tensor(render.PALETTE["blue"]), atol=0.08)


def test_counting_and_position_scenes_follow_the_rules():
    rng = random.Random(1)
    three = grammar.parse_prompt("a photo of three squares")
    assert all(len(render.sample_scene(three, rng)) == 3 for _ in range(10))
    left = grammar.parse_prompt("a photo of a circle left of a triangle")
    for _ in range(10):
        a, b = render.sample_scene(left, rng)
        assert (a.shape, b.shape) == ("circle", "triangle") and b.cx - a.cx >= render.POSITION_OFFSET


def test_datasets_are_reproducible_by_seed():
    a, b, c = render.make_dataset(8, seed=5), render.make_dataset(8, seed=5), render.make_dataset(8, seed=6)
    assert torch.equal(a.images, b.images) and a.prompts == b.prompts
    assert not torch.equal(a.images, c.images)
