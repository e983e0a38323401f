"""hypernoise demo, without a browser: a request gets the images `generate --compare` writes, with
time, reward and the world's judge; the optional columns; bad requests refused by field; one
generation at a time per device; the command's one-line errors; Gradio imported only when used."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from hypernoise.cli.main import main
from hypernoise.demo import SHIPPED_ADAPTER, DemoConfig, Request, compare, load_demo
from hypernoise.demo.app import add_history, api_payload, column_markdown, save_grid
from hypernoise.demo.core import check_request, device_lock
from hypernoise.errors import ConfigError
from hypernoise.images import to_pil

PROMPT, SEED = "a photo of two squares", 1


@pytest.fixture(scope="module")
def demo():
    return load_demo(DemoConfig())


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_shipped_adapter_is_a_small_shapes_hypernoise_adapter_with_its_recipe(demo):
    assert demo.generator.name == "shapes" and demo.adapter == str(SHIPPED_ADAPTER)
    assert demo.reward.spec() == "shapes:1" and demo.judge is not None
    assert sum(f.stat().st_size for f in SHIPPED_ADAPTER.iterdir()) < 1_000_000
    assert "hypernoise train" in (SHIPPED_ADAPTER / "TRAINING.md").read_text()
    assert len(demo.examples) == 6 and all(demo.generator.check_prompts([p]) is None for p in demo.examples)


def test_a_request_shows_the_images_generate_compare_writes_with_time_reward_and_judge(demo, tmp_path):
    assert main(["generate", "--prompt", PROMPT, "--seed", str(SEED), "--adapter", str(SHIPPED_ADAPTER), "--compare",
                 "--threads", "1", "--out", str(tmp_path)]) == 0
    result = compare(demo, Request(f"  {PROMPT} ", SEED))
    assert [c.label for c in result.columns] == ["base", "HyperNoise"] and result.request.prompt == PROMPT
    assert result.steps == demo.generator.default_steps == 2
    for column, folder in zip(result.columns, ("base", "hypernoise")):
        written = next((tmp_path / folder).glob(f"000-*-seed{SEED}.png"))
        assert np.array_equal(np.asarray(to_pil(column.image)), _png(written))
        assert column.cost.seconds_per_image > 0 and np.isfinite(column.reward)
        assert column.terms == {"shapes": pytest.approx(column.reward)}
        assert column.judged["prompt"] == PROMPT and isinstance(column.judged["correct"], bool)
    assert result.column("hypernoise").cost.nfe_per_image == result.column("base").cost.nfe_per_image + 1
    text = column_markdown(result.columns[0], result.reward_spec)
    assert "per image" in text and f"{result.columns[0].reward:.4f}" in text and "judge: " in text


def test_reno_and_best_of_n_columns_search_from_the_same_noise_within_the_budget(demo, tmp_path):
    result = compare(demo, Request(PROMPT, SEED, reno=True, best_of_n=True, budget=3))
    assert [c.label for c in result.columns] == ["base", "HyperNoise", "ReNO-3", "best-of-3"]
    base = result.column("base")
    for method in ("reno", "best-of-n"):  # both keep their start (the base noise) when nothing beats it
        assert result.column(method).reward >= base.reward - 1e-4
    assert result.column("best-of-n").cost.generator_forward == 3 * base.cost.generator_forward
    grid = result.grid()
    assert grid.size[1] > 4 * 256 and grid.size[0] > 256  # a caption and four labelled rows of enlarged images
    points = add_history([{"reward": 0.0}] * 199, result)
    assert len(points) == 200 and points[-1]["method"] == "best-of-N"
    payload = api_payload(result)
    assert [c["label"] for c in payload["columns"]] == ["base", "HyperNoise", "ReNO-3", "best-of-3"]
    for seed in range(3):  # the downloads on disk stay bounded; the newest is kept
        kept = save_grid(compare(demo, Request(PROMPT, seed)), tmp_path, keep=2)
    assert len(list(tmp_path.glob("*.png"))) == 2 and Image.open(kept).text["seed"] == "2"


def test_any_generator_and_adapter_folder_and_geneval_examples_without_a_world(tmp_path):
    import torch

    from hypernoise.adapter import save_adapter
    from hypernoise.demo.core import example_prompts
    from hypernoise.generators import build_generator
    from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
    from hypernoise.methods.hypernoise import ModelConfig

    gen = build_generator("tiny")
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    for p in hyper.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    folder = save_adapter(tmp_path / "adapter", hyper, gen)
    demo = load_demo(DemoConfig(model=ModelConfig(generator="tiny"), adapter=str(folder), reward="redness:1"))
    result = compare(demo, Request("a red square", 5, steps=3, best_of_n=True, budget=2))
    assert [c.label for c in result.columns] == ["base", "HyperNoise", "best-of-2"] and result.steps == 3
    assert all(c.judged is None and c.terms.keys() == {"redness"} for c in result.columns)  # no judge: no verdict
    assert "judge" not in column_markdown(result.columns[0], result.reward_spec)
    gen.default_prompts = lambda split="train": None  # a real generator: GenEval's prompts, one per category
    assert example_prompts(gen) == ["a photo of a bench", "a photo of a knife and a zebra", "a photo of two bears",
                                    "a photo of a blue toilet", "a photo of a baseball glove below an umbrella",
                                    "a photo of a red skis and a brown tie"]


@pytest.mark.parametrize("request_, field, words", [
    (Request(""), "prompt", "enter a prompt"),
    (Request("   "), "prompt", "enter a prompt"),
    (Request("x" * 501), "prompt", "keep it under 500"),
    (Request("a photo of a dragon"), None, "dragon"),
    (Request(PROMPT, seed=-1), "seed", "from 0 to"),
    (Request(PROMPT, seed=2.5), "seed", "from 0 to"),
    (Request(PROMPT, steps=51), "steps", "at most 50"),
    (Request(PROMPT, steps=-3), "steps", "positive integer"),
    (Request(PROMPT, budget=10**6), "budget", "at most 50"),
    (Request(PROMPT, budget=0), "budget", "positive integer"),
])
def test_bad_requests_are_refused_naming_what_is_wrong(demo, request_, field, words):
    with pytest.raises(ConfigError, match=words) as info:
        check_request(demo, request_)
    assert field is None or info.value.field == field


def test_one_generation_at_a_time_per_device(demo):
    done = threading.Event()
    with device_lock(demo.generator.device):
        worker = threading.Thread(target=lambda: (compare(demo, Request(PROMPT, SEED)), done.set()))
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()  # waits for the device
    worker.join(30)
    assert done.is_set()


@pytest.mark.parametrize("argv, message", [
    (["demo", "--generator", "sd-turbo"], "--adapter is needed with --generator sd-turbo"),
    (["demo", "--port", "0"], "--port must be a port from 1 to 65535"),
    (["demo", "--reward", "nosuch:1"], "nosuch"),
    (["demo", "--adapter", "/no/such/folder"], "does not exist"),
])
def test_demo_command_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_port_in_use_is_one_line_before_any_model_loads(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        start = time.perf_counter()
        assert main(["demo", "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot serve on 127.0.0.1:" in err and "pass another --port or --host" in err and len(err.splitlines()) == 1
    assert time.perf_counter() - start < 5


def test_without_gradio_the_command_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["demo"]) == 2
    assert capsys.readouterr().err.strip() == ('hypernoise demo: error: the demo needs Gradio, which is not installed: '
                                               'pip install "hypernoise[demo]"')


def test_importing_hypernoise_and_its_demo_does_not_import_gradio():
    code = "import sys, hypernoise, hypernoise.demo, hypernoise.cli.main; print('gradio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
