"""Attached pipelines among diffusers' own functions (issue 31), on tiny SD-Turbo, SANA-Sprint and
FLUX-Schnell pipelines: a user's LoRA loaded before or after ``attach`` stays g's (and survives
``detach``), ``from_pipe`` gives plain diffusers pipelines, the strength knob moves the image from
the plain pipeline's to HyperNoise's, and ``modulate_noise`` is the noise attached calls and
``hypernoise generate`` use. References are the library's own HyperNoise (``methods.sample`` on a
generator loaded from the same folder) and never-attached pipelines."""

import pytest
import torch
from PIL import Image

import hypernoise
from hypernoise.errors import AdapterError, ConfigError
from hypernoise.methods.base import sample
from hypernoise.pipeline import attachment
from test_attach import CALL, STEPS, adapters, library, pipe, run, user_pipeline  # noqa: F401  (fixtures)
from tiny_pipelines import PROMPTS

BACKBONE = {"sd-turbo": "unet", "sana-sprint": "transformer", "flux-schnell": "transformer"}
#: family -> (text-to-image, image-to-image) classes whose from_pipe takes the attached pipeline
FROM_PIPE = {"sd-turbo": ("AutoPipelineForText2Image", "AutoPipelineForImage2Image"),
             "sana-sprint": ("SanaSprintPipeline", "SanaSprintImg2ImgPipeline"),
             "flux-schnell": ("AutoPipelineForText2Image", "AutoPipelineForImage2Image")}


def _rngs(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _close(a, b, tol=1e-5) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() < tol


def add_style(pipe, family, seed=7):
    """A user's LoRA on the backbone (peft's ``add_adapter``, where diffusers' loading ends), random
    weights drawn from ``seed`` so that two pipelines get the same style."""
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        getattr(pipe, BACKBONE[family]).add_adapter(
            LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False),
            adapter_name="style")
    return pipe


def modulated(library, family, x0, prompts=PROMPTS):
    """x0 + f_phi(x0, c) from the library's generator: f_phi on the plain backbone."""
    gen, hyper = library(family)
    with torch.no_grad():
        return hyper.modulate(x0, gen.encode(prompts))


@pytest.mark.parametrize("order", ["before", "after"])
def test_a_users_lora_stays_on_for_g_is_off_for_f_phi_and_survives_detach(family, order, adapters, library,
                                                                           tiny_folders):
    folder, rng = tiny_folders[family], (11, 12)
    x0 = library(family)[0].sample_noise(len(PROMPTS), seed=3)
    x0_hat = modulated(library, family, x0)
    styled = add_style(user_pipeline(folder), family)  # never attached: the user's styled g
    expected = run(styled, family, latents=x0_hat, generator=_rngs(*rng))
    expected_unstyled = run(user_pipeline(folder), family, latents=x0_hat, generator=_rngs(*rng))

    pipe = user_pipeline(folder)
    if order == "before":
        add_style(pipe, family)
    hypernoise.attach(pipe, adapters[family])
    if order == "after":
        add_style(pipe, family)
    assert pipe.get_list_adapters() == {BACKBONE[family]: ["style"]}  # HyperNoise is no diffusers adapter
    images = run(pipe, family, latents=x0, generator=_rngs(*rng))
    assert _close(images, expected)
    pipe.disable_lora()  # diffusers' switch reaches the user's LoRA only
    assert _close(run(pipe, family, latents=x0, generator=_rngs(*rng)), expected_unstyled)
    pipe.enable_lora()
    assert not _close(expected, expected_unstyled, 1e-3)  # the style changes the images

    hypernoise.detach(pipe)
    assert pipe.get_list_adapters() == {BACKBONE[family]: ["style"]}
    assert _close(run(pipe, family, latents=x0, generator=_rngs(*rng)),
                  run(styled, family, latents=x0, generator=_rngs(*rng)))
    pipe.set_adapters(["style"], [0.0])  # the user's adapter still has its layers: its weight still acts
    assert not _close(run(pipe, family, latents=x0, generator=_rngs(*rng)),
                      run(styled, family, latents=x0, generator=_rngs(*rng)), 1e-3)


