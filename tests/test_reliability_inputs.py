"""Every input is checked where it is read (issue 19: "Nothing lost, ever", principles 6-8).

Each bad value, at the command line, is one line on stderr naming the flag, exit status 2, no
traceback and nothing written; the same value given to the library's config dataclasses is a
``ConfigError`` whose ``field`` names the setting. Corrupt metadata of any JSON type is an
``AdapterError`` / ``CheckpointError``, never a traceback.
"""

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from hypernoise.adapter import load_adapter, read_metadata, resolve_adapter_folder, save_adapter
from hypernoise.bench import BenchConfig
from hypernoise.cli.main import build_parser, main
from hypernoise.devices import check_launch_env, resolve_device
from hypernoise.errors import AdapterError, CheckpointError, ConfigError
from hypernoise.evaluation import EvalConfig
from hypernoise.generators import build_generator
from hypernoise.hypernet import MLPHypernetwork
from hypernoise.hypernet.base import MAX_PASSES, check_passes
from hypernoise.methods.best_of_n import best_of_n
from hypernoise.methods.finetune import load_finetune_adapter
from hypernoise.methods.reno import RenoConfig
from hypernoise.objective import ObjectiveConfig
from hypernoise.training.checkpoint import load_checkpoint
from hypernoise.training.config import MAX_SEED, TrainConfig

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ----------------------------------------------------------------- fixtures


@pytest.fixture
def world(tmp_path):
    """A tiny generator's training run folder (RUN/adapter), a bare peft folder, a checkpoint and
    a folder that must stay as it is."""
    gen = build_generator("tiny")
    run = tmp_path / "run"
    save_adapter(run / "adapter", MLPHypernetwork(gen.latent_shape), gen)
    keep = tmp_path / "existing"
    keep.mkdir()
    (keep / "keep.txt").write_text("mine")
    return tmp_path


