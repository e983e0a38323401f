"""Validation on held-out prompts during training: validation.jsonl, best/ (the adapter of the best
validation reward, checked against an independent evaluation of every checkpoint), no effect on
the trained weights, resume, both training methods, the world's judge and the CLI's flags."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from hypernoise.adapter import load_adapter
from hypernoise.errors import ConfigError
from hypernoise.evaluation import EvalConfig, evaluate
from hypernoise.generators import build_generator
from hypernoise.hypernet import LoRAHypernetwork
from hypernoise.lora import LoraSettings
from hypernoise.methods import train
from hypernoise.methods.hypernoise import HyperNoiseConfig, ModelConfig
from hypernoise.training import TrainConfig
from hypernoise.training.validation import ValidationResult, log_to_trackers
from tiny_generator import TinyGenerator

PROMPTS = ["a red square", "a blue circle", "two green triangles", "a photo"]
HELD_OUT = ("a yellow star", "three dogs")
SEEDS = (0, 1)


def _cfg(generator="tiny", **train_kw):
    base = dict(steps=6, batch_size=2, lr=0.5, noise_mode="per-sample", progress=False,
                validation_prompts=HELD_OUT, validation_every=2, validation_seeds=SEEDS)
    return HyperNoiseConfig(model=ModelConfig(generator=generator), reward="redness", lora=LoraSettings(rank=4),
                            train=TrainConfig(**{**base, **train_kw}))


def _rows(out):
    return [json.loads(l) for l in (out / "validation.jsonl").read_text().splitlines()]


def _checkpoint_weights(out, step):
    return load_file(str(out / "checkpoints" / f"checkpoint-{step:06d}" / "trainable.safetensors"))


def _evaluate_weights(weights, method="hypernoise"):
    """The mean redness of ``weights`` on the held-out prompts, by ``evaluation.evaluate`` on a
    fresh generator: the reference the validation rows must match."""
    gen = build_generator("tiny")
    common = dict(seeds=SEEDS, reward="redness")
    if weights is None:
        return evaluate(gen, list(HELD_OUT), EvalConfig(method="base", **common))["rewards"]["redness"]
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    hyper.load_trainable_state_dict(weights)
    cfg = EvalConfig(method=method, adapter_given=True, **common)
    return evaluate(gen, list(HELD_OUT), cfg, adapter=hyper)["rewards"]["redness"]


def test_validation_rows_match_an_independent_evaluation_and_best_is_the_best_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(_cfg(checkpoint_every=2), PROMPTS, out)
    rows = _rows(out)
    assert [r["step"] for r in rows] == [2, 4, 6]
    reference = {s: _evaluate_weights(_checkpoint_weights(out, s)) for s in (2, 4, 6)}
    for row in rows:
        assert row["reward/redness"] == pytest.approx(reference[row["step"]], rel=1e-5, abs=1e-7)
        assert row["reward"] == pytest.approx(row["reward/redness"], rel=1e-5)  # redness:1
        assert row["base/reward/redness"] == pytest.approx(_evaluate_weights(None), rel=1e-5, abs=1e-7)
    best = max(reference, key=reference.get)
    assert [r["best_step"] for r in rows][-1] == best
    record = json.loads((out / "best" / "validation.json").read_text())
    assert record["step"] == best and record["reward"] == next(r["reward"] for r in rows if r["step"] == best)
    saved, kept = load_file(str(out / "best" / "adapter_model.safetensors")), _checkpoint_weights(out, best)
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in kept)
    # best/ is an adapter folder like adapter/: it loads as one
    assert isinstance(load_adapter(build_generator("tiny"), out / "best"), LoRAHypernetwork)
    # grids: the latest and the best, no others
    assert {p.name for p in (out / "validation").iterdir()} == {f"step-{best:06d}.png", "step-000006.png"}
    assert record["grid"] == f"validation/step-{best:06d}.png"


class _StochasticTiny(TinyGenerator):
    """The tiny generator with a stochastic last step drawn from the global RNG (as a sampler given
    no ``rng`` may do): any draw validation took from that stream would change training."""

    def generate(self, noise, cond, num_steps=None, rng=None):
        images = super().generate(noise, cond, num_steps, rng)
        return (images + 0.05 * torch.randn_like(images)).clamp(0, 1)


def test_validation_leaves_the_trained_weights_bit_identical(tmp_path):
    runs = {}
    configs = {"with": _cfg(steps=4, validation_every=1),
               "without": _cfg(steps=4, validation_prompts=(), validation_every=None)}
    for name, cfg in configs.items():
        train(cfg, PROMPTS, tmp_path / name, generator=_StochasticTiny())
        runs[name] = load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors"))
    assert len(_rows(tmp_path / "with")) == 4 and not (tmp_path / "without" / "validation.jsonl").exists()
    assert all(torch.equal(runs["with"][k], v) for k, v in runs["without"].items())
    losses = [[json.loads(l)["loss"] for l in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in runs]
    assert losses[0] == losses[1]


def test_a_resumed_run_keeps_its_best_and_replays_the_log(tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    train(_cfg(steps=8, checkpoint_every=2), PROMPTS, full)
    rows = _rows(full)
    best = rows[-1]["best_step"]
    assert best <= 4  # reached before the resumed step: a best lost on resume would be replaced at step 6
    shutil.copytree(full, crashed)
    for step in (6, 8):  # killed after the step-8 validation, before checkpoint 6 was safe
        shutil.rmtree(crashed / "checkpoints" / f"checkpoint-{step:06d}")
    state = json.loads((crashed / "checkpoints" / "checkpoint-000004" / "state.json").read_text())
    assert state["validation_best"]["step"] == best
    _, result = train(_cfg(steps=8, checkpoint_every=2), PROMPTS, crashed, resume="latest")
    assert result.resumed_from.endswith("checkpoint-000004")
    assert _rows(crashed) == rows  # rows past step 4 dropped, then replayed: one run's log
    assert json.loads((crashed / "best" / "validation.json").read_text())["step"] == best
    saved, kept = load_file(str(crashed / "best" / "adapter_model.safetensors")), _checkpoint_weights(full, best)
    assert all(torch.equal(saved[k], kept[k]) for k in kept)


def test_finetune_validates_the_fine_tuned_generator_against_the_same_base(tmp_path):
    from hypernoise.methods.finetune import load_finetune_adapter

    train(_cfg(steps=4), PROMPTS, tmp_path / "hn")
    train(_cfg(steps=4, lr=0.05), PROMPTS, tmp_path / "ft", method="finetune")
    hn, ft = _rows(tmp_path / "hn"), _rows(tmp_path / "ft")
    assert [r["step"] for r in ft] == [2, 4]
    assert ft[0]["base/reward"] == hn[0]["base/reward"]  # g with the fine-tuning LoRA off is g
    assert ft[0]["reward"] != ft[0]["base/reward"]
    record = json.loads((tmp_path / "ft" / "best" / "validation.json").read_text())
    gen = build_generator("tiny")
    load_finetune_adapter(gen, tmp_path / "ft" / "best")
    again = evaluate(gen, list(HELD_OUT), EvalConfig(method="finetune", seeds=SEEDS, reward="redness", adapter_given=True))
    assert again["rewards"]["redness"] == pytest.approx(record["metrics"]["reward/redness"], rel=1e-5, abs=1e-7)


def test_the_worlds_judge_scores_validation_and_the_cli_writes_best(tmp_path, capsys):
    from hypernoise.cli.main import main

    from hypernoise.world.grammar import split_prompts

    # the world's prompts are split train/test only: validation prompts are held out of its train split
    train_split = split_prompts("train", "color_attr")
    (tmp_path / "train.txt").write_text("\n".join(train_split[:6]) + "\n")
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("\n".join(train_split[6:8]) + "\n")
    out = tmp_path / "run"
    assert main(["train", "--steps", "2", "--batch-size", "2", "--prompts", str(tmp_path / "train.txt"),
                 "--validation-prompts", str(held_out),
                 "--validation-every", "1", "--validation-seeds", "0", "--eval-seeds", "1", "--no-progress",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert {"geneval/overall", "base/geneval/overall", "reward", "base/reward"} <= set(rows[0])
    assert (out / "best" / "adapter_model.safetensors").is_file() and (out / "adapter").is_dir()
    assert f"validation: best at step {rows[-1]['best_step']}" in captured.out
    assert "validation prompts are also" not in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--validation-every", "-1"], "--validation-every must be an integer >= 0"),
    (["--validation-seeds", "0,0"], "--validation-seeds must list each seed once"),
    (["--validation-seeds", "a"], "--validation-seeds must be comma-separated integers"),
    (["--validation-every", "2"], "--validation-every needs --validation-prompts"),
    (["--validation-seeds", "1"], "--validation-seeds needs --validation-prompts"),
    (["--validation-prompts", "MISSING"], "does not exist"),
])
def test_bad_validation_flags_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    from hypernoise.cli.main import main

    argv = [a.replace("MISSING", str(tmp_path / "missing.txt")) for a in argv]
    code = main(["train", "--generator", "tiny", "--steps", "1", "--no-progress", "--out", str(tmp_path / "r"), *argv])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r").exists()


def test_overlapping_prompts_are_warned_and_the_prompt_file_is_an_input(tmp_path, capsys):
    from hypernoise.cli.main import main

    out = tmp_path / "run"
    args = ["train", "--generator", "tiny", "--reward", "redness", "--steps", "1", "--batch-size", "2",
            "--no-progress", "--out", str(out)]
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("a red square\nthree dogs\n")  # the first is a training prompt of the tiny world
    assert main([*args, "--validation-prompts", str(held_out)]) == 0
    warnings = [l for l in capsys.readouterr().err.splitlines() if "warning" in l]
    assert any("1 of the 2 validation prompts are also training prompts (e.g. 'a red square')" in l
               for l in warnings), warnings
    inside = out / "best" / "held_out.txt"  # a prompt file inside the run: --overwrite must not delete it
    shutil.copy(held_out, inside)
    assert main([*args, "--overwrite", "--validation-prompts", str(inside)]) == 2
    assert "lies inside the --out folder" in capsys.readouterr().err and inside.is_file()


def test_library_checks_name_the_field():
    with pytest.raises(ConfigError, match="`validation_prompts` must list each prompt once"):
        TrainConfig(validation_prompts=("a", "a"))
    with pytest.raises(ConfigError, match="`validation_every` needs `validation_prompts`"):
        TrainConfig(validation_every=3)
    with pytest.raises(ConfigError, match="`validation_seeds`"):
        TrainConfig(validation_prompts=("a",), validation_seeds=())
    with pytest.raises(ConfigError, match="`validation_prompts` must be a list"):
        TrainConfig(validation_prompts="a red square")
    assert TrainConfig(steps=50, validation_prompts=("a",)).validation_interval == 5  # about ten a run
    assert TrainConfig(steps=50, validation_prompts=("a",), validation_every=0).validation_interval == 0


def test_trackers_get_the_scalars_and_the_grid_as_diffusers_logs_them():
    from PIL import Image

    logged, images = [], []
    writer = SimpleNamespace(add_image=lambda tag, array, step, dataformats: images.append((tag, array.shape, step,
                                                                                           dataformats)))
    acc = SimpleNamespace(log=lambda values, step: logged.append((values, step)),
                          trackers=[SimpleNamespace(name="tensorboard", writer=writer)])
    result = ValidationResult({"reward": 0.5, "base/reward": 0.25}, Image.new("RGB", (12, 8)))
    log_to_trackers(acc, 7, result)
    assert logged == [({"validation/reward": 0.5, "validation/base/reward": 0.25}, 7)]
    assert images == [("validation/grid", (8, 12, 3), 7, "HWC")]
