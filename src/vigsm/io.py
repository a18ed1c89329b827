"""Atomic file output and JSON Lines helpers.

Every output of a stage goes through here: it is written to a temporary file in the same directory and
renamed into place, so a stage killed at any moment leaves the old complete file or none, never a
truncated one that DVC could cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vigsm.errors import VigsmError


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates the file 0600; give it the mode a plain open() would (0666 minus the umask).
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON Lines atomically; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read JSON Lines; a bad line or bad UTF-8 is an error that names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise VigsmError(f"{path}: file not found")
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise VigsmError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason})") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VigsmError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise VigsmError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append(row)
    return rows


@contextmanager
def atomic_dir(path: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success move it onto ``path``.

    A run killed while writing leaves the old directory (or none), never a half-written one. With
    ``keep_existing``, a ``path`` that another process finished first is kept and this one discarded
    (a cache entry written by two processes at once); otherwise the new directory replaces the old.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if not keep_existing:
            replace_dir(tmp, path)
            return
        try:
            os.replace(tmp, path)
        except OSError:  # another process wrote ``path`` first: keep its copy
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def usual_permissions(root: str | Path) -> None:
    """Give every file under ``root`` the mode a plain open() would (0666 minus the umask): libraries that
    write atomically themselves (safetensors) leave 0600 files behind."""
    mode = 0o666 & ~_umask()
    for p in Path(root).rglob("*"):
        if p.is_file() and not p.is_symlink():
            p.chmod(mode)


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Move a fully written directory into place, removing the old one only at the last moment."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    old = final_dir.with_name(f".{final_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old)
