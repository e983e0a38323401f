"""The LoRA at inference: adapters off is the plain backbone (no peft code runs), gradient
checkpointing recomputes under the forward pass's state, and the merged mode gives the unmerged
outputs with one plain forward per hypernetwork pass. On the tiny SD-Turbo, SANA-Sprint and
FLUX-Schnell pipelines (random weights, built from configs)."""

import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from hypernoise.errors import AdapterError  # noqa: E402
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings  # noqa: E402
from hypernoise.lora import adapter_state_checkpoint, tuner_layers  # noqa: E402
from hypernoise.methods import sample  # noqa: E402
from hypernoise.methods.generate import generate_images  # noqa: E402

FAMILIES = ["sd-turbo", "sana-sprint", "flux-schnell"]
OPTIONS = {"sd-turbo": {}, "sana-sprint": {"max_sequence_length": 16},
           "flux-schnell": {"height": 32, "width": 32, "max_sequence_length": 16}}
PROMPTS = ["a red apple", "a blue sky"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from hypernoise.generators.tiny import save_tiny_pipeline

    root = tmp_path_factory.mktemp("pipelines")
    return {family: save_tiny_pipeline(family, root / family, seed=0) for family in FAMILIES}


def _load(folders, family):
    from hypernoise.generators import build_generator

    return build_generator("auto", pretrained=str(folders[family]), device="cpu", **OPTIONS[family])


def _hyper(gen, seed=0, **settings):
    """A LoRA hypernetwork with trained-looking weights: every LoRA layer contributes."""
    torch.manual_seed(seed)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4, **settings))
    with torch.no_grad():
        for p in hyper.trainable_parameters():
            p.normal_(0, 0.05)
    return hyper


def _rng(n=2):
    """Seeded generators for SANA-Sprint's multi-step re-noising (the others draw nothing)."""
    return [torch.Generator().manual_seed(i) for i in range(n)]


def _structure(module):
    return [(name, type(m).__name__) for name, m in module.named_modules()]


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_off_is_the_plain_backbone(folders, family):
    plain, gen = _load(folders, family), _load(folders, family)
    hyper = _hyper(gen)
    attached = _structure(gen.backbone)
    noise, cond = gen.sample_noise(2, seed=1), gen.encode(PROMPTS)
    with torch.no_grad():
        reference = plain.generate(noise, cond, 2, rng=_rng())
        with hyper.adapters_disabled():
            assert tuner_layers(gen.backbone) == []  # no peft wrapper left to run
            assert _structure(gen.backbone) == _structure(plain.backbone)
            with hyper.adapters_disabled():  # nested: still off, and the outer context restores
                images = gen.generate(noise, cond, 2, rng=_rng())
            assert _structure(gen.backbone) == _structure(plain.backbone)
        assert _structure(gen.backbone) == attached
        assert torch.equal(images, reference)
        with pytest.raises(RuntimeError, match="boom"):
            with hyper.adapters_disabled():
                raise RuntimeError("boom")
        assert _structure(gen.backbone) == attached and hyper(noise, cond).abs().max() > 0


def _loss(gen, hyper, noise, cond):
    """f_phi with adapters on, then g's backbone with them off on the modulated noise."""
    delta = hyper(noise, cond)
    with hyper.adapters_disabled():
        out = gen.backbone_delta(noise + delta, cond)
    return delta.square().mean() + out.square().mean()


