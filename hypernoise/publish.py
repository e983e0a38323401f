"""Publishing an adapter folder to the Hugging Face Hub, with its model card.

    check_can_push()                                  # before a long run: offline or no token is one line
    push_to_hub(adapter_dir, repo_id, private=False)  # -> the repo's URL

The folder is uploaded as it is (``huggingface_hub``'s ``create_repo`` then ``upload_folder``,
imported when pushing), after its card (``card.write_model_card``) is rewritten to name
``repo_id`` in its snippets; a README.md the user wrote is uploaded untouched. Adapters the library
did not train (a bare peft folder) are uploaded without a generated card.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from hypernoise.adapter import META_FILE, PEFT_CONFIG_FILE, WEIGHTS_FILE
from hypernoise.card import write_model_card
from hypernoise.errors import AdapterError, HypernoiseError


class HubError(HypernoiseError):
    """The Hub refused or could not be reached; nothing local was changed."""

    exit_code = 1


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_can_push(token: Optional[str] = None) -> None:
    """Refuse now what would make a push fail after the run: ``HF_HUB_OFFLINE`` set, or no token
    (``token``, ``HF_TOKEN`` or a saved login)."""
    if _offline():
        raise HubError("cannot push to the Hub with HF_HUB_OFFLINE set; unset it, or drop `push_to_hub` and push later "
                       "with `hypernoise push-to-hub RUN/adapter NAME`")
    from huggingface_hub import get_token

    if not (token or get_token()):
        raise HubError("no Hugging Face token to push with; run `hf auth login` or set HF_TOKEN")


def check_adapter_folder(folder) -> Path:
    """``folder`` if it holds an adapter (weights and a config), else a one-line AdapterError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} does not exist; pass the adapter/ folder that training wrote")
    if not (folder / WEIGHTS_FILE).is_file() or not ((folder / META_FILE).is_file()
                                                     or (folder / PEFT_CONFIG_FILE).is_file()):
        hint = f"; pass {folder / 'adapter'}" if (folder / "adapter").is_dir() else ""
        raise AdapterError(f"{folder} is not an adapter folder (no {WEIGHTS_FILE} with {META_FILE} or "
                           f"{PEFT_CONFIG_FILE}){hint}")
    return folder


def push_to_hub(adapter_dir, repo_id: str, *, private: bool = False, token: Optional[str] = None,
                commit_message: Optional[str] = None) -> str:
    """Upload ``adapter_dir`` to the model repo ``repo_id`` (created if needed, ``private`` then);
    returns the repo's URL."""
    folder = check_adapter_folder(adapter_dir)
    if not isinstance(repo_id, str) or not repo_id.strip() or repo_id.count("/") > 1 or " " in repo_id:
        raise HubError(f"`hub_model_id` must be NAME or OWNER/NAME, got {repo_id!r}")
    check_can_push(token)
    if (folder / META_FILE).is_file():
        write_model_card(folder, repo_id)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=str(getattr(url, "repo_id", repo_id)), folder_path=str(folder), repo_type="model",
                          commit_message=commit_message or "Upload hypernoise adapter")
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise HubError(f"pushing {folder} to {repo_id} failed ({str(e).splitlines()[0][:160]}); nothing local was "
                       f"changed, push again with `hypernoise push-to-hub {folder} {repo_id}`") from None
    return str(url)
