"""Content digests: the keys that decide whether a cache, a conversion or a checkpoint still fits."""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any


def sha256_hex(*parts: bytes | str | Path) -> str:
    """The SHA-256 hex digest of ``parts`` in order: bytes as they are, a str as UTF-8, a Path as its
    file's bytes (read in 1 MiB chunks, so a multi-GB weight file never sits in memory whole)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with open(part, "rb") as fh:
                for chunk in iter(partial(fh.read, 1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()


def fingerprint(settings: Any, *parts: bytes | str | Path) -> str:
    """16 hex digits naming a run: ``settings`` as key-sorted JSON, then ``parts`` as :func:`sha256_hex` reads them."""
    return sha256_hex(json.dumps(settings, sort_keys=True), *parts)[:16]
