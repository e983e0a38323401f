"""Mask2Former's pixel decoder (mmdet 2.x ``mmdet/models/plugins/msdeformattn_pixel_decoder.py``).

The three coarsest backbone maps (strides 32, 16, 8) are projected to ``feat`` channels, given
sine positional encodings plus a learned level embedding, and refined jointly by a stack of
multi-scale deformable-attention encoder layers (mmcv ``MultiScaleDeformableAttention``, sampled
here with ``F.grid_sample``). An FPN step adds the stride-4 map; a 1x1 conv makes the mask features.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hypernoise.geneval.swin import Mlp


def sine_position_encoding(height: int, width: int, num_feats: int, device, dtype=torch.float32) -> torch.Tensor:
    """[2 * num_feats, height, width] normalised sine encoding of an unpadded map (mmdet
    ``SinePositionalEncoding(num_feats, normalize=True)``: temperature 10000, scale 2 pi, eps 1e-6;
    y channels first, then x; within each, sin and cos interleaved)."""
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y = y / (height + 1e-6) * (2 * math.pi)
    x = x / (width + 1e-6) * (2 * math.pi)
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def encode(positions: torch.Tensor) -> torch.Tensor:  # [n] -> [n, num_feats]
        angles = positions[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, num_feats)
    pos_x = encode(x)[None, :, :].expand(height, width, num_feats)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).to(dtype)


def reference_points(shapes: Sequence[tuple], strides: Sequence[int], device) -> torch.Tensor:
    """[sum h*w, 2] (x, y) in [0, 1]: each position's centre (mmdet ``MlvlPointGenerator`` with
    offset 0.5, divided by the map size times its stride), levels concatenated, rows row-major."""
    points = []
    for (h, w), stride in zip(shapes, strides):
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride / (w * stride)
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride / (h * stride)
        points.append(torch.stack([xs.repeat(h), ys.repeat_interleave(w)], dim=-1))
    return torch.cat(points)


class ConvNorm(nn.Module):
    """mmcv ConvModule: conv, GroupNorm, optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool, relu: bool, groups: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=kernel, padding=kernel // 2, bias=bias)
        self.norm = nn.GroupNorm(groups, cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.relu(x) if self.relu else x


def _axis_taps(coord: torch.Tensor, size: torch.Tensor) -> tuple:
    """Bilinear taps along one axis as ``F.grid_sample(align_corners=False, padding_mode="zeros")``
    takes them: coord [..., L, P] in [0, 1], size [L, 1] (the level's extent) -> (index0, index1,
    weight0, weight1), each [..., L, P]; a tap outside the map is clamped into it with weight 0."""
    pixel = ((2 * coord - 1 + 1) * size - 1) / 2  # mmcv's grid (2 * loc - 1), unnormalised as grid_sample does
    low = pixel.floor()
    frac = pixel - low
    w0 = torch.where((low >= 0) & (low < size), 1 - frac, 0.0)
    w1 = torch.where((low >= -1) & (low < size - 1), frac, 0.0)
    return low.clamp(min=0).minimum(size - 1), (low + 1).clamp(min=0).minimum(size - 1), w0, w1


def deformable_sample(value: torch.Tensor, shapes: Sequence[tuple], locations: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """mmcv ``multi_scale_deformable_attn_pytorch`` as one weighted gather (``F.embedding_bag``):
    the 4 bilinear taps of every sampling point, times its attention weight, summed per query and head.

    value [B, N, heads, d] (the levels' h*w tokens concatenated, row-major); locations
    [B, Q, heads, L, P, 2] (x, y in [0, 1], float32); weights [B, Q, heads, L, P] -> [B, Q, heads * d]."""
    b, n, heads, d = value.shape
    q = locations.shape[1]
    device, dtype = value.device, locations.dtype
    height = torch.tensor([h for h, _ in shapes], dtype=dtype, device=device)[:, None]  # [L, 1]
    width = torch.tensor([w for _, w in shapes], dtype=dtype, device=device)[:, None]
    start = torch.tensor([0] + [h * w for h, w in shapes][:-1], dtype=dtype, device=device).cumsum(0)[:, None]
    x0, x1, wx0, wx1 = _axis_taps(locations[..., 0], width)
    y0, y1, wy0, wy1 = _axis_taps(locations[..., 1], height)
    # value viewed as [B * N * heads, d]: the row of (image i, token t, head h) is (i * N + t) * heads + h
    index_type = torch.int32 if b * n * heads < 2 ** 31 else torch.int64
    first = (torch.arange(b, device=device).view(b, 1, 1, 1, 1) * (n * heads)
             + torch.arange(heads, device=device).view(1, 1, heads, 1, 1)).to(index_type)
    rows_y = [(start + y * width).to(index_type) * heads + first for y in (y0, y1)]  # exact: < 2^24 tokens
    cols_x = [x.to(index_type) * heads for x in (x0, x1)]
    rows = torch.stack([ry + cx for ry in rows_y for cx in cols_x], dim=3)  # [B, Q, heads, 4, L, P]
    taps = torch.stack([weights * wy * wx for wy in (wy0, wy1) for wx in (wx0, wx1)], dim=3)
    out = F.embedding_bag(rows.reshape(b * q * heads, -1), value.reshape(b * n * heads, d),
                          per_sample_weights=taps.reshape(b * q * heads, -1).to(value.dtype), mode="sum")
    return out.view(b, q, heads * d)


class DeformableAttention(nn.Module):
    """mmcv ``MultiScaleDeformableAttention`` (batch-first here): each query samples ``points``
    locations per head and level around its reference point, bilinearly, and mixes them with
    softmax weights over levels x points."""

    def __init__(self, dim: int, heads: int, levels: int, points: int):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, pos: torch.Tensor, refs: torch.Tensor, shapes: Sequence[tuple]):
        """query, pos [B, N, C]; refs [N, 2] (x, y in [0, 1]); shapes: the levels' (h, w), whose
        h*w sum to N -> [B, N, C] (the residual is added by the caller)."""
        b, n, c = query.shape
        q = query + pos
        value = self.value_proj(query).view(b, n, self.heads, c // self.heads)
        offsets = self.sampling_offsets(q).view(b, n, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(q).view(b, n, self.heads, self.levels * self.points).softmax(-1)
        weights = weights.view(b, n, self.heads, self.levels, self.points)
        # sampling positions in float32 whatever the model's dtype: bf16 cannot address a pixel of a 100-wide map
        size = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32, device=q.device)  # offsets are in pixels
        locations = refs[None, :, None, None, None, :] + offsets.float() / size[:, None, :]
        return self.output_proj(deformable_sample(value, shapes, locations, weights.float()))


class EncoderLayer(nn.Module):
    """Post-norm layer (operation_order self_attn, norm, ffn, norm) with deformable self-attention."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn: int):
        super().__init__()
        self.attn = DeformableAttention(dim, heads, levels, points)
        self.attn_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = Mlp(dim, ffn, nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, refs: torch.Tensor, shapes) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, pos, refs, shapes))
        return self.ffn_norm(x + self.ffn(x))


class PixelDecoder(nn.Module):
    """MSDeformAttnPixelDecoder: backbone maps (strides 4, 8, 16, 32) -> (mask features [B, C, H/4, W/4],
    the encoder's maps from coarse to fine [B, C, h_l, w_l], ``levels`` of them)."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], dim: int, layers: int, levels: int,
                 heads: int, points: int, ffn: int, groups: int):
        super().__init__()
        self.strides, self.levels, self.dim = tuple(strides), levels, dim
        top = len(in_channels) - 1
        self.input_convs = nn.ModuleList(
            ConvNorm(in_channels[top - i], dim, 1, bias=True, relu=False, groups=groups) for i in range(levels))
        self.encoder = nn.ModuleList(EncoderLayer(dim, heads, levels, points, ffn) for _ in range(layers))
        self.level_embed = nn.Embedding(levels, dim)
        fpn = range(len(in_channels) - levels - 1, -1, -1)  # the finer maps, coarse to fine
        self.lateral_convs = nn.ModuleList(ConvNorm(in_channels[i], dim, 1, False, False, groups) for i in fpn)
        self.output_convs = nn.ModuleList(ConvNorm(dim, dim, 3, False, True, groups) for _ in fpn)
        self.mask_feature = nn.Conv2d(dim, dim, kernel_size=1)

    def _encoder_inputs(self, feats: Sequence[torch.Tensor]) -> tuple:
        """(tokens [B, N, C], positions [B|1, N, C], reference points [N, 2], level shapes), coarse first."""
        top = len(feats) - 1
        tokens, positions, shapes = [], [], []
        for i in range(self.levels):
            projected = self.input_convs[i](feats[top - i])
            h, w = projected.shape[-2:]
            # num_feats = dim / 2 (the config's 128 for 256 channels): y and x halves fill the channels
            pos = sine_position_encoding(h, w, self.dim // 2, projected.device, projected.dtype)
            pos = pos + self.level_embed.weight[i].view(-1, 1, 1)
            tokens.append(projected.flatten(2).transpose(1, 2))
            positions.append(pos.flatten(1).transpose(0, 1)[None])
            shapes.append((h, w))
        refs = reference_points(shapes, [self.strides[top - i] for i in range(self.levels)], tokens[0].device)
        return torch.cat(tokens, 1), torch.cat(positions, 1), refs, shapes

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple:
        x, pos, refs, shapes = self._encoder_inputs(feats)
        for layer in self.encoder:
            x = layer(x, pos, refs, shapes)
        levels = x.split([h * w for h, w in shapes], dim=1)
        outs = [t.transpose(1, 2).reshape(x.shape[0], self.dim, h, w) for t, (h, w) in zip(levels, shapes)]
        # mmdet indexes lateral/output convs by the level number i (one FPN level in every config)
        for i in range(len(feats) - self.levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            up = F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(self.output_convs[i](lateral + up))
        return self.mask_feature(outs[-1]), outs[: self.levels]
