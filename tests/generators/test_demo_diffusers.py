"""``hypernoise demo`` on a diffusers pipeline with a user's adapter (tiny SD-Turbo): the page's base
and HyperNoise columns are the images ``generate --compare`` writes for the same prompt and seed,
the reward is the adapter's, and the example prompts are GenEval's (no built-in prompts)."""

import numpy as np
import torch
from PIL import Image

from hypernoise.adapter import save_adapter
from hypernoise.cli.main import main
from hypernoise.demo import DemoConfig, Request, compare, load_demo
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.images import to_pil
from hypernoise.methods.hypernoise import ModelConfig
from tiny_pipelines import load_generator

PROMPT, SEED = "a red apple", 2


def test_the_demo_on_a_users_pipeline_shows_what_generate_compare_writes(tiny_folders, tmp_path):
    folder = tiny_folders["sd-turbo"]
    gen = load_generator(folder, "sd-turbo")
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in hyper.trainable_parameters():
            torch.nn.init.normal_(p, std=0.05)
    adapter = save_adapter(tmp_path / "adapter", hyper, gen, settings={"reward": "redness:1"})

    demo = load_demo(DemoConfig(model=ModelConfig(generator="auto", pretrained=str(folder)), adapter=str(adapter)))
    assert demo.generator.name == "sd-turbo" and demo.judge is None and len(demo.examples) == 6
    assert demo.reward.spec() == "redness:1"  # the adapter's reward
    result = compare(demo, Request(PROMPT, SEED, reno=True, budget=2))
    assert [c.label for c in result.columns] == ["base", "HyperNoise", "ReNO-2"]

    assert main(["generate", "--generator", "auto", "--pretrained", str(folder), "--adapter", str(adapter),
                 "--prompt", PROMPT, "--seed", str(SEED), "--compare", "--no-progress", "--out", str(tmp_path / "g")]) == 0
    for column, sub in zip(result.columns, ("base", "hypernoise")):
        written = np.asarray(Image.open(next((tmp_path / "g" / sub).glob(f"000-*-seed{SEED}.png"))).convert("RGB"))
        assert np.array_equal(np.asarray(to_pil(column.image)), written)
        assert np.isfinite(column.reward) and column.cost.seconds_per_image > 0
    assert not np.array_equal(np.asarray(to_pil(result.columns[0].image)), np.asarray(to_pil(result.columns[1].image)))
