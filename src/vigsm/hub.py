"""Reaching the Hugging Face hub, or failing fast with one line that says how to work offline.

huggingface_hub retries an unreachable host for about half a minute before it gives up with a long
message; a researcher on an offline box deserves a clear answer in seconds.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from vigsm.errors import VigsmError

OFFLINE_HINT = ("to run offline, use a local path or the embedded default (`make offline`); "
                "see the README section 'Offline'")


def names_local_path(name: str) -> bool:
    """True when ``name`` means a local path rather than a hub id: it starts like a path (``.``, ``/``,
    ``~``) or something by that name exists here (a relative ``owner/name`` folder wins over the hub)."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 5.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        return False
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def cached_snapshot(repo_id: str, revision: str, repo_type: str = "model") -> str | None:
    """The local snapshot directory of a repo already in the HF cache, or None."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, repo_type=repo_type, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def require_hub(what: str, repo_id: str, revision: str) -> None:
    """Raise a one-line VigsmError when the hub cannot be reached for ``repo_id``."""
    if not hub_reachable():
        raise VigsmError(
            f"cannot reach the Hugging Face hub ({hub_endpoint()}) to load {what} '{repo_id}' "
            f"(revision {revision}) and it is not in the local cache; {OFFLINE_HINT}"
        )


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def require_repo(key: str, repo_id: str, what: str, revision: str, *, need_owner: bool) -> None:
    """``repo_id`` (the value of param ``key``) has a hub id's form (``owner/name``, or a bare name where
    ``need_owner`` is False), and is cached or the hub is reachable; else a one-line VigsmError."""
    owner_ok = repo_id.count("/") == 1 if need_owner else True
    if not owner_ok or not _HUB_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise VigsmError(f"{key}: '{repo_id}' is neither a local path nor a hub id (owner/name)")
    if cached_snapshot(repo_id, revision, repo_type=what) is None:
        require_hub(what, repo_id, revision)
