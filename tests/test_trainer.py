"""The trainer: exact resume, atomic checkpoints, non-finite steps, sharding, accumulation."""

import json
import os

import pytest
import torch

from hypernoise.errors import CheckpointError, TrainingDivergedError
from hypernoise.generators import build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings, MLPHypernetwork
from hypernoise.objective import NoiseObjective, ObjectiveConfig
from hypernoise.rewards import Reward, build_reward
from hypernoise.methods.hypernoise import HyperNoiseTask
from hypernoise.training import TrainConfig, Trainer
from hypernoise.training.checkpoint import latest_checkpoint, list_checkpoints
from hypernoise.training.data import NoiseSampler, PromptSampler

PROMPTS = ["a red square", "a blue circle", "two green triangles", "a photo"]


def _tiny_task(seed=0, alpha=0.1, **schedule):
    gen = build_generator("tiny")
    torch.manual_seed(seed)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    objective = NoiseObjective(ObjectiveConfig("l2", alpha=alpha, **schedule))
    return HyperNoiseTask(gen, hyper, build_reward("redness"), objective)


def _cfg(**kw):
    base = dict(steps=6, batch_size=2, lr=0.5, optimizer="sgd", noise_mode="per-sample", progress=False)
    return TrainConfig(**{**base, **kw})


def _weights(task):
    return {k: v.detach().clone() for k, v in task.trainable_state_dict().items()}


def test_training_raises_the_reward_and_logs_every_step(tmp_path):
    task = _tiny_task(alpha=1e-3)
    result = Trainer(task, _cfg(steps=10, noise_mode="fixed", optimizer="adamw", lr=0.01), tmp_path).fit(PROMPTS)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 11))
    assert lines[-1]["reward"] > lines[0]["reward"] + 0.1
    assert {"loss", "kl", "reg", "reward/redness", "grad_norm", "lr", "skipped_steps"} <= set(lines[-1])
    assert result.step == 10 and result.skipped_steps == 0


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    full = _tiny_task()
    Trainer(full, _cfg(steps=6, optimizer="adamw", lr=0.05), tmp_path / "full").fit(PROMPTS)

    part = _tiny_task()
    Trainer(part, _cfg(steps=3, optimizer="adamw", lr=0.05), tmp_path / "part").fit(PROMPTS)
    resumed = _tiny_task(seed=123)  # different init: everything must come from the checkpoint
    result = Trainer(resumed, _cfg(steps=6, optimizer="adamw", lr=0.05), tmp_path / "part").fit(PROMPTS, resume="latest")
    assert result.resumed_from.endswith("checkpoint-000003") and result.step == 6
    for k, v in _weights(full).items():
        assert torch.equal(v, _weights(resumed)[k]), k
    log = [json.loads(l)["step"] for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]


