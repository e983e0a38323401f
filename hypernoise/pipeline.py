"""HyperNoise on a diffusers pipeline the user already holds.

    hypernoise.attach(pipe, "lucaeyring/HyperNoise_Sana_Sprint_0.6B")   # or a local adapter folder
    image = pipe(prompt, generator=torch.Generator("cuda").manual_seed(0)).images[0]
    hypernoise.set_scale(pipe, 0.5)                                     # half of f_phi's displacement
    hypernoise.detach(pipe)                                             # the plain pipeline again

    with hypernoise.attached(pipe, adapter):
        ...

    noise = hypernoise.modulate_noise(pipe, adapter, latents, prompt)   # the improved noise itself
    image = pipe(prompt, latents=noise).images[0]                       # on the plain pipeline

``attach`` builds the library generator of the pipeline's family around the pipeline's own
modules (``generators.PIPELINES``, ``from_pipeline``: one copy of the weights), loads the adapter
into its backbone (``adapter.load_adapter``: strict, this library's folders and the paper's
layouts, local or on the Hub), parks its LoRA outside the backbone (``park``: the backbone is g),
and gives the pipeline a ``__call__`` that, for every call,

1. reads the call's arguments as the pipeline's ``__call__`` sees them (its signature's defaults,
   and the adapter's ``call_defaults`` for arguments the call does not give: SANA-Sprint's
   prompts are encoded without the "complex human instruction", as the adapter was trained);
2. encodes its prompts and draws its initial noise x0 (from its ``generator``, or takes its
   ``latents``) as that ``__call__`` does (the family's ``call_conditioning`` and ``call_noise``);
3. modulates x0_hat = x0 + scale (x_K - x0), x_K after ``passes`` passes of x <- x + f_phi(x, c),
   with the LoRA applied and every other LoRA layer off (``applied``);
4. runs the pipeline's own ``__call__`` with ``latents=x0_hat``, every other argument as given.

``latents=`` is the hook diffusers gives for the initial noise (``callback_on_step_end`` runs after
a step: too late). This is ``methods.sample``'s idiom with g the user's own ``__call__``, so the
images equal the library's HyperNoise generation from the same noise. The prompts are encoded
twice (for f_phi, and by the pipeline); pass ``prompt_embeds`` to encode them once yourself.

A user's LoRA (``load_lora_weights`` or peft's ``add_adapter``, before or after ``attach``) stays
g's: it wraps the backbone's plain layers, is on while the pipeline runs g and off while f_phi
runs (f_phi's LoRA weights are deltas of the plain backbone, on which it was trained), and
``detach`` leaves it where it is. HyperNoise's adapter is not among the pipeline's diffusers
adapters; ``set_adapters`` (``delete_adapters``, ``fuse_lora``, ``set_lora_device``) naming it
is refused, pointing at ``set_scale``, and so are the diffusers calls that cannot work with it
(``REFUSED``: saving, sequential and group offload, fused QKV projections, IP-Adapters).

Python looks ``__call__`` up on the type, so ``attach`` swaps the pipeline's class for a subclass
(as ``torch.nn.utils.parametrize`` does) that keeps the class's ``__name__`` (diffusers finds
pipelines by it: ``AutoPipelineForImage2Image.from_pipe``), so ``isinstance(pipe,
SanaSprintPipeline)`` stays true. ``detach`` puts the class back, takes the LoRA layers out and
restores ``requires_grad``: the pipeline is its original modules again. Attaching to an attached
pipeline, or to one that shares its backbone with an attached one (``from_pipe``), is an
``AdapterError`` (detach first); ``save_pretrained`` on an attached pipeline is refused, and so are
``copy.copy``, ``copy.deepcopy`` and ``pickle`` (a copy would carry hooks without the attachment):
detach, copy, attach to the copy.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from hypernoise.adapter import load_adapter, read_metadata, resolve_adapter_folder
from hypernoise.errors import AdapterError, ConfigError
from hypernoise.generators.base import Conditioning, Generator
from hypernoise.generators.diffusers_common import FAMILY_BY_PIPELINE, DiffusersGenerator, generator_for_pipeline
from hypernoise.hypernet.base import NoiseHypernetwork, check_passes
from hypernoise.lora import ADAPTER_NAME, others_taken_out, tuner_layers

__all__ = ["attach", "detach", "attached", "attachment", "set_scale", "modulate_noise"]


def check_scale(scale, field_name: str = "scale") -> float:
    """``scale`` as a finite float (the strength of f_phi's displacement; 1: as trained, 0: none)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ConfigError(f"`{field_name}` must be a finite number (the factor on f_phi's noise displacement: 1 as "
                          f"trained, 0 none), got {scale!r}", field=field_name)
    return float(scale)


