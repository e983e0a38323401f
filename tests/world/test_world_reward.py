"""The "shapes" reward: registered, differentiable, and it prefers the right prompt."""

import pytest
import torch

from hypernoise.errors import ConfigError
from hypernoise.rewards import REWARDS, build_reward
from hypernoise.world.render import make_dataset
from hypernoise.world.grammar import COLORS, SHAPES, ObjectSpec, PromptSpec, parse_prompt
from hypernoise.world.rules import satisfies


@pytest.fixture(scope="module")
def reward():
    return build_reward("shapes")


def test_usable_in_a_spec_next_to_redness():
    both = build_reward("shapes:1,redness:0.1")
    images = make_dataset(4, seed=0).images
    scores = both(images, make_dataset(4, seed=0).prompts)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    assert set(both.last_terms) == {"shapes", "redness"}
    assert "shapes" in REWARDS


def test_scores_are_differentiable_log_probabilities(reward):
    data = make_dataset(4, seed=1)
    images = data.images.clone().requires_grad_(True)
    scores = reward(images, data.prompts)
    assert scores.shape == (4,) and (scores <= 0).all()
    scores.sum().backward()
    assert images.grad.abs().sum() > 0


def _one_word_change(spec):
    """A prompt differing from ``spec`` in one attribute (count, relation, colour or shape)."""
    objs = list(spec.objects)
    if spec.category == "counting":
        return PromptSpec("counting", spec.objects, count=5 - spec.count).text()
    if spec.category == "position":
        flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        return PromptSpec("position", spec.objects, relation=flip[spec.relation]).text()
    o = objs[-1]
    if o.color:
        for shift in (1, 2):  # never the other named object (that would not be a prompt)
            objs[-1] = ObjectSpec(o.shape, COLORS[(COLORS.index(o.color) + shift) % len(COLORS)])
            if objs[-1] not in objs[:-1]:
                break
    else:
        objs[-1] = ObjectSpec(next(s for s in SHAPES if s not in [x.shape for x in objs]), None)
    return PromptSpec(spec.category, tuple(objs)).text()


def test_true_prompts_outscore_one_word_changes(reward):
    data = make_dataset(60, seed=2)
    wrong = [_one_word_change(parse_prompt(p)) for p in data.prompts]
    keep = [i for i, w in enumerate(wrong) if not satisfies(data.scenes[i], parse_prompt(w))]
    assert len(keep) >= 50
    with torch.no_grad():
        right = reward(data.images[keep], [data.prompts[i] for i in keep])
        worse = reward(data.images[keep], [wrong[i] for i in keep])
    assert (right > worse).float().mean() >= 0.9


def test_other_image_sizes_are_resized(reward):
    data = make_dataset(2, seed=3)
    big = torch.nn.functional.interpolate(data.images, size=64, mode="nearest")
    assert torch.allclose(reward(big, data.prompts), reward(data.images, data.prompts), atol=0.5)
    assert (reward(data.images, data.prompts) > -1.0).all()


def test_prompts_outside_the_grammar_are_config_errors(reward):
    with pytest.raises(ConfigError):
        reward(torch.rand(1, 3, 32, 32), ["a cat"])
