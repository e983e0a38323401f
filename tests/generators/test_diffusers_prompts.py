"""Prompts longer than a family's text encoder are truncated with one warning, not refused."""

import warnings

import pytest


def test_a_prompt_longer_than_the_text_encoder_is_truncated_with_a_warning(fresh_generator):
    gen = fresh_generator
    limit = min(n for _, n in gen.text_limits())
    long_prompt = " ".join(["red"] * (limit + 20))
    with pytest.warns(UserWarning, match="the rest is ignored"):
        cond = gen.encode([long_prompt])
    assert all(v.shape[0] == 1 for v in cond.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gen.encode(["a short prompt"])