@dataclass
class Attachment:
    """What ``attach`` put on a pipeline: the generator around it, the loaded hypernetwork, the
    passes K, the ``scale`` on its displacement, the pipeline ``__call__`` arguments the adapter
    was trained under (``call_defaults``), the pipeline's own class and its backbone's
    ``requires_grad`` flags (for ``detach``)."""

    generator: DiffusersGenerator
    hypernet: NoiseHypernetwork
    passes: int
    adapter: str
    pipeline_class: type
    requires_grad: dict
    scale: float = 1.0
    call_defaults: dict = field(default_factory=dict)

    @property
    def adapter_name(self) -> str:
        """The peft adapter name of the hypernetwork's LoRA (refused by ``set_adapters``)."""
        return getattr(getattr(self.hypernet, "settings", None), "adapter_name", ADAPTER_NAME)

    def modulate(self, noise: torch.Tensor, cond: Conditioning, passes: Optional[int] = None,
                 scale: Optional[float] = None) -> torch.Tensor:
        """x0_hat = x0 + scale (x_K - x0) [B, *latent layout of the call], f_phi applied with every other LoRA off."""
        rows = {t.shape[0] for t in cond.values()}
        if rows != {noise.shape[0]}:
            raise ConfigError(f"`latents` holds {noise.shape[0]} noise rows, the call makes {max(rows)} images "
                              f"(prompts x num_images_per_prompt)", field="latents")
        shape = getattr(self.hypernet, "latent_shape", None)  # an MLP hypernetwork takes one noise shape
        if shape is not None and tuple(noise.shape[1:]) != tuple(shape):
            raise ConfigError(f"this adapter (an MLP on the noise) takes noise of shape {list(shape)} only, this "
                              f"call's is {list(noise.shape[1:])}; call the pipeline at the adapter's `height`/`width`",
                              field="height")
        k = self.passes if passes is None else check_passes(passes)
        s = self.scale if scale is None else check_scale(scale)
        with self.hypernet.applied():
            delta = self.hypernet.displacement(noise, cond, k)
        return noise + (delta if s == 1.0 else s * delta).to(noise.dtype)

    def read(self, pipe, call_fn: Callable, args: tuple, kwargs: dict) -> tuple[inspect.BoundArguments, dict]:
        """The call bound to ``call_fn``'s signature, with the adapter's ``call_defaults`` for the
        arguments it does not give, and the call as ``__call__`` sees it (its defaults filled in)."""
        signature = inspect.signature(call_fn)
        bound = signature.bind(pipe, *args, **kwargs)
        for key, value in self.call_defaults.items():  # the conditioning the adapter was trained with
            if key in signature.parameters and key not in bound.arguments:
                bound.arguments[key] = value
        defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not p.empty}
        return bound, {**defaults, **bound.arguments}

    def prepare(self, pipe, call_fn: Callable, args: tuple, kwargs: dict, passes: Optional[int] = None,
                scale: Optional[float] = None) -> inspect.BoundArguments:
        """Steps 1-3 of the module docstring: the call's arguments with ``latents`` = x0_hat."""
        bound, call = self.read(pipe, call_fn, args, kwargs)
        with torch.no_grad(), self.generator.for_call(call) as generator:
            cond = generator.call_conditioning(call)
            bound.arguments["latents"] = self.modulate(generator.call_noise(call, cond), cond, passes, scale)
            bound.arguments.update(generator.call_arguments(call, cond))
        return bound

    def run(self, pipe, call_fn: Callable, args: tuple, kwargs: dict):
        """One call of the pipeline: steps 1-4 of the module docstring."""
        bound = self.prepare(pipe, call_fn, args, kwargs)
        return call_fn(*bound.args, **bound.kwargs)

    def close(self) -> None:
        """Take the hypernetwork out of the backbone and restore its ``requires_grad`` flags."""
        _take_out(self.generator.backbone, self.hypernet, self.requires_grad)


