"""`hypernoise train --preset paper`: the authors' runs as a preset, on tiny pipelines."""

import json

import pytest

from hypernoise.cli.main import main
from hypernoise.errors import ConfigError
from hypernoise.generators import build_generator
from hypernoise.presets import default_config, preset_config, presets_of


@pytest.mark.parametrize("family", ["sana-sprint", "flux-schnell"])
def test_train_with_the_paper_preset_runs_and_records_it(family, tiny_folders, tmp_path, capsys):
    out, prompts = tmp_path / "run", tmp_path / "prompts.txt"
    prompts.write_text("a red apple\na blue sky\n")
    size = ["--height", "32", "--width", "32"] if family == "flux-schnell" else []
    assert main(["train", "--generator", "auto", "--pretrained", str(tiny_folders[family]), "--preset", "paper",
                 "--reward", "redness", "--dtype", "float32", "--device", "cpu", "--steps", "2", "--batch-size", "2",
                 "--gradient-accumulation-steps", "2", "--prompts", str(prompts), "--no-progress", "--out", str(out),
                 *size]) == 0
    assert f"preset: {family}/paper" in capsys.readouterr().out
    meta = json.loads((out / "adapter" / "hypernoise.json").read_text())
    train = meta["settings"]["train"]
    assert meta["settings"]["preset"] == "paper" and meta["settings"]["objective"]["kind"] == "reference"
    assert train["noise_mode"] == "per-step" and train["warmup_from_zero"] and train["warmup_per_process"]
    assert meta["hypernetwork"]["grouped_convs"] is True
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["lr"] == pytest.approx(train["lr"] / train["warmup_steps"])  # after step 0, which ran at lr 0


def test_the_paper_presets_are_the_authors_runs_and_flags_override_them():
    sana, flux = preset_config("sana-sprint", "paper"), preset_config("flux-schnell", "paper")
    assert sana.model.pretrained == "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers"
    assert (sana.lora.rank, sana.lora.lora_alpha, sana.train.optimizer, sana.train.lr) == (128, 256, "sgd", 1e-3)
    assert (sana.train.batch_size, sana.train.gradient_accumulation_steps) == (3, 3)  # x 6 processes: 18 x 3
    assert (flux.model.height, flux.model.width) == (512, 512)
    assert (flux.lora.lora_alpha, flux.train.optimizer, flux.train.lr, flux.train.weight_decay) == (640, "adamw", 2e-5, 1e-4)
    assert sana.reward == flux.reward == "reno"
    gen = build_generator("toy2d")
    assert presets_of("sana-sprint") == ["default", "paper"] and presets_of("toy2d") == ["default"]
    with pytest.raises(ConfigError, match="no `preset` 'paper'; choose one of: default"):
        default_config(gen, preset="paper")
