"""The snippets users copy, executed as written (issue 31): the README's SANA-Sprint snippet, and the
usage snippet of each method's model card, on tiny pipelines. Only what cannot run here is
substituted (the README's Hub ids by local folders, "cuda" and bfloat16 by the CPU's); the images
are compared with ``hypernoise generate`` and the library's own generation of the same seed."""

import re
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from hypernoise.adapter import save_adapter
from hypernoise.card import PROMPT, write_model_card
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.methods.finetune import GeneratorLoRA
from hypernoise.methods.generate import generate_images, write_samples
from tiny_pipelines import load_generator

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def sana_1024_like(tmp_path_factory):
    """A tiny SANA-Sprint whose transformer says ``sample_size`` 32, as the real 1024 px models do, so
    that its calls take diffusers' defaults (resolution binning on): 64 px images."""
    from hypernoise.generators.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("sana-sprint")
    pipe.transformer.register_to_config(sample_size=32)  # no positional embedding reads it: only sizes do
    folder = tmp_path_factory.mktemp("sana64") / "pipeline"
    pipe.save_pretrained(str(folder))
    return folder


@pytest.fixture
def tiny_bins(monkeypatch):
    """SANA-Sprint's resolution binning scaled to the tiny model: its 1024 px default call is made at
    the 64 px bin (the real model's bin for 1024 x 1024 is 1024 x 1024) and not resized back."""
    import diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha as pixart
    import diffusers.pipelines.sana.pipeline_sana_sprint as sprint
    from diffusers.image_processor import PixArtImageProcessor

    for module in (pixart, sprint):
        monkeypatch.setattr(module, "ASPECT_RATIO_1024_BIN", {"1.0": [64.0, 64.0]})
    monkeypatch.setattr(PixArtImageProcessor, "resize_and_crop_tensor", staticmethod(lambda samples, w, h: samples))


def _random_weights(module_params, seed=1, std=0.1):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for p in module_params:
            torch.nn.init.normal_(p, std=std)


def make_run(root: Path, folder, family: str, method: str, **build) -> Path:
    """A run folder as ``hypernoise train`` leaves it: adapter/ (random non-zero LoRA), samples/, the card."""
    gen = load_generator(folder, family, **build)
    adapter = GeneratorLoRA(gen, LoraSettings(rank=2)) if method == "finetune" else LoRAHypernetwork(gen, LoraSettings(rank=2))
    _random_weights(adapter.trainable_parameters())
    save_adapter(root / "adapter", adapter, gen, {"method": method, "reward": "redness:1"})
    write_samples(gen, adapter, [PROMPT, "a blue sky"], root, seed=0)
    write_model_card(root / "adapter")
    return root


def python_block(text: str, after: str = "") -> str:
    start = text.index(after) if after else 0
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def _png_equal(a, b) -> bool:
    a, b = a.convert("RGB"), b.convert("RGB")
    diff = torch.tensor(list(a.tobytes())) - torch.tensor(list(b.tobytes()))
    return a.size == b.size and diff.abs().max().item() <= 1


def test_the_readme_sana_snippet_as_written_equals_hypernoise_generate(sana_1024_like, tiny_bins, tmp_path):
    from hypernoise.cli.main import main

    run = make_run(tmp_path / "run", sana_1024_like, "sana-sprint", "hypernoise", max_sequence_length=300)
    code = python_block(README.read_text(), "## On your diffusers pipeline")
    for hub_id, local in (("Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers", sana_1024_like),
                          ("lucaeyring/HyperNoise_Sana_Sprint_0.6B", run / "adapter")):
        assert f'"{hub_id}"' in code
        code = code.replace(f'"{hub_id}"', repr(str(local)))
    code = code.replace("torch.bfloat16", "torch.float32").replace('"cuda"', '"cpu"')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    prompt = re.search(r'pipe\("([^"]+)"', code).group(1)
    steps = re.search(r"num_inference_steps=(\d+)", code).group(1)
    out = tmp_path / "gen"
    assert main(["generate", "--generator", "auto", "--pretrained", str(sana_1024_like), "--adapter",
                 str(run / "adapter"), "--prompt", prompt, "--seed", "0", "--num-steps", steps, "--no-progress",
                 "--out", str(out)]) == 0
    cli = next((out / "hypernoise").glob("000-*.png"))
    assert _png_equal(Image.open(cli), scope["image"])


