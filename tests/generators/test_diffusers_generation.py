"""The diffusers generators: loading, family detection, and differentiable generation that equals the
pipelines' own ``__call__``."""

import shutil
import subprocess
import sys

import pytest
import torch

from hypernoise.errors import ConfigError, WeightsNotFoundError
from hypernoise.generators import build_generator, detect_generator
from hypernoise.rewards import build_reward
from tiny_pipelines import FAMILIES, PROMPTS, load_generator, pipeline_images


def test_auto_detects_the_family_from_model_index(tiny_folders, shared_generators):
    for family, folder in tiny_folders.items():
        assert detect_generator(str(folder)) == family
        assert shared_generators[family].name == family
        assert shared_generators[family].pretrained == str(folder)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_differentiable_generation_equals_the_pipeline(family, shared_generators, steps):
    gen = shared_generators[family]
    cond = gen.encode(PROMPTS)
    noise = gen.sample_noise(len(PROMPTS), seed=steps)
    seeds = [11, 12]  # SANA-Sprint re-noises between steps: both draw from generators seeded alike
    ours = gen.generate(noise, cond, steps, rng=[torch.Generator().manual_seed(s) for s in seeds])
    theirs = pipeline_images(gen, noise, cond, steps, seeds)
    assert ours.shape == (len(PROMPTS), 3, gen.height, gen.width)
    assert (ours - theirs).abs().max().item() < 1e-6


def test_gradients_reach_the_noise(family, shared_generators):
    gen = shared_generators[family]
    noise = gen.sample_noise(2, seed=0).requires_grad_(True)
    images = gen.generate(noise, gen.encode(PROMPTS), 2 if family == "flux-schnell" else 1)
    build_reward("redness")(images, PROMPTS).sum().backward()
    assert noise.grad is not None and torch.isfinite(noise.grad).all()
    assert noise.grad.abs().sum() > 0
    assert all(p.grad is None for p in gen.parameters())  # g stays frozen


def test_latent_shape_and_default_size_follow_the_loaded_pipeline(tiny_folders, shared_generators):
    # SD and SANA: sample_size x VAE factor (16 x 2); FLUX: the pipeline's default_sample_size (128) x 2
    assert shared_generators["sd-turbo"].latent_shape == (4, 16, 16)
    assert shared_generators["sana-sprint"].latent_shape == (4, 16, 16)
    assert shared_generators["flux-schnell"].latent_shape == (64, 16)  # packed: (32/4)^2 tokens, 4 x 4 channels
    flux = build_generator("flux-schnell", pretrained=str(tiny_folders["flux-schnell"]), device="cpu")
    assert (flux.height, flux.width, flux.latent_shape) == (256, 256, (4096, 16))
    for family, gen in shared_generators.items():
        assert gen.backbone_delta(gen.sample_noise(1), gen.encode(PROMPTS[:1])).shape == (1, *gen.latent_shape)
        assert gen.dtype == torch.float32  # the CPU default


def test_flux_noise_unpacks_to_the_vae_latent_grid(shared_generators):
    gen = shared_generators["flux-schnell"]
    noise = gen.sample_noise(1, seed=3)
    grid = gen.unpack_noise(noise)
    assert grid.shape == (1, 4, 16, 16)
    repacked = gen.pipeline._pack_latents(grid, 1, 4, 16, 16)
    assert torch.equal(repacked, noise)


def test_dtype_is_passed_through(tiny_folders):
    gen = load_generator(tiny_folders["sana-sprint"], "sana-sprint", dtype="bf16")
    assert gen.dtype == torch.bfloat16 and gen.vae.dtype == torch.bfloat16
    noise = gen.sample_noise(1, seed=0)
    assert noise.dtype == torch.bfloat16
    images = gen.generate(noise, gen.encode(PROMPTS[:1]), 1)
    assert torch.isfinite(images.float()).all() and images.min() >= 0 and images.max() <= 1


def test_image_size_must_fit_the_model(tiny_folders):
    with pytest.raises(ConfigError, match="multiples of 32"):
        load_generator(tiny_folders["sana-sprint"], "sana-sprint", height=48)


def test_missing_weights_are_one_clear_line(tmp_path, monkeypatch, tiny_folders):
    from huggingface_hub import constants

    with pytest.raises(WeightsNotFoundError) as err:
        build_generator("sd-turbo", pretrained=str(tmp_path / "no-such-folder"), device="cpu")
    assert "\n" not in str(err.value) and "no-such-folder" in str(err.value)

    broken = shutil.copytree(tiny_folders["sana-sprint"], tmp_path / "broken")
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match="incomplete") as err:
        build_generator("auto", pretrained=str(broken), device="cpu")
    assert "\n" not in str(err.value) and "transformer" in str(err.value)

    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="has no model_index.json"):
        build_generator("auto", pretrained=str(tmp_path / "empty"))

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE is set") as err:
        build_generator("sana-sprint", pretrained="some-org/not-downloaded", device="cpu")
    assert "some-org/not-downloaded" in str(err.value) and str(tmp_path / "cache") in str(err.value)


def test_a_folder_of_another_family_is_refused(tiny_folders):
    with pytest.raises(ConfigError, match="holds a SanaSprintPipeline.*`generator` sana-sprint"):
        build_generator("flux-schnell", pretrained=str(tiny_folders["sana-sprint"]), device="cpu")


def test_auto_refuses_an_unsupported_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}')
    with pytest.raises(ConfigError, match="KandinskyPipeline"):
        build_generator("auto", pretrained=str(tmp_path))
    with pytest.raises(ConfigError, match="needs `pretrained`"):
        build_generator("auto")


def test_importing_hypernoise_does_not_import_diffusers():
    code = ("import sys, hypernoise, hypernoise.generators, hypernoise.adapter, hypernoise.methods.generate\n"
            "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules, 'eager import'\n"
            "from hypernoise.generators import GENERATORS\n"
            f"assert all(f in GENERATORS for f in {FAMILIES + ['auto']})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

