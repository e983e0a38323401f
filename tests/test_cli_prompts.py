"""`hypernoise train --prompts` takes prompt sets of the field (the bundled default: tests/generators)."""

import json

from hypernoise.cli.main import main


def test_train_reads_mixed_weighted_sources(tmp_path, capsys):
    pick = tmp_path / "pickapic_prompts.json"
    pick.write_text(json.dumps({"1": "a red square", "2": "a blue circle"}))
    text = tmp_path / "extra.txt"
    text.write_text("a green triangle\n")
    out = tmp_path / "run"
    assert main(["train", "--generator", "tiny", "--prompts", f"{pick},{text}*2", "--steps", "1", "--batch-size", "2",
                 "--reward", "redness", "--prompt-cache-mb", "0", "--no-progress", "--out", str(out)]) == 0
    assert (out / "adapter" / "hypernoise.json").is_file()


def test_a_bad_prompt_source_is_one_line(tmp_path, capsys):
    (tmp_path / "p.json").write_text("[1, 2]")
    code = main(["train", "--generator", "tiny", "--prompts", str(tmp_path / "p.json"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not an object or list of prompts" in err
    assert not (tmp_path / "r").exists()
