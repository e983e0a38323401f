"""What the three diffusers generators share: loading, family detection, checkpointing.

Loading takes a Hugging Face model id or a local folder written by ``save_pretrained`` (a
``model_index.json`` plus one folder per component); ``from_pipeline`` wraps a pipeline object the
user already holds instead (``hypernoise.attach``), and the ``call_*`` methods read one of its
calls the way its ``__call__`` does. Hub ids resolve through the Hugging Face
cache and honour ``HF_HUB_OFFLINE``; nothing is downloaded when it is set. The family of a folder
is read from ``model_index.json`` (``_class_name``), which is how ``--generator auto`` works.

diffusers itself is imported only inside functions: importing hypernoise stays light.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from hypernoise.devices import resolve_device, resolve_dtype  # noqa: F401  (the families' device and dtype)
from hypernoise.errors import ConfigError, MissingPackageError, WeightsNotFoundError
from hypernoise.generators.base import Conditioning, Generator
from hypernoise.hub import hub_offline
from hypernoise.generators.cache import bound_tokenizer_cache
from hypernoise.generators.registry import GENERATORS, PIPELINES

MODEL_INDEX = "model_index.json"

#: diffusers pipeline class (``_class_name`` in model_index.json) -> generator registry name
FAMILY_BY_PIPELINE = {
    "StableDiffusionPipeline": "sd-turbo",
    "SanaSprintPipeline": "sana-sprint",
    "FluxPipeline": "flux-schnell",
}

#: what installs the diffusers families' packages
INSTALL = 'pip install "hypernoise[diffusers]"'


def import_diffusers():
    """The ``diffusers`` module, with ``transformers`` present (the families' text encoders); a
    ``MissingPackageError`` naming the install line where either is missing."""
    try:
        import diffusers
        import transformers  # noqa: F401
    except ImportError as e:
        missing = getattr(e, "name", None) or "diffusers"
        raise MissingPackageError(f"the diffusers generators (sd-turbo, sana-sprint, flux-schnell) need diffusers and "
                                  f"transformers, and {missing} is not installed; {INSTALL}") from None
    from huggingface_hub.utils import are_progress_bars_disabled

    if are_progress_bars_disabled():  # HF_HUB_DISABLE_PROGRESS_BARS or --no-progress: diffusers' loading bars too
        diffusers.utils.logging.disable_progress_bar()
    return diffusers


# --------------------------------------------------------------------------- locating weights
def _not_found(pretrained: str, why: str) -> WeightsNotFoundError:
    from huggingface_hub import constants

    where = f"the Hugging Face cache {constants.HF_HUB_CACHE}" + (" (HF_HUB_OFFLINE is set)" if hub_offline() else "")
    return WeightsNotFoundError(
        f"no diffusers pipeline found for {pretrained!r} ({why}); looked for a local folder with {MODEL_INDEX} "
        f"and in {where}; pass `pretrained` with a folder saved by save_pretrained, or download the model first")


def read_model_index(pretrained: str) -> dict:
    """``model_index.json`` of a local folder or a hub id (through the cache); ``WeightsNotFoundError`` if absent."""
    folder = Path(pretrained).expanduser()
    if folder.is_dir():
        path = folder / MODEL_INDEX
        if not path.is_file():
            raise WeightsNotFoundError(f"{folder} has no {MODEL_INDEX}; pass a folder written by a diffusers "
                                       f"pipeline's save_pretrained, or a Hugging Face model id")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(str(pretrained), MODEL_INDEX))
        except Exception as e:  # invalid id, not cached, offline, no network: all mean "not here"
            raise _not_found(str(pretrained), type(e).__name__) from None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsNotFoundError(f"{path} is unreadable ({type(e).__name__}); "
                                   f"re-save or re-download the model") from None


def detect_generator(pretrained: str) -> str:
    """The generator registry name of the pipeline at ``pretrained`` (read from ``model_index.json``)."""
    if not pretrained:
        raise ConfigError("`generator` auto needs `pretrained` (a Hugging Face id or a local folder)", field="pretrained")
    class_name = read_model_index(pretrained).get("_class_name")
    try:
        return FAMILY_BY_PIPELINE[class_name]
    except KeyError:
        known = ", ".join(f"{k} ({v})" for k, v in FAMILY_BY_PIPELINE.items())
        raise ConfigError(f"{pretrained} holds a {class_name!r}, which no generator handles; "
                          f"supported: {known}") from None


def _dtype_keyword() -> str:
    """``dtype`` for diffusers that take it (0.36+ deprecate ``torch_dtype``), else ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present where dtype= works)
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _check_family(index: dict, pipeline_class: str, pretrained: str) -> None:
    """A folder of another supported family is a clear error, not a half-loaded pipeline."""
    found = index.get("_class_name")
    if found != pipeline_class and found in FAMILY_BY_PIPELINE:
        raise ConfigError(f"{pretrained} holds a {found}, not a {pipeline_class}; pass `generator` "
                          f"{FAMILY_BY_PIPELINE[found]} (or auto)", field="generator")


