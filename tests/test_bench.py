"""The side-by-side benchmark on the tiny generator: every method, the ratios, the files."""

import json

from hypernoise.bench import BenchConfig, run_bench
from hypernoise.generators import build_generator
from hypernoise.methods.hypernoise import ModelConfig
from hypernoise.presets import default_config


def test_bench_runs_every_method_and_writes_its_files(tmp_path):
    model = ModelConfig(generator="tiny")
    train = default_config(build_generator("tiny"), model=model, reward="redness", steps=4, batch_size=2,
                           optimizer="adamw", lr=0.01, progress=False)
    cfg = BenchConfig(model=model, seeds=(0,), reward="redness", train=train, curve_points=2, reno_iters=3, n=3,
                      batch_size=8, progress=False)
    bench = run_bench(cfg, tmp_path)
    assert list(bench["methods"]) == ["base", "hypernoise", "reno", "best-of-n", "finetune"]
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["recovery"] == bench["recovery"]
    q = bench["quality"]
    assert bench["recovery"] == (q["hypernoise"] - q["base"]) / (q["reno"] - q["base"])
    t = {m: r["cost"]["seconds_per_image"] for m, r in bench["methods"].items()}
    assert bench["reno_over_hypernoise_time"] == t["reno"] / t["hypernoise"]
    assert [p["step"] for p in bench["curves"]["hypernoise"]] == [2, 4]
    assert [p["step"] for p in bench["curves"]["finetune"]] == [2, 4]
    assert bench["methods"]["reno"]["cost"]["nfe_per_image"] == (3 + 2) * build_generator("tiny").default_steps
    for name in ("bench.md", "tradeoff.png", "curve.png", "base/results.json", "reno/per_prompt.jsonl"):
        assert (tmp_path / name).is_file(), name
    assert "| hypernoise |" in (tmp_path / "bench.md").read_text()


def test_bench_command_trains_hypernoise_at_the_temperature_and_trials_given_and_applies_its_passes(tmp_path):
    from hypernoise.cli.main import main

    out = tmp_path / "bench"
    assert main(["bench", "--generator", "tiny", "--reward", "redness", "--steps", "3", "--seeds", "0", "--iters", "2",
                 "--n", "2", "--curve-points", "1", "--alpha", "0.3", "--init-trials", "2", "--trial-steps", "1",
                 "--hypernet-passes", "2", "--no-progress", "--out", str(out)]) == 0
    settings = json.loads((out / "train-hypernoise" / "adapter" / "hypernoise.json").read_text())["settings"]
    assert settings["objective"]["alpha"] == 0.3
    for method in ("hypernoise", "finetune"):
        assert len(json.loads((out / f"train-{method}" / "init_trials.json").read_text())["trials"]) == 2
    bench = json.loads((out / "bench.json").read_text())
    assert bench["seeds"] == [0]
    hn, base = bench["methods"]["hypernoise"]["cost"], bench["methods"]["base"]["cost"]
    assert hn["hypernet_forward"] == 2 and hn["nfe_per_image"] == base["nfe_per_image"] + 2  # evaluated with 2 passes
    assert "| hypernoise (2 passes) |" in (out / "bench.md").read_text()


def test_bench_without_finetune_skips_its_training_and_row(tmp_path):
    from hypernoise.cli.main import main

    out = tmp_path / "bench"
    assert main(["bench", "--generator", "tiny", "--reward", "redness", "--steps", "2", "--seeds", "0", "--iters", "2",
                 "--n", "2", "--curve-points", "1", "--init-trials", "1", "--trial-steps", "1", "--no-finetune",
                 "--no-frontier", "--no-progress", "--out", str(out)]) == 0
    bench = json.loads((out / "bench.json").read_text())
    assert list(bench["methods"]) == ["base", "hypernoise", "reno", "best-of-n"]
    assert not (out / "train-finetune").exists() and "finetune" not in bench["curves"]
    assert "| finetune |" not in (out / "bench.md").read_text()


def test_bench_refuses_a_finetune_adapter_with_finetune_skipped(tmp_path, capsys):
    from hypernoise.cli.main import main

    out = tmp_path / "bench"
    assert main(["bench", "--generator", "tiny", "--no-finetune", "--finetune-adapter", str(tmp_path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--finetune-adapter" in err and not out.exists()
