"""The command line: one-line errors with exit status 2, nothing overwritten, kill and resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hypernoise.cli.main import main


@pytest.fixture
def prompt_files(tmp_path):
    files = {
        "empty": b"\n  \n",
        "latin1": "a caf\xe9".encode("latin-1"),
        "badjson": b'{"prompt": "a"}\n{"prompt": \n',
        "noprompt": b'{"text": "a"}\n',
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def _bad_cases(tmp):
    existing = tmp / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    readonly = tmp / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    return [
        (["train", "--generator", "nope"], "unknown generator 'nope'"),
        (["train", "--generator", "toy2d", "--reward", "hps:"], "has no weight"),
        (["train", "--generator", "toy2d", "--reward", "hps:abc"], "is not a number"),
        (["train", "--generator", "toy2d", "--reward", ":5"], "has no name"),
        (["train", "--generator", "toy2d", "--reward", "nope:1"], "unknown reward 'nope'"),
        (["train", "--generator", "toy2d", "--steps", "0"], "--steps must be a positive integer"),
        (["train", "--generator", "toy2d", "--steps", "-3"], "--steps must be a positive integer"),
        (["train", "--generator", "toy2d", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["train", "--generator", "toy2d", "--lr", "0"], "--lr must be a positive number"),
        (["train", "--generator", "toy2d", "--lr=-1e-3"], "--lr must be a positive number"),
        (["train", "--generator", "toy2d", "--alpha", "0"], "alpha must be positive"),
        (["train", "--generator", "toy2d", "--alpha-start", "-1"], "--alpha-start must be positive"),
        (["train", "--generator", "toy2d", "--alpha-start", "0.1", "--alpha-ramp", "9", "3"], "--alpha-ramp takes two steps"),
        (["train", "--generator", "toy2d", "--init-trials", "2", "--steps", "50", "--trial-steps", "50"], "--trial-steps (50) must be below --steps (50)"),
        (["train", "--generator", "toy2d", "--init-trials", "0"], "--init-trials must be a positive integer"),
        (["train", "--eval-seeds", "0"], "--eval-seeds must be at least 1"),
        (["train", "--generator", "toy2d", "--method", "magic"], "invalid choice: 'magic'"),
        (["train", "--generator", "toy2d", "--prompts", str(tmp / "missing.txt")], "does not exist"),
        (["train", "--generator", "toy2d", "--prompts", str(tmp / "empty")], "holds no prompt"),
        (["train", "--generator", "toy2d", "--prompts", str(tmp / "latin1")], "is not UTF-8"),
        (["train", "--generator", "toy2d", "--prompts", str(tmp / "badjson")], "malformed JSON"),
        (["train", "--generator", "toy2d", "--prompts", str(tmp / "noprompt")], "no non-empty \"prompt\""),
        (["train", "--generator", "toy2d", "--out", str(existing)], "already holds results"),
        (["train", "--generator", "toy2d", "--out", str(readonly / "sub")], "cannot write"),
        (["train", "--generator", "toy2d", "--resume", str(tmp / "nockpt"), "--out", str(tmp / "r")], "does not exist"),
        (["toy2d", "--reward", "nope", "--out", str(tmp / "t")], "invalid choice: 'nope'"),
        (["toy2d", "--steps", "0", "--out", str(tmp / "t")], "--steps must be a positive integer"),
        (["toy2d", "--out", str(existing)], "already holds results"),
    ]


def test_bad_input_gives_one_line_and_exit_2(prompt_files, capsys):
    for argv, message in _bad_cases(prompt_files):
        if os.geteuid() == 0 and "readonly" in " ".join(argv):
            continue  # root writes through permission bits; test_unwritable_output_folder covers it
        code = main(argv + ["--no-progress"])
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if l.strip()]
        assert code == 2, (argv, err)
        assert len(lines) == 1 and message in lines[0], (argv, err)
        assert "Traceback" not in err
    assert (prompt_files / "existing" / "keep.txt").read_text() == "mine"


def test_unwritable_output_folder_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["train", "--generator", "toy2d", "--out", str(blocker / "sub"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write to output folder" in err and len(err.strip().splitlines()) == 1


def _cli(*args):
    return [sys.executable, "-m", "hypernoise.cli.main", *args]


def _toy_args(out, *extra):
    return _cli("toy2d", "--reward", "corner", "--steps", "300", "--checkpoint-every", "50", "--n-eval", "2000",
                "--no-progress", "--out", str(out), *extra)


def _wait_for(path: Path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout
        time.sleep(0.02)


@pytest.mark.slow  # ~25 s; the default suite's test_faults.py kills the same Trainer at steps and mid-checkpoint
def test_killed_run_resumes_to_the_same_adapter(tmp_path):
    full = tmp_path / "full"
    subprocess.run(_toy_args(full), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_toy_args(killed), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(killed / "checkpoints" / "checkpoint-000100", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter").exists()
    done = subprocess.run(_toy_args(killed, "--resume", "latest"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a = load_file(str(full / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(killed / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_writes_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(_toy_args(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "checkpoints" / "checkpoint-000050", proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    lines = [l for l in stderr.splitlines() if "interrupted" in l]  # the one line on stderr, exit 130 (docs/reliability.md)
    assert proc.returncode == 130 and len(lines) == 1 and "continue with --resume latest" in lines[0], stderr
    assert "Traceback" not in stderr and "interrupted" not in stdout
    stopped_at = int(lines[0].split("interrupted at step ")[1].split(":")[0])
    assert 50 <= stopped_at < 300
    steps = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert steps[-1] == stopped_at  # the interrupted step was saved, not only the periodic ones


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """A finished shapes run (adapter + checkpoints), a toy2d adapter, and damaged copies."""
    import shutil

    tmp = tmp_path_factory.mktemp("artefacts")
    assert main(["train", "--generator", "shapes", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "1",
                 "--eval-seeds", "1", "--no-progress", "--out", str(tmp / "run")]) == 0
    assert main(["train", "--generator", "toy2d", "--steps", "2", "--no-progress", "--out", str(tmp / "toy")]) == 0
    adapter, ckpt = tmp / "run" / "adapter", sorted((tmp / "run" / "checkpoints").iterdir())[-1]
    for name in ("truncated", "garbage"):
        shutil.copytree(adapter, tmp / f"adapter-{name}")
        shutil.copytree(tmp / "run", tmp / f"run-{name}")
    weights = tmp / "adapter-truncated" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    (tmp / "adapter-garbage" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    for name in ("truncated", "garbage"):
        for f in (tmp / f"run-{name}" / "checkpoints" / ckpt.name).rglob("*"):
            if f.is_file() and f.suffix in (".safetensors", ".bin", ".pt", ".pkl"):
                f.write_bytes(f.read_bytes()[:40] if name == "truncated" else b"garbage")
    (tmp / "empty-adapter").mkdir()
    (tmp / "dragon.txt").write_text("a photo of a circle\na photo of a dragon\n")
    return tmp


def _file_cases(tmp):
    out, gen = str(tmp / "gen-out"), ["generate", "--prompt", "a photo of a circle"]
    resume = ["train", "--generator", "shapes", "--steps", "3", "--batch-size", "2", "--resume", "latest"]
    return [
        (gen + ["--adapter", str(tmp / "nope"), "--out", out], "does not exist"),
        (gen + ["--adapter", str(tmp / "empty-adapter"), "--out", out], "adapter"),
        (gen + ["--adapter", str(tmp / "adapter-truncated"), "--out", out], "adapter"),
        (gen + ["--adapter", str(tmp / "adapter-garbage"), "--out", out], "adapter"),
        (gen + ["--adapter", str(tmp / "toy" / "adapter"), "--out", out], "toy2d"),
        (resume + ["--out", str(tmp / "run-truncated")], "checkpoint"),
        (resume + ["--out", str(tmp / "run-garbage")], "checkpoint"),
        (["generate", "--generator", "sd-turbo", "--pretrained", str(tmp / "no-weights"), "--prompt", "a cat",
          "--out", out], "no-weights"),
        (["generate", "--generator", "shapes", "--prompt", "", "--out", out], "empty"),
        (["generate", "--generator", "shapes", "--prompt", "a photo of a dragon", "--out", out], "dragon"),
        (["evaluate", "--method", "base", "--prompts", str(tmp / "dragon.txt"), "--out", out], "dragon"),
        (["optimize", "--prompt", "a photo of a dragon", "--out", out], "dragon"),
        (["train", "--prompts", str(tmp / "dragon.txt"), "--steps", "1", "--out", out], "dragon"),
    ]


def test_damaged_or_mismatched_files_give_one_line_and_exit_2(artefacts, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tmp = artefacts
    before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    for argv, message in _file_cases(tmp):
        code = main(argv + (["--no-progress"] if argv[0] == "train" else []))
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if l.strip()]
        assert code == 2, (argv, err)
        assert len(lines) == 1 and message in lines[0], (argv, err)
        assert "Traceback" not in err
    assert {p: p.read_bytes() for p in before} == before  # nothing the user had was touched
    assert not (tmp / "gen-out").exists()


def test_base_images_beside_a_hypernetwork_are_the_plain_generator(artefacts, tmp_path):
    """The LoRA hypernetwork lives in g's backbone: base images next to it (generate --compare,
    the training run's sample grid) must be g with its adapters off, equal to plain generate."""
    import numpy as np
    from PIL import Image

    adapter = artefacts / "run" / "adapter"
    sample = Image.open(artefacts / "run" / "samples" / "00-base.png")
    prompt, seed = sample.text["prompt"], sample.text["seed"]
    assert main(["generate", "--prompt", prompt, "--seed", seed, "--adapter", str(adapter), "--compare",
                 "--out", str(tmp_path / "cmp")]) == 0
    assert main(["generate", "--prompt", prompt, "--seed", seed, "--out", str(tmp_path / "plain")]) == 0
    plain = np.asarray(Image.open(next((tmp_path / "plain").glob("*.png"))))
    compared = np.asarray(Image.open(next((tmp_path / "cmp" / "base").glob("*.png"))))
    modulated = np.asarray(Image.open(next((tmp_path / "cmp" / "hypernoise").glob("*.png"))))
    assert np.array_equal(compared, plain) and np.array_equal(np.asarray(sample), plain)
    assert not np.array_equal(modulated, plain)
