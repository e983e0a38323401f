"""Mask2Former's masked-attention transformer decoder (mmdet 2.x
``mmdet/models/dense_heads/mask2former_head.py``, layers from ``mmcv/cnn/bricks/transformer.py``).

Learned queries attend, layer by layer, to the pixel decoder's maps in round-robin order (coarse
to fine). Each layer is post-norm: masked cross-attention, self-attention, FFN. A query's
cross-attention is restricted to where its previous mask prediction, resized to that layer's map,
has ``sigmoid < 0.5`` is False (a query masked everywhere is unmasked). Outputs of the last layer:
class logits [B, Q, K + 1] (the last one is no-object) and mask logits [B, Q, H/4, W/4].
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hypernoise.geneval.pixel_decoder import sine_position_encoding
from hypernoise.geneval.swin import Mlp

#: a query may not attend where sigmoid(its previous mask logit) is below this (mmdet ``_forward_head``)
ATTENTION_MASK_THRESHOLD = 0.5


class Attention(nn.Module):
    """``nn.MultiheadAttention``'s maths and parameter names (in_proj_weight rows q, k, v;
    out_proj), batch-first; the boolean mask is True where attention is NOT allowed, as there."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """x [B, N, C] projected by rows ``part`` (0 q, 1 k, 2 v) -> [B, heads, N, C / heads]."""
        dim = x.shape[-1]
        rows = slice(part * dim, (part + 1) * dim)
        y = F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])
        return y.view(x.shape[0], x.shape[1], self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, query, key, value, blocked: torch.Tensor = None) -> torch.Tensor:
        """query [B, Q, C], key and value [B, N, C], blocked [B, Q, N] bool or None -> [B, Q, C]."""
        allowed = None if blocked is None else ~blocked[:, None]
        out = F.scaled_dot_product_attention(self._heads(query, 0), self._heads(key, 1), self._heads(value, 2),
                                             attn_mask=allowed)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """mmcv BaseTransformerLayer with operation_order (cross_attn, norm, self_attn, norm, ffn, norm).

    Positions are added to queries and keys, never to values (mmcv MultiheadAttention)."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.cross_attn, self.self_attn = Attention(dim, heads), Attention(dim, heads)
        self.cross_norm, self.self_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = Mlp(dim, ffn, nn.ReLU(inplace=True))

    def forward(self, query, query_pos, memory, memory_pos, blocked) -> torch.Tensor:
        """query, query_pos [B, Q, C]; memory [B, N, C]; memory_pos [1, N, C]; blocked [B, Q, N]."""
        x = self.cross_norm(query + self.cross_attn(query + query_pos, memory + memory_pos, memory, blocked))
        q = x + query_pos
        x = self.self_norm(x + self.self_attn(q, q, x))
        return self.ffn_norm(x + self.ffn(x))


class MaskedAttentionDecoder(nn.Module):
    """The Mask2Former head after the pixel decoder: (mask features, coarse-to-fine maps) ->
    (class logits [B, Q, K + 1], mask logits [B, Q, H/4, W/4]) of the last decoder layer."""

    def __init__(self, dim: int, layers: int, levels: int, heads: int, ffn: int, queries: int, classes: int):
        super().__init__()
        self.levels = levels
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn) for _ in range(layers))
        self.post_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(queries, dim)
        self.query_pos = nn.Embedding(queries, dim)
        self.level_embed = nn.Embedding(levels, dim)
        self.cls_embed = nn.Linear(dim, classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(),
                                        nn.Linear(dim, dim))

    def _mask_logits(self, query: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """query [B, Q, C], features [B, C, h, w] -> mask logits [B, Q, h, w] (mmdet ``_forward_head``)."""
        return torch.einsum("bqc,bchw->bqhw", self.mask_embed(self.post_norm(query)), features)

    def _blocked(self, query: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """[B, Q, h * w] bool: where the query may not attend (mask logit < 0, i.e. sigmoid < 0.5),
        with rows that would block everything cleared (mmdet sets them all False)."""
        blocked = self._mask_logits(query, features).flatten(2).sigmoid() < ATTENTION_MASK_THRESHOLD
        return blocked & ~blocked.all(dim=-1, keepdim=True)

    def forward(self, mask_features: torch.Tensor, maps: Sequence[torch.Tensor]) -> tuple:
        """mask_features [B, C, H/4, W/4]; maps: ``levels`` [B, C, h_l, w_l], coarse first."""
        b = mask_features.shape[0]
        memory = [m.flatten(2).transpose(1, 2) + self.level_embed.weight[i] for i, m in enumerate(maps)]
        memory_pos = [sine_position_encoding(*m.shape[-2:], m.shape[1] // 2, m.device, m.dtype).flatten(1).T[None]
                      for m in maps]
        # mmdet resizes each layer's mask logits to the next map bilinearly; the resize and the mask
        # embedding's dot product are both linear, so resizing the features once is the same maths
        small = [F.interpolate(mask_features, size=m.shape[-2:], mode="bilinear", align_corners=False) for m in maps]
        query = self.query_feat.weight[None].expand(b, -1, -1)
        query_pos = self.query_pos.weight[None].expand(b, -1, -1)
        blocked = self._blocked(query, small[0])
        for i, layer in enumerate(self.layers):
            level = i % self.levels
            query = layer(query, query_pos, memory[level], memory_pos[level], blocked)
            if i + 1 < len(self.layers):
                blocked = self._blocked(query, small[(i + 1) % self.levels])
        return self.cls_embed(self.post_norm(query)), self._mask_logits(query, mask_features)
