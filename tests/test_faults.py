"""Runs killed (SIGKILL) at several points, mid-checkpoint included, resume to the same adapter."""

import os
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from hypernoise.training.checkpoint import latest_checkpoint

ARGS = ["train", "--generator", "toy2d", "--steps", "12", "--batch-size", "64", "--checkpoint-every", "3",
        "--noise-mode", "per-sample", "--no-progress"]


def _run(out, kill_at=None, resume=False):
    env = dict(os.environ)
    env.pop("HYPERNOISE_KILL_AT", None)
    if kill_at:
        env["HYPERNOISE_KILL_AT"] = kill_at
    cmd = [sys.executable, "-m", "hypernoise.cli.main", *ARGS, "--out", str(out)] + (["--resume", "latest"] if resume else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _adapter(out):
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert _run(out).returncode == 0
    return _adapter(out)


@pytest.mark.parametrize("kills", [["step:5"], ["checkpoint:6"], ["step:2", "checkpoint:9", "step:11"]])
def test_killed_runs_resume_to_the_uninterrupted_adapter(tmp_path, reference, kills):
    out = tmp_path / "run"
    for kill in kills:
        died = _run(out, kill_at=kill, resume=out.exists())
        assert died.returncode == -signal.SIGKILL, died.stderr[-500:]
        assert not (out / "adapter").exists()
        point, step = kill.split(":")
        last = latest_checkpoint(out / "checkpoints")
        if point == "checkpoint":  # the checkpoint being written when the process died does not count
            assert last is None or int(last.name.split("-")[1]) < int(step)
            assert any(p.name.startswith(".tmp-") for p in (out / "checkpoints").iterdir())
    done = _run(out, resume=True)
    assert done.returncode == 0, done.stderr[-1000:]
    got = _adapter(out)
    assert got.keys() == reference.keys() and all((got[k] == reference[k]).all() for k in got)


def test_same_seed_same_command_same_adapter(tmp_path, reference):
    assert _run(tmp_path / "again").returncode == 0
    got = _adapter(tmp_path / "again")
    assert all((got[k] == reference[k]).all() for k in got)
