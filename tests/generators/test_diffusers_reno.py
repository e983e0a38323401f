"""ReNO on the tiny diffusers pipelines: the steps it optimises through and renders at (FLUX: 1
and 4, the authors' setting), what that costs, and one seeded RNG per image, so that the returned
noise regenerates the returned image under SANA-Sprint's stochastic multi-step sampler."""

import json

import pytest
import torch

from hypernoise.cli.main import main
from hypernoise.errors import ConfigError
from hypernoise.methods import METHODS, RunConfig, seeded_noise
from hypernoise.methods.reno import RenoConfig, reno
from hypernoise.rewards import build_reward
from tiny_pipelines import PROMPTS

SEEDS = [3, 4]


def _noise(gen, seeds):
    return torch.cat([seeded_noise(gen, s)[0] for s in seeds])


def _rngs(gen, seeds):
    return [seeded_noise(gen, s)[1] for s in seeds]


@pytest.mark.parametrize("entry", ["reno", "runner"])
def test_seeded_reno_regenerates_its_image_with_a_stochastic_sampler(shared_generators, entry):
    gen, reward = shared_generators["sana-sprint"], build_reward("redness")
    cfg = RenoConfig(iters=3, lr=1.0, num_steps=2)
    if entry == "reno":
        out = reno(gen, reward, _noise(gen, SEEDS), PROMPTS, cfg, seeds=SEEDS)
    else:  # what evaluation.run_method calls: the seeds of the rows come in RunConfig.seeds
        out = METHODS.get("reno").run(gen, reward, _noise(gen, SEEDS), PROMPTS,
                                      RunConfig(num_steps=2, reno=cfg, seeds=SEEDS))
    assert out.extras["optimize_steps"] == out.extras["render_steps"] == 2
    assert "rendered_reward" not in out.extras
    cond = gen.encode(PROMPTS)
    with torch.no_grad():  # how `hypernoise generate` seeds its sampler
        again = gen.generate(out.noise, cond, 2, rng=_rngs(gen, SEEDS))
        other = gen.generate(out.noise, cond, 2, rng=_rngs(gen, [s + 100 for s in SEEDS]))
    torch.testing.assert_close(out.samples, again, rtol=0, atol=1e-6)
    torch.testing.assert_close(reward(out.samples, PROMPTS), out.reward)
    # the sampler does re-noise from the rng: another rng state (as each iteration had before) is another image
    assert (other - out.samples).abs().max() > 1e-3


def test_flux_reno_optimises_through_one_step_and_renders_the_best_noise_at_four(shared_generators):
    gen, reward, iters = shared_generators["flux-schnell"], build_reward("redness"), 3
    out = reno(gen, reward, _noise(gen, SEEDS), PROMPTS, RenoConfig(iters=iters, lr=1.0, keep_iterates=True),
               seeds=SEEDS)
    assert gen.default_steps == 4
    assert (out.extras["optimize_steps"], out.extras["render_steps"]) == (1, 4)
    assert out.cost.generator_forward == iters * 1 + 4
    assert out.cost.generator_backward == (iters - 1) * 1
    assert (out.cost.reward_forward, out.cost.reward_backward) == (iters + 1, iters - 1)
    cond = gen.encode(PROMPTS)
    with torch.no_grad():
        rendered, one_step = gen.generate(out.noise, cond, 4), gen.generate(out.noise, cond, 1)
    torch.testing.assert_close(out.samples, rendered, rtol=0, atol=1e-6)
    # reward: the best iterate's as optimised (1 step); rendered_reward: the returned 4-step image's
    torch.testing.assert_close(out.reward, out.extras["reward_history"].max(1).values)
    torch.testing.assert_close(out.reward, reward(one_step, PROMPTS))
    torch.testing.assert_close(out.extras["rendered_reward"], reward(out.samples, PROMPTS))
    assert out.extras["reward_history"].shape == (2, iters)
    assert out.extras["iterates"].shape == (2, iters, 3, gen.height, gen.width)


def test_optimize_steps_equal_to_the_rendering_steps_is_the_plain_loop(shared_generators):
    gen, reward, iters = shared_generators["flux-schnell"], build_reward("redness"), 2
    out = reno(gen, reward, _noise(gen, SEEDS), PROMPTS, RenoConfig(iters=iters, lr=1.0, optimize_steps=4))
    assert (out.extras["optimize_steps"], out.extras["render_steps"]) == (4, 4)
    assert "rendered_reward" not in out.extras
    assert (out.cost.generator_forward, out.cost.generator_backward) == (iters * 4, (iters - 1) * 4)
    assert out.cost.reward_forward == iters
    torch.testing.assert_close(reward(out.samples, PROMPTS), out.reward)  # the best iterate's own image


def test_other_generators_keep_optimising_through_their_rendering_steps(shared_generators):
    gen, reward = shared_generators["sd-turbo"], build_reward("redness")
    noise = _noise(gen, SEEDS)
    default = reno(gen, reward, noise, PROMPTS, RenoConfig(iters=2, lr=1.0))
    explicit = reno(gen, reward, noise, PROMPTS, RenoConfig(iters=2, lr=1.0, optimize_steps=gen.default_steps))
    assert default.extras["optimize_steps"] == default.extras["render_steps"] == gen.default_steps
    assert torch.equal(default.samples, explicit.samples) and torch.equal(default.noise, explicit.noise)
    assert default.cost.generator_forward == 2 * gen.default_steps


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_invalid_optimize_steps_is_a_config_error(value):
    with pytest.raises(ConfigError, match="`optimize_steps` must be a positive integer") as info:
        RenoConfig(optimize_steps=value)
    assert info.value.field == "optimize_steps"


@pytest.mark.parametrize("command", ["optimize", "evaluate"])
def test_cli_optimize_steps_error_names_the_flag(tmp_path, capsys, command):
    argv = [command, "--generator", "tiny", "--optimize-steps", "0", "--out", str(tmp_path / "x")]
    argv += ["--prompt", "a"] if command == "optimize" else ["--method", "reno"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--optimize-steps must be a positive integer, got 0" in err, err


def test_cli_optimize_records_the_steps(tmp_path):
    out = tmp_path / "reno"
    assert main(["optimize", "--generator", "tiny", "--reward", "redness", "--prompt", "a", "--iters", "2",
                 "--optimize-steps", "1", "--no-progress", "--out", str(out)]) == 0
    row = json.loads((out / "results.jsonl").read_text())
    assert (row["optimize_steps"], row["render_steps"]) == (1, 2)  # tiny renders at 2 steps
    assert isinstance(row["rendered_reward"], float)
    assert row["cost"]["generator_forward"] == 2 * 1 + 2
