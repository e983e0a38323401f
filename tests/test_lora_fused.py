"""The fused LoRA forward (``lora.low_rank_add``) computes what peft's own forward computes:
outputs and gradients, Linear on 2-D and 3-D inputs, strided and 1x1 convolutions (contiguous
and channels-last), the dense
LoRA of grouped convolutions, fp32 and bf16; keys and classes stay peft's."""

import pytest
import torch
from torch import nn

from hypernoise.lora import BackboneLoRA, LoraSettings, tuner_layers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 24)
        self.conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.point = nn.Conv2d(12, 12, 1)
        self.depth = nn.Conv2d(12, 12, 3, padding=1, groups=12)


def _lora(dtype=torch.float32, grouped=True):
    torch.manual_seed(0)
    net = Net().to(dtype)
    lora = BackboneLoRA(net, LoraSettings(rank=4, alpha=8, grouped_convs=grouped))
    with torch.no_grad():  # a trained-looking delta: B is zero at initialisation
        for name, p in lora.params.items():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return net, lora


def _peft_forward(layer, x):
    """peft's own forward of ``layer`` (the class the fused one derives from); for the dense LoRA
    of a grouped convolution, its formula base(x) + scaling B(A(x)) written out."""
    from hypernoise.lora import _fused_classes

    if isinstance(layer, tuple(_fused_classes().values())):
        return type(layer).__mro__[1].forward(layer, x)
    (name,) = layer.active_adapters
    base, a = layer.base_layer(x), layer.lora_A[name]
    return (base + layer.lora_B[name](a(x.to(a.weight.dtype))) * layer.scaling[name]).to(base.dtype)


def _inputs(dtype):
    g = torch.Generator().manual_seed(1)
    return {"proj": [torch.randn(5, 16, generator=g, dtype=dtype), torch.randn(2, 7, 16, generator=g, dtype=dtype)],
            "conv": [torch.randn(2, 8, 9, 9, generator=g, dtype=dtype)],
            "point": [torch.randn(2, 12, 5, 5, generator=g, dtype=dtype),  # and channels-last, as SANA's FFN
                      torch.randn(2, 5, 5, 12, generator=g, dtype=dtype).permute(0, 3, 1, 2)],
            "depth": [torch.randn(2, 12, 5, 5, generator=g, dtype=dtype)]}


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_forward_equals_peft_forward_and_its_gradients(dtype, tol):
    net, lora = _lora(dtype)
    for name, xs in _inputs(dtype).items():
        layer = getattr(net, name)
        for x in xs:
            x = x.requires_grad_()
            grads = []
            for fn in (layer.forward, lambda v: _peft_forward(layer, v)):
                out = fn(x)
                grads.append((out, *torch.autograd.grad(out.square().sum(), [x, *lora.params.values()],
                                                        allow_unused=True)))
            for fused, peft in zip(*grads):
                if fused is None:
                    assert peft is None
                    continue
                assert fused.dtype == peft.dtype and fused.shape == peft.shape
                scale = peft.abs().max().clamp_min(1)
                assert (fused - peft).abs().max() / scale < tol, name


def test_fused_layers_are_peft_layers_with_peft_keys():
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import layer as peft_layer

    net, lora = _lora(grouped=False)
    assert isinstance(net.proj, peft_layer.Linear) and isinstance(net.conv, peft_layer.Conv2d)
    plain = Net()
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["proj", "conv", "point"]), plain,
                            adapter_name=lora.adapter_name)
    keys = lambda m: sorted(k for k in m.state_dict() if "lora_" in k)  # noqa: E731
    assert keys(net) == keys(plain)


def test_switched_off_merged_and_extra_arguments_take_peft_path():
    net, lora = _lora(grouped=False)
    x = torch.randn(3, 16)
    with lora.disabled():
        off = net.proj(x)
    base = nn.functional.linear(x, net.proj.base_layer.weight, net.proj.base_layer.bias)
    assert torch.equal(off, base)
    for layer in tuner_layers(net):
        layer.enable_adapters(False)  # peft's own switch, not the bypass
    assert torch.equal(net.proj(x), base)


def test_owned_result_accumulates_in_place_and_a_held_one_is_left_alone():
    from hypernoise.lora import low_rank_add

    b = nn.Linear(4, 6, bias=False)
    h, base = torch.randn(3, 4), torch.randn(3, 6)
    want = base + b(h) * 2.0
    result = base.clone()
    out = low_rank_add(result, h, b, 2.0, owned=True)
    assert out is result and torch.allclose(out, want, atol=1e-6)  # no new output-sized tensor
    held = base.clone()
    out = low_rank_add(held, h, b, 2.0, owned=False)
    assert out is not held and torch.equal(held, base) and torch.allclose(out, want, atol=1e-6)


def test_a_forward_hook_on_the_base_layer_sees_the_base_output_unchanged():
    """A user's hook that keeps the base layer's output (feature extraction) must not see the LoRA
    added to it afterwards: such layers take peft's out-of-place expression."""
    net, lora = _lora(grouped=False)
    kept = []
    net.proj.base_layer.register_forward_hook(lambda _m, _i, out: kept.append(out))
    x = torch.randn(3, 16)
    y = net.proj(x)
    base = nn.functional.linear(x, net.proj.base_layer.weight, net.proj.base_layer.bias)
    assert torch.equal(kept[0], base) and not torch.allclose(y, base)


def test_channels_last_convolution_accumulates_in_place():
    """SANA's feed-forward convolves channels-last activations; their 1x1 LoRA must take the
    in-place path (one output-sized tensor, in the base output's layout), not peft's expression."""
    from hypernoise.lora import low_rank_add

    b = nn.Conv2d(4, 6, 1, bias=False)
    h = torch.randn(2, 3, 3, 4).permute(0, 3, 1, 2)
    result = torch.randn(2, 3, 3, 6).permute(0, 3, 1, 2)
    want = result + b(h) * 0.5
    out = low_rank_add(result, h, b, 0.5, owned=True)
    assert out is result and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, want, atol=1e-6)
