"""The prompt-conditioning cache: bounded in bytes, least recently used entries dropped first.

Prompt encodings do not depend on trainable weights, so a cached entry is always valid; what has
to be bounded is memory. At the paper's scale (about 70k prompts; SANA-Sprint's Gemma-2 gives
300 x 2304 values, 1.4 MB per prompt in bf16) an unbounded cache would hold about 100 GB.

    ConditioningCache(limit_mb=1024, store_on=None).get(prompts, encode) -> Conditioning [B, ...]

``limit_mb`` 0 caches nothing; None is unbounded. ``store_on`` ("cpu") keeps the entries off the
accelerator; rows are moved back to the encoder's device when used.

Rows live in pages: one tensor of ``PAGE_BYTES`` (at least one row) per (name, row shape, dtype,
device), whose slots are reused as entries are evicted. Memory is then the pages, at most the
limit plus one page per kind of row, and it stays flat: a cache of many small rows allocated one
by one would pin the CPU heap between the step's transient tensors, and the process's resident
memory would grow long after the cache stopped growing (measured: benchmarks/prompt_scale.py).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import torch

from hypernoise.errors import ConfigError

Conditioning = Dict[str, torch.Tensor]
#: default limit: about 730 SANA-Sprint prompts in bf16, far more for smaller text encoders
DEFAULT_CACHE_MB = 1024.0
#: bytes of one page of rows (a page holds at least one row)
PAGE_BYTES = 1 << 20
#: words a fast tokenizer's BPE model keeps cached. Its default, 10,000, grew a Gemma tokenizer's
#: heap by 40 MB over the first 30,000 distinct prompts of a long run (every "photo number N" a
#: new word), the growth benchmarks/prompt_scale.py measured from 400 to 4000 steps; 1,000 words
#: hold 4 MB, and tokenizing was no slower (the merges of a word cost less than the model's work).
TOKENIZER_CACHE_WORDS = 1000


def bound_tokenizer_cache(tokenizer, words: int = TOKENIZER_CACHE_WORDS) -> bool:
    """Bound the word cache of ``tokenizer``'s BPE model (a ``tokenizers`` fast tokenizer) to
    ``words``; whether it has one. The encodings are the same; only memory differs."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    resize = getattr(model, "_resize_cache", None)  # tokenizers >= 0.20; absent on other models
    if resize is None:
        return False
    resize(words)
    return True


class _Pages:
    """Slots for rows of one shape, dtype and device, in pages of ``PAGE_BYTES``."""

    def __init__(self, row: torch.Tensor):
        self.shape, self.dtype, self.device = tuple(row.shape), row.dtype, row.device
        self.row_bytes = row.numel() * row.element_size()
        self.per_page = max(1, PAGE_BYTES // max(1, self.row_bytes))
        self.pages: list[torch.Tensor] = []
        self.free: list[tuple[int, int]] = []

    def put(self, row: torch.Tensor) -> tuple[int, int]:
        """Copy ``row`` [*shape] into a free slot (a new page when none is free): its (page, slot)."""
        if not self.free:
            self.pages.append(torch.empty((self.per_page, *self.shape), dtype=self.dtype, device=self.device))
            page = len(self.pages) - 1
            self.free = [(page, i) for i in reversed(range(self.per_page))]
        page, slot = self.free.pop()
        self.pages[page][slot].copy_(row)
        return page, slot

    def get(self, where: tuple[int, int]) -> torch.Tensor:
        """The row in slot ``where`` as [1, *shape] (a view: valid until the slot is reused)."""
        page, slot = where
        return self.pages[page][slot : slot + 1]

    def release(self, where: tuple[int, int]) -> None:
        self.free.append(where)

    @property
    def nbytes(self) -> int:
        return len(self.pages) * self.per_page * self.row_bytes


class ConditioningCache:
    """Per-prompt conditioning rows ({name: [1, ...]}), at most ``limit_mb`` megabytes of them.

    ``nbytes``: the bytes of the rows held (what the limit bounds); ``allocated_bytes``: the
    pages' bytes, at most the limit plus one page per kind of row."""

    def __init__(self, limit_mb: Optional[float] = DEFAULT_CACHE_MB, store_on: Optional[str] = None):
        if limit_mb is not None and not (limit_mb >= 0 and limit_mb < float("inf")):
            raise ConfigError(f"`prompt_cache_mb` must be a finite number >= 0, got {limit_mb}", field="prompt_cache_mb")
        self.limit = None if limit_mb is None else int(limit_mb * 2**20)
        self.store_on = None if store_on is None else torch.device(store_on)
        self._entries: OrderedDict[str, dict] = OrderedDict()  # prompt -> {name: (pages, (page, slot))}
        self._pages: dict[tuple, _Pages] = {}
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def allocated_bytes(self) -> int:
        return sum(p.nbytes for p in self._pages.values())

    def clear(self) -> None:
        self._entries.clear()
        self._pages.clear()
        self.nbytes = 0

    def get(self, prompts: Sequence[str], encode: Callable[[list[str]], Conditioning],
            device: Optional[torch.device] = None) -> Conditioning:
        """Conditioning for ``prompts`` [B, ...] on ``device``: cached rows, and
        ``encode(misses)`` (under no_grad, each distinct prompt once) for the rest."""
        unique = list(dict.fromkeys(prompts))
        rows: dict[str, Conditioning] = {}
        for p in unique:
            if p in self._entries:
                self._entries.move_to_end(p)
                rows[p] = {k: pages.get(where) for k, (pages, where) in self._entries[p].items()}
        missing = [p for p in unique if p not in rows]
        if missing:
            with torch.no_grad():
                fresh = encode(missing)
            rows.update({p: {k: v[i : i + 1] for k, v in fresh.items()} for i, p in enumerate(missing)})
        parts = [rows[p] for p in prompts]
        out = {} if not parts or not parts[0] else {
            k: torch.cat([part[k] if device is None else part[k].to(device) for part in parts]) for k in parts[0]}
        for p in missing:  # after the output is built: storing may reuse the slots of rows read above
            self._put(p, rows[p])
        return out

    def _put(self, prompt: str, row: Conditioning) -> None:
        size = sum(v.numel() * v.element_size() for v in row.values())
        if self.limit is not None and size > self.limit:
            return  # larger than the whole cache (and 0 caches nothing)
        while self.limit is not None and self.nbytes + size > self.limit and self._entries:
            self._evict()
        entry = {}
        for k, v in row.items():
            v = v.detach()[0].to(self.store_on or v.device)
            key = (k, tuple(v.shape), v.dtype, v.device)
            pages = self._pages.get(key) or self._pages.setdefault(key, _Pages(v))
            entry[k] = (pages, pages.put(v))
        self._entries[prompt] = entry
        self.nbytes += size

    def _evict(self) -> None:
        """Drop the least recently used entry; its slots are free for the next."""
        _, old = self._entries.popitem(last=False)
        for pages, where in old.values():
            self.nbytes -= pages.row_bytes
            pages.release(where)
