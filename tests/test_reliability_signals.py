"""Interrupted commands keep their work (issue 19, principle 5): SIGINT/SIGTERM during `evaluate`,
`optimize` and `bench` write what is finished (results marked partial), print one line saying so
and how to go on, and exit 130; `optimize --resume latest` continues with the next prompt.

The signal itself is sent to a real process for `optimize`; `evaluate` and `bench` are stopped at
an exact point in-process (a KeyboardInterrupt where the signal would land), which is what makes
"the first k prompts" deterministic.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

import hypernoise.bench
import hypernoise.evaluation
from hypernoise.cli.main import main

PROMPTS = ["a photo of a red circle", "a photo of a blue square", "a photo of a green triangle"]


def _prompt_file(tmp_path, prompts=PROMPTS):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return path


def _interrupt_on_call(monkeypatch, module, name, at: int):
    """``module.name`` raises KeyboardInterrupt on its ``at``-th call (1-based), as a signal would."""
    real, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _last_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines and "Traceback" not in err, err
    return lines[-1]


def test_an_interrupted_evaluate_writes_the_finished_prompts_marked_partial(tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    # 2 seeds, batch 2: one batch per prompt; the 3rd batch (prompt 3) is interrupted
    _interrupt_on_call(monkeypatch, hypernoise.evaluation, "seeded_noise", at=5)
    argv = ["evaluate", "--generator", "shapes", "--prompts", str(_prompt_file(tmp_path)), "--seeds", "0,1",
            "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 130
    line = _last_line(capsys.readouterr().err)
    assert "results.json holds the first 2 of 3 prompts" in line and "--overwrite" in line, line
    results = json.loads((out / "results.json").read_text())
    assert results["partial"] is True and results["n_prompts"] == 2 and results["n_prompts_planned"] == 3
    assert results["n_images"] == 4 and "geneval" in results
    rows = [json.loads(l) for l in (out / "per_prompt.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS[:2]


def test_the_partial_scores_are_those_of_the_full_run(tmp_path, monkeypatch):
    """The finished prompts of an interrupted evaluation score exactly as in an uninterrupted one."""
    full = tmp_path / "full"
    argv = ["evaluate", "--generator", "shapes", "--prompts", str(_prompt_file(tmp_path)), "--seeds", "0,1",
            "--batch-size", "2"]
    assert main(argv + ["--out", str(full)]) == 0
    _interrupt_on_call(monkeypatch, hypernoise.evaluation, "seeded_noise", at=5)
    assert main(argv + ["--out", str(tmp_path / "part")]) == 130
    rows = {name: [json.loads(l) for l in (tmp_path / name / "per_prompt.jsonl").read_text().splitlines()]
            for name in ("full", "part")}
    assert rows["part"] == rows["full"][:2]


def test_an_evaluate_interrupted_before_any_prompt_finished_writes_nothing(tmp_path, monkeypatch, capsys):
    _interrupt_on_call(monkeypatch, hypernoise.evaluation, "seeded_noise", at=1)
    out = tmp_path / "eval"
    argv = ["evaluate", "--generator", "shapes", "--prompts", str(_prompt_file(tmp_path)), "--out", str(out)]
    assert main(argv) == 130
    assert "nothing was written" in _last_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.slow  # a real bench up to ReNO: ~12 s; the partial path itself is also covered by the next test
def test_an_interrupted_bench_keeps_the_finished_methods_and_names_the_trained_adapter(tmp_path, monkeypatch, capsys):
    real = hypernoise.bench.evaluate

    def evaluate(generator, prompts, cfg, *args, **kwargs):
        if cfg.method == "reno":
            raise KeyboardInterrupt
        return real(generator, prompts, cfg, *args, **kwargs)

    monkeypatch.setattr(hypernoise.bench, "evaluate", evaluate)
    out = tmp_path / "bench"
    argv = ["bench", "--generator", "shapes", "--steps", "2", "--curve-points", "1", "--seeds", "0", "--iters", "2",
            "--n", "2", "--no-progress", "--out", str(out)]
    assert main(argv) == 130
    line = _last_line(capsys.readouterr().err)
    adapter = out / "train-hypernoise" / "adapter"
    assert "(base, hypernoise)" in line and f"--hypernoise-adapter {adapter}" in line, line
    bench = json.loads((out / "bench.json").read_text())
    assert bench["partial"] is True and bench["finished"] == ["base", "hypernoise"]
    assert set(bench["methods"]) == {"base", "hypernoise"} and not (out / "bench.md").exists()
    assert (adapter / "hypernoise.json").is_file()


def test_a_bench_interrupted_while_training_writes_no_adapter_and_says_so(tmp_path, monkeypatch, capsys):
    from hypernoise.training.trainer import TrainResult

    def interrupted_training(cfg, prompts, out, **kwargs):
        return None, TrainResult(step=1, skipped_steps=0, interrupted=True)

    monkeypatch.setattr(hypernoise.bench, "train", interrupted_training)
    out = tmp_path / "bench"
    assert main(["bench", "--generator", "shapes", "--steps", "2", "--seeds", "0", "--no-progress",
                 "--out", str(out)]) == 130
    line = _last_line(capsys.readouterr().err)
    assert "(base)" in line and "--hypernoise-adapter" not in line, line
    assert json.loads((out / "bench.json").read_text())["finished"] == ["base"]


def test_optimize_interrupted_by_sigterm_keeps_finished_prompts_and_resumes(tmp_path):
    """A real SIGTERM after the first prompt: its row and image stay, one line says how to go on;
    --resume latest optimises only the rest, and the rows equal an uninterrupted run's."""
    prompts = _prompt_file(tmp_path, PROMPTS * 20)
    out = tmp_path / "opt"
    argv = [sys.executable, "-m", "hypernoise.cli.main", "optimize", "--generator", "shapes", "--prompts", str(prompts),
            "--iters", "2", "--no-progress", "--threads", "1", "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # "[1/60] ...": the first prompt is finished
    assert first.startswith("[1/60]"), first + proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    line = _last_line(err)
    done = len((out / "results.jsonl").read_text().splitlines())
    assert proc.returncode == 130 and f"interrupted: {done} of 60 prompts finished" in line, err
    assert f"--resume latest --out {out}" in line and 1 <= done < 60
    assert len(list(out.glob("*-best.png"))) >= done

    assert main(argv[3:] + ["--resume", "latest"]) == 0
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(60))
    again = tmp_path / "again"
    assert main(argv[3:-1] + [str(again)]) == 0
    fresh = [json.loads(l) for l in (again / "results.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "cost"} for r in rs]  # noqa: E731
    assert strip(rows) == strip(fresh)


@pytest.mark.parametrize("change, message", [
    (["--iters", "3"], "--iters differ (the run: 2, now: 3)"),
    (["--seed", "5"], "--seed differ"),
    (["--reward", "shapes:2"], "--reward differ"),
])
def test_optimize_resume_with_other_settings_is_refused(tmp_path, capsys, change, message):
    out = tmp_path / "opt"
    argv = ["optimize", "--generator", "shapes", "--prompt", PROMPTS[0], "--iters", "2", "--no-progress",
            "--out", str(out)]
    assert main(argv) == 0
    before = (out / "results.jsonl").read_bytes()
    args = [a for a in argv if a not in ("--iters", "2")] if change[0] == "--iters" else argv
    assert main(args + change + ["--resume", "latest"]) == 2
    assert message in _last_line(capsys.readouterr().err)
    assert (out / "results.jsonl").read_bytes() == before


def test_optimize_resume_without_a_run_says_so(tmp_path, capsys):
    out = tmp_path / "opt"
    argv = ["optimize", "--generator", "shapes", "--prompt", PROMPTS[0], "--iters", "2", "--no-progress",
            "--resume", "latest", "--out", str(out)]
    assert main(argv) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert main(argv) == 0
    assert "all 1 prompts" in capsys.readouterr().out
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(argv[:-1] + [str(other)]) == 2
    assert "holds no optimize.json" in _last_line(capsys.readouterr().err)
    assert (other / "notes.txt").read_text() == "mine"


def test_commands_that_cannot_resume_do_not_suggest_it(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["generate", "--generator", "shapes", "--prompt", PROMPTS[0], "--num-images", "1", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 2
    line = _last_line(capsys.readouterr().err)
    assert "already holds results" in line and "--resume" not in line and "--overwrite" in line, line
    assert main(["evaluate", "--generator", "shapes", "--out", str(out)]) == 2  # evaluate can resume: it says so
    line = _last_line(capsys.readouterr().err)
    assert "already holds results" in line and "--resume latest" in line and "--overwrite" in line, line
