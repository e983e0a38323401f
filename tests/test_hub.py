"""Adapters given as Hugging Face Hub ids (``owner/name[@revision][/subfolder]``): resolved through the
Hugging Face cache, offline from a hand-made cache, local folders first, one-line errors. No network:
the online path runs against a stand-in ``snapshot_download``."""

import shutil
from types import SimpleNamespace

import pytest
import torch

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants  # noqa: E402

from hypernoise.adapter import load_adapter, save_adapter  # noqa: E402
from hypernoise.cli.main import main  # noqa: E402
from hypernoise.errors import AdapterError  # noqa: E402
from hypernoise.generators import build_generator  # noqa: E402
from hypernoise.hub import HubAdapter, parse_hub_id, resolve_adapter_source  # noqa: E402
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def adapter(tmp_path):
    """An adapter folder for the tiny generator with non-zero weights."""
    gen = build_generator("tiny")
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=2))
    for p in hyper.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    return save_adapter(tmp_path / "made" / "adapter", hyper, gen)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache (HF_HUB_CACHE) in a temporary folder."""
    folder = tmp_path / "hf-cache"
    folder.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    return folder


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def cache_repo(cache, repo_id, adapter, subfolder=None, ref="main"):
    """The layout snapshot_download leaves: models--owner--name/{refs/<ref>, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(COMMIT)
    target = repo / "snapshots" / COMMIT / (subfolder or "")
    shutil.copytree(adapter, target, dirs_exist_ok=True)
    return target


@pytest.mark.parametrize("text, expected", [
    ("owner/name", HubAdapter("owner/name")),
    ("owner/name@v1.0", HubAdapter("owner/name", "v1.0")),
    ("owner/name@main/sana/0.6B", HubAdapter("owner/name", "main", "sana/0.6B")),
    ("owner/name/sana", HubAdapter("owner/name", None, "sana")),
    ("/abs/path", None), ("./rel/path", None), ("../up/x", None), ("~/x/y", None), ("single", None),
])
def test_hub_ids_parse_and_paths_do_not(text, expected):
    assert parse_hub_id(text) == expected


def test_subfolder_argument_joins_the_id(tmp_path):
    assert parse_hub_id("owner/name@v2/a", subfolder="b") == HubAdapter("owner/name", "v2", "a/b")


def test_an_existing_local_folder_wins_over_a_hub_id(tmp_path, monkeypatch, adapter):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "owner" / "name"
    shutil.copytree(adapter, local)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("the Hub was asked"))
    assert resolve_adapter_source("owner/name").resolve() == local
    load_adapter(build_generator("tiny"), "owner/name")


def test_offline_a_cached_adapter_loads_by_id_revision_and_subfolder(cache, offline, adapter):
    cache_repo(cache, "someone/adapter", adapter)
    cache_repo(cache, "someone/multi", adapter, subfolder="tiny")
    expected = load_adapter(build_generator("tiny"), adapter).trainable_state_dict()
    for source, subfolder in [("someone/adapter", None), (f"someone/adapter@{COMMIT}", None),
                              ("someone/multi/tiny", None), ("someone/multi", "tiny")]:
        hyper = load_adapter(build_generator("tiny"), source, subfolder=subfolder)
        got = hyper.trainable_state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got), source


def test_offline_a_missing_adapter_is_one_line_naming_the_id_and_the_cache(cache, offline):
    with pytest.raises(AdapterError) as info:
        load_adapter(build_generator("tiny"), "someone/absent@v3")
    message = str(info.value)
    assert "\n" not in message
    assert "someone/absent@v3" in message and str(cache) in message and "HF_HUB_OFFLINE" in message


def test_online_the_adapter_files_are_fetched_at_the_revision(cache, monkeypatch, adapter, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(adapter, snapshot / "sub")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    load_adapter(build_generator("tiny"), "someone/adapter@v2/sub")
    (repo_id, kwargs), = calls
    assert repo_id == "someone/adapter" and kwargs["revision"] == "v2" and kwargs["local_files_only"] is False
    assert set(kwargs["allow_patterns"]) == {"sub/*.json", "sub/*.safetensors", "sub/*.bin"}


def test_online_a_repository_that_does_not_exist_is_one_line(cache, monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def missing(repo_id, **kwargs):
        response = SimpleNamespace(headers={}, status_code=404, request=None)
        raise RepositoryNotFoundError("404 Client Error.\nRepository Not Found", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(AdapterError, match="no repository someone/nothing") as info:
        load_adapter(build_generator("tiny"), "someone/nothing")
    assert "\n" not in str(info.value)


def test_generate_takes_a_hub_id_for_adapter(cache, offline, adapter, tmp_path):
    cache_repo(cache, "someone/adapter", adapter)
    out = tmp_path / "gen"
    assert main(["generate", "--generator", "tiny", "--adapter", "someone/adapter", "--prompt", "a",
                 "--out", str(out)]) == 0
    assert (out / "hypernoise" / "000-a-seed0.png").is_file()


def test_generate_with_a_hub_id_missing_offline_fails_in_one_line(cache, offline, tmp_path, capsys):
    code = main(["generate", "--generator", "tiny", "--adapter", "someone/absent", "--prompt", "a",
                 "--out", str(tmp_path / "gen")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "someone/absent" in err and str(cache) in err