def _corrupt_adapter(root: Path, name: str, meta=None, peft=None) -> Path:
    """A copy of the run's adapter folder with hypernoise.json (or a bare adapter_config.json) replaced."""
    folder = root / name
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes((root / "run" / "adapter" / "adapter_model.safetensors").read_bytes())
    if meta is not None:
        (folder / "hypernoise.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    if peft is not None:
        (folder / "adapter_config.json").write_text(peft if isinstance(peft, str) else json.dumps(peft))
    return folder


def _good_meta(root: Path) -> dict:
    return json.loads((root / "run" / "adapter" / "hypernoise.json").read_text())


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_error(argv, capsys, env=None, monkeypatch=None):
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    try:
        code = main(argv)
    finally:
        for k in env or {}:
            monkeypatch.delenv(k, raising=False)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    return code, lines, err


# ----------------------------------------------------------------- the table

TRAIN = ["train", "--generator", "toy2d", "--no-progress"]
TINY = ["--generator", "tiny"]


def _cases(tmp: Path):
    """(argv, expected text of the one line, environment) for each bad input."""
    out = ["--out", str(tmp / "out")]
    run, adapter = tmp / "run", tmp / "run" / "adapter"
    gen_a = ["generate", *TINY, "--prompt", "a", *out, "--adapter"]
    cases = [
        # 7. numbers: infinities, NaN, meaningless signs, caps
        (TRAIN + ["--alpha", "inf", *out], "--alpha must be a finite number, got inf"),
        (TRAIN + ["--alpha", "nan", *out], "--alpha must be a finite number, got nan"),
        (TRAIN + ["--alpha", "0", *out], "--alpha must be positive"),
        (TRAIN + ["--alpha-start=-inf", *out], "--alpha-start must be a finite number"),
        (TRAIN + ["--lr", "nan", *out], "--lr must be a finite number, got nan"),
        (TRAIN + ["--lr", "inf", *out], "--lr must be a finite number, got inf"),
        (TRAIN + ["--lr", "1e-3x", *out], "--lr must be a number, got '1e-3x'"),
        (TRAIN + ["--max-grad-norm", "-1", *out], "--max-grad-norm must be a number >= 0, got -1.0"),
        (TRAIN + ["--max-grad-norm", "nan", *out], "--max-grad-norm must be a finite number"),
        (TRAIN + ["--weight-decay", "-0.1", *out], "--weight-decay must be a number >= 0"),
        (TRAIN + ["--reg-weight", "-1", *out], "--reg-weight must be a number >= 0"),
        (TRAIN + ["--lora-alpha", "0", *out], "--lora-alpha must be a positive number"),
        (TRAIN + ["--rank", "0", *out], "--rank must be a positive integer"),
        (TRAIN + ["--steps", "1.5", *out], "--steps must be an integer, got '1.5'"),
        (TRAIN + ["--gradient-accumulation-steps", "0", *out], "--gradient-accumulation-steps must be a positive integer"),
        (TRAIN + ["--checkpoints-total-limit", "-1", *out], "--checkpoints-total-limit must be a positive integer, got -1"),
        (TRAIN + ["--checkpoints-total-limit", "0", *out], "--checkpoints-total-limit must be a positive integer, got 0"),
        (TRAIN + ["--checkpoint-every", "-5", *out], "--checkpoint-every must be an integer >= 0, got -5"),
        (TRAIN + ["--warmup-steps", "-1", *out], "--warmup-steps must be an integer >= 0"),
        (TRAIN + ["--lipschitz-every", "-2", *out], "--lipschitz-every must be an integer >= 0"),
        (TRAIN + ["--alpha-ramp", "-1", "5", *out], "--alpha-ramp must be an integer >= 0, got -1"),
        (TRAIN + ["--seed", "-1", *out], f"--seed must be an integer from 0 to {MAX_SEED}, got -1"),
        (TRAIN + ["--seed", str(2**70), *out], "--seed must be an integer from 0 to"),
        (TRAIN + ["--eval-seeds", "-3", *out], "--eval-seeds must be at least 1"),
        (TRAIN + ["--hypernet-passes", "100000", *out], f"--hypernet-passes must be at most {MAX_PASSES}"),
        (TRAIN + ["--threads", "0", *out], "--threads must be a positive integer, got 0"),
        (TRAIN + ["--threads", "100000", *out], f"--threads must be at most {4 * CORES} (4 x this machine's {CORES} cores"),
        (["train", "--no-progress", "--height", "7", *out], "generator shapes makes 32x32 images only, so --height 7"),
        (["train", "--no-progress", "--width", "64", *out], "drop --width (or pass 32)"),
        (TRAIN + ["--width", "8", *out], "generator toy2d makes points, not images"),
        (TRAIN + ["--height", "0", *out], "--height must be a positive integer, got 0"),
        (TRAIN + ["--height", "100000", *out], "--height must be at most 8192"),
        (["optimize", *TINY, "--prompt", "a", "--max-grad-norm", "-1", *out], "--max-grad-norm must be a positive number, got -1.0"),
        (["optimize", *TINY, "--prompt", "a", "--max-grad-norm", "0", *out], "--max-grad-norm must be a positive number, got 0.0"),
        (["optimize", *TINY, "--prompt", "a", "--norm-reg", "-1", *out], "--norm-reg must be a number >= 0, got -1.0"),
        (["optimize", *TINY, "--prompt", "a", "--norm-reg", "inf", *out], "--norm-reg must be a finite number"),
        (["optimize", *TINY, "--prompt", "a", "--lr", "nan", *out], "--lr must be a finite number, got nan"),
        (["optimize", *TINY, "--prompt", "a", "--iters", "-3", *out], "--iters must be a positive integer"),
        (["evaluate", *TINY, "--method", "best-of-n", "--n", "0", *out], "--n must be a positive integer, got 0"),
        (["evaluate", *TINY, "--seeds", "0,1,0", *out], "--seeds must list each seed once; 0 given more than once"),
        (["evaluate", *TINY, "--seeds", "-1", *out], "--seeds must be an integer from 0 to"),
        (["evaluate", *TINY, "--seeds", ",", *out], "--seeds must hold at least one seed"),
        (["evaluate", *TINY, "--iters", "0", *out], "--iters must be a positive integer"),
        (["evaluate", *TINY, "--batch-size", "0", *out], "--batch-size must be a positive integer"),
        (["evaluate", *TINY, "--num-steps", "inf", *out], "--num-steps must be an integer, got 'inf'"),
        (["generate", *TINY, "--prompt", "a", "--num-images", "0", *out], "--num-images must be a positive integer"),
        (["generate", *TINY, "--prompt", "a", "--seed", "-5", *out], "--seed must be an integer from 0 to"),
        (["generate", *TINY, "--prompt", "a", "--batch-size", "-1", *out], "--batch-size must be a positive integer"),
        (["bench", *TINY, "--curve-points", "0", *out], "--curve-points must be a positive integer"),
        (["bench", *TINY, "--n", "-1", *out], "--n must be a positive integer"),
        (["bench", *TINY, "--seeds", "3,3", *out], "--seeds must list each seed once"),
        (["bench", *TINY, "--alpha", "nan", *out], "--alpha must be a finite number"),
        (["bench", *TINY, "--hypernet-passes", str(MAX_PASSES + 1), *out], f"--hypernet-passes must be at most {MAX_PASSES}"),
        (["toy2d", "--alpha", "inf", *out], "--alpha must be a finite number, got inf"),
        (["toy2d", "--lr", "-1", *out], "--lr must be a positive number"),
        (["toy2d", "--n-eval", "0", *out], "--n-eval must be a positive integer"),
        (["toy2d", "--checkpoint-every", "-1", *out], "--checkpoint-every must be an integer >= 0"),
        (["world", "train-reward", "--seed", "-1", *out], "--seed must be an integer from 0 to"),
        # 6. devices and the distributed environment
        (TRAIN + ["--device", "gpu", *out], "unknown device 'gpu' (--device)"),
        (["generate", *TINY, "--prompt", "a", "--device", "cuda:x", *out], "unknown device 'cuda:x' (--device)"),
        (TRAIN + out, "WORLD_SIZE='abc', which is not an integer", {"WORLD_SIZE": "abc"}),
        (TRAIN + out, "WORLD_SIZE=2 but no RANK, MASTER_ADDR, MASTER_PORT", {"WORLD_SIZE": "2"}),
        (["bench", *TINY, *out], "WORLD_SIZE=2 but no MASTER_ADDR, MASTER_PORT", {"WORLD_SIZE": "2", "RANK": "0"}),
        (["toy2d", *out], "RANK=3 outside WORLD_SIZE=2",
         {"WORLD_SIZE": "2", "RANK": "3", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}),
        (TRAIN + out, "WORLD_SIZE=0; it must be at least 1", {"WORLD_SIZE": "0"}),
        (TRAIN + out, "RANK=1 but no WORLD_SIZE", {"RANK": "1"}),
        # 8. messages name the fix: the run folder, or a file inside adapter/
        (gen_a + [str(run)], f"{run} is a training run folder, not its adapter; pass {adapter}"),
        (gen_a + [str(adapter / "adapter_model.safetensors")], f"is a file inside the adapter folder; pass the folder itself: {adapter}"),
        (gen_a + [str(adapter / "hypernoise.json")], f"pass the folder itself: {adapter}"),
        (["evaluate", *TINY, "--method", "hypernoise", "--adapter", str(run), *out], f"pass {adapter}"),
        (["evaluate", *TINY, "--method", "finetune", "--adapter", str(run), *out], f"pass {adapter}"),
        (gen_a + [str(tmp / "existing" / "keep.txt")], "is a file, not an adapter folder"),
        # 7. corrupt metadata of any JSON type
        (gen_a + ["{meta_list}"], "hypernoise.json is corrupt (it holds an array, not an object)"),
        (gen_a + ["{meta_str}"], "hypernoise.json is corrupt (it holds a string, not an object)"),
        (gen_a + ["{meta_num}"], "hypernoise.json is corrupt (it holds a number, not an object)"),
        (gen_a + ["{meta_hyper}"], "its hypernetwork is a string, not an object"),
        (gen_a + ["{meta_shape}"], "its latent_shape is 5, not a list of sizes"),
        (gen_a + ["{meta_passes}"], f"passes must be at most {MAX_PASSES}"),
        (gen_a + ["{meta_inf}"], "has an unusable hypernetwork config"),
        (gen_a + ["{peft_num}"], "adapter_config.json is not a peft LoRA config"),
        (gen_a + ["{peft_rank}"], "r is 'abc', not a positive integer"),
        (["evaluate", *TINY, "--method", "finetune", "--adapter", "{meta_list}", *out], "is corrupt (it holds an array"),
    ]
    if NO_CUDA:
        cases.append((TRAIN + ["--device", "cuda", *out],
                      "CUDA is not available on this machine; drop --device or pass --device cpu"))
        cases.append((["evaluate", *TINY, "--device", "cuda:1", *out], "CUDA is not available on this machine"))
    if NO_MPS:
        cases.append((["generate", *TINY, "--prompt", "a", "--device", "mps", *out], "MPS is not available"))
    return [c if len(c) == 3 else (*c, None) for c in cases]


def _metadata_folders(tmp: Path) -> dict:
    good = _good_meta(tmp)
    return {
        "meta_list": _corrupt_adapter(tmp, "meta_list", meta=[1, 2]),
        "meta_str": _corrupt_adapter(tmp, "meta_str", meta='"adapter"'),
        "meta_num": _corrupt_adapter(tmp, "meta_num", meta="7"),
        "meta_hyper": _corrupt_adapter(tmp, "meta_hyper", meta={**good, "hypernetwork": "mlp"}),
        "meta_shape": _corrupt_adapter(tmp, "meta_shape", meta={**good, "latent_shape": 5}),
        "meta_passes": _corrupt_adapter(tmp, "meta_passes", meta={**good, "hypernetwork": {**good["hypernetwork"], "passes": 10**5}}),
        "meta_inf": _corrupt_adapter(tmp, "meta_inf", meta=json.dumps({**good, "hypernetwork": {**good["hypernetwork"], "hidden": math.inf}})),
        "peft_num": _corrupt_adapter(tmp, "peft_num", peft="3"),
        "peft_rank": _corrupt_adapter(tmp, "peft_rank", peft={"r": "abc"}),
    }


def test_bad_inputs_are_one_line_naming_the_flag_and_write_nothing(world, capsys, monkeypatch):
    folders = {k: str(v) for k, v in _metadata_folders(world).items()}
    before = _snapshot(world)
    failures = []
    for argv, message, env in _cases(world):
        argv = [a.format(**folders) if a.startswith("{") else a for a in argv]
        code, lines, err = _one_line_error(argv, capsys, env, monkeypatch)
        if code != 2 or len(lines) != 1 or message not in lines[0] or "Traceback" in err:
            failures.append(f"{argv} (env {env}): exit {code}, stderr {err!r}; expected {message!r}")
        if (world / "out").exists():
            failures.append(f"{argv}: left the output folder behind")
    assert not failures, "\n".join(failures)
    assert _snapshot(world) == before  # nothing modified: adapters, metadata, the folder that was there


@pytest.mark.parametrize("command", ["train", "generate", "evaluate", "optimize", "bench", "toy2d"])
def test_no_progress_is_accepted_by_every_command_that_runs_a_model(command):
    args = build_parser().parse_args([command, "--no-progress", "--out", "x"])
    assert args.no_progress is True


@pytest.mark.parametrize("argv, meant", [
    (["optimize", "--prompt", "a", "--iterations", "5"], "(did you mean --iters?)"),
    (["train", "--learning_rate", "3", "--train_batch_size=4", "--gradient_checkpointing"],
     "(did you mean --lr or --batch-size or --gradient-checkpointing?)"),  # diffusers' training-script names
    (["train", "--stepz", "3"], "(did you mean --steps?)"),
    (["generate", "--prompt", "a", "stray"], "unrecognized arguments: stray; see hypernoise generate --help"),
])
def test_an_unknown_flag_is_refused_by_its_command_naming_the_flag_meant(argv, meant, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hypernoise {argv[0]}: error: unrecognized arguments: "), err
    assert meant in err and f"see hypernoise {argv[0]} --help" in err and not (tmp_path / "out").exists()


def test_a_corrupt_state_json_is_one_line_and_leaves_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["toy2d", "--steps", "2", "--checkpoint-every", "1", "--n-eval", "100", "--no-progress",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    ckpt = run / "checkpoints" / "checkpoint-000001"
    state = json.loads((ckpt / "state.json").read_text())
    for bad, expected in (({**state, "step": "abc"}, "has step 'abc', not an integer >= 0"),
                          ([state], "holds an array, not an object"),
                          ("7", "holds a string, not an object"),
                          ({**state, "config": [1]}, "has a config that is an array")):
        (ckpt / "state.json").write_text(json.dumps(bad))
        kept = _snapshot(ckpt)
        code = main(["toy2d", "--steps", "3", "--n-eval", "100", "--no-progress", "--resume", str(ckpt),
                     "--out", str(run)])
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if l.strip()]
        assert code == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err
        assert _snapshot(ckpt) == kept


# ----------------------------------------------------------------- the library's own checks


@pytest.mark.parametrize("make, field", [
    (lambda: TrainConfig(lr=math.nan), "lr"),
    (lambda: TrainConfig(lr=math.inf), "lr"),
    (lambda: TrainConfig(max_grad_norm=-1.0), "max_grad_norm"),
    (lambda: TrainConfig(max_grad_norm=math.nan), "max_grad_norm"),
    (lambda: TrainConfig(max_grad_norm=math.inf), "max_grad_norm"),
    (lambda: TrainConfig(checkpoints_total_limit=0), "checkpoints_total_limit"),
    (lambda: TrainConfig(checkpoints_total_limit=-1), "checkpoints_total_limit"),
    (lambda: TrainConfig(checkpoint_every=-5), "checkpoint_every"),
    (lambda: TrainConfig(checkpoint_every=math.inf), "checkpoint_every"),
    (lambda: TrainConfig(checkpoint_every=2.5), "checkpoint_every"),
    (lambda: TrainConfig(warmup_steps=math.nan), "warmup_steps"),
    (lambda: TrainConfig(weight_decay=-1e-4), "weight_decay"),
    (lambda: TrainConfig(momentum=1.0), "momentum"),
    (lambda: TrainConfig(seed=-1), "seed"),
    (lambda: TrainConfig(seed=MAX_SEED + 1), "seed"),
    (lambda: TrainConfig(steps=True), "steps"),
    (lambda: TrainConfig(lipschitz_iters=0), "lipschitz_iters"),
    (lambda: ObjectiveConfig(alpha=math.inf), "alpha"),
    (lambda: ObjectiveConfig(alpha=math.nan), "alpha"),
    (lambda: ObjectiveConfig(reg_weight=math.nan), "reg_weight"),
    (lambda: ObjectiveConfig(alpha_start=math.inf), "alpha_start"),
    (lambda: ObjectiveConfig(alpha_start=0.1, alpha_ramp=(0, math.inf)), "alpha_ramp"),
    (lambda: ObjectiveConfig(alpha_ramp=(1,)), "alpha_ramp"),
    (lambda: RenoConfig(max_grad_norm=-1.0), "max_grad_norm"),
    (lambda: RenoConfig(max_grad_norm=0.0), "max_grad_norm"),
    (lambda: RenoConfig(norm_reg=-1.0), "norm_reg"),
    (lambda: RenoConfig(norm_reg=math.inf), "norm_reg"),
    (lambda: RenoConfig(lr=math.nan), "lr"),
    (lambda: RenoConfig(iters=0), "iters"),
    (lambda: RenoConfig(iters="5"), "iters"),
    (lambda: RenoConfig(momentum=1.5), "momentum"),
    (lambda: RenoConfig(num_steps=0), "num_steps"),
    (lambda: EvalConfig(n=0), "n"),
    (lambda: EvalConfig(seeds=(0, 0)), "seeds"),
    (lambda: EvalConfig(seeds=(-1,)), "seeds"),
    (lambda: EvalConfig(seeds=()), "seeds"),
    (lambda: EvalConfig(seeds="0,1"), "seeds"),
    (lambda: EvalConfig(batch_size=0), "batch_size"),
    (lambda: EvalConfig(num_steps=0), "num_steps"),
    (lambda: EvalConfig(method="hypernoise", adapter_given=True, passes=MAX_PASSES + 1), "passes"),
    (lambda: BenchConfig(curve_points=0), "curve_points"),
    (lambda: BenchConfig(n=0), "n"),
    (lambda: BenchConfig(seeds=(1, 1)), "seeds"),
    (lambda: BenchConfig(passes=1000), "passes"),
    (lambda: BenchConfig(reno_iters=-1), "iters"),
    (lambda: check_passes(MAX_PASSES + 1), "passes"),
    (lambda: check_passes(math.inf), "passes"),
    (lambda: best_of_n(None, None, None, ["a"], n=0), "n"),
    (lambda: resolve_device("gpu"), "device"),
    (lambda: build_generator("shapes", height=7), "height"),
    (lambda: build_generator("shapes", width=16), "width"),
    (lambda: build_generator("toy2d", width=3), "width"),
])
def test_configs_refuse_bad_numbers_naming_the_field(make, field):
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field, str(info.value)
    assert f"`{field}`" in str(info.value)


def test_the_limits_themselves_pass():
    TrainConfig(checkpoints_total_limit=1, max_grad_norm=0.0, seed=MAX_SEED, checkpoint_every=0)
    RenoConfig(norm_reg=0.0, max_grad_norm=1e-6)
    EvalConfig(seeds=(0, MAX_SEED), n=1)
    assert check_passes(MAX_PASSES) == MAX_PASSES
    assert build_generator("shapes", height=32, width=32).name == "shapes"
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_names_the_fix():
    with pytest.raises(ConfigError, match="CUDA is not available on this machine; drop `device`") as info:
        build_generator("shapes", device="cuda")
    assert info.value.field == "device"


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "abc"}, "not an integer"),
    ({"WORLD_SIZE": "2"}, "no RANK, MASTER_ADDR, MASTER_PORT"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "0"}, "not a port"),
    ({"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK='x'"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "5", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "LOCAL_RANK=5"),
    ({"RANK": "2"}, "no WORLD_SIZE"),
])
def test_a_broken_launch_environment_is_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        check_launch_env(env)


