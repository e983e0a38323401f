"""HyperNoise on a diffusers pipeline the user already holds.

    hypernoise.attach(pipe, "lucaeyring/HyperNoise_Sana_Sprint_0.6B")   # or a local adapter folder
    image = pipe(prompt, generator=torch.Generator("cuda").manual_seed(0)).images[0]
    hypernoise.detach(pipe)                                             # the plain pipeline again

    with hypernoise.attached(pipe, adapter):
        ...

``attach`` builds the library generator of the pipeline's family around the pipeline's own
modules (``generators.PIPELINES``, ``from_pipeline``: one copy of the weights), loads the adapter
into its backbone (``adapter.load_adapter``: strict, this library's folders and the paper's
layouts, local or on the Hub), keeps the adapter's LoRA switched off, and gives the pipeline a
``__call__`` that, for every call,

1. reads the call's arguments as the pipeline's ``__call__`` sees them (its signature's defaults);
2. encodes its prompts and draws its initial noise x0 (from its ``generator``, or takes its
   ``latents``) as that ``__call__`` does (the family's ``call_conditioning`` and ``call_noise``);
3. modulates x0_hat = x0 + f_phi(x0, c), ``passes`` times, with the LoRA on;
4. runs the pipeline's own ``__call__`` with ``latents=x0_hat``, LoRA off, every other argument
   as given.

``latents=`` is the hook diffusers gives for the initial noise (``callback_on_step_end`` runs after
a step: too late). This is ``methods.sample``'s idiom with g the user's own ``__call__``, so the
images equal the library's HyperNoise generation from the same noise. The prompts are encoded
twice (for f_phi, and by the pipeline); pass ``prompt_embeds`` to encode them once yourself.

Python looks ``__call__`` up on the type, so ``attach`` swaps the pipeline's class for a subclass
(as ``torch.nn.utils.parametrize`` does); ``isinstance(pipe, SanaSprintPipeline)`` stays true.
``detach`` puts the class back, takes the LoRA layers out and restores ``requires_grad``: the
pipeline is its original modules again. Attaching to an attached pipeline is an ``AdapterError``
(detach first); ``save_pretrained`` on an attached pipeline is refused (it would save the LoRA),
and so are ``copy.copy``, ``copy.deepcopy`` and ``pickle`` (a copy would carry the LoRA layers and
hooks without the attachment, neither detachable nor savable): detach, copy, attach to the copy.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from hypernoise.adapter import load_adapter, read_metadata, resolve_adapter_folder
from hypernoise.errors import AdapterError, ConfigError
from hypernoise.generators.base import Conditioning
from hypernoise.generators.diffusers_common import DiffusersGenerator, generator_for_pipeline
from hypernoise.hypernet.base import NoiseHypernetwork, check_passes
from hypernoise.lora import ADAPTER_NAME, tuner_layers

__all__ = ["attach", "detach", "attached", "attachment"]


@dataclass
class Attachment:
    """What ``attach`` put on a pipeline: the generator around it, the loaded hypernetwork, the
    passes K, the pipeline's own class and its backbone's ``requires_grad`` flags (for ``detach``)."""

    generator: DiffusersGenerator
    hypernet: NoiseHypernetwork
    passes: int
    adapter: str
    pipeline_class: type
    requires_grad: dict
    _off: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def switch_off(self) -> None:
        """The LoRA off (the backbone is g) until ``modulate`` or ``close``."""
        self._off.enter_context(self.hypernet.adapters_disabled())

    def modulate(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x0_hat = x0 + f_phi(x0, c), K times, with the LoRA on for f_phi only."""
        rows = {t.shape[0] for t in cond.values()}
        if rows != {noise.shape[0]}:
            raise ConfigError(f"`latents` holds {noise.shape[0]} noise rows, the call makes {max(rows)} images "
                              f"(prompts x num_images_per_prompt)", field="latents")
        shape = getattr(self.hypernet, "latent_shape", None)  # an MLP hypernetwork takes one noise shape
        if shape is not None and tuple(noise.shape[1:]) != tuple(shape):
            raise ConfigError(f"this adapter (an MLP on the noise) takes noise of shape {list(shape)} only, this "
                              f"call's is {list(noise.shape[1:])}; call the pipeline at the adapter's `height`/`width`",
                              field="height")
        self._off.close()  # LoRA on: the backbone is f_phi
        try:
            return self.hypernet.modulate(noise, cond, self.passes)
        finally:
            self.switch_off()

    def run(self, pipe, call_fn: Callable, args: tuple, kwargs: dict):
        """One call of the pipeline: steps 1-4 of the module docstring."""
        signature = inspect.signature(call_fn)
        bound = signature.bind(pipe, *args, **kwargs)
        call = {**{k: p.default for k, p in signature.parameters.items() if p.default is not p.empty},
                **bound.arguments}
        with torch.no_grad(), self.generator.for_call(call) as generator:
            cond = generator.call_conditioning(call)
            bound.arguments["latents"] = self.modulate(generator.call_noise(call, cond), cond)
            bound.arguments.update(generator.call_arguments(call, cond))
        return call_fn(*bound.args, **bound.kwargs)

    def close(self) -> None:
        """Take the hypernetwork out of the backbone and restore its ``requires_grad`` flags."""
        self._off.close()
        _take_out(self.generator.backbone, self.hypernet, self.requires_grad)


#: pipeline -> its Attachment; weak, so that a dropped pipeline is not kept alive
_ATTACHED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: pipeline class -> its HyperNoise subclass (one per class)
_SUBCLASSES: dict[type, type] = {}


