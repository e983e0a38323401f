"""Output folders (issue 19): --overwrite removes only what hypernoise wrote, never an input, never
the current, a parent, the home or the root folder; one run per folder (a lock, stale locks taken
over); a manifest of what each command wrote; pipes as --prompts files.

Commands run as a user runs them (``main([...])`` in-process, ``python -m hypernoise.cli.main`` in a
subprocess for the ones about the current folder, pipes, live processes and kills), and the files
are checked afterwards.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hypernoise.cli.main import main
from hypernoise.io import LOCK_FILE, MANIFEST_FILE

PROMPT = "a photo of a red circle"
GEN = ["generate", "--prompt", PROMPT]
TOY = ["train", "--generator", "toy2d", "--steps", "3", "--no-progress"]


def _cli(*args):
    return [sys.executable, "-m", "hypernoise.cli.main", *args]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` (bytes) and every folder (None)."""
    return {p: (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _manifest(out: Path) -> list:
    return json.loads((out / MANIFEST_FILE).read_text())["entries"]


def _top(out: Path) -> set:
    return {p.name for p in out.iterdir()} - {MANIFEST_FILE, LOCK_FILE}


def _one_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A finished shapes training run (adapter, checkpoints, samples), written by the library."""
    run = tmp_path_factory.mktemp("shapes") / "run"
    assert main(["train", "--generator", "shapes", "--steps", "1", "--batch-size", "2", "--eval-seeds", "1",
                 "--no-progress", "--out", str(run)]) == 0
    return run


def _library_run(out: Path) -> None:
    assert main(GEN + ["--out", str(out)]) == 0


@pytest.fixture
def sleeper():
    """A live process whose pid a lock can name."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _lock(out: Path, pid: int, host=None, command="hypernoise train") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                             "command": command, "started": "2025-01-01T00:00:00"}))


# -- refusals: one line, exit 2, nothing deleted ---------------------------------------------------

def _refusals(tmp: Path, live_pid: int, shapes_run: Path):
    """(name, setup -> argv, message): each setup builds its state under ``tmp`` and returns argv."""

    def user_file_beside_results():
        out = tmp / "mixed"
        _library_run(out)
        (out / "notes.txt").write_text("my notes")
        return GEN + ["--out", str(out), "--overwrite"]

    def prompts_inside_out():
        out = tmp / "with-prompts"
        _library_run(out)
        (out / "prompts.txt").write_text(PROMPT + "\n")
        return ["generate", "--prompts", str(out / "prompts.txt"), "--out", str(out), "--overwrite"]

    def prompts_written_by_library_inside_out():
        out = tmp / "own-prompts"
        _library_run(out)
        png = next(out.glob("*.png"))
        prompts = out / "sub"
        prompts.mkdir()
        (prompts / "p.txt").write_text(PROMPT + "\n")
        manifest = json.loads((out / MANIFEST_FILE).read_text())  # even an entry the library wrote
        (out / MANIFEST_FILE).write_text(json.dumps({**manifest, "entries": [png.name, "sub"]}))
        return ["generate", "--prompts", str(prompts / "p.txt"), "--out", str(out), "--overwrite"]

    def adapter_inside_out():
        return GEN + ["--adapter", str(shapes_run / "adapter"), "--out", str(shapes_run), "--overwrite"]

    def no_manifest():
        out = tmp / "old-version"
        out.mkdir()
        (out / "results.json").write_text("{}")
        (out / "per_prompt.jsonl").write_text("")
        return GEN + ["--out", str(out), "--overwrite"]

    def out_is_a_file():
        (tmp / "afile").write_text("x")
        return GEN + ["--out", str(tmp / "afile"), "--overwrite"]

    def existing_without_overwrite():
        out = tmp / "plain"
        _library_run(out)
        return GEN + ["--out", str(out)]

    def home():
        (tmp / "home" / "Documents").mkdir(parents=True)
        (tmp / "home" / "Documents" / "cv.txt").write_text("mine")
        return GEN + ["--out", str(tmp / "home"), "--overwrite"]

    def home_without_overwrite():
        (tmp / "home").mkdir(exist_ok=True)
        return GEN + ["--out", str(tmp / "home") + "/."]

    def root():
        return GEN + ["--out", "/", "--overwrite"]

    def locked_by_live_process():
        out = tmp / "busy"
        _library_run(out)
        _lock(out, live_pid)
        return GEN + ["--out", str(out), "--overwrite"]

    def locked_train():
        out = tmp / "busy-train"
        _lock(out, live_pid)
        return TOY + ["--out", str(out)]

    def locked_resume():
        out = tmp / "busy-resume"
        _lock(out, live_pid)
        return TOY + ["--out", str(out), "--resume", "latest"]

    def locked_by_another_host():
        out = tmp / "elsewhere"
        _lock(out, 4242, host="some-other-host")
        return ["toy2d", "--steps", "3", "--no-progress", "--out", str(out)]

    return [
        ("user-file", user_file_beside_results, "did not write (notes.txt)"),
        ("prompts-inside", prompts_inside_out, "(--prompts) lies inside the --out folder"),
        ("own-entry-input", prompts_written_by_library_inside_out, "(--prompts) lies inside the --out folder"),
        ("adapter-inside", adapter_inside_out, "(--adapter) lies inside the --out folder"),
        ("no-manifest", no_manifest, "per_prompt.jsonl, results.json"),
        ("file", out_is_a_file, "is not a folder"),
        ("no-overwrite", existing_without_overwrite, "already holds results"),
        ("home", home, "is the home folder"),
        ("home-no-overwrite", home_without_overwrite, "is the home folder"),
        ("root", root, "is the root folder"),
        ("live-lock", locked_by_live_process, f"in use by another run (pid {live_pid} on host"),
        ("live-lock-train", locked_train, f"pid {live_pid}"),
        ("live-lock-resume", locked_resume, f"pid {live_pid}"),
        ("other-host", locked_by_another_host, "if that run is gone, delete"),
    ]


def test_refusals_are_one_line_exit_2_and_delete_nothing(tmp_path, sleeper, shapes_run, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, setup, message in _refusals(tmp_path, sleeper, shapes_run):
        argv = setup()
        capsys.readouterr()
        before = {**_snapshot(tmp_path), **_snapshot(shapes_run)}
        code = main(argv)
        line = _one_line(capsys.readouterr().err)
        assert code == 2 and message in line, (name, line)
        assert {**_snapshot(tmp_path), **_snapshot(shapes_run)} == before, name  # not a byte changed
    assert (tmp_path / "busy" / LOCK_FILE).is_file()  # a live run's lock stays


@pytest.mark.parametrize("out,flags", [(".", ["--overwrite"]), (".", []), ("..", ["--overwrite"]),
                                       ("../..", ["--overwrite"])], ids=["cwd-overwrite", "cwd", "parent", "grandparent"])
def test_the_current_folder_and_its_parents_are_refused(tmp_path, out, flags):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    for folder in (cwd, cwd.parent, tmp_path):
        (folder / "notes.txt").write_text(str(folder))
    before = _snapshot(tmp_path)
    done = subprocess.run(_cli(*GEN, "--out", out, *flags), cwd=cwd, env=_env(), capture_output=True, text=True)
    line = _one_line(done.stderr)
    assert done.returncode == 2 and ("current folder" in line or "parent of the current folder" in line), line
    assert "nothing was deleted" in line
    assert _snapshot(tmp_path) == before


def test_an_empty_current_folder_may_be_the_output(tmp_path):
    done = subprocess.run(_cli(*GEN, "--out", "."), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _manifest(tmp_path) == sorted(_top(tmp_path)) and len(_top(tmp_path)) == 1


# -- what --overwrite removes, and the manifest ----------------------------------------------------

def test_the_manifest_lists_what_a_command_wrote_and_the_lock_is_released(tmp_path):
    for argv, out in [(TOY, tmp_path / "toy"), (GEN + ["--num-images", "2"], tmp_path / "gen"),
                      (["toy2d", "--steps", "3", "--n-eval", "100", "--no-progress"], tmp_path / "t2d")]:
        assert main(argv + ["--out", str(out)]) == 0
        assert _manifest(out) == sorted(_top(out)) and _top(out), out
        assert not (out / LOCK_FILE).exists()
        assert "in_progress" not in json.loads((out / MANIFEST_FILE).read_text())
    assert {"adapter", "checkpoints", "metrics.jsonl"} <= set(_manifest(tmp_path / "toy"))


def test_overwrite_replaces_exactly_the_library_entries(tmp_path):
    out = tmp_path / "gen"
    _library_run(out)
    first = _top(out)
    assert main(["generate", "--prompt", "a photo of a blue square", "--out", str(out), "--overwrite"]) == 0
    second = _top(out)
    assert first.isdisjoint(second) and len(second) == 1 and "blue-square" in next(iter(second))
    assert _manifest(out) == sorted(second)

    toy = tmp_path / "toy"
    assert main(TOY + ["--out", str(toy)]) == 0
    assert main(TOY + ["--out", str(toy), "--overwrite", "--seed", "1"]) == 0
    assert _manifest(toy) == sorted(_top(toy))
    steps = [json.loads(l)["step"] for l in (toy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # the log was replaced, not appended to


def test_resume_keeps_the_folder_and_extends_the_manifest(tmp_path):
    out = tmp_path / "toy"
    assert main(TOY + ["--out", str(out), "--checkpoint-every", "1"]) == 0
    (out / "notes.txt").write_text("mine")  # resume removes nothing, not even what is not the library's
    assert main(TOY + ["--out", str(out), "--checkpoint-every", "1", "--resume", "latest"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert "notes.txt" not in _manifest(out) and {"adapter", "checkpoints", "metrics.jsonl"} <= set(_manifest(out))
    assert not (out / LOCK_FILE).exists()


def test_an_interrupted_command_records_what_it_wrote_and_releases_the_lock(tmp_path, monkeypatch, capsys):
    import hypernoise.methods.generate as generate

    real = generate.save_png

    def save_then_interrupt(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "save_png", save_then_interrupt)
    out = tmp_path / "gen"
    assert main(GEN + ["--num-images", "3", "--out", str(out)]) == 130
    assert not (out / LOCK_FILE).exists()
    assert _manifest(out) == sorted(_top(out)) and len(_top(out)) == 1
    monkeypatch.setattr(generate, "save_png", real)
    assert main(GEN + ["--out", str(out), "--overwrite"]) == 0  # and so --overwrite may replace it


def test_a_command_that_fails_before_writing_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(TOY + ["--resume", str(tmp_path / "no-checkpoint"), "--out", str(out)]) == 2
    assert "does not exist" in _one_line(capsys.readouterr().err)
    assert not out.exists()


# -- the lock ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("holder", ["dead-pid", "this-pid", "empty-file"])
def test_a_stale_lock_is_taken_over(tmp_path, holder):
    out = tmp_path / "gen"
    _library_run(out)
    if holder == "empty-file":
        (out / LOCK_FILE).write_text("")  # its creator died before writing it
    else:
        _lock(out, _dead_pid() if holder == "dead-pid" else os.getpid())  # this pid: a dead run's, reused
    assert main(GEN + ["--out", str(out), "--overwrite"]) == 0
    assert not (out / LOCK_FILE).exists() and _manifest(out) == sorted(_top(out))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from Linux /proc")
def test_a_lock_whose_pid_was_reused_by_another_process_is_stale(tmp_path, sleeper):
    """The run that wrote the lock died and its pid now names an unrelated live process (a crash,
    or a reboot): the lock records the process's boot id and start time, which no longer match."""
    out = tmp_path / "gen"
    _library_run(out)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    start = Path(f"/proc/{sleeper}/stat").read_text().rpartition(")")[2].split()[19]
    holder = {"pid": sleeper, "host": socket.gethostname(), "command": "hypernoise train"}
    (out / LOCK_FILE).write_text(json.dumps({**holder, "process": f"{boot}:{start}"}))  # the live holder itself
    assert main(GEN + ["--out", str(out), "--overwrite"]) == 2
    (out / LOCK_FILE).write_text(json.dumps({**holder, "process": f"{boot}:{int(start) - 1}"}))  # an earlier process
    assert main(GEN + ["--out", str(out), "--overwrite"]) == 0
    assert not (out / LOCK_FILE).exists()


def test_a_second_command_on_a_running_output_is_refused(tmp_path):
    """A real run holds the lock; a second one on the same --out is refused in one line."""
    out = tmp_path / "run"
    first = subprocess.Popen(_cli("toy2d", "--steps", "100000", "--no-progress", "--out", str(out)),
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.time()
        while not (out / LOCK_FILE).exists():
            assert first.poll() is None and time.time() - start < 60, first.communicate()
            time.sleep(0.05)
        holder = json.loads((out / LOCK_FILE).read_text())
        assert holder["pid"] == first.pid and holder["command"] == "hypernoise toy2d"
        second = subprocess.run(_cli(*TOY, "--out", str(out), "--overwrite"), env=_env(), capture_output=True,
                                text=True)
        line = _one_line(second.stderr)
        assert second.returncode == 2 and f"pid {first.pid}" in line and "hypernoise toy2d" in line, line
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130 and not (out / LOCK_FILE).exists()  # interrupted: checkpoint, lock released
    assert _manifest(out) == sorted(_top(out))


def test_a_killed_run_leaves_a_stale_lock_and_its_files_stay_the_librarys(tmp_path):
    out = tmp_path / "killed"
    args = _cli("toy2d", "--steps", "100000", "--checkpoint-every", "20", "--no-progress", "--out", str(out))
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.time()
    while not (out / "checkpoints").is_dir() or not any((out / "checkpoints").iterdir()):
        assert proc.poll() is None and time.time() - start < 120, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / LOCK_FILE).exists()  # no chance to release it
    killed = {p.name for p in (out / "checkpoints").iterdir()}
    rerun = ["toy2d", "--steps", "3", "--n-eval", "100", "--no-progress", "--out", str(out)]
    assert main(rerun) == 2  # refused (the folder holds results), yet the stale lock was taken over...
    assert not (out / LOCK_FILE).exists() and _manifest(out) == sorted(_top(out))  # ...and its files recorded
    assert main(rerun + ["--overwrite"]) == 0
    assert not (out / LOCK_FILE).exists() and _manifest(out) == sorted(_top(out))
    assert killed.isdisjoint(p.name for p in (out / "checkpoints").iterdir())  # the killed run's were removed


# -- pipes as prompt files ------------------------------------------------------------------------

def test_dev_stdin_as_the_prompt_file(tmp_path):
    done = subprocess.run(_cli("generate", "--prompts", "/dev/stdin", "--out", str(tmp_path / "o")), env=_env(),
                          input=f"{PROMPT}\na photo of a blue square\n", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "o").glob("*.png"))) == 2


def test_a_named_pipe_as_the_prompt_file(tmp_path):
    fifo = tmp_path / "prompts.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(PROMPT + "\n"))
    writer.start()
    try:
        assert main(["generate", "--prompts", str(fifo), "--out", str(tmp_path / "o")]) == 0
    finally:
        writer.join(timeout=30)
    assert len(list((tmp_path / "o").glob("*.png"))) == 1


def test_a_folder_as_the_prompt_file_is_one_line(tmp_path, capsys):
    assert main(["generate", "--prompts", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is a folder" in _one_line(capsys.readouterr().err)


# -- the library's own entry points ----------------------------------------------------------------

def test_output_folder_in_the_library(tmp_path):
    from hypernoise.errors import OutputExistsError
    from hypernoise.io import output_folder, prepare_output

    out = tmp_path / "lib"
    with output_folder(out, command="mine") as folder:
        (folder / "a.txt").write_text("a")
        with pytest.raises(OutputExistsError, match="in use by this process"):
            with output_folder(tmp_path / "." / "lib", overwrite=True):
                pass
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert _manifest(out) == ["a.txt"] and not (out / LOCK_FILE).exists()
    assert prepare_output(out, overwrite=True) == out and not _top(out) and _manifest(out) == []  # a.txt: ours
    assert prepare_output(tmp_path / "new").is_dir()
