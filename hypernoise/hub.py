"""Adapters on the Hugging Face Hub: an adapter argument that is a Hub id, to a local folder.

    resolve_adapter_source("runs/a/adapter")                        a local path that exists: itself
    resolve_adapter_source("lucaeyring/HyperNoise_Sana_Sprint_0.6B")     the repository's snapshot
    resolve_adapter_source("owner/name@v1")                               ... at revision v1
    resolve_adapter_source("owner/name@v1/sana")                          ... its folder sana
    resolve_adapter_source("owner/name", subfolder="sana")                the same, as an argument

A path that exists always wins over a Hub id spelt the same. A Hub id is ``OWNER/NAME``, then
optionally ``@REVISION`` (a branch, tag or commit) and ``/SUBFOLDER`` (the ``hf://`` spelling).
``OWNER/NAME`` follows the Hub's rules (huggingface_hub's ``validate_repo_id``: letters, digits,
``-``, ``_``, ``.``; no ``--`` or ``..``; at most 96 characters), and a subfolder stays inside the repository
(no ``..``): anything else is an ``AdapterError`` saying so, not a failed download.
It is fetched with ``huggingface_hub.snapshot_download`` through the Hugging Face cache
(``HF_HUB_CACHE``), adapter files only (json, safetensors, bin); with ``HF_HUB_OFFLINE`` set
nothing is downloaded, and an adapter missing from the cache is one ``AdapterError`` line naming
the id and the cache. huggingface_hub is imported only when a Hub id is resolved.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hypernoise.env import flag
from hypernoise.errors import AdapterError

#: OWNER/NAME[@REVISION][/SUBFOLDER]; OWNER starts with a letter or digit, so "./x", "../x", "/x", "~/x" are paths
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^/@\s]+))?(?:/(?P<subfolder>[^@\s]+))?")
#: the files of an adapter folder (this library's and peft's)
ADAPTER_FILES = ("*.json", "*.safetensors", "*.bin")
#: a folder of the Hugging Face cache: ``models--OWNER--NAME/snapshots/<commit>``
_CACHE_SNAPSHOT = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/[0-9a-f]{40}")


def repo_id_problem(repo_id) -> str | None:
    """What makes ``repo_id`` (NAME or OWNER/NAME) not a Hub repo id, or None where it is one
    (huggingface_hub's own ``validate_repo_id``: letters, digits, '-', '_' and '.', at most 96,
    no '--' or '..', not starting or ending with '-' or '.')."""
    if not isinstance(repo_id, str) or not repo_id.strip():
        return "it is empty"
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        return (str(e).strip().splitlines() or ["not a repo id"])[0][:200]
    return None


def hub_id_of_weights(pretrained) -> Optional[str]:
    """The Hub id of the weights ``pretrained`` names: itself when it is a repo id and no local
    path, the repository of a Hugging Face cache snapshot (``.../models--OWNER--NAME/snapshots/
    <commit>``), else None (a local folder, which names no Hub model)."""
    if not isinstance(pretrained, str) or not pretrained.strip():
        return None
    path = Path(pretrained).expanduser()
    if not path.exists():
        return pretrained if "/" in pretrained and repo_id_problem(pretrained) is None else None
    match = _CACHE_SNAPSHOT.search(str(path.resolve()).replace(os.sep, "/"))
    repo = f"{match['owner']}/{match['name']}" if match else None
    return repo if repo and repo_id_problem(repo) is None else None


@dataclass(frozen=True)
class HubAdapter:
    """An adapter in a Hub repository: ``repo_id``, ``revision`` (None: main), ``subfolder``."""

    repo_id: str
    revision: Optional[str] = None
    subfolder: Optional[str] = None

    def __str__(self) -> str:
        revision, subfolder = f"@{self.revision}" if self.revision else "", f"/{self.subfolder}" if self.subfolder else ""
        return self.repo_id + revision + subfolder

    def patterns(self) -> list[str]:
        """``allow_patterns`` of the download: the adapter files, inside ``subfolder`` if any."""
        return [f"{self.subfolder}/{p}" if self.subfolder else p for p in ADAPTER_FILES]


def parse_hub_id(source: str, subfolder: Optional[str] = None) -> Optional[HubAdapter]:
    """``source`` as a Hub adapter, or None where it cannot be one (it is spelt as a path).
    ``subfolder`` joins the one in the id (``owner/name/a`` with ``subfolder="b"``: ``a/b``).
    Spelt as a Hub id but not a valid one (``owner/..``), or with a subfolder that leaves the
    repository (``owner/name/../..``): an ``AdapterError``."""
    match = _HUB_ID.fullmatch(str(source))
    if match is None:
        return None
    problem = repo_id_problem(match["repo"])
    if problem:
        raise AdapterError(f"adapter {str(source)[:80]!r} is not a local folder, nor a valid Hub id ({problem}); pass "
                           f"an adapter folder that exists or a Hub id OWNER/NAME[@REVISION][/SUBFOLDER]")
    parts = [p.strip("/") for p in (match["subfolder"], subfolder) if p and p.strip("/")]
    folder = "/".join(parts)
    if any(step in ("..", ".") for step in folder.split("/")):
        raise AdapterError(f"Hub adapter {str(source)[:80]}: the subfolder {folder[:60]!r} leaves the repository or "
                           f"names '.'; pass a folder inside it (e.g. OWNER/NAME/sana)")
    return HubAdapter(match["repo"], match["revision"], folder or None)


def resolve_adapter_source(source, subfolder: Optional[str] = None) -> Path:
    """The local folder of an adapter argument: ``source`` (joined with ``subfolder``) when that
    path exists or ``source`` cannot be a Hub id, else the Hub adapter's folder in the cache
    (downloaded unless ``HF_HUB_OFFLINE`` is set). Whether the folder is an adapter is checked
    by the caller (``adapter.resolve_adapter_folder``)."""
    path = Path(source).expanduser()
    local = path / subfolder if subfolder else path
    hub = None if path.exists() else parse_hub_id(str(source), subfolder)
    return local if hub is None else fetch(hub)


def hub_offline() -> bool:
    """Whether nothing may be downloaded or uploaded: huggingface_hub's own constant
    ``HF_HUB_OFFLINE`` (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` as it read them at import,
    what its downloads obey), or ``HF_HUB_OFFLINE`` as it is set now. The one rule of the library
    (adapters, pipeline weights, pushes)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or flag("HF_HUB_OFFLINE")


def fetch(hub: HubAdapter) -> Path:
    """The adapter's folder in the Hugging Face cache, downloaded first unless offline."""
    from huggingface_hub import constants, snapshot_download

    offline = hub_offline()
    try:
        root = snapshot_download(hub.repo_id, revision=hub.revision, allow_patterns=hub.patterns(),
                                 local_files_only=offline)
    except Exception as e:  # not cached offline, no such repo or revision, no network, a bad id: one line each
        raise AdapterError(_fetch_failed(hub, e, offline, constants.HF_HUB_CACHE)) from None
    folder = Path(root) / hub.subfolder if hub.subfolder else Path(root)
    if not Path(os.path.realpath(folder)).is_relative_to(os.path.realpath(root)):  # a link out of the snapshot
        raise AdapterError(f"Hub adapter {hub}: the subfolder {hub.subfolder!r} leads outside the repository's "
                           f"snapshot; pass a folder inside it")
    if not folder.is_dir():
        raise AdapterError(f"Hub adapter {hub}: the repository has no folder {hub.subfolder!r}; pass the "
                           f"subfolder that holds adapter_config.json or hypernoise.json")
    return folder


def _fetch_failed(hub: HubAdapter, error: Exception, offline: bool, cache: str) -> str:
    kind = type(error).__name__
    if offline:
        return (f"adapter {hub} is not a local folder and not in the Hugging Face cache {cache} "
                f"(HF_HUB_OFFLINE is set, so nothing is downloaded); fetch it once online "
                f"(hf download {hub.repo_id}) or pass a local adapter folder")
    if kind in ("RepositoryNotFoundError", "GatedRepoError"):
        return (f"adapter {hub} is not a local folder, and the Hugging Face Hub has no repository {hub.repo_id} "
                f"you can read (log in with `hf auth login` if it is private)")
    if kind == "RevisionNotFoundError":
        return f"adapter {hub}: the Hub repository {hub.repo_id} has no revision {hub.revision!r}"
    why = (str(error).strip().splitlines() or [""])[0][:160]
    return (f"adapter {hub} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({kind}: {why}) nor found in the cache {cache}; check the network, or pass a local adapter folder")
