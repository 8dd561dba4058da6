"""Atomic file writes: the one implementation every writer in the package uses.

A file is written to a temporary name in its destination folder and moved into place with ``os.replace`` only once
complete, so an interrupted run never leaves a truncated checkpoint, cache, card or picture behind. The finished file
gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` minus the umask), not ``mkstemp``'s
owner-only ``0o600``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``, else it is removed.

    For writers that want a file name (``np.save``, ``safetensors.torch.save_file``, ``Figure.savefig``): the
    temporary name keeps ``path``'s suffix (or ``suffix``) so format detection by extension still works.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (keys in the given order unless ``sort_keys``, trailing newline) to ``path``
    atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final_dir``; on success it replaces ``final_dir`` (an existing folder
    is moved aside and removed only after the rename), on error it is deleted and ``final_dir`` is left untouched."""
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
