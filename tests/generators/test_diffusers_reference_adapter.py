"""The paper's released SANA-Sprint adapter layout loads and reproduces the noise it was meant to give.

The folders are written the way the reference trainer (peft < 0.16) wrote them: adapter_model.bin,
keys without (or with) peft's ``base_model.model.`` prefix, no hypernoise.json, and dense LoRA
tensors on the depthwise ``ff.conv_depth`` convolutions.
"""

import pytest
import torch

from hypernoise.adapter import load_adapter
from hypernoise.errors import AdapterError
from hypernoise.methods.generate import generate_images
from tiny_pipelines import PROMPTS, load_generator, reference_noise_delta, write_reference_adapter

RANK, ALPHA = 4, 8


@pytest.fixture(scope="module")
def plain_sana(tiny_folders):
    """An adapter-free SANA-Sprint generator: the oracle runs the reference computation on it."""
    return load_generator(tiny_folders["sana-sprint"], "sana-sprint")


@pytest.fixture
def sana(tiny_folders):
    return load_generator(tiny_folders["sana-sprint"], "sana-sprint")


def test_tiny_sana_has_the_grouped_convolutions_the_layout_is_about(plain_sana):
    grouped = [n for n, m in plain_sana.backbone.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert grouped and all(n.endswith("ff.conv_depth") for n in grouped)


@pytest.mark.parametrize("prefix, binary", [("", True), ("base_model.model.", True), ("", False)])
def test_reference_adapter_reproduces_its_intended_noise(sana, plain_sana, tmp_path, prefix, binary):
    state = write_reference_adapter(tmp_path / "ref", sana.backbone, RANK, ALPHA, prefix=prefix, binary=binary)
    hyper = load_adapter(sana, tmp_path / "ref")
    conv = sana.backbone.get_submodule("transformer_blocks.0.ff.conv_depth")
    assert conv.lora_A[hyper.settings.adapter_name].weight.shape == (RANK, conv.base_layer.in_channels, 3, 3)

    noise, cond = sana.sample_noise(2, seed=3), sana.encode(PROMPTS)
    with torch.no_grad():
        delta = hyper(noise, cond)
        expected = reference_noise_delta(plain_sana, state, ALPHA / RANK, noise, cond)
    assert expected.abs().max() > 0.1  # the adapter changes the noise by order 1 ...
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-5)  # ... exactly as intended


def test_reference_adapter_generates_from_the_intended_noise(sana, plain_sana, tmp_path):
    state = write_reference_adapter(tmp_path / "ref", sana.backbone, RANK, ALPHA)
    hyper = load_adapter(sana, tmp_path / "ref")
    image = generate_images(sana, PROMPTS[:1], [7], num_steps=1, hypernet=hyper)[0]

    noise = sana.sample_noise(1, seed=7)
    cond = plain_sana.encode(PROMPTS[:1])
    with torch.no_grad():
        intended = noise + reference_noise_delta(plain_sana, state, ALPHA / RANK, noise, cond)
        expected = plain_sana.generate(intended, cond, 1)[0]
    torch.testing.assert_close(image, expected, rtol=1e-4, atol=1e-4)


def test_dense_grouped_conv_lora_is_off_with_the_adapters(sana, plain_sana, tmp_path):
    write_reference_adapter(tmp_path / "ref", sana.backbone, RANK, ALPHA)
    hyper = load_adapter(sana, tmp_path / "ref")
    noise, cond = sana.sample_noise(1, seed=0), sana.encode(PROMPTS[:1])
    with torch.no_grad(), hyper.adapters_disabled():
        off = sana.generate(noise, cond, 1)
    assert torch.equal(off, plain_sana.generate(noise, plain_sana.encode(PROMPTS[:1]), 1))


def test_a_reference_folder_matching_no_tensor_is_an_error(sana, tmp_path):
    state = write_reference_adapter(tmp_path / "ref", sana.backbone, RANK, ALPHA)
    renamed = {"model.diffusion_model." + k: v for k, v in state.items()}  # another naming scheme
    (tmp_path / "ref" / "adapter_model.bin").unlink()
    torch.save(renamed, tmp_path / "ref" / "adapter_model.bin")
    with pytest.raises(AdapterError, match="do not match"):
        load_adapter(sana, tmp_path / "ref")


def test_peft_options_that_would_change_the_noise_are_refused(sana, tmp_path):
    import json

    write_reference_adapter(tmp_path / "ref", sana.backbone, RANK, ALPHA)
    config = json.loads((tmp_path / "ref" / "adapter_config.json").read_text())
    (tmp_path / "ref" / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    with pytest.raises(AdapterError, match="use_rslora"):
        load_adapter(sana, tmp_path / "ref")


def test_dense_grouped_conv_lora_survives_our_own_save_and_load(sana, tiny_folders, tmp_path):
    from hypernoise.adapter import save_adapter
    from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
    from tiny_pipelines import reference_targets

    hyper = LoRAHypernetwork(sana, LoraSettings(rank=RANK, target_modules=reference_targets(sana.backbone)))
    with torch.no_grad():
        for p in hyper.trainable_parameters():
            p.normal_(0, 0.05)
    assert any("conv_depth.lora_B" in k for k in hyper.trainable_state_dict())
    folder = save_adapter(tmp_path / "adapter", hyper, sana)
    other = load_generator(tiny_folders["sana-sprint"], "sana-sprint")
    reloaded = load_adapter(other, folder)
    noise, cond = sana.sample_noise(1, seed=2), sana.encode(PROMPTS[:1])
    with torch.no_grad():
        assert torch.equal(hyper(noise, cond), reloaded(noise, other.encode(PROMPTS[:1])))
