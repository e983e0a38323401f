"""``hypernoise.attach`` on diffusers pipelines the user holds (tiny SD-Turbo, SANA-Sprint and FLUX-Schnell
built from configs): the attached pipeline's images are the library's HyperNoise images from the same
noise, ``detach`` gives the plain pipeline back exactly, and every diffusers argument keeps its meaning."""

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import hypernoise
from hypernoise.adapter import load_adapter, save_adapter
from hypernoise.errors import AdapterError, ConfigError
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.lora import tuner_layers
from hypernoise.methods.base import sample
from hypernoise.methods.generate import generate_images
from hypernoise.pipeline import attachment
from tiny_pipelines import PROMPTS, load_generator, write_reference_adapter

#: steps per family: SANA-Sprint at 2 re-noises from the call's generator, FLUX runs 2 Euler steps
STEPS = {"sd-turbo": 1, "sana-sprint": 2, "flux-schnell": 2}
#: call arguments that make the pipeline run as the library's generator of the tiny folders does
CALL = {
    "sd-turbo": {"guidance_scale": 0.0},
    "sana-sprint": {"complex_human_instruction": None, "max_sequence_length": 16, "use_resolution_binning": False,
                    "height": 32, "width": 32},
    "flux-schnell": {"max_sequence_length": 16, "height": 32, "width": 32},
}


