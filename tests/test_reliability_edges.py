"""The last edges (issue 30): every input path one clear line, nothing the user owns touched.

Each case runs the command as a user does (``main([...])`` in-process, a subprocess where a kill
is part of it) in a folder beside files the user owns, and checks the one line on stderr, the exit
status, and that those files are byte-identical afterwards. The table is by class: prompt specs
and files (a parser that trusted its input's depth or size, a value that names nothing), the
environment read loosely, folders written through or over (data lost), names that are not what
they seem (messages).
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hypernoise.adapter import save_adapter
from hypernoise.allocator import wanted
from hypernoise.cli.main import main
from hypernoise.env import check_environment
from hypernoise.errors import ConfigError, InputFileError
from hypernoise.generators import build_generator
from hypernoise.hypernet import MLPHypernetwork
from hypernoise.io import LOCK_FILE, MANIFEST_FILE, load_json, output_folder, read_prompt_records
from hypernoise.prompts import load_prompts

CIRCLE, SQUARE = "a photo of a red circle", "a photo of a blue square"
TOY = ["train", "--generator", "toy2d", "--steps", "3", "--no-progress"]
GEN = ["generate", "--generator", "shapes", "--prompt", CIRCLE]


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` (bytes; a link as its target) and every folder (None)."""
    return {p: (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _run(argv, capsys):
    """(exit status, the lines on stderr, stderr) of ``hypernoise ARGV``."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [l for l in err.splitlines() if l.strip()], err


def _one_line(argv, capsys, code: int, *messages: str):
    got, lines, err = _run(argv, capsys)
    assert got == code and len(lines) == 1 and "Traceback" not in err, f"{argv}: exit {got}, stderr {err!r}"
    for message in messages:
        assert message in lines[0], f"{argv}: {lines[0]!r} lacks {message!r}"
    return lines[0]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user's folder (the current one): notes and prompt files they own, and bad inputs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "p.txt").write_text(CIRCLE + "\n")
    (tmp_path / "my,prompts.txt").write_text(CIRCLE + "\n")
    (tmp_path / "deep.json").write_text("[" * 200_000)
    (tmp_path / "deep.jsonl").write_text('{"prompt": ' + "[" * 200_000 + "}\n")
    (tmp_path / "big.json").write_text('["a", ' + "1" * 5000 + "]")
    (tmp_path / "big.jsonl").write_text('{"prompt": "a", "n": ' + "1" * 5000 + "}\n")
    (tmp_path / "huge.txt").write_text("a" * 10_000_000 + "\n")
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "' + CIRCLE.encode() + b'"}\n')
    (tmp_path / "list.json").write_text(json.dumps([CIRCLE, SQUARE], indent=2) + "\n")
    return tmp_path


# ----------------------------------------------------------------- prompt specs and files

@pytest.mark.parametrize("argv, message", [
    (TOY + ["--prompts", "p.txt*²"], "must be an integer from 1 to 1000"),
    (TOY + ["--prompts", "p.txt*1000000000000"], "must be an integer from 1 to 1000"),
    (TOY + ["--prompts", "*2"], "is a weight with no source before it; write FILE*2"),
    (TOY + ["--prompts", "p.txt,,p.txt"], "has an empty part between commas"),
    (TOY + ["--prompts", "deep.json"], "nests 200000 levels deep (at most 100)"),
    (TOY + ["--prompts", "deep.jsonl"], "deep.jsonl:1: malformed JSON (nests 200001 levels deep"),
    (TOY + ["--prompts", "big.json"], "holds a number of 5000 characters (at most 100)"),
    (TOY + ["--prompts", "big.jsonl"], "big.jsonl:1: malformed JSON (holds a number of 5000 characters"),
    (TOY + ["--prompts", "/dev/zero"], "prompt file /dev/zero holds a NUL byte (byte 0): it is not text"),
    (TOY + ["--prompts", "huge.txt"], "huge.txt:1: a prompt of 10000000 characters (at most 10000)"),
    (TOY + ["--prompts", "my,nope.txt"], "--prompts splits at commas, so 'my,nope.txt' names 2 sources"),
    (TOY + ["--prompts", ""], "empty --prompts: it names nothing"),
    (TOY + ["--validation-prompts", " "], "empty --validation-prompts: it names nothing"),
    (GEN + ["--prompts", "deep.jsonl", "--out", "o"], "malformed JSON (nests 200001 levels deep"),
    (GEN + ["--prompts", "/dev/zero", "--out", "o"], "holds a NUL byte"),
    (GEN + ["--adapter", "", "--out", "o"], "empty --adapter"),
    (["push-to-hub", "", "me/x"], "empty ADAPTER_DIR: it names nothing; pass a value"),
])
def test_a_prompt_spec_or_file_that_cannot_be_read_is_one_line(home, capsys, argv, message):
    before = _snapshot(home)
    line = _one_line(argv + (["--out", "out"] if argv[0] == "train" else []), capsys, 2, message)
    assert len(line) < 400  # the input is not quoted whole, however large
    assert _snapshot(home) == before and not (home / "out").exists() and not (home / "o").exists()


def test_prompt_files_are_read_as_what_they_are(home, capsys):
    """A BOM is not part of the first prompt, a pretty-printed JSON list is a list (for every
    command), and a file whose name holds a comma is read whole when it is the only source."""
    assert read_prompt_records(home / "bom.jsonl") == [{"prompt": CIRCLE}]
    assert load_prompts("my,prompts.txt") == [CIRCLE] and load_prompts("list.json*2") == [CIRCLE, SQUARE] * 2
    assert load_prompts("p.txt*2,list.json") == [CIRCLE, CIRCLE, SQUARE]  # a weighted mix is still a mix
    assert main(["generate", "--generator", "shapes", "--prompts", "list.json", "--out", "imgs"]) == 0
    assert sorted(p.name for p in (home / "imgs").glob("*.png")) == [
        "000-a-photo-of-a-red-circle-seed0.png", "001-a-photo-of-a-blue-square-seed0.png"]


def test_json_readers_are_bounded_in_depth_and_number_size():
    assert load_json('{"a": [1, 2.5, "[[[["]}') == {"a": [1, 2.5, "[[[["]}
    for text, why in (("[" * 101 + "]" * 101, "nests 101 levels deep"), ("[" + "9" * 101 + "]", "101 characters")):
        with pytest.raises(ValueError, match=why):
            load_json(text)


# ----------------------------------------------------------------- the environment, read like an option

@pytest.mark.parametrize("env, message", [
    ({"HYPERNOISE_MALLOC_TUNING": "disable"}, "HYPERNOISE_MALLOC_TUNING='disable', which is neither on nor off"),
    ({"HF_HUB_OFFLINE": "maybe"}, "HF_HUB_OFFLINE='maybe', which is neither on nor off"),
    ({"HYPERNOISE_KILL_AT": "step"}, "each item is step:N or checkpoint:N"),
])
def test_an_environment_variable_of_no_meaning_is_one_line(home, capsys, monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = _snapshot(home)
    _one_line(GEN + ["--out", "o"], capsys, 2, message, "set it" if "KILL" not in message else "unset it")
    assert _snapshot(home) == before and not (home / "o").exists()


def test_switches_read_their_values_strictly():
    assert wanted({"HYPERNOISE_MALLOC_TUNING": "disable"}) is False  # hands off, and the CLI says why
    assert wanted({"HYPERNOISE_MALLOC_TUNING": "off"}) is False
    check_environment({"HYPERNOISE_MALLOC_TUNING": "", "HF_HUB_OFFLINE": "1", "HYPERNOISE_KILL_AT": "step:3"})
    with pytest.raises(ConfigError, match="neither on nor off"):
        check_environment({"HF_HUB_OFFLINE": "disable"})


def test_a_launcher_environment_left_set_does_not_skip_the_folder_checks(home, capsys, monkeypatch):
    """generate and evaluate never run distributed: WORLD_SIZE=2 RANK=1 does not make them skip the
    lock and the checks of their folder (they overwrote the user's files)."""
    user = home / "userdir"
    user.mkdir()
    (user / "000-a-photo-of-a-red-circle-seed0.png").write_bytes(b"my picture")
    (user / "results.json").write_text("{}")
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    before = _snapshot(home)
    _one_line(GEN + ["--out", user], capsys, 2, "already holds results")
    _one_line(["evaluate", "--generator", "shapes", "--out", user], capsys, 2, "already holds results")
    assert _snapshot(home) == before and not (user / LOCK_FILE).exists()


# ----------------------------------------------------------------- data lost

def test_overwrite_after_a_killed_run_keeps_the_users_file(tmp_path, capsys):
    """A run killed outright (SIGKILL at step 5): its files are adopted as the library's by the next
    command, a file the user wrote into the folder is not, so --overwrite refuses to remove it."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYPERNOISE_KILL_AT": "step:5"}
    proc = subprocess.run([sys.executable, "-m", "hypernoise.cli.main", *TOY[:3], "--steps", "50",
                           "--checkpoint-every", "2", "--no-progress", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL and (out / LOCK_FILE).exists(), proc.stderr
    (out / "notes.txt").write_text("my notes\n")
    before = _snapshot(tmp_path)
    _one_line(TOY + ["--out", out, "--overwrite"], capsys, 2, "notes.txt", "nothing was deleted")
    assert {p: v for p, v in _snapshot(tmp_path).items() if p.name not in (LOCK_FILE, MANIFEST_FILE)} == \
        {p: v for p, v in before.items() if p.name not in (LOCK_FILE, MANIFEST_FILE)}
    assert {"checkpoints", "metrics.jsonl"} <= set(load_json((out / MANIFEST_FILE).read_text())["entries"])
    (out / "notes.txt").rename(tmp_path / "notes.txt")  # moved away: --overwrite replaces the killed run
    assert main(TOY + ["--out", str(out), "--overwrite"]) == 0


def test_a_file_written_into_a_live_run_folder_stays_the_users(tmp_path):
    with output_folder(tmp_path / "run", command="test", writes=("adapter", "*.png")) as out:
        (out / "adapter").mkdir()
        (out / "000.png").write_bytes(b"png")
        (out / "notes.txt").write_text("written by the user while the run lived")
    assert load_json((out / MANIFEST_FILE).read_text())["entries"] == ["000.png", "adapter"]


@pytest.fixture
def tiny_run(tmp_path):
    """A tiny generator's finished run with validation (best/ holds the user's notes)."""
    (tmp_path / "train.txt").write_text("a red square\na blue circle\n")
    (tmp_path / "v1.txt").write_text("a green square\n")
    (tmp_path / "v2.txt").write_text("a yellow circle\n")
    out = tmp_path / "run"
    assert main(_tiny(tmp_path, "v1.txt", 2) + ["--out", str(out)]) == 0
    (out / "best" / "notes.txt").write_text("why this one is best\n")
    return out


def _tiny(root, validation, steps):
    return ["train", "--generator", "tiny", "--steps", str(steps), "--batch-size", "2", "--reward", "redness",
            "--prompts", str(root / "train.txt"), "--validation-prompts", str(root / validation),
            "--checkpoint-every", "1", "--no-progress"]


def test_resuming_with_other_validation_prompts_keeps_the_users_file_in_best(tiny_run, capsys):
    first = load_json((tiny_run / "best" / "validation.json").read_text())
    assert main(_tiny(tiny_run.parent, "v2.txt", 4) + ["--resume", "latest", "--out", str(tiny_run)]) == 0
    assert load_json((tiny_run / "best" / "validation.json").read_text())["step"] > first["step"]  # best/ rewritten
    assert (tiny_run / "best" / "notes.txt").read_text() == "why this one is best\n"


def test_resume_with_nothing_to_resume_never_writes_over_the_users_files(tmp_path, capsys):
    user = tmp_path / "userdir"
    (user / "samples").mkdir(parents=True)
    (user / "metrics.jsonl").write_text('{"my": "own log"}\n')
    (user / "samples" / "compare.png").write_bytes(b"my grid")
    before = _snapshot(tmp_path)
    _one_line(TOY + ["--resume", "latest", "--out", user], capsys, 2, "found no checkpoint",
              "metrics.jsonl, samples, which hypernoise did not write", "nothing was written")
    assert _snapshot(tmp_path) == before


def test_resume_never_writes_through_a_link_out_of_the_folder(tmp_path, capsys):
    out, gallery = tmp_path / "d", tmp_path / "gallery"
    assert main(TOY + ["--out", str(out)]) == 0
    capsys.readouterr()
    gallery.mkdir()
    (gallery / "compare.png").write_bytes(b"my best picture")
    (out / "samples").symlink_to(gallery)
    before = _snapshot(tmp_path)
    _one_line(TOY[:3] + ["--steps", "5", "--no-progress", "--resume", "latest", "--out", out], capsys, 2,
              f"{out / 'samples'} is a symbolic link (to {gallery})", "nothing was written")
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------- tracebacks that were

def test_a_lock_naming_a_pid_no_process_can_have_is_stale(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 99999999999999999999, "host": socket.gethostname(),
                                             "command": "x" * 100_000}))
    code, lines, err = _run(GEN + ["--out", out], capsys)
    assert code == 0 and "Traceback" not in err and list(out.glob("*.png")), err


def test_the_meta_device_is_refused(tmp_path, capsys):
    _one_line(GEN + ["--device", "meta", "--out", tmp_path / "o"], capsys, 2, "--device meta holds no data")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------- settings said, not guessed

def test_a_rank_keeps_the_presets_lora_scale():
    from types import SimpleNamespace

    from hypernoise.methods.hypernoise import ModelConfig
    from hypernoise.presets import default_config

    for generator, rank, alpha in (("sana-sprint", 2, 4.0), ("sd-turbo", 2, 2.0), ("flux-schnell", 4, 20.0)):
        gen = SimpleNamespace(name=generator, pretrained=None)
        cfg = default_config(gen, model=ModelConfig(generator=generator), rank=rank)
        assert (cfg.lora.rank, cfg.lora.alpha) == (rank, alpha), generator
    gen = SimpleNamespace(name="sana-sprint", pretrained=None)
    paper = default_config(gen, model=ModelConfig(generator="sana-sprint"), preset="paper", rank=2)
    assert paper.lora.alpha == 4.0  # was 256: a LoRA scale of 128
    assert default_config(gen, model=ModelConfig(generator="sana-sprint"), rank=2, lora_alpha=7).lora.alpha == 7


@pytest.fixture
def adapters(tmp_path):
    """A HyperNoise adapter (tiny) and a fine-tuning one (its metadata's type)."""
    gen = build_generator("tiny")
    hyper = save_adapter(tmp_path / "hn" / "adapter", MLPHypernetwork(gen.latent_shape), gen)
    fine = tmp_path / "ft" / "adapter"
    fine.mkdir(parents=True)
    for f in hyper.iterdir():
        (fine / f.name).write_bytes(f.read_bytes())
    meta = load_json((fine / "hypernoise.json").read_text())
    (fine / "hypernoise.json").write_text(json.dumps({**meta, "hypernetwork": {"type": "finetune-lora", "rank": 2}}))
    return hyper, fine


def test_names_that_are_not_what_they_seem_are_said(tmp_path, capsys, adapters):
    hyper, fine = adapters
    before = _snapshot(tmp_path)
    out = ["--out", tmp_path / "o"]
    tiny = ["generate", "--generator", "tiny", "--prompt", "a"]
    cases = [
        (["train", "--generator", "nosuchgen", "--preset", "paper", *out], "unknown generator 'nosuchgen'; choose one of"),
        (tiny + ["--adapter", "owner/..", *out], "not a local folder, nor a valid Hub id"),
        (tiny + ["--adapter", fine, *out], "is a fine-tuning adapter", "--method finetune --adapter"),
        (["evaluate", "--generator", "tiny", "--method", "hypernoise-reno", "--adapter", fine, *out],
         "is a fine-tuning adapter"),
        (["push-to-hub", hyper / "hypernoise.json", "me/x"], f"pass the folder itself: {hyper}"),
        (["bench", "--generator", "tiny", "--finetune-adapter", hyper, *out],
         "--finetune-adapter", "is a HyperNoise adapter; pass it as --hypernoise-adapter"),
        (["train", "--generator", "toy2d", "--push-to-hub", "--hub-model-id", "not a valid/repo id", *out],
         "--hub-model-id must be NAME or OWNER/NAME", "nothing was trained"),
    ]
    for argv, *messages in cases:
        _one_line(argv, capsys, 2, *messages)
    assert _snapshot(tmp_path) == before and not (tmp_path / "o").exists()


def test_a_hub_subfolder_cannot_leave_the_repository():
    from hypernoise.errors import AdapterError
    from hypernoise.hub import parse_hub_id

    with pytest.raises(AdapterError, match="leaves the repository"):
        parse_hub_id("owner/name/../../..")
    with pytest.raises(AdapterError, match="leaves the repository"):
        parse_hub_id("owner/name", subfolder="a/../../b")


def test_a_prompt_file_larger_than_the_limit_is_refused(tmp_path, monkeypatch):
    import hypernoise.io

    monkeypatch.setattr(hypernoise.io, "MAX_PROMPT_FILE_MB", 1)
    path = tmp_path / "many.txt"
    path.write_text("a red square\n" * 100_000)  # 1.3 MB
    with pytest.raises(InputFileError, match="is larger than 1 MiB"):
        read_prompt_records(path)
