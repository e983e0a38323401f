"""The shapes world's networks (torch only), all small enough to train on one CPU core.

    tokenize(prompts)                      -> ids [B, L] (0 = padding, 1 = start token)
    TextEncoder(ids)                       -> tokens [B, L, D], mask [B, L] (bool), pooled [B, D]
    ShapesUNet(x [B,3,32,32], t [B], tokens, mask, pooled) -> velocity [B, 3, 32, 32]
    SegmentationNet(images [B,3,32,32] in [0,1]) -> logits [B, C, 32, 32], features [B, F]
        C = 19 for the evaluator (background + 18 shape-colour classes); the reward's network is
        a separately trained, wider one with 3 more channels (per-shape object-centre heatmaps)

The UNet works on a 2x2 space-to-depth view (12 x 16 x 16) of the image and cross-attends to the
text tokens at 8x8 and 4x4; ``conv_out`` is a plain Conv2d so a LoRA hypernetwork can adapt it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hypernoise.world.grammar import VOCABULARY, parse_prompt

PAD, START = 0, 1
MAX_TOKENS = 12
_IDS = {w: i + 2 for i, w in enumerate(VOCABULARY)}
VOCAB_SIZE = len(_IDS) + 2


def tokenize(prompts: list[str], validate: bool = True) -> torch.Tensor:
    """Word ids [B, MAX_TOKENS]; ``""`` is the empty (unconditional) prompt. Invalid prompts
    raise ``ConfigError`` (via the grammar) when ``validate``."""
    ids = torch.zeros(len(prompts), MAX_TOKENS, dtype=torch.long)
    for i, p in enumerate(prompts):
        if p and validate:
            parse_prompt(p)
        words = [START] + [_IDS[w] for w in p.lower().split()]
        ids[i, :len(words)] = torch.tensor(words)
    return ids


# ---------------------------------------------------------------- text encoder
class Attention(nn.Module):
    """Multi-head attention of queries [B, N, Dq] over keys/values [B, M, Dk] with a key mask [B, M]."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        split = lambda t: t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class TextBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, mask):
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """A small transformer over word ids; pooled = the start token's output."""

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, dim)
        self.pos = nn.Parameter(torch.randn(MAX_TOKENS, dim) * 0.02)
        self.blocks = nn.ModuleList(TextBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> dict:
        mask = ids != PAD
        mask[:, 0] = True  # the start token is always attended to
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        return {"tokens": x, "mask": mask, "pooled": x[:, 0]}


# ---------------------------------------------------------------- generator UNet
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [B, dim] of flow time t in [0, 1] (scaled by 1000, as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], -1).to(t.dtype if t.is_floating_point() else torch.float32)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(8, cin), nn.GroupNorm(8, cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class CrossAttnBlock(nn.Module):
    """Image tokens attend to the text tokens (pre-norm, residual)."""

    def __init__(self, channels: int, context_dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.attn = Attention(channels, context_dim, heads)

    def forward(self, x, tokens, mask):
        b, c, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)
        return x + self.attn(q, tokens, mask).transpose(1, 2).reshape(b, c, h, w)


@dataclass
class UNetConfig:
    channels: tuple = (32, 64, 64)
    emb_dim: int = 128
    text_dim: int = 64
    text_layers: int = 2


class ShapesUNet(nn.Module):
    """Velocity field v(x_t, t, text) of the rectified flow (x_0 = noise at t = 0, image at t = 1).

    Levels at 16x16 / 8x8 / 4x4 (after the 2x2 space-to-depth stem); cross-attention at the
    two coarse levels and in the middle.
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c0, c1, c2 = config.channels
        e, d = config.emb_dim, config.text_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.text_proj = nn.Linear(d, e)
        self.conv_in = nn.Conv2d(12, c0, 3, padding=1)
        self.down0, self.down1, self.down2 = ResBlock(c0, c0, e), ResBlock(c1, c1, e), ResBlock(c2, c2, e)
        self.pool0 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.pool1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.attn1, self.attn2 = CrossAttnBlock(c1, d), CrossAttnBlock(c2, d)
        self.mid, self.mid_attn = ResBlock(c2, c2, e), CrossAttnBlock(c2, d)
        self.up2, self.up2_attn = ResBlock(2 * c2, c2, e), CrossAttnBlock(c2, d)
        self.unpool2 = nn.Conv2d(c2, c1, 3, padding=1)
        self.up1, self.up1_attn = ResBlock(2 * c1, c1, e), CrossAttnBlock(c1, d)
        self.unpool1 = nn.Conv2d(c1, c0, 3, padding=1)
        self.up0 = ResBlock(2 * c0, c0, e)
        self.norm_out = nn.GroupNorm(8, c0)
        self.conv_out = nn.Conv2d(c0, 12, 3, padding=1)

    def forward(self, x, t, tokens, mask, pooled):
        emb = self.time_mlp(timestep_embedding(t, self.config.emb_dim).to(x.dtype)) + self.text_proj(pooled)
        h0 = self.down0(self.conv_in(F.pixel_unshuffle(x, 2)), emb)              # (B, c0, 16, 16)
        h1 = self.attn1(self.down1(self.pool0(h0), emb), tokens, mask)          # (B, c1, 8, 8)
        h2 = self.attn2(self.down2(self.pool1(h1), emb), tokens, mask)          # (B, c2, 4, 4)
        h = self.mid_attn(self.mid(h2, emb), tokens, mask)
        h = self.up2_attn(self.up2(torch.cat([h, h2], 1), emb), tokens, mask)
        h = self.unpool2(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.up1_attn(self.up1(torch.cat([h, h1], 1), emb), tokens, mask)
        h = self.unpool1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.up0(torch.cat([h, h0], 1), emb)
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), 2)    # (B, 3, 32, 32)


# ---------------------------------------------------------------- evaluator network
class SegmentationNet(nn.Module):
    """Per-pixel class logits [B, 19, H, W] (background or one of 18 shape-colour classes).

    A full-resolution stem, a half-resolution dilated trunk (receptive field ~40 px, so every
    pixel sees its whole object and can tell its shape) and a full-resolution 1x1 head on the
    upsampled trunk and the stem's skip. ``features`` (the trunk's global mean, [B, width]) is the space of the fidelity distance.
    """

    def __init__(self, stem: int = 32, width: int = 48, num_classes: int = 19, dilations=(1, 2, 4, 2)):
        dilations = tuple(dilations)
        super().__init__()
        block = lambda cin, cout, **kw: nn.Sequential(  # noqa: E731
            nn.Conv2d(cin, cout, 3, padding=kw.get("dilation", 1), **kw), nn.GroupNorm(8, cout), nn.SiLU())
        self.stem = block(5, stem)  # RGB + 2 coordinate channels
        self.down = nn.Sequential(nn.Conv2d(stem, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU())
        self.trunk = nn.Sequential(*[block(width, width, dilation=d) for d in dilations])
        self.up = nn.Sequential(nn.Conv2d(width + stem, stem, 1), nn.SiLU())
        self.head = nn.Conv2d(stem, num_classes, 1)

    def forward(self, images: torch.Tensor):
        b, _, h, w = images.shape
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        coords = torch.stack([yy, xx]).to(images)[None].expand(b, -1, -1, -1)
        s = self.stem(torch.cat([2 * images - 1, coords], 1))
        t = self.trunk(self.down(s))
        u = self.up(torch.cat([F.interpolate(t, size=(h, w), mode="nearest"), s], 1))
        return self.head(u), t.mean((2, 3))


def config_dict(config) -> dict:
    d = asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
