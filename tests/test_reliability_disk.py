"""A write that fails (here: a file-size limit, as a full disk does) is one line, exit 1, and leaves
no debris: no truncated or 0-byte PNG, no half-written adapter or checkpoint, no .tmp leftovers."""

import resource
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE (POSIX)")


def _limited(limit_bytes):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def _run(argv, limit_bytes, cwd):
    return subprocess.run([sys.executable, "-m", "hypernoise.cli.main", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300, preexec_fn=_limited(limit_bytes),
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
                               "HF_HUB_OFFLINE": "1", "PYTHONPATH": ":".join(sys.path)})


def _debris(folder):
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-") or (p.suffix == ".png" and p.stat().st_size == 0)]


@pytest.mark.parametrize("argv, limit", [
    (["generate", "--generator", "shapes", "--prompt", "a photo of a red circle", "--num-images", "2",
      "--threads", "1"], 600),                                                 # a PNG
    (["train", "--generator", "toy2d", "--steps", "3", "--no-progress"], 16_000),  # a checkpoint
    (["train", "--generator", "toy2d", "--steps", "3", "--no-progress"], 100_000),  # its optimizer state (torch.save)
])
def test_a_failed_write_is_one_line_and_leaves_no_debris(tmp_path, argv, limit):
    out = tmp_path / "out"
    proc = _run(argv + ["--out", str(out)], limit, tmp_path)
    lines = [l for l in proc.stderr.splitlines() if l.strip() and "Warning" not in l and "warn" not in l]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and "File too large" in lines[0] and "ulimit -f" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not _debris(tmp_path), _debris(tmp_path)


def test_a_resumed_run_that_cannot_write_its_checkpoint_keeps_the_one_before(tmp_path):
    """torch's own writer fails with RuntimeError "unexpected pos" under a file-size limit; the
    optimizer state is written by Python (io.save_torch), so it is the OSError it is: one line."""
    out = tmp_path / "out"
    argv = ["train", "--generator", "toy2d", "--no-progress", "--out", str(out)]
    assert _run(argv + ["--steps", "3"], 10**9, tmp_path).returncode == 0
    kept = {p: p.read_bytes() for p in (out / "checkpoints").rglob("*") if p.is_file()}
    proc = _run(argv + ["--steps", "6", "--resume", "latest"], 100_000, tmp_path)
    lines = [l for l in proc.stderr.splitlines() if l.strip() and "Warning" not in l and "warn" not in l]
    assert proc.returncode == 1 and len(lines) == 1 and "File too large" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected pos" not in proc.stderr
    assert {p: p.read_bytes() for p in kept} == kept and not _debris(tmp_path)


def test_an_interrupted_generate_keeps_the_images_it_finished(tmp_path):
    """SIGTERM (or Ctrl-C) mid-run: the finished images stay, one line says how many, exit 130."""
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "hypernoise.cli.main", "generate", "--generator", "shapes",
                             "--prompt", "a photo of a red circle", "--num-images", "4000", "--batch-size", "4",
                             "--threads", "1", "--out", str(out)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*.png")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    pngs = list(out.glob("*.png"))
    lines = [l for l in err.splitlines() if "interrupted" in l]
    assert proc.returncode == 130 and len(lines) == 1 and f"images written to {out}" in lines[0], err
    assert f"{len(pngs)} of 4000" in lines[0] and 0 < len(pngs) < 4000
    assert "Traceback" not in err and not _debris(tmp_path)


def test_a_full_disk_while_writing_the_adapter_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    """The disk fills up exactly when the finished run writes adapter/: one line, exit 1, no
    half-written adapter or temporary folder, and the final checkpoint stays; --resume latest
    then writes the adapter."""
    import errno

    import hypernoise.adapter
    from hypernoise.cli.main import main

    def full(tensors, path, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(hypernoise.adapter, "save_tensors", full)
    out = tmp_path / "run"
    assert main(["train", "--generator", "toy2d", "--steps", "3", "--no-progress", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "free space" in err, err
    assert not (out / "adapter").exists() and not _debris(tmp_path)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    assert (out / "checkpoints" / "checkpoint-000003" / "state.json").is_file()
    monkeypatch.undo()  # space freed: the same command with --resume latest writes the adapter
    assert main(["train", "--generator", "toy2d", "--steps", "3", "--no-progress", "--out", str(out),
                 "--resume", "latest"]) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
