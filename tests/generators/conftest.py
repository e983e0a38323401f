"""Tiny SD-Turbo, SANA-Sprint and FLUX-Schnell pipelines, saved to folders and loaded back the way
a user's downloaded weights are (``build_generator("auto", pretrained=folder)``).

Pipelines are random and built from configs with in-memory tokenizers (hypernoise.generators.tiny);
nothing is downloaded. Folders are written once per session; generators that get LoRA adapters
injected are built fresh per test (``fresh_generator``), the others are shared read-only.
"""

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from tiny_pipelines import FAMILIES, load_generator  # noqa: E402


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """family -> a folder written by ``save_pretrained`` (model_index.json + components)."""
    from hypernoise.generators.tiny import save_tiny_pipeline

    root = tmp_path_factory.mktemp("pipelines")
    return {family: save_tiny_pipeline(family, root / family, seed=0) for family in FAMILIES}


@pytest.fixture(scope="session")
def shared_generators(tiny_folders):
    """family -> a frozen generator that tests must not modify (no adapters injected)."""
    return {family: load_generator(folder, family) for family, folder in tiny_folders.items()}


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def fresh_generator(family, tiny_folders):
    """A generator of ``family`` loaded from its folder, private to the test."""
    return load_generator(tiny_folders[family], family)
