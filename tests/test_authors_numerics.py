"""The authors' numerics offered as options, each against an independent reference.

- bf16 LoRA weights with no fp32 copy (their runs): an update below half a bf16 weight's spacing is
  lost, as bf16 arithmetic itself rounds it away; fp32 (the default) keeps it.
- ReNO's clipping is torch's ``clip_grad_norm_`` (ReNO training/trainer.py:128), per sample.
- ReNO's fp16 noise (main.py:111-112): the optimised noise is an fp16 tensor.
- `--preset reno` refuses a family ReNO has no setting for, and other methods, in one line.
"""

import pytest
import torch

from hypernoise.cli.main import main
from hypernoise.errors import ConfigError
from hypernoise.generators import build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.methods.reno import RenoConfig, _clip_per_sample, reno
from hypernoise.presets import default_config, reno_preset
from hypernoise.rewards import build_reward


def test_bf16_lora_weights_lose_the_updates_bf16_loses():
    gen = build_generator("tiny")
    torch.manual_seed(0)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4, weights_dtype="bfloat16"))
    params = hyper.trainable_parameters()
    assert {p.dtype for p in params} == {torch.bfloat16}
    a = next(p for p in params if p.abs().max() > 0.2)  # a LoRA A (gaussian, std 1/r)
    before = a.detach().clone()
    with torch.no_grad():
        a.add_(1e-4)  # below half the spacing of bf16 above 1/16 (2.4e-4 and more)
    assert torch.equal(a, (before.float() + 1e-4).bfloat16())  # bf16 arithmetic's own rounding
    big = before.abs() >= 1 / 16
    assert big.any() and torch.equal(a[big], before[big])  # those updates are lost
    fp32 = LoRAHypernetwork(build_generator("tiny"), LoraSettings(rank=4)).trainable_parameters()
    assert {p.dtype for p in fp32} == {torch.float32}  # the default keeps every update
    assert hyper.settings.describe()["weights_dtype"] == "bfloat16"
    assert "weights_dtype" not in LoraSettings().describe()  # fp32 adapters record what they always did
    assert default_config(gen, lora_dtype="bfloat16").lora.weights_dtype == "bfloat16"
    with pytest.raises(ConfigError, match="weights_dtype"):
        LoraSettings(weights_dtype="float8")


def test_bf16_lora_trains_and_saves_in_bf16(tmp_path):
    from hypernoise.methods.hypernoise import HyperNoiseTask
    from hypernoise.objective import NoiseObjective
    from hypernoise.training import TrainConfig, Trainer

    gen = build_generator("tiny")
    torch.manual_seed(0)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4, weights_dtype="bfloat16"))
    task = HyperNoiseTask(gen, hyper, build_reward("redness"), NoiseObjective())
    Trainer(task, TrainConfig(steps=2, batch_size=2, lr=0.5, progress=False), tmp_path).fit(["a red square"])
    assert {v.dtype for v in task.trainable_state_dict().values()} == {torch.bfloat16}
    assert all(torch.isfinite(v.float()).all() for v in task.trainable_state_dict().values())


def test_reno_clipping_is_torchs_clip_grad_norm_per_sample():
    grad = torch.randn(3, 4, 8, 8) * torch.tensor([1e-8, 0.05, 7.0]).view(3, 1, 1, 1)
    mine = _clip_per_sample(grad, 0.1)
    for row, clipped in zip(grad, mine):
        theirs = row.clone().requires_grad_(False)
        p = torch.nn.Parameter(torch.zeros_like(row))
        p.grad = theirs
        torch.nn.utils.clip_grad_norm_(p, 0.1)  # coefficient 0.1 / (norm + 1e-6), at most 1
        torch.testing.assert_close(clipped, p.grad, rtol=1e-6, atol=0)


def test_reno_fp16_noise_is_optimised_in_fp16():
    gen = build_generator("shapes")
    reward = build_reward("redness")
    noise, prompts = gen.sample_noise(2, seed=0), ["a photo of a red circle", "a photo of a blue square"]
    outs = {d: reno(gen, reward, noise, prompts, RenoConfig(iters=3, noise_dtype=d)) for d in ("float32", "float16")}
    assert torch.equal(outs["float16"].noise, outs["float16"].noise.half().float())  # an fp16 tensor's values
    assert not torch.equal(outs["float32"].noise, outs["float32"].noise.half().float())
    with pytest.raises(ConfigError, match="noise_dtype"):
        RenoConfig(noise_dtype="int8")


def test_reno_preset_refuses_what_reno_has_no_setting_for(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no setting for 'sana-sprint'"):
        reno_preset("sana-sprint")
    code = main(["optimize", "--generator", "sana-sprint", "--preset", "reno", "--prompt", "a cat",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "ReNO has no setting for 'sana-sprint'" in err
    code = main(["evaluate", "--method", "base", "--preset", "reno", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "applies to --method reno" in err