#: pipeline -> its Attachment; weak, so that a dropped pipeline is not kept alive
_ATTACHED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: pipeline class -> its HyperNoise subclass (one per class)
_SUBCLASSES: dict[type, type] = {}


def attachment(pipe) -> Optional[Attachment]:
    """What is attached to ``pipe`` (None for a plain pipeline)."""
    return _ATTACHED.get(pipe)


def attach(pipe, adapter, passes: Optional[int] = None, subfolder: Optional[str] = None, scale: float = 1.0):
    """Attach a HyperNoise adapter to a diffusers pipeline (SanaSprintPipeline, StableDiffusionPipeline
    for SD-Turbo, FluxPipeline for FLUX-Schnell) and return the pipeline.

    ``adapter``: an adapter folder (``hypernoise train``'s ``RUN/adapter``, or the paper's peft
    layout) or a Hugging Face Hub id ``owner/name[@revision][/subfolder]`` (``subfolder`` also as
    an argument). ``passes``: K, times x <- x + f_phi(x, c) is applied (default: the adapter's).
    ``scale``: the strength, a factor on the displacement x_K - x0 (1: as trained; 0: the plain
    pipeline's images; ``set_scale`` changes it later). The pipeline's calls then start from
    x0 + scale (x_K - x0), x0 the noise they would have drawn (or their ``latents``); everything
    else is diffusers' own. ``AdapterError`` when it is already attached, shares its backbone with
    an attached pipeline, or the adapter does not fit; the pipeline is then left as it was.
    """
    if pipe in _ATTACHED:
        raise AdapterError(f"this pipeline already has the HyperNoise adapter {_ATTACHED[pipe].adapter} attached; "
                           f"call hypernoise.detach(pipe) first")
    scale = check_scale(scale)
    folder = resolve_adapter_folder(adapter, subfolder)
    meta = read_metadata(folder) or {}
    generator = generator_for_pipeline(pipe, meta.get("height"), meta.get("width"))  # the adapter's size: checked
    _check_family(meta, generator, pipe, adapter)
    _check_backbone(generator)
    backbone = generator.backbone
    requires_grad = {name: p.requires_grad for name, p in backbone.named_parameters()}
    built: list = []
    with others_taken_out(backbone):  # a user's LoRA layers: the adapter wraps the plain layers, theirs stay g's
        try:
            hypernet = load_adapter(generator, folder, on_build=built.append)
            k = hypernet.passes if passes is None else check_passes(passes)
        except BaseException:
            _take_out(backbone, built[0] if built else None, requires_grad, leftovers=True)
            raise
    hypernet.park()
    _hide_config(backbone, hypernet)
    defaults = meta.get("call_defaults", generator.call_defaults)
    state = Attachment(generator, hypernet, k, str(adapter), type(pipe), requires_grad, scale,
                       dict(defaults) if isinstance(defaults, dict) else {})
    pipe.__class__ = _subclass(type(pipe))
    _ATTACHED[pipe] = state
    return pipe


def detach(pipe):
    """Take the HyperNoise adapter off ``pipe`` (a no-op on a plain pipeline) and return it: its
    class, modules and ``requires_grad`` flags are the original ones again; LoRA adapters the user
    loaded stay."""
    state = _ATTACHED.pop(pipe, None)
    if state is not None:
        pipe.__class__ = state.pipeline_class
        state.close()
    return pipe


@contextlib.contextmanager
def attached(pipe, adapter, passes: Optional[int] = None, subfolder: Optional[str] = None,
             scale: float = 1.0) -> Iterator:
    """``attach`` inside the context, ``detach`` at exit (also on an error)."""
    attach(pipe, adapter, passes=passes, subfolder=subfolder, scale=scale)
    try:
        yield pipe
    finally:
        detach(pipe)


def set_scale(pipe, scale: float):
    """Set the strength of the attached adapter: calls start from x0 + ``scale`` (x_K - x0) (1: as
    trained, 0: the plain pipeline's images, between: part of the way); returns ``pipe``."""
    state = _ATTACHED.get(pipe)
    if state is None:
        raise AdapterError("this pipeline has no HyperNoise adapter attached; hypernoise.attach(pipe, adapter, "
                           "scale=...) first")
    state.scale = check_scale(scale)
    return pipe