def load_pipeline(pipeline_class: str, pretrained: str, dtype: torch.dtype, device: torch.device, **kwargs):
    """``diffusers.<pipeline_class>.from_pretrained`` on ``device`` in ``dtype``; missing weights raise one line."""
    diffusers = import_diffusers()
    _check_family(read_model_index(pretrained), pipeline_class, pretrained)  # also fails early if nothing is there
    local = Path(pretrained).expanduser()
    source = str(local) if local.is_dir() else str(pretrained)
    try:
        pipe = getattr(diffusers, pipeline_class).from_pretrained(source, **{_dtype_keyword(): dtype}, **kwargs)
    except OSError as e:  # a component's weights are missing
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        if local.is_dir():
            raise WeightsNotFoundError(f"the pipeline in {pretrained} is incomplete ({why}); re-save it with "
                                       f"save_pretrained or download the model again") from None
        raise _not_found(str(pretrained), why) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# --------------------------------------------------------------------------- the shared adapter
class DiffusersGenerator(Generator):
    """A frozen diffusers pipeline seen through the ``Generator`` protocol.

    Subclasses set the class attributes and implement ``encode_prompts``, ``generate``,
    ``backbone_delta`` and, for ``hypernoise.attach``, ``call_conditioning`` and ``call_noise``. The
    pipeline object is kept (not as a submodule) for its helpers; its modules are registered here
    so that ``.to()`` and ``freeze()`` reach them.
    """

    #: diffusers pipeline class the family loads with
    pipeline_class: str = ""
    #: Hugging Face id used when no --pretrained is given
    default_pretrained: str = ""
    #: attribute of the pipeline holding the backbone ("unet" or "transformer")
    backbone_attr: str = "transformer"
    #: the paper's reward ensemble (HPSv2.1, ImageReward, CLIP, PickScore)
    default_reward = "reno"
    #: arguments of the pipeline's ``__call__`` under which it conditions as this generator
    #: encodes (recorded in adapters; ``hypernoise.attach`` applies them to calls that omit them)
    call_defaults: dict = {}

    def text_limits(self) -> list[tuple[str, int]]:
        """(pipeline tokenizer attribute, tokens it keeps) for each text encoder of the family."""
        tok = getattr(self.pipeline, "tokenizer", None)
        return [("tokenizer", int(tok.model_max_length))] if tok is not None else []

    def encode_uncached(self, prompts: list[str]):
        self.warn_if_truncated(prompts)
        return self.encode_prompts(prompts)

    def warn_if_truncated(self, prompts: list[str]) -> None:
        """One warning line per prompt longer than a text encoder takes (it is truncated, as the
        pipelines do; not an error)."""
        for attr, limit in self.text_limits():
            tokenizer = getattr(self.pipeline, attr, None)
            if tokenizer is None:
                continue
            for prompt in prompts:
                n = len(tokenizer(prompt)["input_ids"])
                if n > limit:
                    warnings.warn(f"prompt {prompt[:40]!r}... has {n} tokens; the text encoder ({attr}) takes "
                                  f"{limit}, the rest is ignored", UserWarning, stacklevel=3)

    def __init__(self, pipe, pretrained: str, height: Optional[int], width: Optional[int]):
        super().__init__()
        self.pipeline = pipe
        self.pretrained = str(pretrained)
        self.net = getattr(pipe, self.backbone_attr)  # registered first: self.dtype reads it
        self.vae = pipe.vae
        self.text_encoders = nn.ModuleList([m for m in (getattr(pipe, "text_encoder", None),
                                                        getattr(pipe, "text_encoder_2", None)) if m is not None])
        for attr in ("tokenizer", "tokenizer_2"):  # memory flat over many distinct prompts (generators/cache.py)
            bound_tokenizer_cache(getattr(pipe, attr, None))
        default = self.default_size()
        self.height, self.width = int(height or default), int(width or default)
        self.check_size()
        self.latent_shape = self.latent_shape_at(self.height, self.width)

    @classmethod
    def from_pipeline(cls, pipe, height: Optional[int] = None, width: Optional[int] = None) -> "DiffusersGenerator":
        """The generator around a pipeline object the user already holds: its own modules (one
        copy of the weights), nothing frozen, moved or cast. ``height``/``width``: the size whose
        noise shape adapters are checked against (default: the pipeline's own)."""
        return cls(pipe, getattr(pipe, "name_or_path", None) or "", height, width)

    # ----------------------------------------------------------------- configuration
    def latent_shape_at(self, height: int, width: int) -> tuple:
        """The noise shape of one ``height`` x ``width`` image: [C, H/f, W/f], f the VAE's factor."""
        f = int(self.pipeline.vae_scale_factor)
        return (int(self.net.config.in_channels), height // f, width // f)

    def default_size(self) -> int:
        """Image side in pixels when none is given: sample size x VAE scale factor, as diffusers does."""
        return int(self.net.config.sample_size) * int(self.pipeline.vae_scale_factor)

    def size_multiple(self) -> int:
        return int(self.pipeline.vae_scale_factor)

    def check_size(self) -> None:
        m = self.size_multiple()
        if self.height <= 0 or self.width <= 0 or self.height % m or self.width % m:
            raise ConfigError(f"{self.name} needs `height`/`width` that are positive multiples of {m}, "
                              f"got {self.height}x{self.width}", field="height")

    @property
    def backbone(self) -> nn.Module:
        return self.net

    @property
    def dtype(self) -> torch.dtype:
        """The frozen backbone's dtype (LoRA weights, kept fp32, do not count). Cheaper than diffusers'
        ``ModelMixin.dtype``, which walks every module on each call."""
        for name, p in self.net.named_parameters():
            if "lora_" not in name and p.is_floating_point():
                return p.dtype
        return torch.float32

    def fresh_scheduler(self):
        """A private copy of the pipeline's scheduler: its timesteps and step index are per call."""
        return copy.deepcopy(self.pipeline.scheduler)  # from_config would re-validate the config: slower

    def resolve_steps(self, num_steps: Optional[int]) -> int:
        steps = int(num_steps or self.default_steps)
        if steps < 1:
            raise ConfigError(f"`num_steps` must be a positive integer, got {num_steps}", field="num_steps")
        return steps

    def describe(self) -> dict:
        return {**super().describe(), "height": self.height, "width": self.width}

    # ----------------------------------------------------------------- helpers for subclasses
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents (already unscaled) -> images [B, 3, H, W] in [0, 1] (the pipelines' postprocess)."""
        image = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1)

    def enable_gradient_checkpointing(self, checkpoint_fn: Optional[Callable] = None) -> "DiffusersGenerator":
        """Recompute the backbone's blocks in backward with ``checkpoint_fn(module, *args)``
        (diffusers' ``gradient_checkpointing_func``; default: its own). A backbone that carries a
        LoRA hypernetwork needs ``hypernoise.lora.adapter_state_checkpoint``."""
        if checkpoint_fn is None:
            self.net.enable_gradient_checkpointing()
        else:
            self.net.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_fn)
        return self

    def disable_gradient_checkpointing(self) -> "DiffusersGenerator":
        self.net.disable_gradient_checkpointing()
        return self

    # ----------------------------------------------------------------- one call of the user's pipeline
    # ``call``: the arguments of a ``pipeline(...)`` call as its ``__call__`` sees them (bound to
    # its signature, defaults applied). These methods read it the way that ``__call__`` does.
    def call_size(self, call: dict) -> tuple[int, int]:
        """(height, width) of the images the call makes, defaulted as its ``__call__`` defaults them."""
        default = self.default_size()
        return int(call.get("height") or default), int(call.get("width") or default)

    def call_settings(self, call: dict) -> dict:
        """The attributes this generator takes from the call to run f_phi as the call runs: its size."""
        height, width = self.call_size(call)
        return {"height": height, "width": width}

    @contextlib.contextmanager
    def for_call(self, call: dict) -> Iterator["DiffusersGenerator"]:
        """This generator set up as the call runs (``call_settings``, and the latent shape of its
        size) inside the context; its own settings are restored at exit."""
        settings = self.call_settings(call)
        saved = {k: getattr(self, k) for k in (*settings, "latent_shape")}
        try:
            for key, value in settings.items():
                setattr(self, key, value)
            self.check_size()
            self.latent_shape = self.latent_shape_at(self.height, self.width)
            yield self
        finally:
            for key, value in saved.items():
                setattr(self, key, value)

    @property
    def call_device(self) -> torch.device:
        """The device the pipeline runs a call on (diffusers' ``_execution_device``: offloading aware)."""
        return self.pipeline._execution_device

    def call_conditioning(self, call: dict) -> Conditioning:
        """The conditioning of the call's prompts (or its ``prompt_embeds``) as its ``__call__``
        encodes them: one row per image, ``num_images_per_prompt`` rows per prompt."""
        raise NotImplementedError(f"generator {self.name!r} cannot read a pipeline call")

    def call_noise(self, call: dict, cond: Conditioning) -> torch.Tensor:
        """The initial noise x0 [rows of ``cond``, *latent_shape] of the call: its ``latents``, or
        what its ``__call__`` draws from its ``generator``, in the layout the pipeline takes as
        ``latents=`` (before any scaling it applies to them)."""
        raise NotImplementedError(f"generator {self.name!r} cannot read a pipeline call")

    def call_arguments(self, call: dict, cond: Conditioning) -> dict:
        """Arguments of the call to replace, besides ``latents``, when the pipeline runs it (none)."""
        return {}


def generator_for_pipeline(pipe, height: Optional[int] = None, width: Optional[int] = None) -> DiffusersGenerator:
    """The generator of ``pipe``'s family around ``pipe``'s own modules (``from_pipeline``), found
    in ``PIPELINES`` by the pipeline's class or the nearest base class registered there."""
    for klass in type(pipe).__mro__:
        if klass.__name__ in PIPELINES:
            return PIPELINES.build(klass.__name__, pipe=pipe, height=height, width=width)
    known = ", ".join(PIPELINES)
    raise ConfigError(f"a {type(pipe).__name__} has no HyperNoise generator family; pipelines that have one: {known}")


@GENERATORS.register("auto", help="detect the family from --pretrained's model_index.json and build it")
def build_auto(pretrained: Optional[str] = None, **kwargs) -> Generator:
    """Detect the family of ``pretrained`` from its ``model_index.json`` and build that generator."""
    return GENERATORS.build(detect_generator(pretrained), pretrained=pretrained, **kwargs)

