"""`hypernoise train --preset paper`: the authors' runs as a preset, on tiny pipelines.

Values come from the docs' table (tests/paper_table.py reads it; its rows cite the authors' files):
the behaviour rows (``call.*``, ``generator.*``) are held here by running the tiny pipelines.
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from paper_table import FAMILIES, PAPER, read_table

from hypernoise.cli.main import main
from hypernoise.errors import ConfigError
from hypernoise.generators import build_generator
from hypernoise.methods.hypernoise import ModelConfig
from hypernoise.presets import default_config, preset_config, preset_model, presets_of

COLUMN = {family: column for column, family in FAMILIES.items()}
FIXTURE = Path(os.environ.get("HYPERNOISE_REFERENCE_FIXTURE")
               or Path(__file__).resolve().parents[3] / "shared" / "reference" / "sana-tiny")


@pytest.mark.parametrize("family", ["sana-sprint", "flux-schnell", "sd-turbo"])
def test_train_with_the_paper_preset_runs_and_records_it(family, tiny_folders, tmp_path, capsys):
    out, prompts = tmp_path / "run", tmp_path / "prompts.txt"
    prompts.write_text("a red apple\na blue sky\n")
    size = ["--height", "32", "--width", "32"] if family == "flux-schnell" else []
    assert main(["train", "--generator", "auto", "--pretrained", str(tiny_folders[family]), "--preset", "paper",
                 "--reward", "redness", "--dtype", "float32", "--device", "cpu", "--steps", "2", "--batch-size", "2",
                 "--gradient-accumulation-steps", "2", "--prompts", str(prompts), "--no-progress", "--out", str(out),
                 *size]) == 0
    printed = capsys.readouterr().out
    assert f"preset: {family}/paper" in printed
    assert "the authors ran" in printed and "add --reference-processes" in printed  # said with the flag's name
    meta = json.loads((out / "adapter" / "hypernoise.json").read_text())
    train, paper = meta["settings"]["train"], preset_config(family, "paper").train
    assert meta["settings"]["preset"] == "paper" and meta["settings"]["objective"]["kind"] == "reference"
    assert (train["noise_mode"], train["max_grad_norm"], train["warmup_steps"]) == (
        paper.noise_mode, paper.max_grad_norm, paper.warmup_steps)
    assert meta["hypernetwork"]["grouped_convs"] is True
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    want = train["lr"] / train["warmup_steps"] if train["warmup_steps"] else train["lr"]  # step 0 ran at lr 0
    assert rows[0]["lr"] == pytest.approx(want)
    if train["warmup_steps"] > train["steps"]:
        assert "note: the warm-up lasts 100 optimizer steps" in printed


def _hypernet_call(generator) -> dict:
    """The timestep and guidance the backbone gets in the hypernetwork pass (``backbone_delta``)."""
    seen = {}

    def record(_module, args, kwargs):
        seen["timestep"] = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        seen["guidance"] = kwargs.get("guidance")

    handle = generator.backbone.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            generator.backbone_delta(torch.randn(2, *generator.latent_shape), generator.encode(["a", "b"]))
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("family", ["sana-sprint", "flux-schnell", "sd-turbo"])
def test_paper_calls(family, tiny_folders):
    """The hypernetwork pass and the delta-only layer are the table's (the authors' trainer.py)."""
    rows, column = read_table(*PAPER), COLUMN[family]
    model = preset_model(ModelConfig(generator=family, pretrained=str(tiny_folders[family]), device="cpu",
                                     dtype="float32", height=32, width=32), "paper")
    generator = model.build()
    assert generator.final_projection == rows["generator.final_projection"][column]
    call = _hypernet_call(generator)
    assert torch.all(torch.as_tensor(call["timestep"]).float() == rows["call.timestep"][column])
    want = rows["call.guidance"][column]
    if want is None:
        assert call["guidance"] is None
    else:  # the table's guidance x the transformer's guidance_embeds_scale
        scale = generator.backbone.config.guidance_embeds_scale
        torch.testing.assert_close(call["guidance"].float(), torch.full((2,), want * scale))


def _authors_sana_images(pipe, noise, cond):
    """One SCM step as the authors' RewardSana.apply runs it (models/RewardSana.py:441-515 @bbe3ab4):
    the timestep and the model input cast to the text embeddings' dtype before the TrigFlow maps."""
    embeds, mask = cond["prompt_embeds"], cond["prompt_attention_mask"]
    scheduler = pipe.scheduler
    scheduler.set_timesteps(1, max_timesteps=1.57080, intermediate_timesteps=None)
    scheduler.set_begin_index(0)
    sigma = scheduler.config.sigma_data
    latents = noise.float() * sigma
    guidance = torch.full([1], 4.5).expand(len(noise)).to(embeds.dtype) * pipe.transformer.config.guidance_embeds_scale
    timestep = scheduler.timesteps[0].expand(len(noise)).to(embeds.dtype)
    s = torch.sin(timestep) / (torch.cos(timestep) + torch.sin(timestep))
    s4 = s.view(-1, 1, 1, 1)
    x = (latents / sigma * torch.sqrt(s4**2 + (1 - s4) ** 2)).to(embeds.dtype)
    out = pipe.transformer(x, encoder_hidden_states=embeds, encoder_attention_mask=mask, guidance=guidance,
                           timestep=s, return_dict=False)[0]
    out = ((1 - 2 * s4) * x + (1 - 2 * s4 + 2 * s4**2) * out) / torch.sqrt(s4**2 + (1 - s4) ** 2)
    _, denoised = scheduler.step(out.float() * sigma, s, latents, return_dict=False)
    image = pipe.vae.decode((denoised / sigma).to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1)


