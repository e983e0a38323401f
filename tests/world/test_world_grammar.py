"""The shapes grammar: every prompt parses to what it says, the split is disjoint and balanced."""

import pytest

from hypernoise.errors import ConfigError
from hypernoise.world import grammar


def test_every_prompt_round_trips_through_the_parser():
    for category in grammar.CATEGORIES:
        for spec in grammar.all_specs(category):
            parsed = grammar.parse_prompt(spec.text())
            assert parsed == spec and parsed.category == category


def test_category_sizes_and_examples():
    sizes = {c: len(grammar.all_prompts(c)) for c in grammar.CATEGORIES}
    assert sizes == {"single_object": 3, "two_object": 6, "counting": 6, "colors": 18, "position": 24, "color_attr": 306}
    spec = grammar.parse_prompt("a photo of a red circle and a blue square")
    assert spec.category == "color_attr" and spec.objects[1] == grammar.ObjectSpec("square", "blue")
    spec = grammar.parse_prompt("a photo of three triangles")
    assert (spec.category, spec.count, spec.objects[0].shape) == ("counting", 3, "triangle")
    spec = grammar.parse_prompt("a photo of a circle right of a square")
    assert (spec.relation, spec.objects[0].shape) == ("right of", "circle")


def test_split_is_disjoint_complete_and_fixed():
    train, test = grammar.split_prompts("train"), grammar.split_prompts("test")
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(grammar.all_prompts())
    for c in grammar.CATEGORIES:
        assert len(grammar.split_prompts("test", c)) == grammar.TEST_SIZES[c]
        assert grammar.split_prompts("train", c)  # every category is trained on
    assert test == grammar.split_prompts("test")  # deterministic


def test_benchmark_is_balanced_over_categories():
    bench = grammar.benchmark_prompts(20)
    assert len(bench) == 120
    counts = {c: sum(grammar.category_of(p) == c for p in bench) for c in grammar.CATEGORIES}
    assert set(counts.values()) == {20}
    assert set(bench) <= set(grammar.split_prompts("test"))


def test_training_prompts_weigh_categories_equally_and_cover_every_train_prompt():
    from hypernoise.generators import build_generator

    train = build_generator("shapes").default_prompts("train")
    counts = {c: sum(grammar.category_of(p) == c for p in train) for c in grammar.CATEGORIES}
    assert len(set(counts.values())) == 1  # what the balanced benchmark rewards, trained on equally
    assert set(train) == set(grammar.split_prompts("train"))  # every train prompt, no test prompt


@pytest.mark.parametrize("prompt, word", [
    ("a photo of a hexagon", "hexagon"),
    ("a photo of a pink circle", "pink"),
    ("a photo of four circles", "four"),
])
def test_unknown_words_are_config_errors_naming_the_word(prompt, word):
    with pytest.raises(ConfigError, match=word):
        grammar.parse_prompt(prompt)


@pytest.mark.parametrize("prompt", [
    "a photo of a circle and a circle",          # two_object needs different shapes
    "a photo of a red circle left of a square",  # positions name shapes only
    "photo of a circle",
    "a photo of a red circle and a square",
    "",
])
def test_malformed_prompts_are_config_errors(prompt):
    with pytest.raises(ConfigError):
        grammar.parse_prompt(prompt)