def test_a_whole_launch_environment_passes():
    assert check_launch_env({}) == 1
    assert check_launch_env({"WORLD_SIZE": "1", "RANK": "0"}) == 1
    assert check_launch_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1",
                             "MASTER_PORT": "29500"}) == 4


@pytest.mark.parametrize("meta", [[1], "x", 3, None, {"hypernetwork": [1]}, {"settings": "s"},
                                  {"generator": 5}, {"latent_shape": [4, -8]}, {"hypernetwork": {"type": 3}}])
def test_metadata_of_any_json_type_is_an_adapter_error(world, meta):
    folder = _corrupt_adapter(world, "bad", meta=json.dumps(meta))
    with pytest.raises(AdapterError, match="is corrupt"):
        read_metadata(folder)
    with pytest.raises(AdapterError):
        load_adapter(build_generator("tiny"), folder)
    with pytest.raises(AdapterError):
        load_finetune_adapter(build_generator("tiny"), folder)


@pytest.mark.parametrize("peft", ["3", "[]", '"x"', '{"r": 0}', '{"r": true}', '{"r": 4, "lora_alpha": "a"}', "{"])
def test_a_bare_peft_config_of_any_json_type_is_an_adapter_error(world, peft):
    folder = _corrupt_adapter(world, "peft", peft=peft)
    with pytest.raises(AdapterError, match="is not a peft LoRA config"):
        load_adapter(build_generator("tiny"), folder)


