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
from pathlib import Path
from typing import Optional

import torch

from hypernoise.errors import ConfigError, WeightsNotFoundError
from hypernoise.generators.base import Conditioning, Generator
from hypernoise.generators.registry import GENERATORS
from hypernoise.world import models
from hypernoise.world.sampling import euler

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "world"


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a safetensors file strictly into ``module``; a missing file is WeightsNotFoundError."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsNotFoundError(f"world weights {path} not found; reinstall hypernoise, or retrain them "
                                   f"(hypernoise.world.train, docs/world.md) and pass their folder")
    module.load_state_dict(load_file(str(path)), strict=True)


def resolve_weights(pretrained: Optional[str], stem: str) -> Path:
    """``pretrained`` may be a folder holding ``<stem>.safetensors`` or the file itself."""
    if pretrained is None:
        return ASSETS / f"{stem}.safetensors"
    p = Path(pretrained)
    return p / f"{stem}.safetensors" if p.is_dir() or not p.suffix else p


class ShapesGenerator(Generator):
    """Frozen few-step generator of 32x32 shape scenes; backbone = the UNet (see module docstring)."""

    name = "shapes"
    latent_shape = (3, 32, 32)
    output_kind = "image"
    #: 2 Euler steps by default: 1 step works (same layout) but is blurrier (docs/world.md)
    default_steps = 2
    final_projection = "conv_out"

    default_reward = "shapes"
    #: HyperNoise training that suits this world on a CPU (docs/world.md, "HyperNoise on this
    #: world"): batch 64 (at 16 the training reward did not rise), AdamW 3e-4 (1e-3 trains
    #: unsteadily), on the category-balanced train prompts, trained through the 1-step map (same
    #: layout, 2.3x cheaper than 2 steps), used at the default 2 steps; alpha 1.0 keeps the images
    #: as close to the base's as real images are (alpha 0.05 gains more at twice the distance),
    #: and 3 initialisation trials of 100 steps make it take off in every seed
    train_defaults = {"rank": 8, "optimizer": "adamw", "lr": 3e-4, "batch_size": 64, "steps": 800,
                      "noise_mode": "per-sample", "objective": "l2", "alpha": 1.0, "num_steps": 1,
                      "init_trials": 3, "trial_steps": 100, "checkpoint_every": 100}

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
        from hypernoise.world.grammar import balanced_train_prompts, benchmark_prompts

        return balanced_train_prompts() if split == "train" else benchmark_prompts(20)

    def judge(self) -> "WorldJudge":
        return WorldJudge()

    def check_prompts(self, prompts) -> None:
        from hypernoise.world.grammar import parse_prompt

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

    def generate(self, noise: torch.Tensor, cond: Conditioning, num_steps: Optional[int] = None) -> torch.Tensor:
        steps = int(num_steps or self.default_steps)
        if steps < 1:
            raise ConfigError(f"num_steps must be at least 1, got {steps}")
        x = euler(self.unet, noise, cond, steps)
        return (x * 0.5 + 0.5).clamp(0, 1)


class WorldJudge:
    """The world's GenEval-style judge (``evaluation.Judge``): the shipped evaluator, independent
    of the ``shapes`` reward."""

    def evaluate_images(self, images: torch.Tensor, prompts) -> list[dict]:
        from hypernoise.world.evaluator import evaluate_images

        return evaluate_images(images, prompts)

    def summary(self, records) -> dict:
        from hypernoise.world.evaluator import geneval_summary

        return geneval_summary(records)

    def fidelity(self, images: torch.Tensor, prompts) -> float:
        from hypernoise.world.evaluator import fidelity

        return fidelity(images, prompts)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        from hypernoise.world.evaluator import default_evaluator

        with torch.no_grad():
            return default_evaluator().features(images)


@GENERATORS.register("shapes", help="built-in 32x32 shapes world: reflow-distilled flow UNet, 2 steps by default (weights ship with hypernoise)")
def build_shapes(pretrained: Optional[str] = None, device: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None, **_) -> ShapesGenerator:
    gen = ShapesGenerator.from_pretrained(pretrained)
    return gen.to(device=device, dtype=dtype or torch.float32)
