"""Settings that surprised users (issue 31, item 8): ``generate`` takes an adapter's training size
(as ``attach`` does) and names --height/--width when another is asked; a missing diffusers is the
install line, not a ModuleNotFoundError."""

import sys

import torch
from PIL import Image

from hypernoise.adapter import save_adapter
from hypernoise.cli.main import main
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from tiny_pipelines import load_generator


def _adapter_at(folder, out, size):
    gen = load_generator(folder, "sd-turbo", height=size, width=size)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=2))
    for p in hyper.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    return save_adapter(out, hyper, gen)


def _generate(folder, adapter, out, *extra):
    return main(["generate", "--generator", "auto", "--pretrained", str(folder), "--adapter", str(adapter),
                 "--prompt", "a red apple", "--no-progress", "--out", str(out), *extra])


def _error_lines(capsys) -> list:
    """The command's own lines on stderr (diffusers draws its loading bars there too)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("hypernoise")]


def test_generate_takes_the_adapters_size_and_names_the_flags_for_another(tiny_folders, tmp_path, capsys):
    adapter = _adapter_at(tiny_folders["sd-turbo"], tmp_path / "adapter", 48)  # the pipeline's own size is 32
    assert _generate(tiny_folders["sd-turbo"], adapter, tmp_path / "a") == 0
    image = Image.open(next((tmp_path / "a" / "hypernoise").glob("*.png")))
    assert image.size == (48, 48)
    assert _generate(tiny_folders["sd-turbo"], adapter, tmp_path / "b", "--height", "32", "--width", "32") == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "trained on 48x48 images" in err[0] and "--height 48 and --width 48" in err[0], err
    assert "--generator" not in err[0]


def test_a_missing_diffusers_is_the_install_line(tiny_folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` raises ImportError
    code = main(["generate", "--generator", "sd-turbo", "--pretrained", str(tiny_folders["sd-turbo"]),
                 "--prompt", "x", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'pip install "hypernoise[diffusers]"' in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_generate_draws_a_progress_bar_unless_told_not_to(tiny_folders, tmp_path, capsys, monkeypatch):
    import hypernoise.cli.generate

    monkeypatch.setattr(hypernoise.cli.generate, "PROGRESS_DELAY_S", 0.0)  # this run is shorter than the delay
    args = ["generate", "--generator", "auto", "--pretrained", str(tiny_folders["sd-turbo"]), "--prompt", "a red apple",
            "--num-images", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "generate: 100%" in capsys.readouterr().err
    assert main([*args, "--no-progress", "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "generate:" not in err
    assert "Loading pipeline components" not in err and "Loading weights" not in err  # diffusers', transformers' bars


def test_no_progress_silences_the_loading_bars_for_that_command_only(tiny_folders, tmp_path, capsys):
    args = ["generate", "--generator", "auto", "--pretrained", str(tiny_folders["sd-turbo"]), "--prompt", "a red apple"]
    assert main([*args, "--no-progress", "--out", str(tmp_path / "quiet")]) == 0
    assert "Loading pipeline components" not in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "loud")]) == 0  # the switches are back as they were
    assert "Loading pipeline components" in capsys.readouterr().err


def test_an_adapter_of_another_generator_names_the_generator_and_the_weights_it_was_trained_on(tiny_folders, tmp_path,
                                                                                            capsys):
    folder = tiny_folders["sd-turbo"]
    adapter = _adapter_at(folder, tmp_path / "adapter", 32)
    code = main(["generate", "--adapter", str(adapter), "--prompt", "a red apple", "--out", str(tmp_path / "out")])
    err = _error_lines(capsys)
    assert code == 2 and len(err) == 1 and not (tmp_path / "out").exists()
    assert f"pass --generator sd-turbo and --pretrained {folder} (the weights it was trained on)" in err[0], err
