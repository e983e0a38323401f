"""generate / optimize / evaluate at the command line, on the tiny generator."""

import json

import pytest
from PIL import Image

from hypernoise.adapter import save_adapter
from hypernoise.cli.main import main
from hypernoise.generators import build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings, MLPHypernetwork


@pytest.fixture
def tiny_adapter(tmp_path):
    import torch

    gen = build_generator("tiny")
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    for p in hyper.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    return save_adapter(tmp_path / "adapter", hyper, gen)


def test_generate_writes_pngs_with_prompt_and_seed(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--generator", "tiny", "--prompt", "a red square", "--prompt", "a blue circle",
                 "--seed", "7", "--num-images", "2", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == ["000-a-red-square-seed7.png", "000-a-red-square-seed8.png",
                     "001-a-blue-circle-seed7.png", "001-a-blue-circle-seed8.png"]
    info = Image.open(out / files[2]).text
    assert info["prompt"] == "a blue circle" and info["seed"] == "7" and info["method"] == "base"


def test_generate_compare_writes_both_rows_and_a_grid(tmp_path, tiny_adapter):
    out = tmp_path / "cmp"
    assert main(["generate", "--generator", "tiny", "--adapter", str(tiny_adapter), "--prompt", "a", "--compare",
                 "--out", str(out)]) == 0
    base = Image.open(out / "base" / "000-a-seed0.png")
    hn = Image.open(out / "hypernoise" / "000-a-seed0.png")
    assert base.tobytes() != hn.tobytes()
    assert Image.open(out / "compare.png").size[1] > 2 * base.size[1]


@pytest.mark.parametrize("argv, message", [
    (["generate", "--generator", "tiny", "--out", "{tmp}/x"], "no prompt given"),
    (["generate", "--generator", "tiny", "--prompt", "", "--out", "{tmp}/x"], "empty --prompt"),
    (["generate", "--generator", "tiny", "--prompt", "a", "--compare", "--out", "{tmp}/x"], "--compare needs --adapter"),
    (["generate", "--generator", "tiny", "--prompt", "a", "--adapter", "{tmp}/none", "--out", "{tmp}/x"], "does not exist"),
    (["generate", "--generator", "tiny", "--prompt", "a", "--adapter", "{toy}", "--out", "{tmp}/x"], "trained for generator 'toy2d'"),
    (["generate", "--generator", "tiny", "--prompt", "a", "--num-steps", "0", "--out", "{tmp}/x"], "--num-steps must be a positive"),
    (["optimize", "--generator", "tiny", "--prompt", "a", "--iters", "0", "--out", "{tmp}/x"], "--iters must be a positive"),
    (["optimize", "--generator", "tiny", "--prompt", "a", "--reward", "hps:abc", "--out", "{tmp}/x"], "is not a number"),
    (["evaluate", "--generator", "tiny", "--method", "hypernoise", "--out", "{tmp}/x"], "needs --adapter"),
    (["evaluate", "--generator", "tiny", "--seeds", "a,b", "--out", "{tmp}/x"], "--seeds must be comma-separated"),
    (["evaluate", "--generator", "tiny", "--method", "magic", "--out", "{tmp}/x"], "invalid choice"),
    (["evaluate", "--generator", "tiny", "--hypernet-passes", "2", "--out", "{tmp}/x"], "applies to --method hypernoise"),
    (["evaluate", "--generator", "tiny", "--method", "hypernoise", "--adapter", "{toy}", "--hypernet-passes", "0",
      "--out", "{tmp}/x"], "--hypernet-passes must be a positive integer"),
    (["generate", "--generator", "tiny", "--prompt", "a", "--hypernet-passes", "2", "--out", "{tmp}/x"],
     "--hypernet-passes needs --adapter"),
    (["train", "--generator", "tiny", "--hypernet-passes", "0", "--out", "{tmp}/x"], "--hypernet-passes must be a positive"),
    (["train", "--generator", "tiny", "--method", "finetune", "--hypernet-passes", "2", "--out", "{tmp}/x"],
     "applies to --method hypernoise"),
])
def test_command_errors_are_one_line(tmp_path, capsys, argv, message):
    toy = build_generator("toy2d")
    toy_adapter = save_adapter(tmp_path / "toy", MLPHypernetwork(toy.latent_shape), toy)
    argv = [a.format(tmp=tmp_path, toy=toy_adapter) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err


def test_optimize_improves_the_reward_and_saves_iterates(tmp_path):
    out = tmp_path / "reno"
    assert main(["optimize", "--generator", "tiny", "--reward", "redness", "--prompt", "a", "--iters", "5", "--lr", "1",
                 "--save-iterates", "--no-progress", "--out", str(out)]) == 0
    row = json.loads((out / "results.jsonl").read_text())
    assert row["best_reward"] > row["initial_reward"] and len(row["reward_history"]) == 5
    assert len(list((out / "iterates" / "000").glob("*.png"))) == 5
    assert Image.open(out / "000-best.png").text["method"] == "reno"


def test_evaluate_writes_results_json(tmp_path, tiny_adapter):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na photo\n")
    out = tmp_path / "ev"
    assert main(["evaluate", "--generator", "tiny", "--method", "hypernoise", "--adapter", str(tiny_adapter),
                 "--prompts", str(prompts), "--seeds", "0,1", "--reward", "redness", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == "hypernoise" and res["n_images"] == 4
    assert res["cost"]["nfe_per_image"] == build_generator("tiny").default_steps + 1


def test_passes_train_into_the_adapter_and_evaluate_overrides_them(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na photo\n")
    run = tmp_path / "run"
    assert main(["train", "--generator", "tiny", "--reward", "redness", "--prompts", str(prompts), "--steps", "2",
                 "--batch-size", "2", "--hypernet-passes", "2", "--no-progress", "--out", str(run)]) == 0
    meta = json.loads((run / "adapter" / "hypernoise.json").read_text())
    assert meta["hypernetwork"]["passes"] == 2
    steps = build_generator("tiny").default_steps
    common = ["evaluate", "--generator", "tiny", "--method", "hypernoise", "--adapter", str(run / "adapter"),
              "--prompts", str(prompts), "--seeds", "0", "--reward", "redness"]
    for extra, passes in (([], 2), (["--hypernet-passes", "3"], 3)):
        out = tmp_path / f"ev{passes}"
        assert main(common + extra + ["--out", str(out)]) == 0
        cost = json.loads((out / "results.json").read_text())["cost"]
        assert cost["hypernet_forward"] == passes and cost["nfe_per_image"] == steps + passes
    gen = tmp_path / "gen"
    assert main(["generate", "--generator", "tiny", "--adapter", str(run / "adapter"), "--prompt", "a",
                 "--hypernet-passes", "3", "--out", str(gen)]) == 0
    assert Image.open(gen / "hypernoise" / "000-a-seed0.png").text["passes"] == "3"


def test_finetune_trains_through_the_cli_and_evaluates(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na photo\n")
    run = tmp_path / "ft"
    assert main(["train", "--generator", "tiny", "--method", "finetune", "--reward", "redness", "--prompts", str(prompts),
                 "--steps", "3", "--batch-size", "2", "--optimizer", "adamw", "--lr", "0.01", "--no-progress",
                 "--out", str(run)]) == 0
    meta = json.loads((run / "adapter" / "hypernoise.json").read_text())
    assert meta["hypernetwork"]["type"] == "finetune-lora" and meta["settings"]["method"] == "finetune"
    base, ft = tmp_path / "base", tmp_path / "ft-eval"
    common = ["evaluate", "--generator", "tiny", "--prompts", str(prompts), "--seeds", "0", "--reward", "redness"]
    assert main(common + ["--out", str(base)]) == 0
    assert main(common + ["--method", "finetune", "--adapter", str(run / "adapter"), "--out", str(ft)]) == 0
    r_base = json.loads((base / "results.json").read_text())["rewards"]["redness"]
    r_ft = json.loads((ft / "results.json").read_text())["rewards"]["redness"]
    assert r_ft > r_base


def test_train_writes_a_sample_grid_of_base_and_hypernoise(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--generator", "tiny", "--reward", "redness", "--steps", "2", "--batch-size", "2",
                 "--no-progress", "--out", str(out)]) == 0
    grid = Image.open(out / "samples" / "compare.png")
    single = Image.open(out / "samples" / "00-base.png")
    assert grid.size[1] > 2 * single.size[1]
    assert Image.open(out / "samples" / "00-hypernoise.png").text["method"] == "hypernoise"


def test_train_takes_an_alpha_schedule_and_init_trials_and_records_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--generator", "tiny", "--reward", "redness", "--steps", "3", "--batch-size", "2",
                 "--alpha", "1", "--alpha-start", "0.01", "--alpha-ramp", "0", "2", "--init-trials", "2",
                 "--trial-steps", "1", "--no-progress", "--out", str(out)]) == 0
    trials = json.loads((out / "init_trials.json").read_text())
    assert len(trials["trials"]) == 2 and f"kept trial {trials['kept']}" in capsys.readouterr().out
    logged = [json.loads(l)["alpha"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([0.01, 0.1, 1.0])
    objective = json.loads((out / "adapter" / "hypernoise.json").read_text())["settings"]["objective"]
    assert objective["alpha_start"] == 0.01 and list(objective["alpha_ramp"]) == [0, 2] and objective["alpha"] == 1


def test_main_job_reports_world_geneval_before_and_after(tmp_path, capsys):
    from hypernoise.evaluation import EvalConfig, evaluate

    out = tmp_path / "main"
    assert main(["train", "--steps", "2", "--eval-seeds", "2", "--no-progress", "--out", str(out)]) == 0  # the built-in world
    printed = capsys.readouterr().out
    assert "overall" in printed and "fidelity dist." in printed
    scores = json.loads((out / "before_after.json").read_text())
    gen = build_generator("shapes")
    fresh = evaluate(gen, gen.default_prompts("test"), EvalConfig(method="base", seeds=(0, 1), batch_size=32))
    assert scores["base"]["geneval"] == fresh["geneval"]  # the base really is g, adapters off
    assert scores["base"]["n_images"] == scores["hypernoise"]["n_images"] == 2 * len(gen.default_prompts("test"))
    assert 0.3 <= scores["base"]["geneval"]["overall"] <= 0.7
    assert scores["hypernoise"]["cost"]["nfe_per_image"] == scores["base"]["cost"]["nfe_per_image"] + 1


def test_world_command_needs_a_target_and_an_out(capsys):
    assert main(["world", "train-reward"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["world", "nope", "--out", "x"]) == 2


def test_same_seed_same_command_gives_the_same_adapter_and_images(tmp_path):
    """Reproducibility on one machine: two processes running one command agree bit for bit (the
    adapters, and the before/after scores each process generated and judged); each adapter then
    generates the same images."""
    import subprocess
    import sys

    import numpy as np
    from safetensors.torch import load_file

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "hypernoise.cli.main", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    for name in ("a", "b"):
        run("train", "--steps", "3", "--batch-size", "4", "--seed", "7", "--eval-seeds", "1", "--no-progress",
            "--out", str(tmp_path / name))
        assert main(["generate", "--prompt", "a photo of two squares", "--seed", "3", "--adapter",
                     str(tmp_path / name / "adapter"), "--compare", "--out", str(tmp_path / f"images-{name}")]) == 0
    wa, wb = (load_file(str(tmp_path / n / "adapter" / "adapter_model.safetensors")) for n in ("a", "b"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert any(v.abs().sum() > 0 for v in wa.values())  # trained, not the zero initialisation
    pngs = sorted(p.relative_to(tmp_path / "images-a") for p in (tmp_path / "images-a").rglob("*.png"))
    assert pngs == sorted(p.relative_to(tmp_path / "images-b") for p in (tmp_path / "images-b").rglob("*.png"))
    for rel in pngs:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "images-a" / rel)),
                              np.asarray(Image.open(tmp_path / "images-b" / rel)))
    scores = [json.loads((tmp_path / n / "before_after.json").read_text()) for n in ("a", "b")]
    for method in ("base", "hypernoise"):  # timings differ; scores may not
        assert [(s[method]["geneval"], s[method]["rewards"], s[method]["fidelity"]) for s in scores].count(
            (scores[0][method]["geneval"], scores[0][method]["rewards"], scores[0][method]["fidelity"])) == 2