def test_alpha_schedule_follows_the_optimizer_step_across_a_resume(tmp_path):
    schedule = dict(alpha=1.0, alpha_start=0.01, alpha_ramp=(1, 5))
    full = _tiny_task(**schedule)
    Trainer(full, _cfg(steps=6, optimizer="adamw", lr=0.05), tmp_path / "full").fit(PROMPTS)
    logged = [json.loads(l)["alpha"] for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cfg = full.objective.config
    assert logged == pytest.approx([cfg.alpha_at(s) for s in range(6)])
    assert logged[0] == pytest.approx(0.01) and logged[-1] == pytest.approx(1.0)

    Trainer(_tiny_task(**schedule), _cfg(steps=3, optimizer="adamw", lr=0.05), tmp_path / "part").fit(PROMPTS)
    resumed = _tiny_task(**schedule)
    Trainer(resumed, _cfg(steps=6, optimizer="adamw", lr=0.05), tmp_path / "part").fit(PROMPTS, resume="latest")
    for k, v in _weights(full).items():
        assert torch.equal(v, _weights(resumed)[k]), k


def test_resume_with_other_run_settings_is_refused(tmp_path):
    Trainer(_tiny_task(), _cfg(steps=2), tmp_path).fit(PROMPTS)
    with pytest.raises(CheckpointError, match="batch_size=2.*start a new `out_dir`"):
        Trainer(_tiny_task(), _cfg(steps=4, batch_size=3), tmp_path).fit(PROMPTS, resume="latest")


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    Trainer(_tiny_task(), _cfg(steps=6, checkpoint_every=2, checkpoints_total_limit=2), tmp_path).fit(PROMPTS)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [4, 6]
    # a half-written checkpoint (no state.json) left by a crash is never picked
    half = tmp_path / "checkpoints" / "checkpoint-000099"
    half.mkdir()
    (half / "trainable.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-000006"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    Trainer(_tiny_task(), _cfg(steps=2), tmp_path).fit(PROMPTS)
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    (ckpt / "optimizer.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(_tiny_task(), _cfg(steps=4), tmp_path).fit(PROMPTS, resume="latest")


class _FlakyReward(Reward):
    """Redness, but NaN on the calls listed in ``bad`` (counting from 0)."""

    name = "flaky"

    def __init__(self, bad):
        super().__init__()
        self.bad, self.calls = set(bad), 0

    def forward(self, images, prompts):
        r = images[:, 0].flatten(1).mean(1)
        self.calls += 1
        return r * float("nan") if self.calls - 1 in self.bad else r


def _flaky_task(bad):
    gen = build_generator("tiny")
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    return HyperNoiseTask(gen, hyper, _FlakyReward(bad), NoiseObjective())


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    task = _flaky_task(bad={1, 2})
    before = _weights(task)
    result = Trainer(task, _cfg(steps=4), tmp_path).fit(PROMPTS)
    assert result.skipped_steps == 2
    after = _weights(task)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    log = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["skipped_steps"] for l in log] == [0, 1, 2, 2]


def test_a_streak_of_non_finite_steps_stops_the_run(tmp_path):
    task = _flaky_task(bad=set(range(100)))
    with pytest.raises(TrainingDivergedError, match="3 steps in a row"):
        Trainer(task, _cfg(steps=10, max_nonfinite_streak=3), tmp_path).fit(PROMPTS)


def test_process_batches_tile_the_global_batch_without_duplication():
    single = PromptSampler(PROMPTS * 3, global_batch=6, seed=1)
    for index in range(5):
        whole = single.global_batch_at(index)
        parts = sum((single.batch(index, rank, 2) for rank in range(3)), [])
        assert parts == whole
    epoch = sum((single.global_batch_at(i) for i in range(2)), [])  # 12 prompts = one epoch
    assert sorted(epoch) == sorted(PROMPTS * 3)


@pytest.mark.parametrize("mode", ["per-sample", "shared", "fixed"])
def test_noise_modes(mode):
    s = NoiseSampler((2, 3), global_batch=4, seed=0, mode=mode)
    a, b = s.global_noise_at(0), s.global_noise_at(1)
    assert a.shape == (4, 2, 3)
    assert torch.equal(a[0], a[1]) == (mode == "shared")
    assert torch.equal(a, b) == (mode == "fixed")
    assert torch.equal(torch.cat([s.batch(0, r, 2) for r in range(2)]), a)


def test_gradient_accumulation_equals_one_step_on_the_same_samples(tmp_path):
    """Accumulating 2 micro-batches of 2 = one batch of the same 4 samples (mean loss)."""
    gen = build_generator("toy2d")
    torch.manual_seed(0)
    hyper = MLPHypernetwork(gen.latent_shape, hidden=16)
    torch.nn.init.normal_(hyper.out.weight, std=0.1)
    task = HyperNoiseTask(gen, hyper, build_reward("corner"), NoiseObjective())
    start = _weights(task)
    cfg = TrainConfig(steps=1, batch_size=2, gradient_accumulation_steps=2, lr=0.1, momentum=0.0,
                      noise_mode="per-sample", progress=False, max_grad_norm=None)
    Trainer(task, cfg, tmp_path).fit([""])
    trained = _weights(task)
    sampler = NoiseSampler(gen.latent_shape, 2, seed=0, mode="per-sample")
    noise = torch.cat([sampler.global_noise_at(0), sampler.global_noise_at(1)])
    task.load_trainable_state_dict(start)
    grads = torch.autograd.grad(task(noise, [""] * 4)["loss"], hyper.trainable_parameters())
    for (name, _), g in zip(hyper.named_parameters(), grads):
        torch.testing.assert_close(trained[name], start[name] - 0.1 * g)


def test_lipschitz_estimate_is_logged_when_asked(tmp_path):
    Trainer(_tiny_task(), _cfg(steps=4, lipschitz_every=2), tmp_path).fit(PROMPTS)
    log = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert ["lipschitz/max" in l for l in log] == [False, True, False, True]
    assert log[1]["lipschitz/max"] >= log[1]["lipschitz/mean"] >= 0
    assert "lipschitz/theorem1_bound" in log[3]


def test_bf16_frozen_weights_with_fp32_lora(tmp_path):
    gen = build_generator("tiny").to(torch.bfloat16)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    task = HyperNoiseTask(gen, hyper, build_reward("redness"), NoiseObjective(ObjectiveConfig("l2", alpha=1e-3)))
    noise, cond = gen.sample_noise(2, seed=0), gen.encode(["a", "b"])
    assert noise.dtype == torch.bfloat16
    with hyper.adapters_disabled(), torch.no_grad():
        base = gen.generate(noise, cond)
    Trainer(task, _cfg(steps=3, mixed_precision="bf16", optimizer="adamw", lr=0.01), tmp_path).fit(PROMPTS)
    assert all(p.dtype == torch.float32 for p in hyper.trainable_parameters())
    assert all(p.dtype == torch.bfloat16 for n, p in gen.named_parameters() if "lora_" not in n)
    assert all(torch.isfinite(v).all() for v in _weights(task).values())
    assert torch.count_nonzero(hyper(noise, cond)) > 0
    with hyper.adapters_disabled(), torch.no_grad():
        assert torch.equal(gen.generate(noise, cond), base)


def _trial_cfg(**kw):
    return _cfg(**{"steps": 6, "optimizer": "adamw", "lr": 0.05, "init_trials": 3, "trial_steps": 2, **kw})


def _log_lines(folder):
    return [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]


def test_init_trials_keep_the_lowest_loss_initialisation_and_train_it_on(tmp_path):
    task = _tiny_task()
    own = _weights(task)
    Trainer(task, _trial_cfg(), tmp_path / "trials").fit(PROMPTS)
    record = json.loads((tmp_path / "trials" / "init_trials.json").read_text())
    scores = [t["score"] for t in record["trials"]]
    assert [t["init_seed"] for t in record["trials"]] == [0, 1, 2]
    assert len(set(scores)) == 3 and record["kept"] == scores.index(min(scores))

    alone = _tiny_task(seed=99)  # the kept initialisation, trained on its own
    if record["kept"] == 0:
        alone.load_trainable_state_dict(own)
    else:
        alone.reinitialize(record["kept"])
    Trainer(alone, _trial_cfg(init_trials=1), tmp_path / "alone").fit(PROMPTS)
    for k, v in _weights(alone).items():
        assert torch.equal(v, _weights(task)[k]), k
    kept_log, alone_log = _log_lines(tmp_path / "trials"), _log_lines(tmp_path / "alone")
    assert [l["step"] for l in kept_log] == list(range(1, 7))
    assert [l["loss"] for l in kept_log] == [l["loss"] for l in alone_log]


def test_a_run_resumed_after_the_trials_does_not_repeat_them(tmp_path):
    task = _tiny_task()
    Trainer(task, _trial_cfg(), tmp_path / "full").fit(PROMPTS)
    chosen = tmp_path / "full" / "checkpoints" / "checkpoint-000002"
    assert chosen.is_dir()  # written right after the choice
    resumed = _tiny_task(seed=5)
    Trainer(resumed, _trial_cfg(), tmp_path / "resumed").fit(PROMPTS, resume=str(chosen))
    assert not (tmp_path / "resumed" / "init_trials.json").exists()
    for k, v in _weights(task).items():
        assert torch.equal(v, _weights(resumed)[k]), k


def _lora_finetune():
    from hypernoise.methods.finetune import GeneratorLoRA

    gen = build_generator("tiny")
    return GeneratorLoRA(gen, LoraSettings(rank=4)), gen


def _zero_map(module, gen):
    """Whether ``module`` (a hypernetwork or a fine-tuning LoRA) leaves g unchanged."""
    noise, cond = gen.sample_noise(2, seed=3), gen.encode(["a", "b"])
    if isinstance(module, (LoRAHypernetwork, MLPHypernetwork)):
        return bool((module(noise, cond) == 0).all())
    return all(bool((p == 0).all()) for n, p in module.trainable_state_dict().items() if "lora_B" in n)


@pytest.mark.parametrize("build", [
    lambda: (lambda g: (LoRAHypernetwork(g, LoraSettings(rank=4)), g))(build_generator("tiny")),
    lambda: (lambda g: (MLPHypernetwork(g.latent_shape, hidden=8), g))(build_generator("toy2d")),
    _lora_finetune,
], ids=["lora-hypernet", "mlp-hypernet", "finetune-lora"])
def test_reinitialize_redraws_a_zero_map_from_its_seed_and_spares_the_global_rng(build):
    module, gen = build()
    with torch.no_grad():
        for p in module.trainable_parameters():
            p.normal_()
    assert not _zero_map(module, gen)
    rng = torch.random.get_rng_state()
    module.reinitialize(7)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert _zero_map(module, gen)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in module.trainable_parameters())
    first = {k: v.clone() for k, v in module.trainable_state_dict().items()}
    module.reinitialize(7)
    assert all(torch.equal(v, module.trainable_state_dict()[k]) for k, v in first.items())
    module.reinitialize(8)
    assert any(not torch.equal(v, module.trainable_state_dict()[k]) for k, v in first.items())


def test_a_generators_default_trials_apply_to_runs_longer_than_one_trial():
    from types import SimpleNamespace

    from hypernoise.errors import ConfigError
    from hypernoise.presets import default_config, preset_config

    gen = SimpleNamespace(name="shapes", pretrained=None)  # the world's preset: 3 trials of 100 steps, 800 steps
    assert (preset_config("shapes").train.init_trials, preset_config("shapes").train.trial_steps) == (3, 100)
    assert default_config(gen).train.init_trials == 3
    assert default_config(gen, steps=101).train.init_trials == 3
    assert default_config(gen, steps=100).train.init_trials == 1  # a smoke test, not a run to choose an init for
    assert default_config(gen, steps=50, trial_steps=10).train.init_trials == 3
    with pytest.raises(ConfigError, match="`trial_steps`"):  # trials the user asked for are not dropped
        default_config(gen, steps=5, init_trials=3)
