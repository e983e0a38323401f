"""Resume never silently continues another run, and never destroys a finished one (issue 19,
principles 2-3): the CLI as a user runs it, the files checked afterwards."""

import hashlib

import pytest

from hypernoise.cli.main import main

TOY = ["train", "--generator", "toy2d", "--steps", "3", "--no-progress"]
TINY = ["train", "--generator", "tiny", "--steps", "2", "--batch-size", "2", "--prompts", "{prompts}", "--no-progress"]


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red square\na blue circle\n")
    return str(path)


def _run(argv, out, capsys, prompts=None):
    code = main([a.format(prompts=prompts) for a in argv] + ["--out", str(out)])
    return code, capsys.readouterr()


@pytest.mark.parametrize("first, again, message", [
    (TOY, TOY + ["--alpha", "0.5"], "its objective.alpha is 1.0, this run's is 0.5"),
    (TOY, TOY + ["--reward", "ring"], "its reward is 'halfplane:1', this run's is 'ring:1'"),
    (TOY, TOY + ["--objective", "l2"], "its objective.kind is 'exact', this run's is 'l2'"),
    (TINY, TINY + ["--method", "finetune"], "its method is 'hypernoise', this run's is 'finetune'"),
    (TINY, TINY + ["--rank", "4"], "its adapter.rank is 16, this run's is 4"),
    (TINY, TINY + ["--reward", "redness:2"], "its reward is 'redness:1', this run's is 'redness:2'"),
    (TINY, ["train", "--generator", "toy2d", "--steps", "3", "--no-progress"], "its generator is 'tiny', this run's is 'toy2d'"),
])
def test_resuming_with_another_setting_is_refused_naming_it(tmp_path, capsys, prompts, first, again, message):
    out = tmp_path / "run"
    extra = ["--reward", "redness"] if first is TINY else []
    assert _run(first + extra, out, capsys, prompts)[0] == 0
    before = _digest(out)
    code, io = _run(again + (extra if "--reward" not in again else []) + ["--resume", "latest"], out, capsys, prompts)
    lines = [l for l in io.err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "belongs to another run" in lines[0], io.err
    assert message in lines[0], lines[0]
    assert "--out" in lines[0] and "Traceback" not in io.err
    assert _digest(out) == before  # nothing written, nothing lost


def test_resume_latest_on_a_finished_run_without_checkpoints_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(TOY, out, capsys)[0] == 0
    for ckpt in (out / "checkpoints").iterdir():
        for f in ckpt.iterdir():
            f.unlink()
        ckpt.rmdir()
    before = _digest(out)
    code, io = _run(TOY + ["--steps", "5", "--resume", "latest"], out, capsys)
    assert code == 2 and "found no checkpoint" in io.err and "finished run" in io.err and "--overwrite" in io.err, io.err
    assert _digest(out) == before  # the adapter and metrics of the finished run are intact


def test_resume_latest_with_nothing_to_resume_says_so_and_starts_fresh(tmp_path, capsys):
    code, io = _run(TOY + ["--resume", "latest"], tmp_path / "new", capsys)
    assert code == 0 and "nothing to resume" in io.out
    assert (tmp_path / "new" / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_with_the_same_settings_still_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(TOY, out, capsys)[0] == 0
    code, io = _run(TOY[:3] + ["--steps", "5", "--no-progress", "--resume", "latest"], out, capsys)
    assert code == 0 and "trained 5 steps" in io.out, io.err