# --------------------------------------------------------------------------- the improved noise as a function
def modulate_noise(model, adapter, latents: Optional[torch.Tensor] = None, prompt=None, *,
                   passes: Optional[int] = None, scale: Optional[float] = None, subfolder: Optional[str] = None,
                   **call) -> torch.Tensor:
    """The improved noise x0_hat = x0 + scale (x_K - x0), to pass as ``latents=``.

    ``model``: a diffusers pipeline of a supported family, or a library ``Generator``.
    ``adapter``: a folder or Hub id (loaded for this call and taken out again), a loaded
    ``NoiseHypernetwork`` (a generator), or None for the adapter attached to the pipeline.
    ``latents``: x0 in the layout the pipeline takes as ``latents=`` (SD-Turbo [B, 4, H/8, W/8]
    before its ``init_noise_sigma``; SANA-Sprint [B, C, H/32, W/32] unit noise, before
    ``sigma_data``; FLUX [B, (H/16)(W/16), 64] packed) or the generator's [B, *latent_shape];
    for a pipeline, None draws it as the call would (``generator=``). ``prompt``: a prompt or a
    list; for a pipeline, embeddings go in ``call`` (``prompt_embeds``, ``prompt_attention_mask``,
    ``pooled_prompt_embeds``), with any other argument of the pipeline's ``__call__`` that shapes
    the noise or the conditioning (``num_images_per_prompt``, ``height``/``width``,
    ``max_sequence_length``, ``complex_human_instruction``); for a generator, a Conditioning dict.
    ``passes``, ``scale``: K and the strength (default: the attachment's, else the adapter's K and 1).
    Returns a tensor of the same layout, dtype and device as the noise: ``pipe(prompt,
    latents=noise)`` on the plain pipeline gives the attached pipeline's image from x0.
    """
    if isinstance(model, Generator):
        return _generator_noise(model, adapter, latents, prompt, passes, 1.0 if scale is None else scale, subfolder)
    state = _ATTACHED.get(model)
    if state is not None and adapter is not None:
        raise AdapterError(f"this pipeline already has the HyperNoise adapter {state.adapter} attached; pass "
                           f"adapter=None to use it, or hypernoise.detach(pipe) first")
    if state is None and adapter is None:
        raise AdapterError("no adapter: pass an adapter folder or Hub id, or hypernoise.attach one to the pipeline")
    kwargs = {**call, "latents": latents, **({"prompt": prompt} if prompt is not None else {})}
    with contextlib.nullcontext(model) if state is not None else attached(model, adapter, subfolder=subfolder):
        bound = _ATTACHED[model].prepare(model, _original(model).__call__, (), kwargs, passes, scale)
    return bound.arguments["latents"]


def _generator_noise(generator: Generator, adapter, latents, prompt, passes, scale, subfolder) -> torch.Tensor:
    """``modulate_noise`` on a library generator: noise [B, *latent_shape], prompts or a Conditioning."""
    if latents is None:
        raise ConfigError(f"`latents` is needed with a generator: noise of shape [B, {', '.join(map(str, generator.latent_shape))}] "
                          f"(generator.sample_noise(B, seed))", field="latents")
    cond = prompt if isinstance(prompt, dict) else generator.encode([prompt] if isinstance(prompt, str) else list(prompt))
    loaded = not isinstance(adapter, NoiseHypernetwork)
    hypernet = load_adapter(generator, adapter, subfolder=subfolder) if loaded else adapter
    try:
        delta = hypernet.displacement(latents, cond, passes)
    finally:
        if loaded and hasattr(hypernet, "remove"):
            hypernet.remove()
    return latents + (check_scale(scale) * delta).to(latents.dtype)