@pytest.mark.parametrize("method", ["hypernoise", "finetune"])
def test_each_methods_card_snippet_runs_as_written_and_gives_the_librarys_image(method, tiny_folders, tmp_path):
    family = "sd-turbo"
    run = make_run(tmp_path / "run", tiny_folders[family], family, method)
    card = (run / "adapter" / "README.md").read_text()
    code = python_block(card)
    assert str(tiny_folders[family]) in code and ("hypernoise.attach" in code) == (method == "hypernoise")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    gen = load_generator(tiny_folders[family], family)
    if method == "hypernoise":
        from hypernoise.adapter import load_adapter

        expected = generate_images(gen, [PROMPT], [0], 1, load_adapter(gen, run / "adapter"))[0]
    else:
        from hypernoise.methods.finetune import load_finetune_adapter

        load_finetune_adapter(gen, run / "adapter")
        expected = generate_images(gen, [PROMPT], [0], 1)[0]
    from hypernoise.images import to_pil

    assert _png_equal(to_pil(expected), scope["image"])


def test_the_hypernoise_cards_command_runs_as_written(tiny_folders, tmp_path, monkeypatch):
    from hypernoise.cli.main import main

    run = make_run(tmp_path / "run", tiny_folders["sd-turbo"], "sd-turbo", "hypernoise")
    card = (run / "adapter" / "README.md").read_text()
    line = re.search(r"```bash\n(.*?)\n```", card, re.S).group(1)
    argv = shlex.split(line)
    assert argv[0] == "hypernoise"
    monkeypatch.chdir(tmp_path)
    assert main(argv[1:] + ["--no-progress"]) == 0
    assert (tmp_path / "images" / "compare.png").is_file()


@pytest.mark.parametrize("family", ["sana-sprint", "flux-schnell"])
def test_the_card_snippets_of_the_transformer_families_run_as_written(family, sana_1024_like, tiny_bins, tiny_folders,
                                                                      tmp_path):
    folder, build = (sana_1024_like, {"max_sequence_length": 300}) if family == "sana-sprint" else \
        (tiny_folders[family], {"height": 32, "width": 32, "max_sequence_length": 16})
    run = make_run(tmp_path / "run", folder, family, "hypernoise", **build)
    code = python_block((run / "adapter" / "README.md").read_text())
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    size = 64 if family == "sana-sprint" else 32
    assert scope["image"].size == (size, size)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hypernoise", "finetune"])
def test_a_diffusers_training_run_writes_a_card_with_its_sample_grid(method, tiny_folders, tmp_path):
    """A diffusers run has no built-in prompts; its card still shows a grid (of its training prompts)
    and widget images, files of the adapter folder, and parses as the Hub's ModelCard (about 12 s)."""
    from huggingface_hub import ModelCard

    from hypernoise.cli.main import main

    out = tmp_path / "run"
    assert main(["train", "--generator", "auto", "--pretrained", str(tiny_folders["sd-turbo"]), "--reward",
                 "redness:1", "--steps", "1", "--batch-size", "1", "--method", method, "--no-progress",
                 "--out", str(out)]) == 0
    card = ModelCard.load(out / "adapter" / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-to-image" and "base_model" not in data  # a local folder names no Hub model
    assert (out / "adapter" / "samples.png").is_file() and data["widget"]
    assert all((out / "adapter" / w["output"]["url"]).is_file() for w in data["widget"])
