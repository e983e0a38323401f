"""The prompt-conditioning cache is bounded in bytes and drops the least recently used prompts."""

import pytest
import torch

from hypernoise.errors import ConfigError
from hypernoise.generators.cache import ConditioningCache


class CountingEncoder:
    """Each prompt -> {"embeds": [1, 64] float32 (256 bytes)}, counting what is encoded."""

    def __init__(self):
        self.encoded = []

    def __call__(self, prompts):
        self.encoded += prompts
        return {"embeds": torch.stack([torch.full((64,), float(hash(p) % 997)) for p in prompts])}


def test_memory_never_grows_with_the_number_of_distinct_prompts():
    enc, cache = CountingEncoder(), ConditioningCache(limit_mb=16 / 1024)  # 16 KB: 64 rows of 256 bytes
    peak = 0
    for start in range(0, 10_000, 50):  # 10,000 distinct prompts, 50 per batch
        prompts = [f"prompt {i}" for i in range(start, start + 50)]
        out = cache.get(prompts, enc)
        assert out["embeds"].shape == (50, 64)
        peak = max(peak, cache.nbytes)
    assert peak <= 16 * 1024 and len(cache) <= 64
    assert len(enc.encoded) == 10_000  # every prompt encoded once, none twice in its batch


def test_recent_prompts_are_kept_and_results_equal_the_uncached_encoding():
    enc, cache = CountingEncoder(), ConditioningCache(limit_mb=3 * 256 / 2**20)  # 3 rows of 256 bytes
    first = cache.get(["a", "b", "a"], enc)
    assert enc.encoded == ["a", "b"] and torch.equal(first["embeds"][0], first["embeds"][2])
    cache.get(["c"], enc)
    cache.get(["a"], enc)  # a is recent: still cached
    assert enc.encoded == ["a", "b", "c"]
    cache.get(["d"], enc)  # evicts b, the least recently used
    cache.get(["b"], enc)
    assert enc.encoded == ["a", "b", "c", "d", "b"]
    torch.testing.assert_close(cache.get(["d", "a"], enc)["embeds"], CountingEncoder()(["d", "a"])["embeds"])


def test_a_zero_limit_caches_nothing_and_entries_can_live_on_the_cpu():
    enc, cache = CountingEncoder(), ConditioningCache(limit_mb=0)
    cache.get(["a"], enc), cache.get(["a"], enc)
    assert enc.encoded == ["a", "a"] and len(cache) == 0
    cpu = ConditioningCache(store_on="cpu")
    out = cpu.get(["a"], CountingEncoder(), device=torch.device("cpu"))
    assert out["embeds"].device.type == "cpu" and len(cpu) == 1
    with pytest.raises(ConfigError, match="prompt_cache_mb"):
        ConditioningCache(limit_mb=-1)


def test_a_generator_uses_the_bound_it_is_given(tiny_generator):
    gen = tiny_generator.set_prompt_cache(limit_mb=0)
    assert gen.encode(["a red square"])  # still encodes
    assert len(gen.prompt_cache) == 0


def test_the_pages_stay_within_the_limit_plus_one_page_and_slots_are_reused():
    from hypernoise.generators.cache import PAGE_BYTES

    enc, cache = CountingEncoder(), ConditioningCache(limit_mb=16 / 1024)  # 64 rows of 256 bytes
    for start in range(0, 10_000, 50):
        cache.get([f"prompt {i}" for i in range(start, start + 50)], enc)
        assert cache.allocated_bytes <= 16 * 1024 + PAGE_BYTES
    assert len(cache._pages) == 1  # one kind of row: every entry reused the first page's slots


def test_a_row_read_in_the_call_that_evicts_it_is_still_right():
    """The cached row of "a" is read, then storing "b" evicts "a" and reuses its slot: the output
    was built before, so "a" is still its own encoding."""
    enc, cache = CountingEncoder(), ConditioningCache(limit_mb=256 / 2**20)  # one row
    cache.get(["a"], enc)
    out = cache.get(["a", "b"], enc)
    torch.testing.assert_close(out["embeds"], CountingEncoder()(["a", "b"])["embeds"])
    assert len(cache) == 1 and enc.encoded == ["a", "b"]


def test_a_row_larger_than_the_whole_cache_is_not_kept():
    enc, cache = CountingEncoder(), ConditioningCache(limit_mb=100 / 2**20)  # smaller than one 256-byte row
    cache.get(["a"], enc), cache.get(["a"], enc)
    assert enc.encoded == ["a", "a"] and len(cache) == 0 and cache.allocated_bytes == 0


@pytest.mark.slow
def test_the_prompt_scale_benchmark_runs_and_memory_stays_flat(tmp_path):
    """benchmarks/prompt_scale.py --quick: tiny SANA-Sprint trained in fresh processes on 2k distinct
    prompts, 4, 40 and 80 steps: the longest run's peak within 5 % of the second's, the second's
    within 10 % of the first's (the full run: 100k prompts, 40 to 4000 steps)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "prompt_scale.py"
    spec = importlib.util.spec_from_file_location("prompt_scale", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["runs"]) == {"steps-4", "steps-40", "steps-80", "unbounded", "no-cache"} and result["met"]