@pytest.mark.skipif(not (FIXTURE / "pipeline").is_dir(), reason=f"no reference fixture at {FIXTURE}")
def test_sana_sampler_casts_are_the_authors():
    """In bf16, `text_dtype_sampling` (on in the paper preset) gives the authors' sampler's images; off,
    the generator follows diffusers' pipeline (fp32 timestep and model input) and differs."""
    noise = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    images = {}
    for casts in (True, False):
        gen = build_generator("sana-sprint", pretrained=str(FIXTURE / "pipeline"), device="cpu", dtype=torch.bfloat16,
                              height=64, width=64, text_dtype_sampling=casts)
        with torch.no_grad():
            cond = gen.encode(["a red apple", "a cat on a sofa"])
            images[casts] = gen.generate(noise, cond, 1).float()
            if casts:
                theirs = _authors_sana_images(gen.pipeline, noise, cond).float()
    assert torch.equal(images[True], theirs)
    assert not torch.equal(images[False], theirs)
    assert preset_config("sana-sprint", "paper").model.text_dtype_sampling is True


def test_the_paper_processes_note_and_reference_processes():
    from hypernoise.presets import paper_processes_note

    train = preset_config("sana-sprint", "paper").train
    assert "the authors ran sana-sprint on 6 processes, this run has 1" in paper_processes_note(
        "sana-sprint", "paper", train, 1)
    assert paper_processes_note("sana-sprint", "paper", train, 6) is None
    assert paper_processes_note("sana-sprint", None, train, 1) is None
    from dataclasses import replace
    assert paper_processes_note("sana-sprint", "paper", replace(train, reference_processes=6), 1) is None
    assert math.isclose(train.lr, 1e-3)


def test_the_paper_presets_are_the_authors_runs_and_flags_override_them():
    sana, flux = preset_config("sana-sprint", "paper"), preset_config("flux-schnell", "paper")
    assert sana.model.pretrained == "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers"
    assert (sana.lora.rank, sana.lora.lora_alpha, sana.train.optimizer, sana.train.lr) == (128, 256, "sgd", 1e-3)
    assert (sana.train.batch_size, sana.train.gradient_accumulation_steps) == (3, 3)  # x 6 processes: 18 x 3
    assert (flux.model.height, flux.model.width) == (512, 512)
    assert (flux.lora.lora_alpha, flux.train.optimizer, flux.train.lr, flux.train.weight_decay) == (640, "adamw", 2e-5, 1e-4)
    assert sana.reward == flux.reward == "reno"
    gen = build_generator("toy2d")
    assert presets_of("sana-sprint") == ["default", "paper"] and presets_of("toy2d") == ["default"]
    assert presets_of("sd-turbo") == ["default", "paper"]
    with pytest.raises(ConfigError, match="no `preset` 'paper'; choose one of: default"):
        default_config(gen, preset="paper")
