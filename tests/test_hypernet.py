"""The noise hypernetwork on a backbone: f = 0 at init, adapters off = g exactly, LoRA-only grads."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hypernoise.adapter import load_adapter, save_adapter
from hypernoise.errors import AdapterError, ConfigError
from hypernoise.generators import build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings, MLPHypernetwork, default_target_modules
from hypernoise.objective import NoiseObjective
from hypernoise.rewards import build_reward
from hypernoise.methods.hypernoise import HyperNoiseTask


def _base_images(gen, noise, prompts):
    with torch.no_grad():
        return gen.generate(noise, gen.encode(prompts))


def _train_a_little(gen, hyper, steps=3):
    task = HyperNoiseTask(gen, hyper, build_reward("redness"), NoiseObjective())
    opt = torch.optim.SGD(hyper.trainable_parameters(), lr=0.5)
    for _ in range(steps):
        loss = task(gen.sample_noise(2, seed=1), ["a red square", "a photo"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return task


def test_default_targets_skip_grouped_convolutions(tiny_generator):
    targets = default_target_modules(tiny_generator.backbone)
    assert "conv_out" in targets and "mid" in targets and "text_proj" in targets
    assert "depthwise" not in targets


def test_lora_hypernetwork_is_zero_at_init_and_adapters_off_is_bit_identical(tiny_generator):
    gen = tiny_generator
    noise, prompts = gen.sample_noise(2, seed=0), ["a red square", "a blue circle"]
    before = _base_images(gen, noise, prompts)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    delta = hyper(noise, gen.encode(prompts))
    assert delta.shape == noise.shape and torch.count_nonzero(delta) == 0
    with hyper.adapters_disabled():
        assert torch.equal(_base_images(gen, noise, prompts), before)
    _train_a_little(gen, hyper)
    assert torch.count_nonzero(hyper(noise, gen.encode(prompts))) > 0
    with hyper.adapters_disabled():
        assert torch.equal(_base_images(gen, noise, prompts), before)


def test_removed_hypernetwork_leaves_the_original_backbone_for_a_new_one(tiny_generator):
    gen = tiny_generator
    noise, prompts = gen.sample_noise(2, seed=0), ["a red square", "a blue circle"]
    before, keys = _base_images(gen, noise, prompts), set(gen.state_dict())
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    _train_a_little(gen, hyper)
    hyper.remove()
    assert set(gen.state_dict()) == keys
    assert torch.equal(_base_images(gen, noise, prompts), before)
    second = LoRAHypernetwork(gen, LoraSettings(rank=2))  # a trained one was there: now a fresh start
    assert torch.count_nonzero(second(noise, gen.encode(prompts))) == 0
    assert all(p.shape[0] == 2 or p.shape[1] == 2 for p in second.trainable_parameters())


def test_only_lora_weights_receive_gradients(tiny_generator):
    gen = tiny_generator
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    for p in hyper.trainable_parameters():  # B = 0 kills the gradient of A at init; start away from it
        torch.nn.init.normal_(p, std=0.01)
    task = HyperNoiseTask(gen, hyper, build_reward("redness"), NoiseObjective())
    task(gen.sample_noise(2, seed=0), ["a", "b"])["loss"].backward()
    lora = {id(p) for p in hyper.trainable_parameters()}
    for name, p in gen.named_parameters():
        if id(p) in lora:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert p.dtype == torch.float32
        else:
            assert p.grad is None and not p.requires_grad, name


def test_final_projection_returns_only_its_delta(tiny_generator):
    gen = tiny_generator
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    for p in hyper.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    noise, cond = gen.sample_noise(2, seed=0), gen.encode(["a", "b"])
    out_layer = gen.backbone.conv_out
    lora_only = {}
    handle = out_layer.register_forward_hook(lambda m, i, o: lora_only.update(x=i[0]))
    delta = hyper(noise, cond)
    handle.remove()
    x = lora_only["x"]
    expected = out_layer.lora_B["hypernoise_adapter"](out_layer.lora_A["hypernoise_adapter"](x)) * out_layer.scaling["hypernoise_adapter"]
    torch.testing.assert_close(delta, expected)


def test_adapter_round_trip_reproduces_the_noise(tiny_generator, tmp_path):
    gen = tiny_generator
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    _train_a_little(gen, hyper)
    noise, cond = gen.sample_noise(2, seed=3), gen.encode(["a red square", "x"])
    want = hyper(noise, cond).detach()
    folder = save_adapter(tmp_path / "adapter", hyper, gen, {"note": "test"})
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "hypernoise.json"}
    peft_cfg = json.loads((folder / "adapter_config.json").read_text())
    assert peft_cfg["r"] == 4 and peft_cfg["lora_alpha"] == 8
    keys = load_file(str(folder / "adapter_model.safetensors"))
    assert "conv_out.lora_A.weight" in keys and not any("hypernoise_adapter" in k for k in keys)

    fresh = build_generator("tiny")
    loaded = load_adapter(fresh, folder)
    torch.testing.assert_close(loaded(noise, fresh.encode(["a red square", "x"])), want, rtol=0, atol=0)


def test_reference_layout_with_peft_prefix_loads(tiny_generator, tmp_path):
    gen = tiny_generator
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    _train_a_little(gen, hyper)
    noise, cond = gen.sample_noise(1, seed=3), gen.encode(["a"])
    want = hyper(noise, cond).detach()
    folder = tmp_path / "reference"
    folder.mkdir()
    hyper.save_peft_config(folder)
    weights = {f"base_model.model.{k}": v.clone() for k, v in hyper.trainable_state_dict().items()}
    torch.save(weights, folder / "adapter_model.bin")
    fresh = build_generator("tiny")
    torch.testing.assert_close(load_adapter(fresh, folder)(noise, fresh.encode(["a"])), want, rtol=0, atol=0)


def test_adapter_matching_no_tensor_is_an_error(tiny_generator, tmp_path):
    gen = tiny_generator
    folder = save_adapter(tmp_path / "a", LoRAHypernetwork(gen, LoraSettings(rank=4)), gen)
    save_file({"something.else.weight": torch.zeros(2)}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="do not match"):
        load_adapter(build_generator("tiny"), folder)


def test_adapter_for_another_generator_is_refused(tmp_path):
    toy = build_generator("toy2d")
    folder = save_adapter(tmp_path / "toy", MLPHypernetwork(toy.latent_shape), toy)
    with pytest.raises(AdapterError, match="trained for generator 'toy2d'.*`generator` toy2d"):
        load_adapter(build_generator("tiny"), folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_corrupt_or_missing_adapter_weights_are_a_clear_error(tmp_path, damage):
    toy = build_generator("toy2d")
    folder = save_adapter(tmp_path / "toy", MLPHypernetwork(toy.latent_shape), toy)
    path = folder / "adapter_model.safetensors"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:
        path.unlink()
    with pytest.raises(AdapterError):
        load_adapter(toy, folder)


def test_missing_adapter_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AdapterError, match="does not exist"):
        load_adapter(build_generator("toy2d"), tmp_path / "nope")


def test_mlp_hypernetwork_is_zero_at_init():
    h = MLPHypernetwork((3, 2))
    x = torch.randn(5, 3, 2)
    assert torch.equal(h(x, {}), torch.zeros_like(x))
    assert torch.equal(h.modulate(x, {}), x)


def test_passes_compose_the_map_and_one_pass_is_the_plain_map(tiny_generator):
    gen = tiny_generator
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    _train_a_little(gen, hyper)
    noise, cond = gen.sample_noise(2, seed=3), gen.encode(["a red square", "x"])
    with torch.no_grad():
        f0 = hyper(noise, cond)
        assert torch.equal(hyper.displacement(noise, cond), f0)  # K = 1: exactly f_phi
        twice = hyper.modulate(noise, cond, passes=2)
        torch.testing.assert_close(twice, noise + f0 + hyper(noise + f0, cond))
        assert not torch.allclose(twice, noise + f0)
        x = noise
        for _ in range(3):
            x = x + hyper(x, cond)
        torch.testing.assert_close(hyper.modulate(noise, cond, passes=3), x)
        with pytest.raises(ConfigError, match="positive integer"):
            hyper.modulate(noise, cond, passes=0)
    with pytest.raises(ConfigError, match="positive integer"):
        MLPHypernetwork(gen.latent_shape, passes=0)


def test_training_with_passes_charges_the_total_displacement(tiny_generator):
    gen = tiny_generator
    trained = LoRAHypernetwork(gen, LoraSettings(rank=4))
    _train_a_little(gen, trained)  # one pass, then the same weights applied twice
    weights = {k: v.clone() for k, v in trained.trainable_state_dict().items()}
    trained.remove()
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4), passes=2)
    hyper.load_trainable_state_dict(weights)
    task = HyperNoiseTask(gen, hyper, build_reward("redness"), NoiseObjective())
    noise, prompts = gen.sample_noise(2, seed=1), ["a red square", "a photo"]
    terms = task(noise, prompts)
    with torch.no_grad():
        total = hyper.modulate(noise, gen.encode(prompts)) - noise
    assert terms["reg"].item() == pytest.approx(0.5 * total.pow(2).flatten(1).sum(1).mean().item(), rel=1e-5)
    terms["loss"].backward()  # gradients flow through both passes
    assert all(p.grad is not None for p in hyper.trainable_parameters())


def test_adapter_keeps_its_passes(tiny_generator, tmp_path):
    gen = tiny_generator
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4), passes=2)
    _train_a_little(gen, hyper)
    folder = save_adapter(tmp_path / "adapter", hyper, gen)
    loaded = load_adapter(build_generator("tiny"), folder)
    assert loaded.passes == 2
    meta = json.loads((folder / "hypernoise.json").read_text())
    meta["hypernetwork"]["passes"] = 0
    (folder / "hypernoise.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="passes must be a positive integer"):
        load_adapter(build_generator("tiny"), folder)