@pytest.mark.parametrize("family", ["sd-turbo"])
def test_load_lora_weights_and_diffusers_lora_calls_on_an_attached_pipeline(family, adapters, library, tiny_folders,
                                                                             tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    folder = tiny_folders[family]
    donor = add_style(user_pipeline(folder), family)
    StableDiffusionPipeline.save_lora_weights(str(tmp_path / "style"), safe_serialization=True,
                                              unet_lora_layers=get_peft_model_state_dict(donor.unet, adapter_name="style"))
    reference = user_pipeline(folder)
    reference.load_lora_weights(str(tmp_path / "style"), adapter_name="style")
    x0 = library(family)[0].sample_noise(len(PROMPTS), seed=4)
    x0_hat = modulated(library, family, x0)

    pipe = hypernoise.attach(user_pipeline(folder), adapters[family])
    pipe.load_lora_weights(str(tmp_path / "style"), adapter_name="style")
    assert _close(run(pipe, family, latents=x0), run(reference, family, latents=x0_hat))
    pipe.set_adapters(["style"], [0.5])
    reference.set_adapters(["style"], [0.5])
    assert _close(run(pipe, family, latents=x0), run(reference, family, latents=x0_hat))
    with pytest.raises(AdapterError, match=r"hypernoise.set_scale\(pipe, 0.5\)"):
        pipe.set_adapters(["hypernoise_adapter"], [0.5])
    pipe.unload_lora_weights()  # the user's LoRA goes, HyperNoise stays
    reference.unload_lora_weights()
    assert _close(run(pipe, family, latents=x0), run(reference, family, latents=x0_hat))
    assert attachment(pipe) is not None
    hypernoise.detach(pipe)
    assert torch.equal(run(pipe, family, latents=x0), run(reference, family, latents=x0))


def test_from_pipe_of_an_attached_pipeline_gives_plain_diffusers_pipelines(family, pipe, adapters, library,
                                                                            tiny_folders):
    import diffusers

    never = user_pipeline(tiny_folders[family])
    x0 = library(family)[0].sample_noise(1, seed=0)
    plain = run(never, family, PROMPTS[:1], latents=x0, generator=_rngs(1))
    hypernoise.attach(pipe, adapters[family])
    hn = run(pipe, family, PROMPTS[:1], latents=x0, generator=_rngs(1))
    original = type(never)
    assert type(pipe).__name__ == original.__name__ and isinstance(pipe, original)  # diffusers finds it by name

    t2i_cls, i2i_cls = (getattr(diffusers, name) for name in FROM_PIPE[family])
    t2i = t2i_cls.from_pipe(pipe)
    assert type(t2i) is original and attachment(t2i) is None
    assert torch.equal(run(t2i, family, PROMPTS[:1], latents=x0, generator=_rngs(1)), plain)  # g: not a component
    i2i, i2i_never = i2i_cls.from_pipe(pipe), i2i_cls.from_pipe(never)
    assert type(i2i) is type(i2i_never) and getattr(i2i, BACKBONE[family]) is getattr(pipe, BACKBONE[family])
    assert torch.equal(run(pipe, family, PROMPTS[:1], latents=x0, generator=_rngs(1)), hn)  # still HyperNoise
    assert list(pipe.components) == list(never.components)
    with pytest.raises(AdapterError, match="shares it"):
        hypernoise.attach(t2i, adapters[family])


def test_the_scale_moves_the_image_from_the_plain_pipeline_to_hypernoise(family, pipe, adapters, library):
    x0 = library(family)[0].sample_noise(1, seed=6)
    plain = run(pipe, family, PROMPTS[:1], latents=x0, generator=_rngs(1))
    hypernoise.attach(pipe, adapters[family])
    full = run(pipe, family, PROMPTS[:1], latents=x0, generator=_rngs(1))
    scales = (0.0, 0.25, 0.5, 0.75, 1.0)
    images = {}
    for s in scales:
        assert hypernoise.set_scale(pipe, s) is pipe
        images[s] = run(pipe, family, PROMPTS[:1], latents=x0, generator=_rngs(1))
    assert torch.equal(images[0.0], plain) and _close(images[1.0], full)
    distance = [(images[s] - plain).abs().mean().item() for s in scales]
    assert all(a < b for a, b in zip(distance, distance[1:])), distance
    call = {k: v for k, v in CALL[family].items()}
    noise = {s: hypernoise.modulate_noise(pipe, None, x0, PROMPTS[:1], scale=s, **call) for s in (0.5, 1.0)}
    assert _close(noise[0.5], x0 + 0.5 * (noise[1.0] - x0), 1e-6)  # a scale on f_phi's displacement
    with pytest.raises(ConfigError, match="finite number"):
        hypernoise.set_scale(pipe, float("nan"))


def test_modulate_noise_is_the_noise_of_attached_calls_and_of_the_library(family, adapters, library, tiny_folders):
    gen, hyper = library(family)
    x0 = gen.sample_noise(len(PROMPTS), seed=8)
    plain = user_pipeline(tiny_folders[family])
    noise = hypernoise.modulate_noise(plain, adapters[family], x0, PROMPTS, **CALL[family])
    assert attachment(plain) is None and type(plain).__module__.startswith("diffusers")  # loaded for the call only
    images = run(plain, family, latents=noise, generator=_rngs(1, 2))
    with torch.no_grad():
        expected = sample(gen, hyper, x0, gen.encode(PROMPTS), num_steps=STEPS[family], rng=_rngs(1, 2)).images
        on_generator = hypernoise.modulate_noise(gen, hyper, x0, PROMPTS)
    assert _close(images, expected) and _close(on_generator, noise, 1e-6)
    with hypernoise.attached(plain, adapters[family]):
        assert _close(run(plain, family, latents=x0, generator=_rngs(1, 2)), images)
        with pytest.raises(AdapterError, match="adapter=None"):
            hypernoise.modulate_noise(plain, adapters[family], x0, PROMPTS)


@pytest.mark.parametrize("family", ["sd-turbo", "sana-sprint"])
def test_the_noise_of_a_seed_gives_hypernoise_generate_s_image(family, adapters, tiny_folders, tmp_path):
    from hypernoise.cli.main import main

    out = tmp_path / "gen"
    assert main(["generate", "--generator", "auto", "--pretrained", str(tiny_folders[family]), "--adapter",
                 str(adapters[family]), "--prompt", "a red apple", "--seed", "5", "--num-steps", "1",
                 "--no-progress", "--out", str(out)]) == 0
    cli = Image.open(out / "hypernoise" / "000-a-red-apple-seed5.png").convert("RGB")
    plain = user_pipeline(tiny_folders[family])
    call = {"sd-turbo": {"guidance_scale": 0.0},
            "sana-sprint": {"use_resolution_binning": False, "height": 32, "width": 32, "intermediate_timesteps": None,
                            "complex_human_instruction": None}}[family]  # generate's defaults, in diffusers' words
    noise = hypernoise.modulate_noise(plain, adapters[family], None, "a red apple",
                                      generator=torch.Generator().manual_seed(5), **call)
    image = plain("a red apple", latents=noise, num_inference_steps=1, **call).images[0]  # the plain pipeline
    diff = torch.tensor(list(cli.tobytes())) - torch.tensor(list(image.tobytes()))
    assert cli.size == image.size and diff.abs().max().item() <= 1


@pytest.mark.parametrize("family", ["sana-sprint"])
def test_an_attached_sana_call_encodes_as_the_adapter_was_trained_unless_told_otherwise(family, pipe, adapters,
                                                                                          library):
    import json

    assert json.loads((adapters[family] / "hypernoise.json").read_text())["call_defaults"] == \
        {"complex_human_instruction": None}
    x0 = library(family)[0].sample_noise(1, seed=2)
    call = {**{k: v for k, v in CALL[family].items() if k != "complex_human_instruction"}, "num_inference_steps": 1,
            "intermediate_timesteps": None}
    hypernoise.attach(pipe, adapters[family])
    default = run(pipe, family, PROMPTS[:1], latents=x0, **call)  # diffusers' default would add the instruction
    assert torch.equal(default, run(pipe, family, PROMPTS[:1], latents=x0, complex_human_instruction=None, **call))
    asked = run(pipe, family, PROMPTS[:1], latents=x0, complex_human_instruction=["Describe:", "User Prompt: "],
                **call)
    assert not _close(asked, default, 1e-3)  # the user's own instruction is honoured


@pytest.mark.parametrize("family", ["sana-sprint"])
def test_an_adapter_of_another_family_is_refused_in_attach_s_words(family, pipe, adapters):
    with pytest.raises(AdapterError) as error:
        hypernoise.attach(pipe, adapters["flux-schnell"])
    message = str(error.value)
    assert "FluxPipeline" in message and "SanaSprintPipeline" in message and "pretrained" not in message


@pytest.mark.parametrize("family", ["sd-turbo"])
def test_model_offload_and_a_dtype_change_keep_hypernoise_and_sequential_offload_is_refused(family, pipe, adapters,
                                                                                             library):
    x0 = library(family)[0].sample_noise(1, seed=9)
    hypernoise.attach(pipe, adapters[family])
    before = run(pipe, family, PROMPTS[:1], latents=x0)
    pipe.enable_model_cpu_offload(device="cpu")  # accelerate's hooks move the backbone, f_phi's LoRA placed in it
    assert _close(run(pipe, family, PROMPTS[:1], latents=x0), before)
    with pytest.raises(AdapterError, match="enable_model_cpu_offload"):
        pipe.enable_sequential_cpu_offload(device="cpu")
    pipe.remove_all_hooks()
    pipe.to(torch.float64)  # the backbone's dtype changes, the LoRA weights stay fp32
    assert _close(run(pipe, family, PROMPTS[:1], latents=x0.double()).float(), before, 1e-4)
    assert {p.dtype for p in attachment(pipe).hypernet.trainable_parameters()} == {torch.float32}


@pytest.mark.parametrize("family", ["sd-turbo"])
@pytest.mark.parametrize("call, match", [
    (lambda p, d: p.push_to_hub("me/x"), "hypernoise push-to-hub"),
    (lambda p, d: p.save_pretrained(str(d)), "detach"),
    (lambda p, d: p.fuse_qkv_projections(), "to_q/to_k/to_v"),
    (lambda p, d: p.enable_group_offload(torch.device("cpu")), "enable_model_cpu_offload"),
    (lambda p, d: p.delete_adapters("hypernoise_adapter"), "names your own LoRA adapters"),
    (lambda p, d: p.fuse_lora(adapter_names=["hypernoise_adapter"]), "names your own LoRA adapters"),
])
def test_diffusers_calls_that_cannot_work_attached_are_refused_before_doing_anything(family, call, match, pipe,
                                                                                       adapters, tmp_path):
    hypernoise.attach(pipe, adapters[family])
    with pytest.raises(AdapterError, match=match):
        call(pipe, tmp_path / "saved")
    assert not (tmp_path / "saved").exists() and attachment(pipe) is not None
    hypernoise.detach(pipe)
    pipe.fuse_qkv_projections()  # plain again: diffusers' own behaviour
