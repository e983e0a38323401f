"""The "shapes" generator: a few-step text-to-image model of the shapes world (pixel space).

    encode(prompts)                        -> {"tokens" [B,12,64], "mask" [B,12], "pooled" [B,64]}
    generate(noise [B,3,32,32], cond, num_steps) -> images [B, 3, 32, 32] in [0, 1]
    backbone_delta(noise, cond)            -> the UNet at t = 0 (pure noise): [B, 3, 32, 32]

The backbone is a rectified-flow UNet distilled by one reflow pass, so that a single Euler step
(one network evaluation) maps noise to an image; more steps follow the same straight paths, so the
same noise gives the same layout at 1 and 4 steps. The default is 2 steps (2 NFEs). Weights ship in ``hypernoise/assets/world``.
"""

from __future__ import annotations

import json
from typing import Optional

import torch

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Conditioning, Generator, RngLike, check_fixed_size
from hypernoise.generators.registry import GENERATORS
from hypernoise.world import evaluator, models
from hypernoise.world.grammar import balanced_train_prompts, benchmark_prompts, parse_prompt
from hypernoise.world.sampling import euler
from hypernoise.world.weights import load_weights, resolve_weights

class ShapesGenerator(Generator):
    """Frozen few-step generator of 32x32 shape scenes; backbone = the UNet (see module docstring)."""

    name = "shapes"
    latent_shape = (3, 32, 32)
    output_kind = "image"
    #: 2 Euler steps by default: 1 step works (same layout) but is blurrier (docs/world.md)
    default_steps = 2
    final_projection = "conv_out"

    default_reward = "shapes"

    def __init__(self, config: Optional[models.UNetConfig] = None):
        super().__init__()
        config = config or models.UNetConfig()
        self.unet = models.ShapesUNet(config)
        self.text = models.TextEncoder(config.text_dim, config.text_layers)

    @classmethod
    def from_pretrained(cls, pretrained: Optional[str] = None, stem: str = "generator") -> "ShapesGenerator":
        path = resolve_weights(pretrained, stem)
        meta_path = path.with_suffix(".json")
        config = models.UNetConfig()
        if meta_path.is_file():
            unet_cfg = json.loads(meta_path.read_text()).get("unet", {})
            config = models.UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in unet_cfg.items()})
        gen = cls(config)
        load_weights(gen, path)
        gen.pretrained = str(pretrained) if pretrained is not None else f"builtin:{stem}"
        return gen

    def default_prompts(self, split: str = "train") -> list[str]:
        """Train prompts with the six categories weighted equally (``balanced_train_prompts``), or
        the balanced test benchmark (20 entries per category, 120 in all)."""
        return balanced_train_prompts() if split == "train" else benchmark_prompts(20)

    def judge(self) -> "WorldJudge":
        return WorldJudge()

    def check_prompts(self, prompts) -> None:
        for p in dict.fromkeys(prompts):
            parse_prompt(p)  # ConfigError naming the prompt and the grammar

    def encode_uncached(self, prompts: list[str]) -> Conditioning:
        out = self.text(models.tokenize(prompts).to(self.device))  # validates: ConfigError on bad prompts
        return {"tokens": out["tokens"], "mask": out["mask"], "pooled": out["pooled"]}

    @property
    def backbone(self) -> torch.nn.Module:
        return self.unet

    def backbone_delta(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        t = torch.zeros(noise.shape[0], device=noise.device, dtype=noise.dtype)
        return self.unet(noise, t, cond["tokens"], cond["mask"], cond["pooled"])

    def generate(self, noise: torch.Tensor, cond: Conditioning, num_steps: Optional[int] = None,
                 rng: RngLike = None) -> torch.Tensor:
        """Euler steps along the flow from ``noise``; deterministic, so ``rng`` is ignored."""
        steps = int(num_steps or self.default_steps)
        if steps < 1:
            raise ConfigError(f"`num_steps` must be at least 1, got {steps}", field="num_steps")
        x = euler(self.unet, noise, cond, steps)
        return (x * 0.5 + 0.5).clamp(0, 1)


class WorldJudge:
    """The world's GenEval-style judge (``generators.base.Judge``): the shipped evaluator, independent
    of the ``shapes`` reward."""

    def evaluate_images(self, images: torch.Tensor, prompts) -> list[dict]:
        return evaluator.evaluate_images(images, prompts)

    def summary(self, records) -> dict:
        return evaluator.geneval_summary(records)

    def fidelity(self, images: torch.Tensor, prompts) -> float:
        return evaluator.fidelity(images, prompts)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return evaluator.default_evaluator().features(images)


@GENERATORS.register("shapes", help="built-in 32x32 shapes world: reflow-distilled flow UNet, 2 steps by default (weights ship with hypernoise)")
def build_shapes(pretrained: Optional[str] = None, device: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None, height: Optional[int] = None, width: Optional[int] = None,
                 **_) -> ShapesGenerator:
    check_fixed_size(ShapesGenerator.name, ShapesGenerator.latent_shape[-1], height, width)  # never ignored
    gen = ShapesGenerator.from_pretrained(pretrained)
    return gen.to(device=device, dtype=dtype or torch.float32)