def test_adapter_paths_name_the_folder_to_pass(world):
    run, adapter = world / "run", world / "run" / "adapter"
    assert resolve_adapter_folder(adapter) == adapter
    for path, hint in ((run, f"pass {adapter}"), (adapter / "adapter_model.safetensors", f"itself: {adapter}"),
                       (world / "nope", "does not exist; pass the adapter/ folder")):
        with pytest.raises(AdapterError, match=re.escape(hint)):
            load_adapter(build_generator("tiny"), path)
        with pytest.raises(AdapterError, match=re.escape(hint)):
            load_finetune_adapter(build_generator("tiny"), path)


@pytest.mark.parametrize("state", ['{"step": "abc"}', "[]", '"x"', "5", '{"step": -1}', '{"step": 1.5}',
                                   '{"step": 1, "skipped_steps": "2"}', '{"step": 1, "run": "x"}', "{",
                                   '{"config": {}}'])
def test_state_json_of_any_shape_is_a_checkpoint_error(tmp_path, state):
    (tmp_path / "state.json").write_text(state)
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------- the machine's limits

def test_memory_exhausted_by_a_huge_batch_names_the_settings_to_lower(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--generator", "shapes", "--steps", "1", "--batch-size", "100000000", "--no-progress",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(r"out of memory \(tried to allocate [\d.]+ TiB\); lower --batch-size", lines[0]), lines[0]
    assert "--gradient-checkpointing" in lines[0] and not out.exists()


def test_an_operation_without_a_bfloat16_kernel_names_the_dtype_fix(tmp_path, capsys, monkeypatch):
    """torch's own error for an op this CPU cannot run in bfloat16 (here SVD) becomes one line."""
    import hypernoise.methods.generate

    def generate_images(*args, **kwargs):
        return torch.linalg.svd(torch.ones(2, 2, dtype=torch.bfloat16))

    monkeypatch.setattr(hypernoise.methods.generate, "generate_images", generate_images)
    assert main(["generate", "--generator", "shapes", "--prompt", "a photo of a red circle", "--dtype", "bfloat16",
                 "--out", str(tmp_path / "gen")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "'linalg_svd_cpu' has no bfloat16 kernel" in err and "pass --dtype float32" in err, err


def test_the_built_in_world_trains_in_bfloat16(tmp_path):
    """A bf16 generator's images reach the world's fp32 reward cast to its dtype, as CLIP's do."""
    assert main(["train", "--generator", "shapes", "--dtype", "bfloat16", "--steps", "2", "--eval-seeds", "1",
                 "--no-progress", "--out", str(tmp_path / "run")]) == 0