def _grads(gen, hyper, noise, cond, backward_off: bool):
    for p in hyper.trainable_parameters():
        p.grad = None
    x = noise.clone().requires_grad_(True)
    loss = _loss(gen, hyper, x, cond)
    if backward_off:  # backward while the adapters are off: f's blocks must be recomputed with them on
        with hyper.adapters_disabled():
            loss.backward()
    else:
        loss.backward()
    return [x.grad] + [p.grad.clone() for p in hyper.trainable_parameters()]


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointing_recomputes_each_block_as_it_ran(folders, family):
    gen = _load(folders, family)
    hyper = _hyper(gen)
    noise, cond = gen.sample_noise(2, seed=3), gen.encode(PROMPTS)
    plain = _grads(gen, hyper, noise, cond, backward_off=False)
    gen.enable_gradient_checkpointing(adapter_state_checkpoint)
    for backward_off in (False, True):
        checkpointed = _grads(gen, hyper, noise, cond, backward_off)
        for a, b in zip(plain, checkpointed):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_mode_gives_the_unmerged_outputs_with_plain_layers(folders, family):
    gen = _load(folders, family)
    hyper = _hyper(gen)
    attached = _structure(gen.backbone)
    noise, cond = gen.sample_noise(2, seed=2), gen.encode(PROMPTS)
    with torch.no_grad():
        delta, images = hyper(noise, cond), sample(gen, hyper, noise, cond, num_steps=2, rng=_rng()).images
        with hyper.merged():
            assert tuner_layers(gen.backbone) == []  # f_phi runs no peft code
            merged_delta = hyper(noise, cond)
            merged_images = sample(gen, hyper, noise, cond, num_steps=2, rng=_rng()).images
            with hyper.adapters_disabled():  # g inside the merged mode: the base layers
                base = gen.generate(noise, cond, 2, rng=_rng())
        assert _structure(gen.backbone) == attached
        assert torch.equal(hyper(noise, cond), delta)  # the unmerged path is untouched
        with hyper.adapters_disabled():
            assert torch.equal(gen.generate(noise, cond, 2, rng=_rng()), base)
    assert delta.abs().max() > 1e-3  # the comparison can fail
    torch.testing.assert_close(merged_delta, delta, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(merged_images, images, rtol=1e-4, atol=1e-5)


def test_merged_copies_are_one_weight_per_adapted_layer(folders):
    gen = _load(folders, "sd-turbo")
    hyper = _hyper(gen)
    adapted = [m.get_base_layer().weight for m in tuner_layers(gen.backbone)]
    assert hyper.merged_nbytes() == sum(w.numel() * w.element_size() for w in adapted) > 0
    before = {id(p) for p in gen.backbone.parameters()}
    with hyper.merged():
        new = [p for p in gen.backbone.parameters() if id(p) not in before]  # biases are shared, not copied
        assert sum(p.numel() * p.element_size() for p in new) == hyper.merged_nbytes()
    assert {id(p) for p in gen.backbone.parameters()} == before


def test_changing_the_weights_inside_the_merged_mode_is_an_error(folders):
    gen = _load(folders, "sana-sprint")
    hyper = _hyper(gen)
    noise, cond = gen.sample_noise(1, seed=0), gen.encode(PROMPTS[:1])
    with torch.no_grad(), hyper.merged():
        hyper(noise, cond)
        hyper.trainable_parameters()[0].add_(1.0)
        with pytest.raises(AdapterError, match="stale"):
            hyper(noise, cond)
    with torch.no_grad(), hyper.merged():  # entering again merges the new weights
        torch.testing.assert_close(hyper(noise, cond), _unmerged(hyper, noise, cond), rtol=1e-4, atol=1e-5)


def _unmerged(hyper, noise, cond):
    with torch.no_grad():
        return hyper(noise, cond)


def test_grouped_convolutions_keep_their_dense_lora_in_the_merged_mode(folders):
    gen = _load(folders, "sana-sprint")
    hyper = _hyper(gen, grouped_convs=True)
    noise, cond = gen.sample_noise(2, seed=4), gen.encode(PROMPTS)
    with torch.no_grad():
        delta = hyper(noise, cond)
        with hyper.merged():
            left = tuner_layers(gen.backbone)
            merged = hyper(noise, cond)
    assert left and all(m.get_base_layer().groups > 1 for m in left)
    torch.testing.assert_close(merged, delta, rtol=1e-4, atol=1e-5)


def test_generate_images_merged_equals_unmerged(folders):
    gen = _load(folders, "flux-schnell")
    hyper = _hyper(gen)
    plain = generate_images(gen, PROMPTS, [0, 1], 2, hypernet=hyper, batch_size=3)
    merged = generate_images(gen, PROMPTS, [0, 1], 2, hypernet=hyper, batch_size=3, merged=True)
    assert tuner_layers(gen.backbone)  # the LoRA is back in place afterwards
    for a, b in zip(plain, merged):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_generate_cli_merged_flag(tmp_path):
    from hypernoise.adapter import save_adapter
    from hypernoise.cli.main import main
    from hypernoise.generators import build_generator

    gen = build_generator("tiny")
    adapter = save_adapter(tmp_path / "adapter", _hyper(gen), gen)
    for flags, name in (([], "plain"), (["--merged"], "merged")):
        assert main(["generate", "--generator", "tiny", "--adapter", str(adapter), "--prompt", "a red square",
                     "--num-images", "2", "--out", str(tmp_path / name), *flags]) == 0
    for png in sorted((tmp_path / "plain" / "hypernoise").glob("*.png")):
        a = torch.tensor(list(Image.open(png).getdata()), dtype=torch.int16)
        b = torch.tensor(list(Image.open(tmp_path / "merged" / "hypernoise" / png.name).getdata()), dtype=torch.int16)
        assert (a - b).abs().max() <= 1  # 8-bit rounding at most
    assert main(["generate", "--generator", "tiny", "--prompt", "a", "--merged", "--out", str(tmp_path / "x")]) == 2
