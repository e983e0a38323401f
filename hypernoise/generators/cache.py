"""The prompt-conditioning cache: bounded in bytes, least recently used entries dropped first.

Prompt encodings do not depend on trainable weights, so a cached entry is always valid; what has
to be bounded is memory. At the paper's scale (about 70k prompts; SANA-Sprint's Gemma-2 gives
300 x 2304 values, 1.4 MB per prompt in bf16) an unbounded cache would hold about 100 GB.

    ConditioningCache(limit_mb=1024, store_on=None).get(prompts, encode) -> Conditioning [B, ...]

``limit_mb`` 0 caches nothing; None is unbounded. ``store_on`` ("cpu") keeps the entries off the
accelerator; rows are moved back to the encoder's device when used.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import torch

from hypernoise.errors import ConfigError

Conditioning = Dict[str, torch.Tensor]
#: default limit: about 730 SANA-Sprint prompts in bf16, far more for smaller text encoders
DEFAULT_CACHE_MB = 1024.0


def _nbytes(entry: Conditioning) -> int:
    return sum(t.numel() * t.element_size() for t in entry.values())


class ConditioningCache:
    """Per-prompt conditioning rows ({name: [1, ...]}), at most ``limit_mb`` megabytes of them."""

    def __init__(self, limit_mb: Optional[float] = DEFAULT_CACHE_MB, store_on: Optional[str] = None):
        if limit_mb is not None and not (limit_mb >= 0 and limit_mb < float("inf")):
            raise ConfigError(f"`prompt_cache_mb` must be a finite number >= 0, got {limit_mb}", field="prompt_cache_mb")
        self.limit = None if limit_mb is None else int(limit_mb * 2**20)
        self.store_on = None if store_on is None else torch.device(store_on)
        self._entries: OrderedDict[str, Conditioning] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def get(self, prompts: Sequence[str], encode: Callable[[list[str]], Conditioning],
            device: Optional[torch.device] = None) -> Conditioning:
        """Conditioning for ``prompts`` [B, ...] on ``device``: cached rows, and
        ``encode(misses)`` (under no_grad, each distinct prompt once) for the rest."""
        rows: dict[str, Conditioning] = {}
        for p in dict.fromkeys(prompts):
            if p in self._entries:
                self._entries.move_to_end(p)
                rows[p] = self._entries[p]
        missing = [p for p in dict.fromkeys(prompts) if p not in rows]
        if missing:
            with torch.no_grad():
                fresh = encode(missing)
            for i, p in enumerate(missing):
                rows[p] = {k: v[i : i + 1] for k, v in fresh.items()}
                self._put(p, rows[p])
        parts = [rows[p] for p in prompts]
        if not parts or not parts[0]:
            return {}
        return {k: torch.cat([part[k] if device is None else part[k].to(device) for part in parts]) for k in parts[0]}

    def _put(self, prompt: str, row: Conditioning) -> None:
        if self.limit == 0:
            return
        entry = {k: v.detach().to(self.store_on or v.device, copy=True) for k, v in row.items()}  # not a view of the batch
        self._entries[prompt] = entry
        self.nbytes += _nbytes(entry)
        while self.limit is not None and self.nbytes > self.limit and self._entries:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= _nbytes(old)
