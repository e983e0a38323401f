"""LoRA on a generator's backbone: the one component the noise hypernetwork and direct
fine-tuning share.

``BackboneLoRA`` injects peft LoRA layers into a backbone under one adapter name and keeps their
weights trainable in fp32 whatever the backbone's dtype (diffusers' ``cast_training_params``), or,
with ``LoraSettings.weights_dtype``, in bf16 with no fp32 copy, as the authors' runs did.
Its state dict uses peft's key layout (``<module>.lora_A.weight``, no adapter name), so a saved
folder is a standard peft adapter; keys with peft's ``base_model.model.`` prefix load too, and a
load that does not match every LoRA layer exactly is an ``AdapterError``.

Grouped convolutions (SANA's depthwise ``ff.conv_depth``) are not adapted by default. When a
target list names one (the paper's released adapters do), it gets the dense LoRA that peft < 0.16
built: A a full convolution (r, C_in, kh, kw), B a 1x1 convolution (C_out, r, 1, 1), registered
through peft's custom-module mechanism so that keys, adapter switching and saving stay peft's.

Plain Linear and Conv2d layers get peft's classes with one change, the forward of a layer that is
on: B's matmul, the scale and the add accumulate into the base layer's fresh output in place, one
``addmm_`` / ``baddbmm_`` (``low_rank_add``), where peft writes three more output-sized tensors
per layer (B's output, its scaled copy, the sum); at rank 8 those tensors, not the LoRA's FLOPs,
are most of its cost. Outputs and gradients equal peft's to rounding; every other path (switched
off, merged, DoRA, mixed batches, mixed dtypes, a base layer with forward hooks) is peft's own.

Switching off costs nothing per pass: ``BackboneLoRA.disabled`` puts each LoRA layer's base layer
back in its parent for the duration (a ``LoraSite`` records where each LoRA layer sits), so g runs
the plain backbone's modules, not peft's wrappers with their switch off. ``merged_copy`` builds a
plain layer holding W + scaling B A, for inference modes that run the adapted backbone as a plain
one (``LoRAHypernetwork.merged``).

Gradient checkpointing: ``adapter_state_checkpoint`` is the checkpoint function a generator
hands to diffusers' ``enable_gradient_checkpointing``. Plain checkpointing recomputes a block in
backward under the adapters' state at that moment; HyperNoise runs g with adapters off and calls
backward after switching them back on, so g's blocks would be recomputed as f_phi's (wrong
gradients, or a CheckpointError). This function records each block's adapter state in forward
(what occupies each site, and each layer's switch) and restores it for the recomputation.

peft is imported when a LoRA is built, not when this module is.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
from torch import nn

from hypernoise.errors import AdapterError, ConfigError

#: peft adapter name of the noise hypernetwork's LoRA
ADAPTER_NAME = "hypernoise_adapter"
#: dtypes the trainable LoRA weights may be kept in (``LoraSettings.weights_dtype``)
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")
_PEFT_PREFIX = "base_model.model."


@dataclass
class LoraSettings:
    """LoRA hyperparameters. ``alpha`` None means 2 x rank (resolved in ``lora_alpha``, so that a
    preset's rank replaced with ``dataclasses.replace`` keeps the rule)."""

    rank: int = field(default=16, metadata={"help": "LoRA rank r (the paper: 128 on SANA-Sprint)"})
    alpha: Optional[float] = field(default=None, metadata={"help": "LoRA alpha; default 2 x rank (the paper's 256 for r=128)"})
    target_modules: Optional[list] = field(default=None, metadata={
        "help": "module names to adapt (or one peft regex string); default every Linear and non-grouped "
                "Conv2d of the backbone"})
    init: str = field(default="gaussian", metadata={"help": "peft init_lora_weights: gaussian or true (B = 0 either way)"})
    adapter_name: str = field(default=ADAPTER_NAME, metadata={"help": "peft adapter name"})
    grouped_convs: bool = field(default=False, metadata={
        "help": "default targets include grouped convolutions (dense LoRA, the paper's released adapters' layout)"})
    weights_dtype: str = field(default="float32", metadata={
        "help": "dtype of the trainable LoRA weights: float32 (diffusers' cast_training_params: an update far below "
                "a low-precision weight's spacing still counts) or bfloat16 / float16, with no fp32 copy (the "
                "authors' runs: peft keeps the adapter in the bf16 backbone's dtype)"})

    def __post_init__(self):
        if int(self.rank) < 1:
            raise ConfigError(f"LoRA `rank` must be a positive integer, got {self.rank}", field="rank")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < float("inf")):
            raise ConfigError(f"LoRA `lora_alpha` must be a positive finite number, got {self.alpha}", field="lora_alpha")
        if self.init not in ("gaussian", "true", True):
            raise ConfigError(f"LoRA init must be 'gaussian' or 'true', got {self.init!r}", field="init")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ConfigError(f"LoRA `weights_dtype` must be one of {', '.join(WEIGHT_DTYPES)}, got "
                              f"{self.weights_dtype!r}", field="weights_dtype")

    @property
    def torch_dtype(self) -> torch.dtype:
        """``weights_dtype`` as a torch dtype."""
        return getattr(torch, self.weights_dtype)

    @property
    def lora_alpha(self) -> float:
        """The alpha in force: ``alpha``, or 2 x rank when it is None."""
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    def describe(self) -> dict:
        """The settings as recorded in adapters (alpha resolved, targets a list or a regex)."""
        targets = self.target_modules
        out = {"rank": int(self.rank), "alpha": self.lora_alpha,
               "target_modules": targets if targets is None or isinstance(targets, str) else list(targets),
               "init": self.init, "adapter_name": self.adapter_name}
        out = {**out, "grouped_convs": True} if self.grouped_convs else out
        return out if self.weights_dtype == "float32" else {**out, "weights_dtype": self.weights_dtype}

    def targets(self, backbone: nn.Module):
        """The modules to adapt: ``target_modules``, else ``default_target_modules``."""
        return self.target_modules or default_target_modules(backbone, grouped=self.grouped_convs)


