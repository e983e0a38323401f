"""The shipped "shapes" generator: the Generator contract and the LoRA hypernetwork on its UNet."""

import pytest
import torch

from hypernoise.errors import ConfigError
from hypernoise.generators import GENERATORS, build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings, default_target_modules
from hypernoise.objective import NoiseObjective
from hypernoise.rewards import build_reward
from hypernoise.methods.hypernoise import HyperNoiseTask

PROMPTS = ["a photo of a red circle", "a photo of two squares", "a photo of a triangle above a circle"]


@pytest.fixture(scope="module")
def gen():
    return build_generator("shapes")


def test_registered_and_describes_itself(gen):
    assert "shapes" in GENERATORS
    assert gen.latent_shape == (3, 32, 32) and gen.final_projection == "conv_out"
    assert gen.describe()["generator"] == "shapes"
    assert not any(p.requires_grad for p in gen.parameters())


def test_generate_shapes_range_and_determinism(gen):
    noise = gen.sample_noise(3, seed=0)
    with torch.no_grad():
        cond = gen.encode(PROMPTS)
        one, again, two = gen.generate(noise, cond), gen.generate(noise, cond), gen.generate(noise, cond, 2)
    assert one.shape == (3, 3, 32, 32) and two.shape == one.shape
    assert one.min() >= 0 and one.max() <= 1
    assert torch.equal(one, again)
    assert torch.equal(gen.sample_noise(3, seed=0), noise)
    assert one.std() > 0.05  # an image, not a grey mean


def test_gradients_reach_the_noise(gen):
    noise = gen.sample_noise(2, seed=1).requires_grad_(True)
    gen.generate(noise, gen.encode(PROMPTS[:2])).mean().backward()
    assert noise.grad is not None and noise.grad.abs().sum() > 0


def test_prompts_outside_the_grammar_are_config_errors(gen):
    with pytest.raises(ConfigError, match="hexagon"):
        gen.encode(["a photo of a hexagon"])


def test_backbone_delta_is_the_unet_at_the_noise_time(gen):
    noise = gen.sample_noise(2, seed=2)
    with torch.no_grad():
        cond = gen.encode(PROMPTS[:2])
        # one Euler step from t = 0 is noise + v(noise, 0): the 1-step image is built from this pass
        one_step = (noise + gen.backbone_delta(noise, cond)) * 0.5 + 0.5
        assert torch.allclose(one_step.clamp(0, 1), gen.generate(noise, cond, 1), atol=1e-6)


def test_lora_hypernetwork_on_the_unet_starts_at_zero_and_leaves_g_bit_identical():
    gen = build_generator("shapes")  # a fresh copy: the adapters stay inside its UNet
    noise, prompts = gen.sample_noise(2, seed=3), PROMPTS[:2]
    with torch.no_grad():
        before = gen.generate(noise, gen.encode(prompts))
    assert "conv_out" in default_target_modules(gen.backbone)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    cond = gen.encode(prompts)
    assert torch.count_nonzero(hyper(noise, cond)) == 0
    task = HyperNoiseTask(gen, hyper, build_reward("shapes"), NoiseObjective())
    opt = torch.optim.SGD(hyper.trainable_parameters(), lr=0.5)
    for _ in range(2):
        loss = task(noise, prompts)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.count_nonzero(hyper(noise, cond)) > 0
    with hyper.adapters_disabled(), torch.no_grad():
        assert torch.equal(gen.generate(noise, cond), before)
