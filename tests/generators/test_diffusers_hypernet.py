"""The LoRA noise hypernetwork on the real backbones (UNet, SANA and FLUX transformers): f_phi = 0 at
init, g untouched with adapters off, training raises the reward, adapters reload exactly, and
gradient checkpointing changes no gradient."""

import json
from types import SimpleNamespace

import pytest
import torch

from hypernoise.adapter import load_adapter, save_adapter
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.methods.generate import generate_images
from hypernoise.objective import NoiseObjective, ObjectiveConfig
from hypernoise.rewards import build_reward
from hypernoise.methods.hypernoise import HyperNoiseTask
from hypernoise.training import TrainConfig, Trainer
from tiny_pipelines import FAMILIES, PROMPTS, load_generator


def _task(gen, hyper, steps=1):
    return HyperNoiseTask(gen, hyper, build_reward("redness"), NoiseObjective(ObjectiveConfig("l2", alpha=1e-3)), steps)


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, tiny_folders, tmp_path_factory):
    """A generator of each family, its base images, and a hypernetwork trained for 10 steps."""
    family = request.param
    gen = load_generator(tiny_folders[family], family)
    noise, cond = gen.sample_noise(2, seed=5), gen.encode(PROMPTS)
    with torch.no_grad():
        base = gen.generate(noise, cond, 1)
        torch.manual_seed(0)
        hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
        init_delta = hyper(noise, cond)
        with hyper.adapters_disabled():
            init_off = gen.generate(noise, cond, 1)
    out = tmp_path_factory.mktemp(f"train-{family}")
    cfg = TrainConfig(steps=10, batch_size=2, lr=0.01, optimizer="adamw", noise_mode="fixed", max_grad_norm=None,
                      progress=False)
    Trainer(_task(gen, hyper), cfg, out).fit(PROMPTS)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return SimpleNamespace(family=family, gen=gen, hyper=hyper, noise=noise, cond=cond, base=base,
                           init_delta=init_delta, init_off=init_off, log=log)


def test_hypernetwork_is_exactly_zero_at_init(trained):
    assert trained.init_delta.shape == trained.noise.shape
    assert torch.count_nonzero(trained.init_delta) == 0


def test_adapters_off_is_the_base_generator_before_and_after_training(trained):
    gen, hyper = trained.gen, trained.hyper
    assert torch.equal(trained.init_off, trained.base)
    with torch.no_grad():
        assert hyper(trained.noise, trained.cond).abs().max() > 0  # training moved f_phi ...
        with hyper.adapters_disabled():
            after = gen.generate(trained.noise, trained.cond, 1)
    assert torch.equal(after, trained.base)  # ... and left g bit-identical


def test_training_raises_the_reward(trained):
    rewards = [line["reward"] for line in trained.log]
    assert len(rewards) == 10
    assert rewards[-1] > rewards[0] + 0.005, rewards


def test_saved_adapter_reloads_and_generates_identical_images(trained, tiny_folders, tmp_path):
    folder = save_adapter(tmp_path / "adapter", trained.hyper, trained.gen)
    other = load_generator(tiny_folders[trained.family], trained.family)
    reloaded = load_adapter(other, folder)
    steps = 2  # inference may use more steps than training
    ours = generate_images(trained.gen, PROMPTS, [0, 1], steps, hypernet=trained.hyper)
    theirs = generate_images(other, PROMPTS, [0, 1], steps, hypernet=reloaded)
    base = generate_images(other, PROMPTS, [0, 1], steps)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert max((a - b).abs().max().item() for a, b in zip(ours, base)) > 1e-4


def _gradients(task, noise, prompts):
    for p in task.trainable_parameters():
        p.grad = None
    x = noise.clone().requires_grad_(True)
    task(x, prompts)["loss"].backward()
    return [x.grad] + [p.grad.clone() for p in task.trainable_parameters()]


def test_gradient_checkpointing_gives_the_same_gradients(fresh_generator, monkeypatch):
    from hypernoise.methods import hypernoise as method

    gen = fresh_generator
    torch.manual_seed(0)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    with torch.no_grad():  # trained-looking weights: every LoRA layer contributes to f_phi
        for p in hyper.trainable_parameters():
            p.normal_(0, 0.05)
    task, noise = _task(gen, hyper), gen.sample_noise(2, seed=1)
    plain = _gradients(task, noise, PROMPTS)

    calls = []
    original = method.adapter_state_checkpoint
    monkeypatch.setattr(method, "adapter_state_checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    task.enable_gradient_checkpointing()  # what the trainer calls: g is told to checkpoint adapter-state-aware
    checkpointed = _gradients(task, noise, PROMPTS)
    assert calls  # the backbone's blocks really were checkpointed
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)

    # The pitfall it avoids: plain checkpointing recomputes g's blocks with the adapters on.
    gen.backbone.enable_gradient_checkpointing()
    try:
        naive = _gradients(task, noise, PROMPTS)
    except torch.utils.checkpoint.CheckpointError:
        naive = None
    assert naive is None or any(not torch.allclose(a, b) for a, b in zip(plain, naive))
