"""Two processes (gloo on the CPU) train the same adapter as one process with the same global batch."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

ARGS = ["train", "--generator", "toy2d", "--steps", "20", "--noise-mode", "per-sample", "--no-progress", "--lr", "0.01"]


def _launch(out, processes, batch):
    args = ARGS + ["--batch-size", str(batch), "--out", str(out)]
    if processes == 1:
        cmd = [sys.executable, "-m", "hypernoise.cli.main", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               "-m", "hypernoise.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    one = _launch(tmp_path / "one", 1, 64)
    two = _launch(tmp_path / "two", 2, 32)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)  # all-reduce sums in another order
    # only the main process logs and prints; logged metrics are averaged over processes
    log_one = [json.loads(l) for l in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    log_two = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in log_two] == list(range(1, 21))
    assert log_two[0]["loss"] == pytest.approx(log_one[0]["loss"], rel=1e-5)
    assert two.stdout.count("trained 20 steps") == 1
    assert len(list((tmp_path / "two" / "checkpoints").iterdir())) == 1
