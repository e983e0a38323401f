"""A real generator trained with no --prompts uses the bundled everyday prompts, and says so once."""

from hypernoise.cli.main import main


def test_a_generator_without_prompts_trains_on_the_bundled_set_and_says_so(tiny_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--generator", "auto", "--pretrained", str(tiny_folders["sd-turbo"]), "--device", "cpu",
                 "--steps", "1", "--batch-size", "2", "--reward", "redness", "--rank", "2", "--no-progress",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "60 bundled everyday prompts" in line]) == 1, err
    assert (out / "adapter" / "hypernoise.json").is_file()
