"""ReNO, best-of-N and direct fine-tuning: the comparisons, on the tiny generator."""

import math

import pytest
import torch

from hypernoise.generators import build_generator
from hypernoise.methods.best_of_n import best_of_n
from hypernoise.methods.finetune import FineTuneTask, GeneratorLoRA
from hypernoise.methods.reno import RenoConfig, norm_regulariser, reno
from hypernoise.rewards import build_reward
from hypernoise.training import TrainConfig, Trainer

PROMPTS = ["a red square", "a blue circle"]


def test_norm_regulariser_is_minimal_at_the_chi_mode():
    d = 16
    direction = torch.randn(1, d)
    direction /= direction.norm()
    radii = torch.linspace(2.0, 6.0, 401)
    values = torch.stack([norm_regulariser(direction * r)[0] for r in radii])
    assert radii[values.argmin()].item() == pytest.approx(math.sqrt(d - 1), abs=0.01)


def test_reno_raises_the_reward_and_returns_the_best_iterate(tiny_generator):
    gen, reward = tiny_generator, build_reward("redness")
    noise = gen.sample_noise(2, seed=0)
    out = reno(gen, reward, noise, PROMPTS, RenoConfig(iters=8, lr=1.0))
    hist = out.extras["reward_history"]
    assert hist.shape == (2, 8)
    assert (hist[:, -1] > hist[:, 0]).all()
    torch.testing.assert_close(out.reward, hist.max(1).values)
    with torch.no_grad():  # the returned image is the one its returned noise makes
        again = gen.generate(out.noise, gen.encode(PROMPTS))
    torch.testing.assert_close(out.samples, again)
    torch.testing.assert_close(reward(out.samples, PROMPTS), out.reward)
    assert out.cost.generator_forward == 8 * gen.default_steps
    assert out.cost.generator_backward == 7 * gen.default_steps
    assert out.cost.nfe_per_image == 15 * gen.default_steps


def test_reno_optimises_each_sample_independently(tiny_generator):
    gen, reward = tiny_generator, build_reward("redness")
    noise = gen.sample_noise(2, seed=0)
    cfg = RenoConfig(iters=4, lr=1.0)
    both = reno(gen, reward, noise, PROMPTS, cfg)
    alone = reno(gen, reward, noise[1:], PROMPTS[1:], cfg)
    torch.testing.assert_close(both.noise[1:], alone.noise, rtol=1e-5, atol=1e-6)


def test_reno_keeps_every_iterate_on_request(tiny_generator):
    out = reno(tiny_generator, build_reward("redness"), tiny_generator.sample_noise(1), PROMPTS[:1],
               RenoConfig(iters=3, keep_iterates=True))
    assert out.extras["iterates"].shape == (1, 3, 3, 8, 8)


def test_best_of_n_keeps_the_highest_reward_candidate(tiny_generator):
    gen, reward = tiny_generator, build_reward("redness")
    noise = gen.sample_noise(2, seed=0)
    out = best_of_n(gen, reward, noise, PROMPTS, n=6, chunk=4)
    scores = out.extras["scores"]
    assert scores.shape == (2, 6)
    torch.testing.assert_close(out.reward, scores.max(1).values)
    torch.testing.assert_close(reward(out.samples, PROMPTS), out.reward)
    small = best_of_n(gen, reward, noise, PROMPTS, n=6, chunk=1)
    assert torch.equal(small.extras["index"], out.extras["index"])
    with torch.no_grad():
        base = gen.generate(noise, gen.encode(PROMPTS))
    torch.testing.assert_close(best_of_n(gen, reward, noise, PROMPTS, n=1).samples, base)
    assert out.cost.generator_forward == 6 * gen.default_steps


def test_direct_finetuning_raises_the_reward_through_the_trainer(tmp_path):
    gen = build_generator("tiny")
    torch.manual_seed(0)
    lora = GeneratorLoRA(gen)
    task = FineTuneTask(gen, lora, build_reward("redness"))
    cfg = TrainConfig(steps=10, batch_size=2, optimizer="adamw", lr=0.01, noise_mode="fixed", progress=False)
    noise = gen.sample_noise(2, seed=5)
    with torch.no_grad():
        before = task.reward(gen.generate(noise, gen.encode(PROMPTS)), PROMPTS).mean()
    Trainer(task, cfg, tmp_path).fit(PROMPTS)
    with torch.no_grad():
        after = task.reward(gen.generate(noise, gen.encode(PROMPTS)), PROMPTS).mean()
    assert after > before + 0.05
    frozen = [n for n, p in gen.named_parameters() if p.requires_grad and "finetune_adapter" not in n]
    assert frozen == []
