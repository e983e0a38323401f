"""Shared fixtures: one thread (fastest for tiny models on a busy machine), a tiny generator."""

import pytest
import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)

from tiny_generator import register_tiny  # noqa: E402

register_tiny()


@pytest.fixture
def tiny_generator():
    from hypernoise.generators import build_generator

    return build_generator("tiny")