# --------------------------------------------------------------------------- the pipeline's new class
#: pipeline methods refused while an adapter is attached -> why, and what to do instead
REFUSED = {
    "save_pretrained": "the HyperNoise adapter is not a diffusers component and would not be saved; call "
                       "hypernoise.detach(pipe) before save_pretrained (and attach the adapter again to the loaded "
                       "pipeline)",
    "push_to_hub": "the HyperNoise adapter is not a diffusers component and would not be uploaded; publish it with "
                   "`hypernoise push-to-hub RUN/adapter NAME`, and call hypernoise.detach(pipe) before pushing the "
                   "pipeline",
    "enable_sequential_cpu_offload": "sequential offload moves each layer's weights at its own forward and cannot "
                                     "move the HyperNoise LoRA with the weights it wraps; use "
                                     "pipe.enable_model_cpu_offload(), or hypernoise.detach(pipe) first",
    "enable_group_offload": "group offload moves the weights of the modules it found and cannot move the HyperNoise "
                            "LoRA with them; use pipe.enable_model_cpu_offload(), or hypernoise.detach(pipe) first",
    "fuse_qkv_projections": "fused projections would bypass the HyperNoise LoRA on to_q/to_k/to_v and change f_phi "
                            "silently; call hypernoise.detach(pipe) first",
    "load_ip_adapter": "an IP-Adapter makes the backbone need image embeddings that f_phi's pass does not have; "
                       "call hypernoise.detach(pipe) first",
}
#: pipeline methods refused while attached when their ``adapter_names`` name the HyperNoise adapter
NAMING = ("set_adapters", "delete_adapters", "fuse_lora", "set_lora_device")


def _subclass(cls: type) -> type:
    """``cls`` with the HyperNoise ``__call__`` (one subclass per pipeline class) and the methods of
    ``REFUSED`` and ``NAMING`` guarded. Its ``__name__`` is ``cls``'s (diffusers finds pipeline
    classes by name); its ``__qualname__`` names it here."""
    if cls not in _SUBCLASSES:
        methods = {"__call__": _call, "__module__": __name__, "__qualname__": f"HyperNoise{cls.__name__}",
                   "__copy__": _refuse_copy, "__deepcopy__": _refuse_deepcopy, "__reduce_ex__": _refuse_reduce,
                   "__doc__": f"A {cls.__name__} with a HyperNoise adapter attached (hypernoise.attach)."}
        methods.update({name: _refused(name, why) for name, why in REFUSED.items() if hasattr(cls, name)})
        methods.update({name: _refused_naming(name) for name in NAMING if hasattr(cls, name)})
        sub = type(cls.__name__, (cls,), methods)
        setattr(sys.modules[__name__], sub.__qualname__, sub)  # a plain copy of one (from_pipe) pickles
        _SUBCLASSES[cls] = sub
    return _SUBCLASSES[cls]


def _original(pipe) -> type:
    return next(c for c in type(pipe).__mro__ if c not in _SUBCLASSES.values())


def _call(self, *args, **kwargs):
    call_fn = _original(self).__call__
    state = _ATTACHED.get(self)
    if state is None:  # a pipeline of this class that nothing is attached to (from_pipe of its class)
        return call_fn(self, *args, **kwargs)
    return state.run(self, call_fn, args, kwargs)


def _refused(name: str, why: str) -> Callable:
    """The pipeline's method ``name``, refused with ``why`` while an adapter is attached."""
    def method(self, *args, **kwargs):
        if self in _ATTACHED:
            raise AdapterError(f"{name} on a pipeline with a HyperNoise adapter attached: {why}")
        return getattr(_original(self), name)(self, *args, **kwargs)

    method.__name__ = name
    return method


def _refused_naming(name: str) -> Callable:
    """The pipeline's method ``name``, refused where its ``adapter_names`` name the HyperNoise adapter
    (not a LoRA of the images: diffusers would weigh, fuse, move or delete nothing)."""
    def method(self, *args, **kwargs):
        state, original = _ATTACHED.get(self), getattr(_original(self), name)
        if state is not None:
            names = inspect.signature(original).bind_partial(self, *args, **kwargs).arguments.get("adapter_names")
            names = [names] if isinstance(names, str) else list(names or [])
            if state.adapter_name in names:
                raise AdapterError(
                    f"{state.adapter_name!r} is HyperNoise's noise hypernetwork, not a LoRA that diffusers applies to "
                    f"the images, and {name} does not act on it; set its strength with hypernoise.set_scale(pipe, 0.5) "
                    f"(x0 + 0.5 (x0_hat - x0)) or hypernoise.attach(..., scale=0.5), take it off with "
                    f"hypernoise.detach(pipe); {name} names your own LoRA adapters only")
        return original(self, *args, **kwargs)

    method.__name__ = name
    return method