def attachment(pipe) -> Optional[Attachment]:
    """What is attached to ``pipe`` (None for a plain pipeline)."""
    return _ATTACHED.get(pipe)


def attach(pipe, adapter, passes: Optional[int] = None, subfolder: Optional[str] = None):
    """Attach a HyperNoise adapter to a diffusers pipeline (SanaSprintPipeline, StableDiffusionPipeline
    for SD-Turbo, FluxPipeline for FLUX-Schnell) and return the pipeline.

    ``adapter``: an adapter folder (``hypernoise train``'s ``RUN/adapter``, or the paper's peft
    layout) or a Hugging Face Hub id ``owner/name[@revision][/subfolder]`` (``subfolder`` also as
    an argument). ``passes``: K, times x <- x + f_phi(x, c) is applied (default: the adapter's).
    The pipeline's calls then start from x0 + f_phi(x0, c), x0 the noise they would have drawn
    (or their ``latents``); everything else is diffusers' own. ``AdapterError`` when it is
    already attached or the adapter does not fit; the pipeline is then left as it was.
    """
    if pipe in _ATTACHED:
        raise AdapterError(f"this pipeline already has the HyperNoise adapter {_ATTACHED[pipe].adapter} attached; "
                           f"call hypernoise.detach(pipe) first")
    folder = resolve_adapter_folder(adapter, subfolder)
    meta = read_metadata(folder) or {}
    generator = generator_for_pipeline(pipe, meta.get("height"), meta.get("width"))  # the adapter's size: checked
    backbone = generator.backbone
    if tuner_layers(backbone):
        raise AdapterError(f"the pipeline's {generator.backbone_attr} already carries peft LoRA layers (from "
                           f"load_lora_weights?); unload them (pipe.unload_lora_weights(), after pipe.fuse_lora() "
                           f"to keep their effect) before hypernoise.attach")
    requires_grad = {name: p.requires_grad for name, p in backbone.named_parameters()}
    built: list = []
    try:
        hypernet = load_adapter(generator, folder, on_build=built.append)
        k = hypernet.passes if passes is None else check_passes(passes)
    except BaseException:
        _take_out(backbone, built[0] if built else None, requires_grad)
        raise
    state = Attachment(generator, hypernet, k, str(adapter), type(pipe), requires_grad)
    state.switch_off()
    pipe.__class__ = _subclass(type(pipe))
    _ATTACHED[pipe] = state
    return pipe


def detach(pipe):
    """Take the HyperNoise adapter off ``pipe`` (a no-op on a plain pipeline) and return it: its
    class, modules and ``requires_grad`` flags are the original ones again."""
    state = _ATTACHED.pop(pipe, None)
    if state is not None:
        pipe.__class__ = state.pipeline_class
        state.close()
    return pipe


@contextlib.contextmanager
def attached(pipe, adapter, passes: Optional[int] = None, subfolder: Optional[str] = None) -> Iterator:
    """``attach`` inside the context, ``detach`` at exit (also on an error)."""
    attach(pipe, adapter, passes=passes, subfolder=subfolder)
    try:
        yield pipe
    finally:
        detach(pipe)


# --------------------------------------------------------------------------- the pipeline's new class
def _subclass(cls: type) -> type:
    """``cls`` with the HyperNoise ``__call__`` (one subclass per pipeline class)."""
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"HyperNoise{cls.__name__}", (cls,), {
            "__call__": _call, "save_pretrained": _refuse_save, "__module__": __name__,
            "__copy__": _refuse_copy, "__deepcopy__": _refuse_copy, "__reduce_ex__": _refuse_copy,
            "__doc__": f"A {cls.__name__} with a HyperNoise adapter attached (hypernoise.attach)."})
    return _SUBCLASSES[cls]


def _original(pipe) -> type:
    return next(c for c in type(pipe).__mro__ if c not in _SUBCLASSES.values())


def _call(self, *args, **kwargs):
    call_fn = _original(self).__call__
    state = _ATTACHED.get(self)
    if state is None:  # a copy of an attached pipeline: nothing is attached to it, its LoRA stays off
        return call_fn(self, *args, **kwargs)
    return state.run(self, call_fn, args, kwargs)


def _refuse_save(self, *args, **kwargs):
    raise AdapterError("this pipeline has a HyperNoise adapter attached, whose LoRA layers sit in its backbone; "
                       "call hypernoise.detach(pipe) before save_pretrained")


def _refuse_copy(self, *args, **kwargs):
    raise AdapterError("this pipeline has a HyperNoise adapter attached, whose LoRA layers and hooks sit in its "
                       "backbone: a copy or a pickle would carry them without the attachment; call "
                       "hypernoise.detach(pipe) first, then hypernoise.attach the adapter to the copy")


def _take_out(backbone: nn.Module, hypernet: Optional[NoiseHypernetwork], requires_grad: dict) -> None:
    """Remove ``hypernet`` from ``backbone`` (its LoRA layers and hooks), then the LoRA layers a
    hypernetwork that failed while being built may have left, and restore ``requires_grad``."""
    if hypernet is not None and hasattr(hypernet, "remove"):
        hypernet.remove()
    leftover = {id(layer) for layer in tuner_layers(backbone)}
    if leftover:
        for name, module in list(backbone.named_modules()):
            if id(module) in leftover:
                parent, _, child = name.rpartition(".")
                setattr(backbone.get_submodule(parent) if parent else backbone, child, module.get_base_layer())
        configs = getattr(backbone, "peft_config", None)
        if isinstance(configs, dict):
            configs.pop(ADAPTER_NAME, None)
            if not configs:
                del backbone.peft_config
    for name, p in backbone.named_parameters():
        p.requires_grad_(requires_grad.get(name, p.requires_grad))
