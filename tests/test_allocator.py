"""The CPU heap tuning: freed tensors' memory is reused instead of faulted back in; hands off
when the user tunes malloc or switches it off."""

import json
import os
import platform
import subprocess
import sys

import pytest

from hypernoise import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

#: 20 training steps of a small conv net (a step's activations made and freed each time) and the
#: minor page faults those steps took, after 3 warm-up steps
CHILD = r"""
import json, resource, sys
import torch
from hypernoise import allocator
tuned = allocator.tune() if sys.argv[1] == "tune" else False
torch.manual_seed(0)
net = torch.nn.Sequential(*[m for _ in range(3) for m in (torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.SiLU())])
x = torch.randn(8, 32, 32, 32)
def steps(n):
    for _ in range(n):
        net(x).square().mean().backward()
steps(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps(20)
print(json.dumps({"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "HYPERNOISE_MALLOC"))}
    environ.update(OMP_NUM_THREADS="1", **env)
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=environ, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the tuning is glibc's mallopt")
def test_tuned_heap_reuses_freed_tensors_without_page_faults():
    untuned, tuned = _faults("plain"), _faults("tune")
    assert tuned["tuned"] is True
    # glibc's defaults give the step's freed activations back to the kernel: every step faults
    # pages in again (27.7k faults in 20 steps measured here); tuned, the heap keeps and reuses them
    assert untuned["faults"] >= 20 * 250
    assert tuned["faults"] * 10 < untuned["faults"]


@pytest.mark.skipif(not GLIBC, reason="the tuning is glibc's mallopt")
def test_switched_off_or_user_tuning_leaves_glibc_alone():
    assert _faults("tune", HYPERNOISE_MALLOC_TUNING="0")["tuned"] is False
    assert _faults("tune", MALLOC_ARENA_MAX="2")["tuned"] is False
    assert allocator.wanted({}) is True
    for env in ({"HYPERNOISE_MALLOC_TUNING": "off"}, {"MALLOC_TRIM_THRESHOLD_": "1"}, {"GLIBC_TUNABLES": "x=1"}):
        assert allocator.wanted(env) is False


def test_cli_tunes_the_heap(capsys):
    from hypernoise.cli.main import main

    assert main(["rewards"]) == 0
    assert allocator.tune() is allocator.wanted()


@pytest.mark.slow
def test_benchmark_quick_path(tmp_path):
    """benchmarks/cpu_allocator.py runs end to end (tiny runs) and writes its table and JSON."""
    out = tmp_path / "alloc.json"
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "cpu_allocator.py")
    run = subprocess.run([sys.executable, script, "--quick", "--rounds", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"reno", "train"}
    assert result["summary"]["reno"]["seconds_per_image"]["ratio"] > 0
    assert "| reno | minor_faults |" in run.stdout