def _copy_refused() -> AdapterError:
    return AdapterError("this pipeline has a HyperNoise adapter attached, whose LoRA layers and hooks sit in its "
                        "backbone: a copy or a pickle would carry them without the attachment; call "
                        "hypernoise.detach(pipe) first, then hypernoise.attach the adapter to the copy")


def _refuse_copy(self):
    if self in _ATTACHED:
        raise _copy_refused()
    copied = _original(self).__new__(type(self))
    copied.__dict__.update(self.__dict__)
    return copied


def _refuse_deepcopy(self, memo):
    if self in _ATTACHED:
        raise _copy_refused()
    import copy

    copied = _original(self).__new__(type(self))
    memo[id(self)] = copied
    copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
    return copied


def _refuse_reduce(self, protocol):
    if self in _ATTACHED:
        raise _copy_refused()
    return object.__reduce_ex__(self, protocol)


# --------------------------------------------------------------------------- checks and clean-up
def _check_family(meta: dict, generator: DiffusersGenerator, pipe, adapter) -> None:
    """An adapter of another family is refused in the words of ``attach`` (which has no ``generator``)."""
    want = meta.get("generator")
    if want is None or want == generator.name:
        return
    pipelines = {family: name for name, family in FAMILY_BY_PIPELINE.items()}
    fits = f"a {pipelines[want]} ({want})" if want in pipelines else f"a {want!r} generator, not a diffusers pipeline"
    raise AdapterError(f"adapter {adapter} was trained for generator {want!r}, and this pipeline is a "
                       f"{type(pipe).__name__} ({generator.name}); attach it to {fits}, or attach an adapter trained "
                       f"for {generator.name}")


def _check_backbone(generator: DiffusersGenerator) -> None:
    """A backbone whose weights are not on a device (sequential offload), or that another attached
    pipeline shares (``from_pipe``), is refused."""
    backbone, attr = generator.backbone, generator.backbone_attr
    if any(p.device.type == "meta" for p in backbone.parameters()):
        raise AdapterError(f"the pipeline's {attr} has weights on the meta device (sequential CPU offload, or an "
                           f"unfinished load); call pipe.remove_all_hooks() and move it to a device, or use "
                           f"pipe.enable_model_cpu_offload() after attaching")
    other = next((s for s in _ATTACHED.values() if s.generator.backbone is backbone), None)
    if other is not None:
        raise AdapterError(f"this pipeline's {attr} carries the HyperNoise adapter {other.adapter} of another pipeline "
                           f"that shares it (from_pipe, or the same components); call hypernoise.detach on that "
                           f"pipeline first")


def _hide_config(backbone: nn.Module, hypernet: NoiseHypernetwork) -> None:
    """Keep the hypernetwork's peft config out of the backbone's ``peft_config``: diffusers then
    lists (``get_list_adapters``), weighs, fuses and unloads the user's LoRA adapters only."""
    configs = getattr(backbone, "peft_config", None)
    mine = getattr(hypernet, "peft_config", None)
    if not isinstance(configs, dict) or mine is None:
        return
    for name in [n for n, c in configs.items() if c is mine]:
        del configs[name]
    if not configs:
        del backbone.peft_config


def _take_out(backbone: nn.Module, hypernet: Optional[NoiseHypernetwork], requires_grad: dict,
              leftovers: bool = False) -> None:
    """Remove ``hypernet`` from ``backbone`` (its LoRA layers and hooks; a user's LoRA layers stay),
    with ``leftovers`` every LoRA layer in the backbone now (what a hypernetwork that failed while
    being built left, the user's being taken out meanwhile), and restore ``requires_grad``."""
    if hypernet is not None and hasattr(hypernet, "remove"):
        hypernet.remove()
    left = {id(layer) for layer in tuner_layers(backbone)} if leftovers else set()
    if left:
        for name, module in list(backbone.named_modules()):
            if id(module) in left:
                parent, _, child = name.rpartition(".")
                setattr(backbone.get_submodule(parent) if parent else backbone, child, module.get_base_layer())
        configs = getattr(backbone, "peft_config", None)
        if isinstance(configs, dict):
            configs.pop(ADAPTER_NAME, None)
            if not configs:
                del backbone.peft_config
    for name, p in backbone.named_parameters():
        p.requires_grad_(requires_grad.get(name, p.requires_grad))
