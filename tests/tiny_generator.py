"""A tiny text-to-image generator with a real backbone, for testing the LoRA hypernetwork path.

Latents [B, 4, 8, 8] flow to images [B, 3, 8, 8] by Euler steps of a small conv backbone
conditioned on a prompt embedding; the final projection is ``conv_out`` (as in the SD UNet).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hypernoise.generators import GENERATORS, Generator


class TinyBackbone(nn.Module):
    def __init__(self, channels: int = 4, hidden: int = 16, text_dim: int = 8):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, hidden, 3, padding=1)
        self.text_proj = nn.Linear(text_dim, hidden)
        self.time_proj = nn.Linear(1, hidden)
        self.mid = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)  # excluded from LoRA targets
        self.conv_out = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x, t, text):
        h = self.conv_in(x) + self.text_proj(text)[:, :, None, None] + self.time_proj(t[:, None])[:, :, None, None]
        h = F.silu(self.depthwise(F.silu(self.mid(F.silu(h)))))
        return self.conv_out(h)


class TinyGenerator(Generator):
    name = "tiny"
    latent_shape = (4, 8, 8)
    final_projection = "conv_out"
    default_steps = 2

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = TinyBackbone()
        self.chars = nn.Embedding(128, 8)
        self.decoder = nn.Conv2d(4, 3, 1)

    @property
    def backbone(self):
        return self.net

    def default_prompts(self, split="train"):
        return ["a red square", "a blue circle", "two green triangles", "a photo"]

    def encode_uncached(self, prompts):
        ids = [torch.tensor([min(ord(c), 127) for c in p] or [0]) for p in prompts]
        return {"text": torch.stack([self.chars(i.to(self.device)).mean(0) for i in ids])}

    def _velocity(self, x, t, cond):
        return self.net(x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype), cond["text"].to(x.dtype))

    def generate(self, noise, cond, num_steps: Optional[int] = None, rng=None):
        steps = num_steps or self.default_steps
        x = noise
        for i in range(steps):
            t = 1.0 - i / steps
            x = x - self._velocity(x, t, cond) / steps
        return torch.sigmoid(self.decoder(x))

    def backbone_delta(self, noise, cond):
        return self._velocity(noise, 1.0, cond)


def register_tiny():
    if "tiny" not in GENERATORS:
        GENERATORS.register("tiny", help="test-only tiny conv generator")(lambda **_: TinyGenerator())
