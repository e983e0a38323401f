"""convert_reward: original checkpoints -> safetensors folders that score identically."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from hypernoise.cli.main import main
from hypernoise.errors import ConfigError, InputFileError, OutputExistsError, UnknownNameError
from hypernoise.rewards import build_reward
from hypernoise.rewards.convert import CONVERTERS, convert_reward

PROMPTS = ["a red cube on a table", "two cats"]


def _no_pickles(folder):
    return not [p for p in folder.rglob("*") if p.suffix in {".pt", ".pth", ".bin"}]


def _same_scores(a, b, images):
    with torch.no_grad():
        torch.testing.assert_close(a(images, PROMPTS), b(images, PROMPTS), atol=0, rtol=0)


def test_hps_folder_scores_exactly_as_the_original_file(hps_checkpoint, clip_tokenizer_dir, tmp_path, images):
    out = convert_reward("hps", hps_checkpoint, tmp_path / "hps", tokenizer=clip_tokenizer_dir)
    assert (out / "model.safetensors").is_file() and (out / "hypernoise_reward.json").is_file() and _no_pickles(out)
    original = build_reward("hps", pretrained=hps_checkpoint, tokenizer=clip_tokenizer_dir)
    _same_scores(build_reward("hps", pretrained=out), original, images)  # tokenizer bundled in the folder


def test_convert_reward_hps_writes_vit_h_14s_16_vision_heads(hps_checkpoint, clip_tokenizer_dir, tmp_path):
    """Through the CLI, as users run it: 16 heads of 80 in the vision tower, 16 of 64 in the text tower."""
    out = tmp_path / "hps"
    assert main(["convert-reward", "hps", str(hps_checkpoint), "--out", str(out),
                 "--tokenizer", str(clip_tokenizer_dir)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["hidden_size"] == 1280 and config["vision_config"]["num_attention_heads"] == 16
    assert config["text_config"]["hidden_size"] == 1024 and config["text_config"]["num_attention_heads"] == 16
    marker = json.loads((out / "hypernoise_reward.json").read_text())
    assert marker["format"] == 2 and marker["source"] == str(hps_checkpoint.resolve())


def _as_converted_by_format_1(folder, source):
    """What hypernoise wrote before marker format 2: heads of width 64 in the vision tower."""
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["num_attention_heads"] = 1280 // 64
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "hypernoise_reward.json").write_text(json.dumps({"reward": "hps", "format": 1, "source": str(source)}))


def test_an_hps_folder_converted_with_20_vision_heads_is_refused_with_the_command_that_fixes_it(
        hps_checkpoint, clip_tokenizer_dir, tmp_path, images):
    out = convert_reward("hps", hps_checkpoint, tmp_path / "weights" / "hps", tokenizer=clip_tokenizer_dir)
    _as_converted_by_format_1(out, hps_checkpoint)
    with pytest.raises(InputFileError) as err:
        build_reward("hps", pretrained=out)
    message = str(err.value)
    command = f"hypernoise convert-reward hps {hps_checkpoint} --out {out} --overwrite"
    assert "\n" not in message and "vision tower 20 heads" in message and "earlier hypernoise" in message
    assert message.endswith(f"convert again: {command}")

    # the command, run as printed (with the test's stand-in for the LAION tokenizer), gives a good folder
    assert main(shlex.split(command)[1:] + ["--tokenizer", str(clip_tokenizer_dir)]) == 0
    original = build_reward("hps", pretrained=hps_checkpoint, tokenizer=clip_tokenizer_dir)
    _same_scores(build_reward("hps", pretrained=out), original, images)


def test_imagereward_folder_scores_exactly_as_the_original_file(imagereward_checkpoint, bert_tokenizer_dir,
                                                                tmp_path, images):
    out = convert_reward("imagereward", imagereward_checkpoint, tmp_path / "ir", tokenizer=bert_tokenizer_dir)
    assert {p.name for p in out.iterdir()} >= {"vision_model", "text_model", "head.safetensors", "tokenizer"}
    assert _no_pickles(out)
    original = build_reward("imagereward", pretrained=imagereward_checkpoint, tokenizer=bert_tokenizer_dir)
    _same_scores(build_reward("imagereward", pretrained=out), original, images)

    config = json.loads((out / "vision_model" / "config.json").read_text())
    assert config["num_attention_heads"] == 16
    (out / "vision_model" / "config.json").write_text(json.dumps({**config, "num_attention_heads": 8}))
    with pytest.raises(InputFileError, match="gives 8 heads but BLIP's ViT of width 1024 has 16; convert again: "
                                             "hypernoise convert-reward imagereward"):
        build_reward("imagereward", pretrained=out)


def test_aesthetic_folder_bundles_head_and_image_tower(aesthetic_heads, clip_model_dir, tmp_path, images):
    head = aesthetic_heads / "ava+logos-l14-linearMSE.pth"
    out = convert_reward("aesthetic", head, tmp_path / "aes", clip_pretrained=clip_model_dir)
    assert _no_pickles(out) and (out / "vision_model" / "config.json").is_file()
    original = build_reward("aesthetic", pretrained=head, clip_pretrained=clip_model_dir)
    _same_scores(build_reward("aesthetic", pretrained=out), original, images)


def test_clip_folder_is_loadable_as_clip_only(clip_model_dir, tmp_path, images):
    out = convert_reward("clip", clip_model_dir, tmp_path / "clip")
    _same_scores(build_reward("clip", pretrained=out), build_reward("clip", pretrained=clip_model_dir), images)
    with pytest.raises(ConfigError, match="'clip'"):
        build_reward("pickscore", pretrained=out)


def test_existing_outputs_are_kept_unless_overwrite(hps_checkpoint, clip_tokenizer_dir, tmp_path):
    out = tmp_path / "hps"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        convert_reward("hps", hps_checkpoint, out, tokenizer=clip_tokenizer_dir)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(OutputExistsError, match="notes.txt"):  # overwrite removes only what hypernoise wrote
        convert_reward("hps", hps_checkpoint, out, tokenizer=clip_tokenizer_dir, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    convert_reward("hps", hps_checkpoint, out, tokenizer=clip_tokenizer_dir)
    first = (out / "model.safetensors").read_bytes()
    convert_reward("hps", hps_checkpoint, out, tokenizer=clip_tokenizer_dir, overwrite=True)  # a conversion: replaced
    assert (out / "model.safetensors").read_bytes() == first and (out / "hypernoise_reward.json").is_file()


def test_a_failed_conversion_leaves_nothing_behind(imagereward_checkpoint, clip_tokenizer_dir, tmp_path):
    """An ImageReward file given as HPS: refused, and no half-written folder remains."""
    with pytest.raises(InputFileError, match="no open_clip CLIP weights"):
        convert_reward("hps", imagereward_checkpoint, tmp_path / "hps", tokenizer=clip_tokenizer_dir)
    assert list(tmp_path.iterdir()) == []


def test_unknown_reward_names_list_the_converters(tmp_path):
    with pytest.raises(UnknownNameError, match="aesthetic, clip, hps, imagereward, pickscore"):
        convert_reward("redness", "x", tmp_path / "out")
    assert sorted(CONVERTERS) == ["aesthetic", "clip", "hps", "imagereward", "pickscore"]


def test_a_weights_file_that_is_not_one_and_an_out_that_is_a_file_are_one_line(clip_model_dir, tmp_path, capsys):
    """convert-reward checks its --out like every command, and a pytorch_model.bin that is not a
    torch file is named, not an UnpicklingError."""
    src = tmp_path / "src"
    src.mkdir()
    for f in clip_model_dir.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin")):
            (src / f.name).write_bytes(f.read_bytes())
    (src / "pytorch_model.bin").write_bytes(b"this is not a torch file")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for argv, code, message in ((["convert-reward", "clip", str(src), "--out", str(tmp_path / "out")], 2,
                                 "the weights in"),
                                (["convert-reward", "clip", str(clip_model_dir), "--out", str(afile)], 2,
                                 "exists and is not a folder")):
        assert main(argv) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "out").exists()
