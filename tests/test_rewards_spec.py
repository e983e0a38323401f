import pytest
import torch

from hypernoise.errors import ConfigError, UnknownNameError
from hypernoise.rewards import PRESETS, build_reward, parse_spec


@pytest.mark.parametrize("spec, expected", [
    ("redness:1", [("redness", 1.0)]),
    ("redness", [("redness", 1.0)]),
    (" halfplane:2.5 , ring:-1e-2", [("halfplane", 2.5), ("ring", -0.01)]),
])
def test_parse_spec_accepts_weighted_terms(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("redness:", "has no weight"),
    ("redness:abc", "is not a number"),
    (":5", "has no name"),
    ("", "empty reward spec"),
    ("redness:1,redness:2", "appears twice"),
    ("redness:inf", "finite"),
])
def test_parse_spec_rejects_malformed_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec)


def test_unknown_reward_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown reward 'nope'.*redness"):
        parse_spec("nope:1")


def test_reno_preset_names_the_paper_ensemble():
    assert PRESETS["reno"] == "hps:5,imagereward:1,clip:0.01,pickscore:0.05"


def test_weighted_reward_sums_terms_and_reports_each():
    reward = build_reward("halfplane:2,corner:0.5")
    y = torch.tensor([[1.5, 1.5], [0.0, 0.0]], requires_grad=True)
    total = reward(y, ["", ""])
    expected = 2 * y[:, 0] + 0.5 * -((y - 1.5) ** 2).sum(1)
    torch.testing.assert_close(total, expected)
    assert set(reward.last_terms) == {"halfplane", "corner"}
    assert reward.last_terms["corner"] == pytest.approx(-2.25)
    total.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_redness_is_the_papers_definition():
    red = build_reward("redness")
    images = torch.zeros(3, 3, 4, 4)
    images[0, 0] = 1.0            # pure red -> 1
    images[1] = 0.5               # grey -> 0
    images[2, 1:] = 1.0           # cyan -> -1
    torch.testing.assert_close(red(images, [""] * 3), torch.tensor([1.0, 0.0, -1.0]))


def test_per_reward_options_reach_only_their_reward(monkeypatch):
    from hypernoise.rewards import REWARDS

    seen = {}
    original = REWARDS.get

    def spy(name):
        factory = original(name)
        return lambda **kw: (seen.setdefault(name, kw), factory(**kw))[1]

    monkeypatch.setattr(REWARDS, "get", spy)
    build_reward("halfplane:1,corner:2", per_reward={"corner": {"pretrained": "weights/corner"}})
    assert seen["corner"]["pretrained"] == "weights/corner" and "pretrained" not in seen["halfplane"]
    with pytest.raises(ConfigError, match="does not use"):
        build_reward("halfplane:1", per_reward={"hps": {"pretrained": "x"}})