def _rngs(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def adapters(tiny_folders, tmp_path_factory):
    """family -> an adapter folder written by this library: a LoRA hypernetwork with random (non-zero) weights."""
    root, out = tmp_path_factory.mktemp("attach-adapters"), {}
    for family, folder in tiny_folders.items():
        gen = load_generator(folder, family)
        hyper = LoRAHypernetwork(gen, LoraSettings(rank=2))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            for p in hyper.trainable_parameters():
                torch.nn.init.normal_(p, std=0.1)
        out[family] = save_adapter(root / family, hyper, gen)
    return out


@pytest.fixture(scope="module")
def library(tiny_folders, adapters):
    """family -> (generator, hypernetwork): the library's own HyperNoise, loaded from the same folders."""
    loaded = {}

    def get(family):
        if family not in loaded:
            gen = load_generator(tiny_folders[family], family)
            loaded[family] = gen, load_adapter(gen, adapters[family])
        return loaded[family]

    return get


def user_pipeline(folder):
    """What a user holds: ``DiffusionPipeline.from_pretrained`` (not frozen, not wrapped by the library)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def pipe(family, tiny_folders):
    return user_pipeline(tiny_folders[family])


def run(pipe, family, prompts=PROMPTS, **kwargs):
    kwargs = {"num_inference_steps": STEPS[family], "output_type": "pt", **CALL[family], **kwargs}
    return pipe(prompts, **kwargs).images


def test_attached_pipeline_gives_the_library_hypernoise_images_from_the_same_latents(family, pipe, adapters, library,
                                                                                   shared_generators):
    gen, hyper = library(family)
    x0 = gen.sample_noise(len(PROMPTS), seed=3)
    with torch.no_grad():
        expected = sample(gen, hyper, x0, gen.encode(PROMPTS), num_steps=STEPS[family], rng=_rngs(11, 12)).images
    plain = run(pipe, family, latents=x0, generator=_rngs(11, 12))

    assert hypernoise.attach(pipe, adapters[family]) is pipe
    images = run(pipe, family, latents=x0, generator=_rngs(11, 12))
    assert (images - expected).abs().max().item() < 1e-5
    assert (images - plain).abs().max().item() > 1e-3  # the user's latents were modulated
    plain_gen = shared_generators[family]  # between calls the backbone is g, LoRA off
    cond = plain_gen.encode(PROMPTS)
    with torch.no_grad():
        assert torch.equal(attachment(pipe).generator.backbone_delta(x0, cond), plain_gen.backbone_delta(x0, cond))


@pytest.mark.parametrize("family", ["sd-turbo", "sana-sprint"])
def test_a_seeded_call_gives_the_library_images_of_that_seed(family, pipe, adapters, library):
    # the library draws the pipeline's own noise for a seed (SD-Turbo, SANA-Sprint; FLUX packs its draw differently)
    gen, hyper = library(family)
    expected = generate_images(gen, PROMPTS[:1], [5], STEPS[family], hypernet=hyper)[0]
    hypernoise.attach(pipe, adapters[family])
    image = run(pipe, family, PROMPTS[0], generator=torch.Generator().manual_seed(5))[0]
    assert (image - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("family", ["sd-turbo", "sana-sprint"])
def test_a_seeded_call_equals_hypernoise_generate_to_png_rounding(family, pipe, adapters, tiny_folders, tmp_path):
    from hypernoise.cli.main import main

    out = tmp_path / "gen"
    assert main(["generate", "--generator", "auto", "--pretrained", str(tiny_folders[family]), "--adapter",
                 str(adapters[family]), "--prompt", "a red apple", "--seed", "5", "--num-steps", "1",
                 "--out", str(out)]) == 0
    cli = Image.open(out / "hypernoise" / "000-a-red-apple-seed5.png").convert("RGB")
    call = {"sd-turbo": {"guidance_scale": 0.0},
            "sana-sprint": {"complex_human_instruction": None, "use_resolution_binning": False, "height": 32,
                            "width": 32, "intermediate_timesteps": None}}[family]  # CLI defaults, diffusers' words
    with hypernoise.attached(pipe, adapters[family]):
        image = pipe("a red apple", num_inference_steps=1, generator=torch.Generator().manual_seed(5), **call).images[0]
    diff = torch.tensor(list(cli.tobytes())) - torch.tensor(list(image.tobytes()))
    assert cli.size == image.size and diff.abs().max().item() <= 1


def test_detach_gives_back_exactly_the_plain_pipeline(family, pipe, adapters, library, tiny_folders):
    never = user_pipeline(tiny_folders[family])
    x0 = library(family)[0].sample_noise(len(PROMPTS), seed=0)
    plain = run(never, family, latents=x0, generator=_rngs(1, 2))
    cls = type(pipe)

    hypernoise.attach(pipe, adapters[family])
    modulated = run(pipe, family, latents=x0, generator=_rngs(1, 2))
    assert hypernoise.detach(pipe) is pipe and hypernoise.detach(pipe) is pipe  # a second detach does nothing

    assert type(pipe) is cls and attachment(pipe) is None
    assert torch.equal(run(pipe, family, latents=x0, generator=_rngs(1, 2)), plain)
    assert not torch.equal(modulated, plain)
    for name, module in never.components.items():
        if isinstance(module, torch.nn.Module):
            mine, theirs = getattr(pipe, name).state_dict(), module.state_dict()
            assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs)
            assert [type(m) for m in getattr(pipe, name).modules()] == [type(m) for m in module.modules()]
            flags = [p.requires_grad for p in getattr(pipe, name).parameters()]
            assert flags == [p.requires_grad for p in module.parameters()]
    assert not hasattr(pipe.unet if family == "sd-turbo" else pipe.transformer, "peft_config")


def test_a_batch_with_num_images_per_prompt_equals_one_by_one(family, pipe, adapters):
    # (SANA-Sprint's own pipeline gives a prompt list another prompt's attention mask at
    # num_images_per_prompt > 1; attached, it gets the prompts encoded once, the mask in order)
    hypernoise.attach(pipe, adapters[family])
    batch = run(pipe, family, num_images_per_prompt=2, generator=_rngs(0, 1, 2, 3))
    singles = [run(pipe, family, prompt, generator=_rngs(seed))[0]
               for prompt, seed in zip([p for p in PROMPTS for _ in range(2)], range(4))]
    assert batch.shape[0] == 4
    assert max((a - b).abs().max().item() for a, b in zip(batch, singles)) < 1e-5


@pytest.mark.parametrize("family", ["sd-turbo"])
def test_passes_default_to_the_adapter_and_can_be_overridden(family, pipe, adapters, library):
    gen, hyper = library(family)
    x0 = gen.sample_noise(1, seed=2)
    with torch.no_grad():
        twice = sample(gen, hyper, x0, gen.encode(PROMPTS[:1]), passes=2, num_steps=1).images
    with hypernoise.attached(pipe, adapters[family]) as attached:
        assert attachment(attached).passes == hyper.passes == 1  # the adapter's
    with hypernoise.attached(pipe, adapters[family], passes=2) as attached:
        assert attachment(attached).passes == 2
        images = run(attached, family, PROMPTS[:1], latents=x0)
    assert (images - twice).abs().max().item() < 1e-5
    with pytest.raises(ConfigError, match="passes"):
        hypernoise.attach(pipe, adapters[family], passes=0)
    assert attachment(pipe) is None and not tuner_layers(pipe.unet)


@pytest.mark.parametrize("family", ["sd-turbo"])
def test_f_phi_sees_the_prompt_under_classifier_free_guidance(family, pipe, adapters, library):
    gen, hyper = library(family)
    x0 = gen.sample_noise(1, seed=4)
    with torch.no_grad():
        x0_hat = hyper.modulate(x0, gen.encode(PROMPTS[:1]))
    kwargs = dict(guidance_scale=7.5, negative_prompt="a blue sky", num_inference_steps=1, output_type="pt")
    expected = pipe(PROMPTS[0], latents=x0_hat, **kwargs).images
    embeds, negative = (pipe.encode_prompt(text, "cpu", 1, False)[0] for text in (PROMPTS[0], "a blue sky"))
    with hypernoise.attached(pipe, adapters[family]):
        images = pipe(PROMPTS[0], latents=x0, **kwargs).images
        kwargs.pop("negative_prompt")
        from_embeds = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, latents=x0, **kwargs).images
    assert (images - expected).abs().max().item() < 1e-5
    assert (from_embeds - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("family", ["sana-sprint"])
def test_the_papers_released_layout_attaches(family, pipe, tiny_folders, tmp_path):
    plain = load_generator(tiny_folders[family], family)
    write_reference_adapter(tmp_path / "ref", plain.backbone, rank=4, alpha=8)
    gen = load_generator(tiny_folders[family], family)
    hyper = load_adapter(gen, tmp_path / "ref")
    x0 = gen.sample_noise(1, seed=7)
    with torch.no_grad():
        expected = sample(gen, hyper, x0, gen.encode(PROMPTS[:1]), num_steps=1).images
    with hypernoise.attached(pipe, tmp_path / "ref"):
        images = run(pipe, family, PROMPTS[:1], latents=x0, num_inference_steps=1, intermediate_timesteps=None)
    assert (images - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("family", ["flux-schnell"])
def test_a_call_at_another_size_runs_f_phi_at_that_size(family, pipe, adapters, tiny_folders):
    # FLUX's f_phi pass reads the image size (its position ids): a 48 x 32 call gets the 48 x 32 pass
    gen = load_generator(tiny_folders[family], family, height=48, width=32)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=2))
    hyper.load_trainable_state_dict(load_file(str(adapters[family] / "adapter_model.safetensors")))
    x0 = gen.sample_noise(1, seed=1)
    with torch.no_grad():
        expected = sample(gen, hyper, x0, gen.encode(PROMPTS[:1]), num_steps=2).images
    with hypernoise.attached(pipe, adapters[family]):
        images = run(pipe, family, PROMPTS[:1], latents=x0, height=48)
    assert images.shape[-2:] == (48, 32)
    assert (images - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("family", ["sana-sprint"])
def test_attaching_twice_a_wrong_adapter_and_saving_are_refused(family, pipe, adapters, tmp_path):
    with pytest.raises(AdapterError, match="trained for generator 'sd-turbo'"):
        hypernoise.attach(pipe, adapters["sd-turbo"])
    assert attachment(pipe) is None and not tuner_layers(pipe.transformer)  # left as it was
    with hypernoise.attached(pipe, adapters[family]):
        with pytest.raises(AdapterError, match="detach"):
            hypernoise.attach(pipe, adapters[family])
        with pytest.raises(AdapterError, match="detach"):
            pipe.save_pretrained(str(tmp_path / "saved"))
    with pytest.raises(ConfigError, match="no HyperNoise generator family"):
        hypernoise.attach(object(), adapters[family])


@pytest.mark.parametrize("family", ["sana-sprint"])
def test_the_context_manager_detaches_on_an_error(family, pipe, adapters):
    cls = type(pipe)
    with pytest.raises(RuntimeError, match="boom"):
        with hypernoise.attached(pipe, adapters[family]):
            assert type(pipe) is not cls and isinstance(pipe, cls)
            raise RuntimeError("boom")
    assert type(pipe) is cls and not tuner_layers(pipe.transformer)


@pytest.mark.parametrize("family", ["sana-sprint"])
def test_an_adapter_that_is_no_path_is_one_error_and_the_pipeline_is_left_alone(family, pipe):
    cls = type(pipe)
    for bad in (None, 3, ["owner/name"]):
        with pytest.raises(AdapterError, match="an adapter is a folder or a Hub id"):
            hypernoise.attach(pipe, bad)
    assert type(pipe) is cls and attachment(pipe) is None and not tuner_layers(pipe.transformer)


@pytest.mark.parametrize("family", ["sana-sprint"])
def test_copying_or_pickling_an_attached_pipeline_is_refused_naming_the_fix(family, pipe, adapters):
    """A copy would carry the LoRA layers and hooks without the attachment: it could be neither
    detached nor saved. Detach, copy, attach to the copy."""
    import copy
    import pickle

    pickle.dumps(pipe)  # a plain pipeline pickles
    with hypernoise.attached(pipe, adapters[family]):
        for make in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(AdapterError, match=r"call hypernoise.detach\(pipe\) first"):
                make(pipe)
    twin = copy.deepcopy(pipe)
    hypernoise.attach(twin, adapters[family])
    assert attachment(twin) is not None and attachment(pipe) is None
    hypernoise.detach(twin)
    assert not tuner_layers(twin.transformer)
