"""`--preset reno`: ExplainableML/ReNO's own settings per family, on tiny pipelines.

The values themselves are held against docs/comparisons.md's table by tests/test_paper_table.py;
here the commands take them, record them, and let flags given override them.
"""

import json

from hypernoise.cli.main import main
from hypernoise.methods.hypernoise import ModelConfig
from hypernoise.presets import reno_settings


def test_optimize_with_the_reno_preset_runs_and_records_it(tiny_folders, tmp_path, capsys):
    out = tmp_path / "reno"
    assert main(["optimize", "--generator", "auto", "--pretrained", str(tiny_folders["sd-turbo"]), "--preset", "reno",
                 "--reward", "redness", "--dtype", "float32", "--device", "cpu", "--iters", "2",
                 "--prompt", "a red apple", "--no-progress", "--out", str(out)]) == 0
    settings = json.loads((out / "optimize.json").read_text())
    assert (settings["preset"], settings["noise_dtype"], settings["reward_dtype"]) == ("reno", "float16", "float16")
    assert (settings["iters"], settings["lr"], settings["max_grad_norm"], settings["norm_reg"]) == (2, 5.0, 0.1, 0.01)
    assert (settings["num_steps"], settings["optimize_steps"]) == (1, 1)
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert (row["optimize_steps"], row["render_steps"]) == (1, 1) and len(row["reward_history"]) == 2


def test_evaluate_reno_with_the_reno_preset_on_flux(tiny_folders, tmp_path):
    prompts, out = tmp_path / "p.txt", tmp_path / "eval"
    prompts.write_text("a red apple\n")
    assert main(["evaluate", "--generator", "auto", "--pretrained", str(tiny_folders["flux-schnell"]), "--method",
                 "reno", "--preset", "reno", "--reward", "redness", "--dtype", "float32", "--device", "cpu",
                 "--height", "32", "--width", "32", "--iters", "2", "--prompts", str(prompts), "--seeds", "0",
                 "--no-progress", "--out", str(out)]) == 0
    settings = json.loads((out / "evaluate.json").read_text())
    assert settings["reward_dtype"] == "float16" and settings["num_steps"] == 1
    assert (settings["reno"]["noise_dtype"], settings["reno"]["optimize_steps"]) == ("float16", 1)
    model = ModelConfig(generator="auto", pretrained=str(tiny_folders["flux-schnell"]), device="cpu",
                        dtype="float32", height=32, width=32)
    assert reno_settings(model, "reno").model.build().max_sequence_length == 256  # ReNO's T5 length
