"""`--reference-processes N`, the warm-up schedule and skipped steps, against independent references.

- A run told it is 2 processes, on one, must train exactly what one process with the 2-process global
  batch trains (the reference: a plain run with twice the batch).
- The from-zero warm-up must be, step for step, diffusers' and transformers' ``get_scheduler(
  "constant_with_warmup")`` (the authors' training/optim.py:27-35), over warmup x processes steps.
- A skipped (non-finite) step must not advance the schedule, as the authors' trainer returns before
  its scheduler step (training/trainer.py:291-299 @1d5d3db8).
"""

import json

import pytest
import torch

from hypernoise.errors import ConfigError
from hypernoise.generators import build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.methods.hypernoise import HyperNoiseTask
from hypernoise.objective import NoiseObjective, ObjectiveConfig
from hypernoise.rewards import Reward, build_reward
from hypernoise.training import TrainConfig, Trainer
from hypernoise.training.trainer import build_optimizer, build_scheduler, schedule_note

PROMPTS = ["a red square", "a blue circle", "two green triangles", "a photo", "a cat", "a dog"]


def _task(reward=None):
    gen = build_generator("tiny")
    torch.manual_seed(0)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    return HyperNoiseTask(gen, hyper, reward or build_reward("redness"), NoiseObjective(ObjectiveConfig("l2", alpha=0.1)))


def _cfg(**kw):
    return TrainConfig(**{**dict(steps=3, batch_size=2, lr=0.5, optimizer="sgd", noise_mode="per-sample",
                                 progress=False), **kw})


def _lrs(path):
    return [json.loads(line)["lr"] for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_reference_processes_trains_the_runs_global_batch_on_one_process(tmp_path):
    """2 reference processes x batch 2 on one process == one process at batch 4: same prompts, same
    noise, same weights; and the warm-up per process is 2 x as long."""
    ref, plain = _task(), _task()
    common = dict(warmup_steps=2, warmup_per_process=True, warmup_from_zero=True)
    Trainer(ref, _cfg(reference_processes=2, **common), tmp_path / "ref").fit(PROMPTS)
    Trainer(plain, _cfg(batch_size=4, warmup_steps=4, warmup_from_zero=True), tmp_path / "plain").fit(PROMPTS)
    mine, theirs = ref.trainable_state_dict(), plain.trainable_state_dict()
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=1e-6, msg=k)
    assert _lrs(tmp_path / "ref") == pytest.approx([0.125, 0.25, 0.375])  # 0.5 x step / 4
    assert _lrs(tmp_path / "ref") == pytest.approx(_lrs(tmp_path / "plain"))


def test_reference_processes_must_be_a_multiple_of_the_processes():
    cfg = _cfg(gradient_accumulation_steps=3, reference_processes=6)
    assert cfg.accumulation_on(1) == 18 and cfg.accumulation_on(3) == 6 and cfg.accumulation_on(6) == 3
    with pytest.raises(ConfigError, match="launch 1, 2, 3, 6") as info:
        cfg.accumulation_on(4)
    assert info.value.field == "reference_processes"
    assert _cfg().accumulation_on(4) == 1
    with pytest.raises(ConfigError, match="reference_processes"):
        _cfg(reference_processes=0)


@pytest.mark.parametrize("package", ["diffusers.optimization", "transformers.optimization"])
def test_the_warmup_is_get_scheduler_constant_with_warmup(package):
    """The authors' scheduler: get_scheduler("constant_with_warmup", num_warmup_steps=W x world size)."""
    get_scheduler = pytest.importorskip(package).get_scheduler
    for warmup, processes in ((0, 1), (1, 1), (5, 1), (3, 6), (100, 6)):
        cfg = TrainConfig(lr=1e-3, warmup_steps=warmup, warmup_from_zero=True, warmup_per_process=True)
        mine_opt, their_opt = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3) for _ in range(2))
        mine = build_scheduler(mine_opt, cfg, processes)
        theirs = get_scheduler("constant_with_warmup", optimizer=their_opt, num_warmup_steps=warmup * processes)
        for step in range(warmup * processes + 3):
            assert mine.get_last_lr() == pytest.approx(theirs.get_last_lr(), abs=0, rel=1e-12), (warmup, step)
            mine_opt.step(), their_opt.step(), mine.step(), theirs.step()


class _NaNOnce(Reward):
    """Redness, NaN on the call listed (counting from 0)."""

    name = "nan-once"

    def __init__(self, bad: int):
        super().__init__()
        self.bad, self.calls = bad, 0

    def forward(self, images, prompts):
        r = images[:, 0].flatten(1).mean(1)
        self.calls += 1
        return r * float("nan") if self.calls - 1 == self.bad else r


def test_a_skipped_step_leaves_the_warmup_where_it_was(tmp_path):
    task = _task(_NaNOnce(bad=1))
    cfg = _cfg(steps=4, warmup_steps=4, warmup_from_zero=True)
    result = Trainer(task, cfg, tmp_path).fit(PROMPTS)
    assert result.skipped_steps == 1
    # the lr of the next step, logged after each: step 1 (skipped) does not advance it
    assert _lrs(tmp_path) == pytest.approx([0.125, 0.125, 0.25, 0.375])


def test_a_warmup_longer_than_the_run_is_said(capsys, tmp_path):
    cfg = _cfg(steps=10, warmup_steps=100, warmup_from_zero=True, warmup_per_process=True)
    note = schedule_note(cfg, processes=6)
    assert note.startswith("note: the warm-up lasts 600 optimizer steps (100 x 6 processes), longer than this "
                           "run's 10") and "at most 0.0075" in note
    assert schedule_note(_cfg(steps=10, warmup_steps=10)) is None
    Trainer(_task(), _cfg(steps=2, warmup_steps=5), tmp_path).fit(PROMPTS)
    assert capsys.readouterr().out.count("note: the warm-up lasts 5 optimizer steps") == 1


def test_the_optimizer_and_scheduler_of_the_parity_test_are_unchanged():
    """The builders the parity test drives keep their signatures (one optimizer, LambdaLR)."""
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], TrainConfig(optimizer="sgd"))
    assert isinstance(build_scheduler(opt, TrainConfig(), processes=3), torch.optim.lr_scheduler.LambdaLR)
