"""Model cards and publishing (issue 20, item 3): every training run writes adapter/README.md with
the Hub's YAML header, its settings, what it measured and how to use it; `--push-to-hub` and
`hypernoise push-to-hub` upload the folder through huggingface_hub's own API (faked here: no
network), and refuse an offline or token-less push before any training."""

import json
import re

import pytest

from hypernoise.card import GENERATED, model_card, write_model_card
from hypernoise.cli.main import main


def _yaml_header(text: str) -> dict:
    """The card's header as the Hub reads it: huggingface_hub's own ``ModelCard`` parser."""
    from huggingface_hub import ModelCard

    assert text.startswith("---\n")
    return ModelCard(text).data.to_dict()


def _files(folder, but=None) -> dict:
    """Every file under ``folder`` (but ``but``) -> its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != but}


class FakeApi:
    """Records what huggingface_hub.HfApi would have been asked to do."""

    calls: list = []
    fail = None

    def __init__(self, token=None):
        FakeApi.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if FakeApi.fail:
            raise FakeApi.fail

        class Url(str):
            pass

        url = Url(f"https://huggingface.co/{repo_id}")
        url.repo_id = repo_id if "/" in repo_id else f"me/{repo_id}"
        return url

    def upload_folder(self, **kwargs):
        folder = __import__("pathlib").Path(kwargs["folder_path"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        card = (folder / "README.md").read_text() if (folder / "README.md").is_file() else None
        FakeApi.calls.append(("upload_folder", {**kwargs, "files": files, "card": card}))


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    FakeApi.calls, FakeApi.fail = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return FakeApi


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("card") / "run"
    assert main(["train", "--generator", "shapes", "--steps", "2", "--batch-size", "4", "--eval-seeds", "1",
                 "--no-progress", "--out", str(run)]) == 0
    return run


def test_every_training_run_writes_a_card_with_what_it_measured(shapes_run):
    card = (shapes_run / "adapter" / "README.md").read_text()
    header = _yaml_header(card)
    assert header["library_name"] == "hypernoise" and "noise-hypernetwork" in header["tags"]
    assert "base_model" not in header  # the built-in world is not on the Hub
    meta = json.loads((shapes_run / "adapter" / "hypernoise.json").read_text())
    assert f"| reward | `{meta['settings']['reward']}` |" in card and "| steps | 2 |" in card
    scores = json.loads((shapes_run / "before_after.json").read_text())
    overall = scores["hypernoise"]["geneval"]["overall"]
    assert f"| overall | {scores['base']['geneval']['overall']:.3f} | {overall:.3f} |" in card
    assert "![base (top) and with this adapter (bottom)" in card and (shapes_run / "adapter" / "samples.png").is_file()
    assert f"--adapter {(shapes_run / 'adapter').resolve()}" in card and card.rstrip().splitlines()[-1].startswith(GENERATED)


def test_a_users_own_readme_is_never_overwritten(shapes_run, tmp_path):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(shapes_run / "adapter", adapter)
    (adapter / "README.md").write_text("# my own card\n")
    assert write_model_card(adapter, "me/x") is None
    assert (adapter / "README.md").read_text() == "# my own card\n"


def test_push_to_hub_uploads_the_folder_with_a_card_naming_the_repo(shapes_run, tmp_path, hub, capsys):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(shapes_run / "adapter", adapter)
    assert main(["push-to-hub", str(adapter), "me/shapes-hn", "--hub-private"]) == 0
    create = [c for name, c in hub.calls if name == "create_repo"][0]
    upload = [c for name, c in hub.calls if name == "upload_folder"][0]
    assert create == {"repo_id": "me/shapes-hn", "private": True, "exist_ok": True, "repo_type": "model"}
    assert upload["repo_id"] == "me/shapes-hn" and upload["repo_type"] == "model"
    assert {"README.md", "adapter_model.safetensors", "hypernoise.json", "samples.png"} <= set(upload["files"])
    header = _yaml_header(upload["card"])  # every image the card shows is in the uploaded folder
    shown = [w["output"]["url"] for w in header["widget"]] + re.findall(r"!\[[^\]]*\]\(([^)]+)\)", upload["card"])
    assert header["widget"] and all(name in upload["files"] for name in shown), (shown, upload["files"])
    assert "--adapter me/shapes-hn" in upload["card"]  # a staged copy is uploaded, with the card naming the repo
    assert "--adapter me/shapes-hn" in (adapter / "README.md").read_text()  # and, uploaded, the local card too
    assert "pushed" in capsys.readouterr().out


def test_a_failed_upload_is_one_line_and_changes_nothing_local(shapes_run, tmp_path, hub, capsys):
    import shutil

    from huggingface_hub.errors import HfHubHTTPError

    adapter = tmp_path / "adapter"
    shutil.copytree(shapes_run / "adapter", adapter)
    before = _files(adapter, but="README.md")
    hub.fail = HfHubHTTPError.__new__(HfHubHTTPError)  # built without a live HTTP response
    Exception.__init__(hub.fail, "403 Forbidden: you cannot write to this namespace")
    assert main(["push-to-hub", str(adapter), "someone-else/x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "403 Forbidden" in err and "push again with" in err, err
    assert _files(adapter, but="README.md") == before


@pytest.mark.parametrize("setup, message", [
    ("offline", "HF_HUB_OFFLINE set"),
    ("no-token", "no Hugging Face token"),
])
def test_train_refuses_a_push_that_would_fail_before_training(tmp_path, monkeypatch, capsys, setup, message):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    if setup == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    out = tmp_path / "run"
    assert main(["train", "--generator", "toy2d", "--steps", "2", "--push-to-hub", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_train_push_to_hub_uploads_after_the_run(tmp_path, hub):
    out = tmp_path / "my-run"
    assert main(["train", "--generator", "shapes", "--steps", "1", "--batch-size", "2", "--eval-seeds", "1",
                 "--no-progress", "--push-to-hub", "--out", str(out)]) == 0
    upload = [c for name, c in hub.calls if name == "upload_folder"][0]
    assert upload["repo_id"] == "me/my-run" and "--adapter my-run" in upload["card"]
    assert "--adapter my-run" in (out / "adapter" / "README.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["train", "--generator", "toy2d", "--hub-model-id", "me/x"], "--hub-model-id and --hub-private apply with --push-to-hub"),
    (["push-to-hub", "{run}", "me/x"], "pass {run}/adapter"),
    (["push-to-hub", "{missing}", "me/x"], "does not exist"),
    (["push-to-hub", "{run}/adapter", "a b"], "must be NAME or OWNER/NAME"),
])
def test_bad_push_arguments_are_one_line(shapes_run, tmp_path, hub, capsys, argv, message):
    fill = {"run": str(shapes_run), "missing": str(tmp_path / "nope")}
    argv = [a.format(**fill) for a in argv]
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(**fill) in err, err
    assert not [c for name, c in hub.calls if name == "upload_folder"]


def _card_for(adapter, meta, **changes) -> str:
    (adapter / "hypernoise.json").write_text(json.dumps({**meta, **changes}))
    return model_card(adapter)


def test_base_model_is_the_weights_the_run_trained_from(shapes_run, tmp_path):
    """A Hub id is named as it is (with its licence where the card knows the model); a Hugging Face
    cache folder names its repository; a local folder names none, and the card says so."""
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(shapes_run / "adapter", adapter)
    meta = json.loads((adapter / "hypernoise.json").read_text())
    local = tmp_path / "local-copy"
    local.mkdir()
    cached = tmp_path / "hub" / "models--Efficient-Large-Model--Sana_Sprint_1.6B_1024px_diffusers" / "snapshots" / ("0" * 40)
    cached.mkdir(parents=True)
    cases = [("sana-sprint", "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers", "other", "SanaSprintPipeline"),
             ("sana-sprint", str(cached), "other", "SanaSprintPipeline"),
             ("sd-turbo", "stabilityai/sd-turbo", "other", "AutoPipelineForText2Image"),
             ("flux-schnell", "black-forest-labs/FLUX.1-schnell", "apache-2.0", "FluxPipeline"),
             ("flux-schnell", "someone/my-flux-finetune", None, "FluxPipeline")]
    for generator, pretrained, licence, pipeline in cases:
        card = _card_for(adapter, meta, generator=generator, pretrained=pretrained)
        header = _yaml_header(card)
        base = "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers" if pretrained == str(cached) else pretrained
        assert header["base_model"] == base and header.get("license") == licence, header
        assert header["pipeline_tag"] == "text-to-image" and generator in header["tags"]
        assert f"from diffusers import {pipeline}" in card and f'from_pretrained("{base}"' in card
    header = _yaml_header(card := _card_for(adapter, meta, generator="sd-turbo", pretrained=str(local)))
    assert "base_model" not in header and "license" not in header  # tiny or private weights are no Hub model
    assert "a local folder that names no Hub model" in card and f'from_pretrained("{local}"' in card


def test_every_card_header_is_the_hubs_with_each_methods_usage(shapes_run, tmp_path):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(shapes_run / "adapter", adapter)
    meta = json.loads((adapter / "hypernoise.json").read_text())
    for method, kind, library in (("hypernoise", "lora", "hypernoise"), ("finetune", "finetune-lora", "diffusers")):
        card = _card_for(adapter, meta, generator="sd-turbo", pretrained="stabilityai/sd-turbo",
                         hypernetwork={**meta["hypernetwork"], "type": kind}, settings={**meta["settings"], "method": method})
        header = _yaml_header(card)
        assert header["library_name"] == library and header["pipeline_tag"] == "text-to-image"
        assert ("hypernoise.attach(pipe" in card) == (method == "hypernoise")
        assert ('pipe.unet.load_lora_adapter("' in card) == (method == "finetune")
        assert "best/" not in card  # the card never links a folder that is not uploaded


def test_the_card_renders_valid_yaml_and_links_an_image_in_its_folder(shapes_run):
    """The Hub parses the header as YAML; every image the card links is a file of the folder."""
    import re

    yaml = pytest.importorskip("yaml")
    adapter = shapes_run / "adapter"
    card = (adapter / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["library_name"] == "hypernoise" and isinstance(header["tags"], list)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)
    assert links and all((adapter / link).is_file() for link in links)


def test_an_unreachable_hub_is_one_line_and_the_local_folder_is_untouched(shapes_run, tmp_path):
    """The Hub's address refuses connections (the HTTP library's own ConnectError, not a Hub
    error): one line, exit 1, and the card and sample grid were not rewritten before the upload."""
    import os
    import shutil
    import subprocess
    import sys

    adapter = tmp_path / "adapter"
    shutil.copytree(shapes_run / "adapter", adapter)
    before = _files(adapter)
    env = {**os.environ, "HF_TOKEN": "hf_test", "HF_ENDPOINT": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-m", "hypernoise.cli.main", "push-to-hub", str(adapter), "me/x"], env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "pushing" in lines[0] and "failed" in lines[0] and "push again with" in lines[0], lines[0]
    assert _files(adapter) == before
