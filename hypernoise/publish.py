"""Publishing an adapter folder to the Hugging Face Hub, with its model card.

    check_can_push()                                  # before a long run: offline or no token is one line
    push_to_hub(adapter_dir, repo_id, private=False)  # -> the repo's URL

What is uploaded (``huggingface_hub``'s ``create_repo`` then ``upload_folder``, imported when
pushing) is a staged copy of the folder (hard links) with its card (``card.model_card``) naming
``repo_id`` in its snippets, and every sample image the card shows; the local folder is changed only after the
upload succeeded (its card then names the repo too). A README.md the user wrote is uploaded
untouched. Adapters the library did not train (a bare peft folder) are uploaded without a
generated card. Whatever fails on the way (the Hub refuses, the network is down, an error of the
HTTP library) is one ``HubError`` line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from hypernoise.adapter import META_FILE, PEFT_CONFIG_FILE, WEIGHTS_FILE, check_local_folder
from hypernoise.card import CARD_FILE, is_generated, model_card, sample_files, write_model_card
from hypernoise.errors import AdapterError, ConfigError, HypernoiseError
from hypernoise.hub import hub_offline, repo_id_problem


class HubError(HypernoiseError):
    """The Hub refused or could not be reached; nothing local was changed."""

    exit_code = 1


def check_repo_id(repo_id) -> str:
    """``repo_id`` if the Hub takes it as a model repo (NAME or OWNER/NAME), else a ``ConfigError``."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise ConfigError(f"`hub_model_id` must be NAME or OWNER/NAME, got {str(repo_id)[:80]!r} ({problem}); "
                          f"nothing was trained or uploaded", field="hub_model_id")
    return repo_id


def check_can_push(token: Optional[str] = None, repo_id: Optional[str] = None) -> None:
    """Refuse now what would make a push fail after the run: a repo id the Hub refuses,
    ``HF_HUB_OFFLINE`` set, or no token (``token``, ``HF_TOKEN`` or a saved login)."""
    if repo_id is not None:
        check_repo_id(repo_id)
    if hub_offline():
        raise HubError("cannot push to the Hub with HF_HUB_OFFLINE set; unset it, or drop `push_to_hub` and push later "
                       "with `hypernoise push-to-hub RUN/adapter NAME`")
    from huggingface_hub import get_token

    if not (token or get_token()):
        raise HubError("no Hugging Face token to push with; run `hf auth login` or set HF_TOKEN")


def check_adapter_folder(folder) -> Path:
    """``folder`` if it holds an adapter, else the one-line ``AdapterError`` naming the folder to
    pass (a run folder, a file inside the adapter folder: ``adapter.check_local_folder``)."""
    folder = check_local_folder(Path(folder))
    if not (folder / WEIGHTS_FILE).is_file() or not ((folder / META_FILE).is_file()
                                                     or (folder / PEFT_CONFIG_FILE).is_file()):
        raise AdapterError(f"{folder} is not an adapter folder (no {WEIGHTS_FILE} with {META_FILE} or "
                           f"{PEFT_CONFIG_FILE}); pass the adapter/ folder that training wrote")
    return folder


def push_to_hub(adapter_dir, repo_id: str, *, private: bool = False, token: Optional[str] = None,
                commit_message: Optional[str] = None) -> str:
    """Upload ``adapter_dir`` to the model repo ``repo_id`` (created if needed, ``private`` then);
    returns the repo's URL."""
    folder = check_adapter_folder(adapter_dir)
    check_can_push(token, repo_id)
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        with _staged(folder, repo_id) as staged:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=str(getattr(url, "repo_id", repo_id)), folder_path=str(staged),
                              repo_type="model", commit_message=commit_message or "Upload hypernoise adapter")
    except HypernoiseError:
        raise
    except Exception as e:  # the Hub's refusals, the HTTP library's own errors (no network), OSError
        why = (str(e).strip().splitlines() or [""])[0][:160]
        raise HubError(f"pushing {folder} to {repo_id} failed ({type(e).__name__}: {why}); nothing local was "
                       f"changed, push again with `hypernoise push-to-hub {folder} {repo_id}`") from None
    if (folder / META_FILE).is_file():
        write_model_card(folder, repo_id)  # uploaded: the local card names the repo too
    return str(url)


@contextlib.contextmanager
def _staged(folder: Path, repo_id: str) -> Iterator[Path]:
    """A copy of ``folder`` (hard links where the file system allows) holding the card that
    names ``repo_id`` and the run's sample grid; removed at exit. ``folder`` is not written."""
    with tempfile.TemporaryDirectory(prefix=".tmp-push-") as tmp:
        staged = Path(tmp) / folder.name
        shutil.copytree(folder, staged, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(".*"))
        card = folder / CARD_FILE
        if (folder / META_FILE).is_file() and not (card.is_file() and not is_generated(card)):
            _replace_file(staged / CARD_FILE, model_card(folder, repo_id).encode())
            for name, data in sample_files(folder).items():  # every image the card shows is uploaded
                (staged / name).parent.mkdir(exist_ok=True)
                _replace_file(staged / name, data)
        yield staged


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(src, dst)


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file at ``path`` (never through a hard link to the user's file)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)
