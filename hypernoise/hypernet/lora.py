"""The LoRA noise hypernetwork: f_phi is the generator's own backbone with LoRA adapters.

Adapters on = f_phi, adapters off = the frozen g; one copy of the backbone in memory. The
backbone's final projection is made to return only its LoRA delta (its frozen base output is
replaced by zeros while adapters are on), so with LoRA B = 0 at initialisation f_phi = 0
exactly, and with adapters off every layer, the final one included, is bit-identical to g.

Saved weights use peft's key layout (``<module>.lora_A.weight``, no adapter name), so a saved
folder is a standard peft adapter; keys with peft's ``base_model.model.`` prefix load too.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

import torch
from torch import nn

from hypernoise.errors import AdapterError, ConfigError
from hypernoise.generators.base import Conditioning, Generator
from hypernoise.hypernet.base import NoiseHypernetwork

ADAPTER_NAME = "hypernoise_adapter"
_PEFT_PREFIX = "base_model.model."


@dataclass
class LoraSettings:
    """LoRA hyperparameters of the noise hypernetwork."""

    rank: int = field(default=16, metadata={"help": "LoRA rank r (the paper: 128 on SANA-Sprint)"})
    alpha: Optional[float] = field(default=None, metadata={"help": "LoRA alpha; default 2 x rank (the paper's 256 for r=128)"})
    target_modules: Optional[list] = field(default=None, metadata={
        "help": "module names to adapt; default every Linear and non-grouped Conv2d of the backbone"})
    init: str = field(default="gaussian", metadata={"help": "peft init_lora_weights: gaussian or true (B = 0 either way)"})
    adapter_name: str = field(default=ADAPTER_NAME, metadata={"help": "peft adapter name"})

    def __post_init__(self):
        if int(self.rank) < 1:
            raise ConfigError(f"LoRA rank must be a positive integer, got {self.rank}")
        if self.alpha is None:
            self.alpha = 2.0 * self.rank
        if self.init not in ("gaussian", "true", True):
            raise ConfigError(f"LoRA init must be 'gaussian' or 'true', got {self.init!r}")


def default_target_modules(backbone: nn.Module) -> list[str]:
    """Every Linear and Conv2d of ``backbone`` except grouped convolutions (peft rejects them)."""
    names = []
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            names.append(name)
    return names


def _tuner_layers(backbone: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in backbone.modules() if isinstance(m, BaseTunerLayer)]


class LoRAHypernetwork(NoiseHypernetwork):
    """f_phi(x0, c) = backbone-with-LoRA(x0, t_noise, c) through the delta-only final projection.

    The generator is referenced, not owned: the LoRA weights live inside ``generator.backbone``,
    and ``trainable_parameters()`` returns them (fp32, whatever the backbone's dtype).
    """

    kind = "lora"

    def __init__(self, generator: Generator, settings: Optional[LoraSettings] = None):
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        settings = settings or LoraSettings()
        backbone = generator.backbone
        if backbone is None or generator.final_projection is None:
            raise ConfigError(f"generator {generator.name!r} has no backbone; use the MLP hypernetwork")
        self.settings = settings
        self.__dict__["_generator"] = generator  # a reference, not a submodule (no double registration)
        targets = list(settings.target_modules or default_target_modules(backbone))
        self.peft_config = LoraConfig(
            r=int(settings.rank), lora_alpha=float(settings.alpha), target_modules=targets,
            init_lora_weights="gaussian" if settings.init == "gaussian" else True, lora_dropout=0.0,
        )
        inject_adapter_in_model(self.peft_config, backbone, adapter_name=settings.adapter_name)
        self._lora_params = self._collect_lora_parameters()
        for p in self._lora_params.values():  # trainable weights stay fp32 (diffusers' cast_training_params)
            p.data = p.data.float()
            p.requires_grad_(True)
        self._layers = _tuner_layers(backbone)
        self._hook = self._install_delta_only(generator.final_projection)

    # ----------------------------------------------------------------- structure
    @property
    def generator(self) -> Generator:
        return self._generator

    def _collect_lora_parameters(self) -> dict[str, nn.Parameter]:
        """Map peft-layout keys (``proj_out.lora_A.weight``) to the adapter's parameters."""
        tag = f".{self.settings.adapter_name}"
        return {name.replace(tag, ""): p for name, p in self.generator.backbone.named_parameters()
                if "lora_" in name and tag in name}

    def _install_delta_only(self, path: str):
        from peft.tuners.tuners_utils import BaseTunerLayer

        layer = self.generator.backbone.get_submodule(path)
        if not isinstance(layer, BaseTunerLayer):
            raise ConfigError(f"final projection {path!r} is not among the LoRA target modules; add it")

        def zero_base_output(_module, _inputs, output):
            # While adapters are on, the final layer's frozen base output is dropped: the layer
            # returns 0 + its LoRA delta, so f_phi is the LoRA path alone (METHOD.md, "The model").
            if layer.disable_adapters or layer.merged:
                return output
            return torch.zeros_like(output)

        return layer.base_layer.register_forward_hook(zero_base_output)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self._lora_params.values())

    # ----------------------------------------------------------------- forward
    def forward(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.generator.backbone_delta(noise, cond)

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """Switch every adapter off (the backbone is g) and back on at exit.

        peft's disable also clears ``requires_grad`` on LoRA weights; re-enabling at exit
        restores it, so call backward after leaving the context.
        """
        for layer in self._layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in self._layers:
                layer.enable_adapters(True)

    # ----------------------------------------------------------------- weights
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: p.detach() for k, p in self._lora_params.items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load peft-layout LoRA weights strictly (both key forms); a partial match is an error."""
        state = {k[len(_PEFT_PREFIX):] if k.startswith(_PEFT_PREFIX) else k: v for k, v in state.items()}
        state = {k.replace(f".{self.settings.adapter_name}.", "."): v for k, v in state.items()}
        missing = sorted(set(self._lora_params) - set(state))
        unexpected = sorted(set(state) - set(self._lora_params))
        if missing or unexpected:
            raise AdapterError(
                f"adapter weights do not match this backbone's LoRA layers: {len(missing)} missing "
                f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
        with torch.no_grad():
            for k, v in state.items():
                p = self._lora_params[k]
                if p.shape != v.shape:
                    raise AdapterError(f"adapter tensor {k} has shape {tuple(v.shape)}, the backbone expects {tuple(p.shape)}")
                p.copy_(v)

    def config(self) -> dict:
        s = asdict(self.settings)
        s["target_modules"] = None if self.settings.target_modules is None else list(self.settings.target_modules)
        return {"type": self.kind, "final_projection": self.generator.final_projection, **s}

    def save_peft_config(self, folder) -> None:
        """Write peft's ``adapter_config.json`` into ``folder``."""
        self.peft_config.save_pretrained(str(folder))

    def remove(self) -> None:
        """Detach the delta-only hook (the LoRA layers stay)."""
        self._hook.remove()
