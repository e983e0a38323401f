"""The Swin Transformer backbone as mmdet 2.x builds it (``mmdet/models/backbones/swin.py``).

Patch embedding (4x4 conv + LayerNorm), stages of window-attention blocks that alternate plain
and shifted 7x7 windows, PatchMerging between stages, and a LayerNorm on each stage's output.
Returns the four feature maps at strides 4, 8, 16, 32. Shapes: B batch, C channels, (H, W) the
feature map; windows are processed all at once (no Python loop over windows).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: mmdet WindowMSA masks attention across shifted-window regions with -100 (not -inf)
SHIFT_MASK_VALUE = -100.0


def relative_position_index(window: int) -> torch.Tensor:
    """[w*w, w*w] int64 index into the (2w-1)^2-row bias table (mmdet ``WindowMSA.__init__``:
    ``double_step_seq`` then ``flip(1)``; equal to the original Swin's index)."""
    coords = torch.arange(0, (2 * window - 1) * window, 2 * window - 1)[:, None] + torch.arange(window)[None, :]
    coords = coords.reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


def _pad_to(x: torch.Tensor, multiple_h: int, multiple_w: int) -> torch.Tensor:
    """Zero-pad [B, H, W, C] at the bottom/right to multiples (mmdet pads before windowing)."""
    pad_h = (multiple_h - x.shape[1] % multiple_h) % multiple_h
    pad_w = (multiple_w - x.shape[2] % multiple_w) % multiple_w
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] (H, W multiples of window) -> [B * nW, window * window, C], windows row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``window_partition``: [B * nW, window * window, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shift_attention_mask(h: int, w: int, window: int, shift: int, device) -> torch.Tensor:
    """[nW, w*w, w*w] additive mask for shifted windows (mmdet ``ShiftWindowMSA.forward``):
    three slices per axis label the regions that the cyclic shift brought together; tokens of
    different regions get -100."""
    labels = torch.zeros((1, h, w, 1), device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, hs in enumerate(bounds):
        for j, ws in enumerate(bounds):
            labels[:, hs, ws, :] = 3 * i + j
    regions = window_partition(labels, window).squeeze(-1)
    diff = regions[:, None, :] - regions[:, :, None]
    return torch.where(diff != 0, SHIFT_MASK_VALUE, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias (mmdet WindowMSA)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))

    def position_bias(self) -> torch.Tensor:
        """[heads, w*w, w*w] bias gathered from the table (the index is cheap to rebuild, so it is
        not a buffer: a checkpoint's copy is not needed)."""
        n = self.window * self.window
        table = self.relative_position_bias_table
        bias = table[relative_position_index(self.window).to(table.device).view(-1)]
        return bias.view(n, n, self.heads).permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        """windows [B * nW, N, C]; mask [nW, N, N] additive or None -> [B * nW, N, C]."""
        bw, n, c = windows.shape
        q, k, v = self.qkv(windows).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.position_bias()  # [heads, N, N]
        if mask is not None:  # WindowMSA adds the bias, then the mask: [nW, heads, N, N], tiled per image
            bias = (bias + mask[:, None]).repeat(bw // mask.shape[0], 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """mmcv FFN with two layers: Linear, activation, Linear (the residual is added by the caller)."""

    def __init__(self, dim: int, hidden: int, activation: nn.Module):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), activation, nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm block: x + W-MSA(LN(x)) (shifted by window // 2 when ``shift``), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, window: int, shift: bool, mlp_ratio: int):
        super().__init__()
        self.window, self.shift = window, window // 2 if shift else 0
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.mlp = Mlp(dim, mlp_ratio * dim, nn.GELU())

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] -> [B, H, W, C]: pad to the window multiple, cyclic shift, attend, undo."""
        h, w = x.shape[1:3]
        x = _pad_to(x, self.window, self.window)
        hp, wp = x.shape[1:3]
        mask = None
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = shift_attention_mask(hp, wp, self.window, self.shift, x.device).to(x.dtype)
        out = window_reverse(self.attn(window_partition(x, self.window), mask), self.window, hp, wp)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))
        return out[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, H, W, C] -> [B, H, W, C]."""
        x = x + self._attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 downsampling (mmdet PatchMerging): pad odd sides at the bottom/right, gather each 2x2
    patch in ``nn.Unfold``'s order (channel-major, then kernel position: c * 4 + kh * 2 + kw),
    LayerNorm over 4C, then a linear reduction to ``out_dim``."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), out_dim]."""
        x = _pad_to(x, 2, 2)
        b, h, w, c = x.shape
        patches = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(patches))


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch conv (input padded at the bottom/right to a multiple, mmdet
    AdaptivePadding 'corner'), then LayerNorm."""

    def __init__(self, dim: int, patch: int, in_channels: int = 3):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> [B, ceil(H/patch), ceil(W/patch), dim]."""
        pad_h, pad_w = (-images.shape[2]) % self.patch, (-images.shape[3]) % self.patch
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class SwinStage(nn.Module):
    """``depth`` blocks (odd ones shifted), then an optional PatchMerging for the next stage."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: int, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, i % 2 == 1, mlp_ratio) for i in range(depth))
        self.downsample = PatchMerging(dim, 2 * dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple:
        """x [B, H, W, C] -> (the stage output [B, H, W, C], the next stage's input)."""
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else None)


class SwinTransformer(nn.Module):
    """Swin backbone: images [B, 3, H, W] -> 4 maps [B, C * 2^i, H / (patch * 2^i), W / (patch * 2^i)]
    (each rounded up), each after its own LayerNorm (mmdet ``norm0..3``, out_indices (0, 1, 2, 3))."""

    def __init__(self, embed_dim: int, depths: Sequence[int], heads: Sequence[int], window: int = 7,
                 patch: int = 4, mlp_ratio: int = 4):
        super().__init__()
        self.patch_embed = PatchEmbed(embed_dim, patch)
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.stages = nn.ModuleList(
            SwinStage(dims[i], depths[i], heads[i], window, mlp_ratio, downsample=i < len(depths) - 1)
            for i in range(len(depths)))
        self.out_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)

    def forward(self, images: torch.Tensor) -> list:
        x, outs = self.patch_embed(images), []
        for stage, norm in zip(self.stages, self.out_norms):
            out, x = stage(x)
            outs.append(norm(out).permute(0, 3, 1, 2).contiguous())
        return outs