def default_target_modules(backbone: nn.Module, grouped: bool = False) -> list[str]:
    """Every Linear and Conv2d of ``backbone``; grouped convolutions (which peft >= 0.16 rejects
    and this module gives a dense LoRA) only with ``grouped``."""
    names = []
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and (grouped or module.groups == 1)):
            names.append(name)
    return names


def tuner_layers(backbone: nn.Module) -> list[nn.Module]:
    """Every peft LoRA layer inside ``backbone`` (whatever adapters it holds)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in backbone.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def others_taken_out(backbone: nn.Module) -> Iterator[list]:
    """Inside the context every peft LoRA layer now in ``backbone`` (a user's) is replaced by its
    base layer, so that a LoRA injected meanwhile wraps the plain layers; each is put back at exit
    (where it sat, whatever was placed there meanwhile). Yields the layers taken out."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    slots = []
    for name, module in list(backbone.named_modules()):
        if isinstance(module, BaseTunerLayer) and not any(name.startswith(f"{n}.") for n, _ in slots):
            slots.append((name, module))
    parents = [(backbone.get_submodule(n.rpartition(".")[0]) if "." in n else backbone, n.rpartition(".")[2], m)
               for n, m in slots]
    for parent, child, module in parents:
        parent._modules[child] = module.get_base_layer()
    try:
        yield [m for _, _, m in parents]
    finally:
        for parent, child, module in parents:
            parent._modules[child] = module


# --------------------------------------------------------------------------- in-place low-rank add
def low_rank_add(result: torch.Tensor, h: torch.Tensor, b: nn.Module, scaling: float, owned: bool) -> torch.Tensor:
    """``result + scaling * b(h)``; when ``owned`` (``result`` is a fresh tensor no one else holds),
    accumulated into ``result`` in place by one BLAS call and ``result`` returned.

    Linear: result [..., out], h [..., r], b.weight [out, r]: ``addmm_`` on the flattened rows.
    Convolution (B is 1x1): result [N, out, H, W], h [N, r, H, W], b.weight [out, r, 1, 1]:
    ``baddbmm_`` over the images when ``result`` is contiguous, ``addmm_`` on its pixel rows when
    it is channels-last (a convolution of a channels-last input, as SANA's feed-forward gets).
    Autograd allows it: the base layer's backward needs its inputs, not its output. Anything else
    (not owned, mixed dtypes, a bias on B, another layout) takes peft's expression, which writes
    three output-sized tensors.
    """
    w = b.weight
    if not (owned and getattr(b, "bias", None) is None and result.dtype == h.dtype == w.dtype):
        return result + b(h) * scaling
    if w.dim() == 2 and result.is_contiguous():
        result.view(-1, w.shape[0]).addmm_(h.reshape(-1, w.shape[1]), w.t(), alpha=scaling)
        return result
    if w.dim() == 4 and w.shape[2:] == (1, 1) and result.dim() == 4 and h.shape[2:] == result.shape[2:]:
        n, o, r = result.shape[0], w.shape[0], w.shape[1]
        if result.is_contiguous():
            result.view(n, o, -1).baddbmm_(w.view(1, o, r).expand(n, o, r), h.reshape(n, r, -1), alpha=scaling)
            return result
        if result.is_contiguous(memory_format=torch.channels_last):
            rows = result.permute(0, 2, 3, 1).view(-1, o)  # [N*H*W, out], the tensor's own memory
            rows.addmm_(h.permute(0, 2, 3, 1).reshape(-1, r), w.view(o, r).t(), alpha=scaling)
            return result
    return result + b(h) * scaling


def _owned(layer) -> bool:
    """Whether the base layer's output is the fresh tensor its forward made (no forward hook could
    have handed out, or returned, a tensor someone else holds)."""
    return not (layer.base_layer._forward_hooks or layer.base_layer._forward_pre_hooks)


def _lean(layer, args: tuple, kwargs: dict) -> bool:
    """Whether a peft layer's forward is plain LoRA (no switch off, merge, variant, mixed batch or
    extra arguments), which ``low_rank_add`` computes exactly as peft does."""
    names = [n for n in layer.active_adapters if n in layer.lora_A]
    return not (args or kwargs or layer.disable_adapters or layer.merged or getattr(layer, "lora_variant", None)
                or any(getattr(layer, "use_dora", {}).get(n) or layer.lora_bias.get(n) for n in names))


def _lean_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """peft's LoRA forward (base + sum over active adapters of scaling B A dropout(x)), each
    adapter's B, scale and add fused by ``low_rank_add``."""
    result = layer.base_layer(x)
    out_dtype, owned = result.dtype, _owned(layer)
    for name in layer.active_adapters:
        if name in layer.lora_A:
            a = layer.lora_A[name]
            h = a(layer.lora_dropout[name](layer._cast_input_dtype(x, a.weight.dtype)))
            result = low_rank_add(result, h, layer.lora_B[name], layer.scaling[name], owned)
    return result.to(out_dtype)


def _fused_classes() -> dict:
    """Build (once) peft's LoRA Linear and Conv2d with the fused forward; peft is imported lazily.
    They are peft's classes in every other respect (weights, keys, merging, switching)."""
    global _FUSED
    if _FUSED:
        return _FUSED
    from peft.tuners.lora import layer as peft_layer

    def fused_forward(peft_forward):
        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            return _lean_forward(self, x) if _lean(self, args, kwargs) else peft_forward(self, x, *args, **kwargs)
        return forward

    for base_cls, name in ((peft_layer.Linear, "FusedLoraLinear"), (peft_layer.Conv2d, "FusedLoraConv2d")):
        cls = type(name, (base_cls,), {"forward": fused_forward(base_cls.forward), "__module__": __name__,
                                       "__doc__": f"peft's {base_cls.__name__} with ``low_rank_add``'s fused forward."})
        cls.__qualname__ = name
        _FUSED[name] = cls
    return _FUSED


_FUSED: dict = {}


# --------------------------------------------------------------------------- dense LoRA on grouped convs
def _dense_grouped_conv_class():
    """Build (once) the peft LoRA layer class for grouped Conv2d; peft is imported lazily."""
    global _DenseGroupedLoraConv2d
    if _DenseGroupedLoraConv2d is not None:
        return _DenseGroupedLoraConv2d
    from peft.tuners.lora.layer import LoraLayer

    class DenseGroupedLoraConv2d(nn.Module, LoraLayer):
        """LoRA on a grouped ``nn.Conv2d`` with a dense low-rank path, in peft < 0.16's layout.

        y = conv_grouped(x) + scaling * B(A(x)), A: Conv2d(C_in, r, k, stride, padding), B: 1x1
        Conv2d(r, C_out). Weights: ``lora_A.<adapter>.weight`` (r, C_in, kh, kw) and
        ``lora_B.<adapter>.weight`` (C_out, r, 1, 1). Merging is not supported.
        """

        def __init__(self, base_layer: nn.Module, adapter_name: str, config, r: int = 0, lora_alpha: float = 1, **_):
            super().__init__()
            LoraLayer.__init__(self, base_layer)
            self._active_adapter = adapter_name
            self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config)

        def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config, **_) -> None:
            base = self.get_base_layer()
            self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
            self.scaling[adapter_name] = lora_alpha / (r ** 0.5 if config.use_rslora else r)
            self.use_rslora[adapter_name] = config.use_rslora
            self.use_dora[adapter_name] = self.lora_bias[adapter_name] = False
            dropout = config.lora_dropout
            self.lora_dropout[adapter_name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.lora_A[adapter_name] = nn.Conv2d(base.in_channels, r, base.kernel_size, base.stride, base.padding,
                                                  dilation=base.dilation, bias=False)
            self.lora_B[adapter_name] = nn.Conv2d(r, base.out_channels, 1, bias=False)
            if config.init_lora_weights:
                self.reset_lora_parameters(adapter_name, config.init_lora_weights)
            self._move_adapter_to_device_of_base_layer(adapter_name)
            self.set_adapter(self.active_adapters)

        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            result = self.base_layer(x, *args, **kwargs)
            if self.disable_adapters:
                return result
            out_dtype, owned = result.dtype, _owned(self)
            for name in self.active_adapters:
                if name in self.lora_A:
                    a, b = self.lora_A[name], self.lora_B[name]
                    h = self.lora_dropout[name](x.to(a.weight.dtype))
                    result = low_rank_add(result, a(h), b, self.scaling[name], owned)
            return result.to(out_dtype)

    # importable by name (module-level __getattr__ below), so layers holding it pickle
    DenseGroupedLoraConv2d.__module__, DenseGroupedLoraConv2d.__qualname__ = __name__, "DenseGroupedLoraConv2d"
    _DenseGroupedLoraConv2d = DenseGroupedLoraConv2d
    return DenseGroupedLoraConv2d


_DenseGroupedLoraConv2d = None


def __getattr__(name: str):
    if name == "DenseGroupedLoraConv2d":
        return _dense_grouped_conv_class()
    if name in ("FusedLoraLinear", "FusedLoraConv2d"):
        return _fused_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dispatch(target: nn.Module, adapter_name: str, config, **kwargs) -> Optional[nn.Module]:
    """peft custom-module dispatcher: dense LoRA for grouped Conv2d, the fused classes for plain
    Linear and Conv2d (``low_rank_add``), None (peft's default) otherwise."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
    if isinstance(base, nn.Conv2d) and base.groups > 1:
        layer_class = _dense_grouped_conv_class()
        return layer_class(target, adapter_name, config=config, r=kwargs["r"], lora_alpha=kwargs["lora_alpha"])
    if type(base) in (nn.Linear, nn.Conv2d) and not config.fan_in_fan_out:
        fused = _fused_classes()["FusedLoraLinear" if type(base) is nn.Linear else "FusedLoraConv2d"]
        return fused(target, adapter_name, config=config, **kwargs)
    return None


def redraw_lora(layers: list, adapter_name: str, init: str, seed: int) -> None:
    """Re-draw every LoRA A of ``adapter_name`` in ``layers`` from ``seed`` with peft's own
    initialiser (``init``: gaussian or true) and zero every B, so the delta is 0 again. The global
    random state is left as it was. Weights keep their dtype, device and ``requires_grad``."""
    peft_init = "gaussian" if init == "gaussian" else True
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for layer in layers:
            if adapter_name in layer.lora_A:
                layer.reset_lora_parameters(adapter_name, peft_init)


# --------------------------------------------------------------------------- sites: where each LoRA layer sits
@dataclass(eq=False)
class LoraSite:
    """The place of one peft LoRA layer in a backbone: the child ``name`` of ``parent``.

    It holds the peft layer itself (attached: adapters on or off by their switch), its base layer
    (bypassed: exactly the plain backbone's module, no peft code runs) or a merged copy
    (``merged_copy``). ``occupant`` is whichever is there now; ``place`` puts another.
    """

    parent: nn.Module
    name: str
    layer: nn.Module  # the peft tuner layer
    base: nn.Module = field(init=False)  # its base layer
    active: bool = field(init=False, default=True)  # False once the LoRA is removed

    def __post_init__(self):
        self.base = self.layer.get_base_layer()

    @property
    def occupant(self) -> nn.Module:
        return self.parent._modules[self.name]

    def place(self, module: nn.Module) -> None:
        # the child already exists under this name, so this is what nn.Module.__setattr__ ends in,
        # without its checks (a few microseconds each, hundreds of sites, every pass of g)
        self.parent._modules[self.name] = module


#: parent module -> {child name: its LoraSite}; weak, so that a dropped backbone is not kept alive
_SITES: "weakref.WeakKeyDictionary[nn.Module, dict[str, LoraSite]]" = weakref.WeakKeyDictionary()


def register_sites(backbone: nn.Module) -> list[LoraSite]:
    """Record where every peft LoRA layer now in ``backbone`` sits (idempotent) and return those sites."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    sites = []
    for name, module in backbone.named_modules():
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = backbone.get_submodule(parent_name) if parent_name else backbone
            here = _SITES.setdefault(parent, {})
            if child not in here or here[child].layer is not module:
                here[child] = LoraSite(parent, child, module)
            sites.append(here[child])
    return sites


def lora_sites(module: nn.Module) -> list[LoraSite]:
    """The registered LoRA sites inside ``module``, whatever occupies them now."""
    return [site for m in module.modules() for site in _SITES.get(m, {}).values()]


def _unregister(site: LoraSite) -> None:
    site.active = False
    here = _SITES.get(site.parent, {})
    if here.get(site.name) is site:
        del here[site.name]


@contextlib.contextmanager
def placed(sites: list, modules: list) -> Iterator[None]:
    """Put ``modules[i]`` at ``sites[i]`` inside the context; the previous occupants come back at exit."""
    before = [site.occupant for site in sites]
    for site, module in zip(sites, modules):
        site.place(module)
    try:
        yield
    finally:
        for site, module in zip(sites, before):
            if site.active:  # a LoRA removed inside the context stays removed
                site.place(module)


# --------------------------------------------------------------------------- adapter switches, checkpointing
def _switch_adapters(layers: list, enabled: list) -> None:
    """Turn each LoRA layer's adapters on or off, as peft's forward reads them.

    peft's ``enable_adapters`` also freezes (off) and unfreezes (on) the LoRA weights: slow on
    every call, and a backward pass taken while g runs would silently train nothing. Only the
    switch is flipped here; ``requires_grad`` is left as the hypernetwork set it.
    """
    for layer, on in zip(layers, enabled):
        layer._disable_adapters = not on


@contextlib.contextmanager
def _adapters_switched(layers: list, enabled: list) -> Iterator[None]:
    """Set each layer's adapters on/off inside the context; restore the previous switches at exit."""
    before = [not layer.disable_adapters for layer in layers]
    _switch_adapters(layers, enabled)
    try:
        yield
    finally:
        _switch_adapters(layers, before)


@contextlib.contextmanager
def _adapter_state(sites: list, occupants: list, layers: list, enabled: list) -> Iterator[None]:
    """The occupant of every site and the switch of every LoRA layer as given, inside the context."""
    with placed(sites, occupants), _adapters_switched(layers, enabled):
        yield


def adapter_state_checkpoint(module: nn.Module, *args, **kwargs):
    """``torch.utils.checkpoint`` of ``module(*args)`` whose backward recomputation runs under the
    adapter state that was in force during this forward pass: what occupied each LoRA site inside
    ``module`` (the peft layer, its bypassing base layer or a merged copy) and each layer's switch.

    Pass it to diffusers as ``backbone.enable_gradient_checkpointing(gradient_checkpointing_func=...)``.
    """
    from torch.utils.checkpoint import checkpoint

    sites = lora_sites(module)
    layers = list({id(layer): layer for layer in [s.layer for s in sites] + tuner_layers(module)}.values())
    state = (sites, [s.occupant for s in sites], layers, [not layer.disable_adapters for layer in layers])

    def contexts():
        return contextlib.nullcontext(), _adapter_state(*state)

    return checkpoint(module.__call__, *args, use_reentrant=False, context_fn=contexts, **kwargs)


# --------------------------------------------------------------------------- merged copies (inference)
def mergeable(layer: nn.Module) -> bool:
    """Whether ``merged_copy`` merges the peft ``layer``: a plain Linear / Conv2d base with
    vanilla LoRA (no DoRA, not the dense LoRA of a grouped convolution)."""
    return (type(layer.get_base_layer()) in (nn.Linear, nn.Conv2d) and hasattr(layer, "get_delta_weight")
            and not isinstance(layer, _dense_grouped_conv_class()) and not any(layer.use_dora.values()))


def merged_copy(layer: nn.Module, delta_only: bool = False) -> Optional[nn.Module]:
    """A plain ``nn.Linear`` / ``nn.Conv2d`` that computes what the peft ``layer`` computes with its
    active adapters on: weight W + sum_a scaling_a B_a A_a (peft's own ``get_delta_weight``), summed
    in fp32 and stored in W's dtype, the base bias shared (not copied). ``delta_only``: the LoRA
    delta alone (weight sum_a scaling_a B_a A_a, no bias; the hypernetwork's final projection).
    None where the delta is not a weight of the base layer's shape (the dense LoRA of grouped
    convolutions) or the layer is no plain Linear / Conv2d: such a site keeps its peft layer.
    """
    if not mergeable(layer):
        return None
    base = layer.get_base_layer()
    names = [a for a in layer.active_adapters if a in layer.lora_A]
    with torch.no_grad():
        delta = torch.zeros_like(base.weight, dtype=torch.float32)
        for name in names:
            delta += layer.get_delta_weight(name).float()
        weight = delta if delta_only else base.weight.float() + delta
    bias = None if delta_only else base.bias
    with torch.device("meta"):
        if isinstance(base, nn.Linear):
            plain = nn.Linear(base.in_features, base.out_features, bias=bias is not None)
        else:
            plain = nn.Conv2d(base.in_channels, base.out_channels, base.kernel_size, base.stride, base.padding,
                             base.dilation, base.groups, bias=bias is not None, padding_mode=base.padding_mode)
    plain.weight = nn.Parameter(weight.to(base.weight.dtype), requires_grad=False)
    plain.bias = bias
    return plain.train(base.training)


class BackboneLoRA:
    """peft LoRA layers of one adapter name injected into ``backbone``.

    ``params``: peft-layout key (``proj_out.lora_A.weight``) -> trainable parameter, fp32 unless
    ``settings.weights_dtype`` says otherwise.
    ``layers``: every LoRA layer of the backbone (of any adapter), for switching.
    ``sites``: where each of them sits (``LoraSite``), for bypassing and merging.
    """

    def __init__(self, backbone: nn.Module, settings: LoraSettings, adapter_name: Optional[str] = None):
        from peft import LoraConfig, inject_adapter_in_model

        self.backbone, self.settings = backbone, settings
        self.adapter_name = adapter_name or settings.adapter_name
        targets = settings.targets(backbone)
        targets = targets if isinstance(targets, str) else list(targets)  # a string is peft's regex form
        self.peft_config = LoraConfig(r=int(settings.rank), lora_alpha=settings.lora_alpha, target_modules=targets,
                                      init_lora_weights="gaussian" if settings.init == "gaussian" else True,
                                      lora_dropout=0.0)
        # grouped convolutions, when targeted, get peft < 0.16's dense LoRA (see the module docstring);
        # plain Linear and Conv2d peft's layers with the fused forward (``low_rank_add``)
        self.peft_config._register_custom_module({nn.Conv2d: _dispatch, nn.Linear: _dispatch})
        inject_adapter_in_model(self.peft_config, backbone, adapter_name=self.adapter_name)
        tag = f".{self.adapter_name}"
        self.params = {name.replace(tag, ""): p for name, p in backbone.named_parameters()
                       if "lora_" in name and tag in name}
        for p in self.params.values():  # fp32 unless asked (diffusers' cast_training_params)
            p.data = p.data.to(settings.torch_dtype)
            p.requires_grad_(True)
        self.layers = tuner_layers(backbone)
        self.sites = register_sites(backbone)

    def reinitialize(self, seed: int) -> None:
        """Re-draw A from ``seed`` and zero B: the LoRA adds nothing again (``redraw_lora``)."""
        redraw_lora(self.layers, self.adapter_name, self.settings.init, seed)

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Every LoRA layer of the backbone off inside the context (the backbone is g); what was
        there before is restored at exit. ``requires_grad`` is left alone.

        Off means bypassed: each site holds its base layer, so the module tree is the plain
        backbone's and a pass costs what it costs without LoRA; peft's own switch would still
        run its wrapper around every adapted layer (``_switch_adapters``). The peft layers are
        out of the tree meanwhile; their switches are left as they are.
        """
        with placed(self.sites, [site.base for site in self.sites]):
            yield

    def park(self) -> None:
        """Take every LoRA layer out of its site, outside any context: the base layer sits there
        and the backbone is g until ``applied()`` or ``remove()``. A LoRA the user then loads
        (diffusers' ``load_lora_weights``) wraps those base layers and stays g's."""
        for site in self.sites:
            if site.occupant is site.layer:
                site.place(site.base)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the context every site holds this LoRA and every other LoRA layer of the backbone
        (a user's) is off: the backbone is the one this LoRA was trained on, plus this LoRA. What
        occupied the sites (base layers, or a user's LoRA layers around them) is back at exit.
        The LoRA weights first follow their base layers' devices (``pipe.to(...)`` moves only the
        modules in the tree; the weights stay fp32)."""
        self.follow_devices()
        mine = {id(site.layer) for site in self.sites}
        others = [m for m in tuner_layers(self.backbone) if id(m) not in mine]
        with placed(self.sites, [site.layer for site in self.sites]), _adapters_switched(others, [False] * len(others)):
            yield

    def follow_devices(self) -> None:
        """Move each LoRA layer's weights to the device of its base layer's weight (not its dtype)."""
        for site in self.sites:
            weight = getattr(site.base, "weight", None)
            lora = [m for d in (site.layer.lora_A, site.layer.lora_B) for m in d.values()]
            if weight is None or weight.device.type == "meta" or not lora or lora[0].weight.device == weight.device:
                continue
            for module in lora:
                module.to(weight.device)

    def merged_copies(self, delta_only: tuple = ()) -> tuple[list[LoraSite], list[nn.Module]]:
        """The sites that merge and a ``merged_copy`` of each (the peft layers in ``delta_only``:
        their LoRA delta alone). Each copy holds one new weight tensor of its base layer's shape
        and dtype; sites that do not merge (dense LoRA on grouped convolutions) are left out."""
        sites, copies = [], []
        for site in self.sites:
            merged = merged_copy(site.layer, delta_only=any(site.layer is layer for layer in delta_only))
            if merged is not None:
                sites.append(site)
                copies.append(merged)
        return sites, copies

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA weights in peft's key layout (detached, fp32)."""
        return {k: p.detach() for k, p in self.params.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load peft-layout LoRA weights strictly (with or without peft's ``base_model.model.``
        prefix and the adapter name); a partial match or a wrong shape is an ``AdapterError``."""
        state = {k[len(_PEFT_PREFIX):] if k.startswith(_PEFT_PREFIX) else k: v for k, v in state.items()}
        state = {k.replace(f".{self.adapter_name}.", "."): v for k, v in state.items()}
        missing = sorted(set(self.params) - set(state))
        unexpected = sorted(set(state) - set(self.params))
        if missing or unexpected:
            raise AdapterError(
                f"adapter weights do not match this backbone's LoRA layers: {len(missing)} missing "
                f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
        with torch.no_grad():
            for k, v in state.items():
                p = self.params[k]
                if p.shape != v.shape:
                    raise AdapterError(f"adapter tensor {k} has shape {tuple(v.shape)}, the backbone expects {tuple(p.shape)}")
                p.copy_(v)

    def remove(self) -> None:
        """Take this LoRA's layers out of the backbone: it is its original modules again, plus any
        LoRA layers of other adapters (a user's) wrapped around them, which stay."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for site in self.sites:  # what occupies a site now: this LoRA, a bypassing base layer, a merged copy, a user's
            if site.occupant is site.layer or not isinstance(site.occupant, BaseTunerLayer):
                site.place(site.base)
            _unregister(site)
        for name, module in list(self.backbone.named_modules()):
            if isinstance(module, BaseTunerLayer) and set(getattr(module, "lora_A", {})) == {self.adapter_name}:
                parent, _, child = name.rpartition(".")
                setattr(self.backbone.get_submodule(parent) if parent else self.backbone, child, module.get_base_layer())
        configs = getattr(self.backbone, "peft_config", None)
        if isinstance(configs, dict):
            if configs.get(self.adapter_name) is self.peft_config:
                del configs[self.adapter_name]
            if not configs:
                del self.backbone.peft_config
        self.layers, self.params, self.sites = [], {}, []
