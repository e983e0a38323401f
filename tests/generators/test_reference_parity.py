"""One training step of `hypernoise train --preset paper` against the authors' own trainer.

The fixture (``../shared/reference/sana-tiny``, or the folder ``HYPERNOISE_REFERENCE_FIXTURE``
names) holds what the authors' ``NoiseNetworkTrainer`` computed on a tiny SANA-Sprint pipeline
from fixed inputs: see its README. Everything this test configures is read from the fixture
(``expected.json`` settings, the LoRA targets of its ``adapter_config.json``, its prompts, noise
and initial LoRA); the code under test is the library's own: the paper preset, the HyperNoise
task, ``methods.sample`` and the ``Trainer``.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hypernoise.generators import build_generator
from hypernoise.methods import TRAINING, sample
from hypernoise.methods.hypernoise import ModelConfig
from hypernoise.presets import default_config, preset_config
from hypernoise.training import Trainer
from hypernoise.training.data import NoiseSampler
from hypernoise.training.trainer import build_optimizer, build_scheduler

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(os.environ.get("HYPERNOISE_REFERENCE_FIXTURE") or REPO.parent / "shared" / "reference" / "sana-tiny")

pytestmark = pytest.mark.skipif(not (FIXTURE / "expected.json").is_file(),
                                reason=f"no reference fixture at {FIXTURE} (set HYPERNOISE_REFERENCE_FIXTURE)")


class Fixed:
    """A sampler that returns the same micro-batch at every index (the fixture injected its inputs)."""

    def __init__(self, value):
        self.value = value

    def batch(self, index, rank, per, device=None, dtype=None):
        if isinstance(self.value, torch.Tensor):
            return self.value[rank * per:(rank + 1) * per].to(device=device, dtype=dtype)
        return list(self.value)[rank * per:(rank + 1) * per]


@pytest.fixture(scope="module")
def ref():
    expected = json.loads((FIXTURE / "expected.json").read_text())
    return {"expected": expected, "settings": expected["settings"],
            "prompts": (FIXTURE / "prompts.txt").read_text().splitlines(),
            "noise": load_file(str(FIXTURE / "inputs.safetensors"))["init_noise"],
            "targets": json.loads((FIXTURE / "adapter_config.json").read_text())["target_modules"],
            "outputs": load_file(str(FIXTURE / "step1_outputs.safetensors"))}


def _task(ref, **train):
    """The paper preset's HyperNoise task on the fixture's pipeline, with the fixture's settings."""
    s = ref["settings"]
    model = ModelConfig(generator="sana-sprint", pretrained=str(FIXTURE / "pipeline"), device="cpu", dtype=s["dtype"],
                        height=s["resolution"], width=s["resolution"])
    gen = build_generator("sana-sprint", pretrained=model.pretrained, device="cpu", dtype=torch.float32,
                          height=s["resolution"], width=s["resolution"], max_sequence_length=s["prompt_max_sequence_length"],
                          guidance_scale=s["generation"]["guidance_scale"])
    cfg = default_config(gen, model=model, preset="paper", reward=f"redness:{s['red_weighting']}",
                         rank=s["rank"], lora_alpha=s["lora_alpha"], lr=s["lr"], warmup_steps=s["warmup_steps"],
                         max_grad_norm=s["grad_clip"], batch_size=s["batch_size"], reg_weight=s["reg_weight"],
                         seed=s["seed"], num_steps=s["generation"]["num_inference_steps"], progress=False, **train)
    cfg = replace(cfg, reward_dtype=s["dtype"], lora=replace(cfg.lora, target_modules=ref["targets"]))
    assert (cfg.train.optimizer, cfg.train.momentum, cfg.train.nesterov) == ("sgd", s["momentum"], s["nesterov"])
    assert cfg.objective.kind == "reference" and cfg.train.noise_mode == "per-step"
    task = TRAINING.build("hypernoise", cfg=cfg, generator=gen)
    task.hypernet.load_trainable_state_dict(load_file(str(FIXTURE / "lora_init.safetensors")))
    return task, cfg


