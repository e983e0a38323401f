"""The LoRA noise hypernetwork: f_phi is the generator's own backbone with LoRA adapters.

Adapters on = f_phi, adapters off = the frozen g; one copy of the backbone in memory. The
backbone's final projection is made to return only its LoRA delta (its frozen base output is
replaced by zeros while adapters are on), so with LoRA B = 0 at initialisation f_phi = 0
exactly, and with adapters off every layer, the final one included, is bit-identical to g.

The LoRA layers themselves (injection, fp32 weights, peft key layout, strict loading, dense LoRA
on grouped convolutions, adapter-state checkpointing) are ``hypernoise.lora.BackboneLoRA``,
shared with direct fine-tuning. Adapters off bypasses every LoRA layer, so g costs what the
plain backbone costs.

Inference can trade memory for the LoRA's compute: inside ``merged()`` f_phi runs on plain
layers holding W + scaling B A (the final projection: the delta alone), one forward of the plain
backbone's cost instead of that plus the LoRA paths and peft's wrappers. The copies hold one more
weight tensor per adapted layer: about one more backbone (``merged_nbytes``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

from hypernoise.errors import AdapterError, ConfigError
from hypernoise.generators.base import Conditioning, Generator
from hypernoise.hypernet.base import NoiseHypernetwork
from hypernoise.lora import (ADAPTER_NAME, BackboneLoRA, LoraSettings, mergeable,  # noqa: F401
                             adapter_state_checkpoint, default_target_modules, placed, redraw_lora,
                             tuner_layers)


class LoRAHypernetwork(NoiseHypernetwork):
    """f_phi(x0, c) = backbone-with-LoRA(x0, t_noise, c) through the delta-only final projection.

    The generator is referenced, not owned: the LoRA weights live inside ``generator.backbone``,
    and ``trainable_parameters()`` returns them (fp32, whatever the backbone's dtype).
    """

    kind = "lora"

    def __init__(self, generator: Generator, settings: Optional[LoraSettings] = None, passes: int = 1):
        super().__init__(passes)
        settings = settings or LoraSettings()
        if generator.backbone is None or generator.final_projection is None:
            raise ConfigError(f"generator {generator.name!r} has no backbone; use the MLP hypernetwork")
        self.settings = settings
        self.__dict__["_generator"] = generator  # a reference, not a submodule (no double registration)
        self.lora = BackboneLoRA(generator.backbone, settings)
        self.peft_config = self.lora.peft_config
        self._final = self.generator.backbone.get_submodule(generator.final_projection)
        self._hook = self._install_delta_only(self._final, generator.final_projection)
        self._merged_versions: Optional[list[int]] = None  # LoRA weight versions while merged()

    @property
    def generator(self) -> Generator:
        return self._generator

    def _install_delta_only(self, layer: nn.Module, path: str):
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not isinstance(layer, BaseTunerLayer):
            raise ConfigError(f"final projection {path!r} is not among the LoRA target modules; add it",
                              field="lora.target_modules")

        site = next(s for s in self.lora.sites if s.layer is layer)

        def zero_base_output(_module, _inputs, output):
            # While adapters are on, the final layer's frozen base output is dropped: the layer
            # returns 0 + its LoRA delta, so f_phi is the LoRA path alone (METHOD.md, "The model").
            # Bypassed (g: the base layer in the peft layer's place), the output is g's own.
            if site.occupant is not layer or layer.disable_adapters or layer.merged:
                return output
            return torch.zeros_like(output)

        return layer.base_layer.register_forward_hook(zero_base_output)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.lora.params.values())

    def reinitialize(self, seed: int) -> None:
        self.lora.reinitialize(seed)

    def forward(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if self._merged_versions is not None and self._merged_versions != self._versions():
            raise AdapterError("the LoRA weights changed inside merged(): the merged copies are stale; leave the "
                               "context and enter it again after changing them")
        return self.generator.backbone_delta(noise, cond)

    def _versions(self) -> list[int]:
        return [p._version for p in self.lora.params.values()]

    @contextlib.contextmanager
    def merged(self) -> Iterator["LoRAHypernetwork"]:
        """Inference mode: inside the context every LoRA layer that merges is replaced by a plain
        layer holding W + scaling B A (``lora.merged_copy``; the final projection: the delta
        alone), so a pass of f_phi is one forward of the plain backbone. ``adapters_disabled()``
        still gives g (base layers) inside it. Outputs equal the unmerged ones up to rounding.

        Costs ``merged_nbytes()`` more memory while inside (one weight tensor per adapted layer,
        in the backbone's dtype: about one more backbone; biases are shared) and one pass over the
        LoRA weights to build. No gradient reaches the LoRA weights; changing them inside is an
        ``AdapterError`` at the next pass. Nested entries reuse the outer copies. Grouped
        convolutions with a dense LoRA do not merge and keep their peft layer.
        """
        if self._merged_versions is not None:
            yield self
            return
        sites, copies = self.lora.merged_copies(delta_only=(self._final,))
        self._merged_versions = self._versions()
        try:
            with placed(sites, copies):
                yield self
        finally:
            self._merged_versions = None

    def merged_nbytes(self) -> int:
        """Bytes the merged copies of ``merged()`` take: one weight per adapted Linear / Conv2d
        (grouped convolutions excepted) in the backbone's dtype."""
        weights = [site.layer.get_base_layer().weight for site in self.lora.sites if mergeable(site.layer)]
        return sum(w.numel() * w.element_size() for w in weights)

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """Switch every adapter off (the backbone is g) and back to its previous state at exit.

        Each LoRA layer is bypassed (its base layer takes its place: ``BackboneLoRA.disabled``),
        so a pass of g costs what the plain backbone costs. The LoRA weights keep
        ``requires_grad``, so backward may be called inside or after the context.
        """
        with self.lora.disabled():
            yield

    def park(self) -> None:
        """The LoRA out of the backbone (g) until ``applied()``; a user's LoRA loaded then wraps
        the plain layers and stays g's (``BackboneLoRA.park``)."""
        self.lora.park()

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The LoRA in the backbone and every other LoRA layer off (``BackboneLoRA.applied``): f_phi
        on the backbone it was trained on, whatever a user loaded onto g."""
        with self.lora.applied():
            yield

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.lora.state_dict()

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load peft-layout LoRA weights strictly (both key forms); a partial match is an error."""
        self.lora.load_state_dict(state)

    def config(self) -> dict:
        return {**super().config(), "final_projection": self.generator.final_projection, **self.settings.describe()}

    def save_peft_config(self, folder) -> None:
        """Write peft's ``adapter_config.json`` into ``folder``."""
        self.peft_config.save_pretrained(str(folder))

    def remove(self) -> None:
        """Take the hypernetwork out of the generator: the delta-only hook and every LoRA layer go,
        the backbone is its original modules again (and can carry a new hypernetwork)."""
        self._hook.remove()
        self.lora.remove()
