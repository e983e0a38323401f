"""What the ecosystem already does, taken from it (issue 31, item 10): one offline rule, read from
huggingface_hub's own constant; repo ids checked by the Hub's ``validate_repo_id``; image
conversion that is diffusers' ``numpy_to_pil`` exactly."""

import pytest
import torch

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants  # noqa: E402
from huggingface_hub.utils import HFValidationError, validate_repo_id  # noqa: E402

from hypernoise.hub import hub_offline, repo_id_problem  # noqa: E402


@pytest.mark.parametrize("constant, variable, expected", [(True, None, True), (False, "1", True),
                                                           (False, None, False), (False, "0", False)])
def test_offline_is_the_hubs_constant_or_the_variable_set_now(constant, variable, expected, monkeypatch):
    from hypernoise.errors import HypernoiseError
    from hypernoise.generators.diffusers_common import read_model_index
    from hypernoise.publish import check_can_push

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constant)
    if variable is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", variable)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert hub_offline() is expected
    if expected:  # the same rule wherever the library asks: pushing, and a pipeline that is not cached
        with pytest.raises(HypernoiseError, match="HF_HUB_OFFLINE"):
            check_can_push()
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
        with pytest.raises(HypernoiseError, match="HF_HUB_OFFLINE is set"):
            read_model_index("someone/not-cached")


@pytest.mark.parametrize("repo_id", ["name", "owner/name", "Owner-1/Name_2.x", "a" * 96, "owner/" + "b" * 96,
                                     "a/b/c", "owner/na--me", "owner/na..me", "-owner/name", "owner/name-",
                                     "owner/name.git", "owner/na me", "a" * 97, "owner/"])
def test_repo_ids_are_what_the_hubs_validate_repo_id_takes(repo_id):
    try:
        validate_repo_id(repo_id)
        valid = True
    except HFValidationError:
        valid = False
    assert (repo_id_problem(repo_id) is None) is valid


def test_to_pil_is_diffusers_numpy_to_pil_exactly():
    pytest.importorskip("diffusers")
    from diffusers.utils import numpy_to_pil

    from hypernoise.images import to_pil

    image = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(0))
    image[0, 0, :4] = torch.tensor([0.0, 1.0, 0.5 / 255, 254.5 / 255])  # the rounding edges
    theirs = numpy_to_pil(image.permute(1, 2, 0).numpy()[None])[0]
    assert to_pil(image).tobytes() == theirs.tobytes()