def _assert_states(actual: dict, expected: dict, atol: float) -> None:
    assert set(actual) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(actual[k].float(), v.float(), rtol=0, atol=atol, msg=lambda m: f"{k}: {m}")


def test_reference_parity_noise_is_the_authors_per_step_draw(ref):
    s = ref["settings"]
    accum = ref["expected"]["accumulation"]["accumulation_steps"]
    sampler = NoiseSampler(tuple(s["latent_shape"][1:]), s["batch_size"], s["seed"], "per-step", accumulation=accum)
    assert all(torch.equal(sampler.global_noise_at(i), ref["noise"]) for i in range(accum))  # every micro-step
    assert not torch.equal(sampler.global_noise_at(accum), ref["noise"])  # the next optimizer step: a new draw


def test_reference_parity_forward_loss_and_gradients(ref):
    task, _ = _task(ref)
    gen, out, step1 = task.generator, ref["outputs"], ref["expected"]["step1"]
    cond = gen.encode(ref["prompts"])
    torch.testing.assert_close(cond["prompt_embeds"], out["prompt_embeds"], rtol=0, atol=1e-5)
    with torch.no_grad():
        got = sample(gen, task.hypernet, ref["noise"], cond, num_steps=task.num_steps)
    for name, value in (("pred", got.delta), ("modulated_latents", got.noise), ("images", got.images)):
        torch.testing.assert_close(value, out[name], rtol=0, atol=1e-5, msg=lambda m: f"{name}: {m}")

    terms = task(ref["noise"], ref["prompts"])
    assert float(terms["loss"]) == pytest.approx(step1["total_loss"], rel=1e-5)
    assert -float(terms["reward"]) == pytest.approx(step1["reward_loss_redness"], rel=1e-5)
    assert float(got.delta.pow(2).mean()) == pytest.approx(step1["reg_mean_pred_sq"], rel=1e-5)
    terms["loss"].backward()
    grads = {k: p.grad for k, p in task.hypernet.lora.params.items()}
    want = load_file(str(FIXTURE / "step1_grads.safetensors"))
    assert set(grads) == set(want)
    for k, g in want.items():
        torch.testing.assert_close(grads[k], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()), msg=lambda m: f"{k}: {m}")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
    assert float(norm) == pytest.approx(step1["grad_norm_preclip"], rel=1e-4)


@pytest.mark.parametrize("steps, accumulation, after", [(1, 1, "lora_after_1_step"), (3, 1, "lora_after_3_steps"),
                                                         (1, 3, "lora_after_accum3")])
def test_reference_parity_trainer_steps(ref, tmp_path, steps, accumulation, after):
    task, cfg = _task(ref, steps=steps, gradient_accumulation_steps=accumulation)
    trainer = Trainer(task, cfg.train, tmp_path / "run")
    trainer.fit(ref["prompts"], prompt_sampler=Fixed(ref["prompts"]), noise_sampler=Fixed(ref["noise"]))
    _assert_states(task.hypernet.trainable_state_dict(), load_file(str(FIXTURE / f"{after}.safetensors")), atol=1e-6)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    runs = ref["expected"]["steps_run_A"] if accumulation == 1 else ref["expected"]["steps_run_A"][:1]
    for row, want in zip(logged, runs):  # the pre-clip norm of the summed (1/accumulation-scaled) gradient
        assert row["grad_norm"] == pytest.approx(want["metrics"]["grad_norm"], rel=1e-4)
        assert row["loss"] == pytest.approx(want["metrics"]["total"], rel=1e-5)
        assert row["lr"] == pytest.approx(want["lr_used"])


def test_reference_parity_warmup_schedule(ref):
    """The paper preset's warm-up: warmup_steps x processes optimizer steps from lr 0."""
    table = ref["expected"]["lr_schedule"]
    cfg = replace(preset_config("sana-sprint", "paper").train, lr=table["base_lr"], warmup_steps=table["warmup_steps_arg"])
    for processes, lrs in table["lr_at_optimizer_step_0_to_5_by_world_size"].items():
        opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
        sched = build_scheduler(opt, cfg, processes=int(processes))
        got = []
        for _ in lrs:
            got.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert got == pytest.approx(lrs, rel=1e-9, abs=1e-15), processes
