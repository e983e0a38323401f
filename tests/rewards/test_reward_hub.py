"""Where weights come from: local files, the Hugging Face cache under HF_HUB_OFFLINE, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hypernoise.errors import InputFileError, WeightsNotFoundError
from hypernoise.rewards import REWARD_SOURCES, REWARDS, build_reward, reward_source
from hypernoise.rewards.hub import load_pretrained, load_state_dict_file, resolve_file

MODEL_REWARDS = ["aesthetic", "clip", "hps", "imagereward", "pickscore"]


def _fake_hub_cache(cache, repo, filename, payload=b"weights"):
    """The Hugging Face cache layout: models--owner--name/{refs/main, snapshots/<commit>/<file>}."""
    commit = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / filename).write_bytes(payload)
    return folder / "snapshots" / commit / filename


def test_offline_hub_ids_resolve_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = _fake_hub_cache(tmp_path, "xswu/HPSv2", "HPS_v2.1_compressed.pt")
    path = resolve_file("xswu/HPSv2", "HPS_v2.1_compressed.pt", what="HPS", usual="x", cache_dir=tmp_path)
    assert path.read_bytes() == cached.read_bytes()


def test_offline_missing_hub_weights_say_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        build_reward("hps:5", cache_dir=tmp_path)
    message = str(err.value)
    assert "HPS_v2.1_compressed.pt" in message and "xswu/HPSv2" in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message


@pytest.mark.parametrize("spec, filename", [("hps", "HPS_v2.1_compressed.pt"), ("imagereward", "ImageReward.pt"),
                                            ("aesthetic", "sac+logos+ava1-l14-linearMSE.pth")])
def test_a_missing_local_path_is_one_clear_line(spec, filename, tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        build_reward(spec, pretrained=tmp_path / "nowhere" / "weights.pt")
    assert "nowhere" in str(err.value) and filename in str(err.value) and "\n" not in str(err.value)


def test_a_folder_without_the_file_names_it(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="holds no ImageReward.pt"):
        build_reward("imagereward", pretrained=tmp_path)


def test_a_checkpoint_missing_weights_is_refused_not_randomly_completed(clip_model_dir, tmp_path):
    """transformers fills missing weights with random values and a log line; the reward refuses."""
    import shutil

    from safetensors.torch import load_file, save_file

    for f in clip_model_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["vision_model.encoder.layers.1.mlp.fc2.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputFileError, match="layers.1.mlp.fc2.weight"):
        build_reward("clip", pretrained=tmp_path)


def test_weights_of_other_shapes_are_refused(clip_model_dir):
    """A full CLIPModel's projection read with a vision config that expects another width."""
    from transformers import CLIPVisionModelWithProjection

    with pytest.raises(InputFileError, match="other shapes"):
        load_pretrained(CLIPVisionModelWithProjection, clip_model_dir, what="tower", usual="x")


def test_pickled_objects_are_refused_unless_allowed(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": _Args()}, path)
    with pytest.raises(InputFileError, match="allow_pickle"):
        load_state_dict_file(path, key="state_dict")
    assert torch.equal(load_state_dict_file(path, key="state_dict", allow_pickle=True)["w"], torch.ones(2))


class _Args:  # a stand-in for the argparse namespaces some checkpoints pickle
    pass


def test_dataparallel_prefixes_are_stripped(tmp_path):
    torch.save({"module.a": torch.zeros(1), "module.b": torch.ones(1)}, tmp_path / "w.pt")
    assert sorted(load_state_dict_file(tmp_path / "w.pt")) == ["a", "b"]


def test_every_model_reward_says_where_its_weights_come_from():
    assert set(MODEL_REWARDS) <= set(REWARDS)
    for name in MODEL_REWARDS:
        assert name in REWARD_SOURCES and reward_source(name) == REWARD_SOURCES[name]
    assert "xswu/HPSv2" in reward_source("hps") and "THUDM/ImageReward" in reward_source("imagereward")
    assert reward_source("redness") == "no weights"


def test_builders_ignore_options_meant_for_other_rewards(hps_checkpoint, clip_tokenizer_dir):
    reward = build_reward("redness:1,hps:2", pretrained=hps_checkpoint, tokenizer=clip_tokenizer_dir,
                          head_file="unused.pth", clip_pretrained="unused", some_future_option=3)
    assert reward.names == ["redness", "hps"] and reward(torch.rand(1, 3, 32, 32), ["x"]).shape == (1,)


def test_importing_rewards_does_not_import_transformers():
    code = "import sys, hypernoise.rewards; print('transformers' in sys.modules, 'huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
