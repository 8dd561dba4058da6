"""Atomic, optionally durable file and folder writes: the one implementation every writer in the package uses.

Guarantees
----------
- **Atomic.** A file (:func:`atomic_path`, :func:`atomic_write_bytes` / ``_text`` / ``_json``) or a folder
  (:func:`atomic_directory`) is written under a temporary name in its destination folder and renamed into place only
  once complete, so an interrupted writer never leaves a truncated checkpoint, cache, card or picture under the final
  name. On error the temporary is removed and an existing destination is left untouched.
- **No silent replacement** (``overwrite=False``). The existence check and the final rename are one step:
  :func:`rename_noreplace` uses Linux's ``renameat2(RENAME_NOREPLACE)``, so of two writers racing for the same name
  exactly one succeeds and the other gets :class:`FileExistsError`. Where ``renameat2`` is missing (another OS, an old
  kernel, a file system without it) files fall back to ``os.link`` (atomic, fails if the name exists) and folders to
  reserving the name with ``os.mkdir`` and renaming onto that empty reservation; the guarantee holds between
  writers, but for a moment a reader can see an empty folder (and a writer killed in that moment leaves it behind).
- **Replacement without a gap** (``overwrite=True``): a folder is swapped with ``renameat2(RENAME_EXCHANGE)``, so a
  reader sees the old or the new folder, never none; the fallback moves the old folder aside first.
- **Durable** (``durable=True``): every written file is ``fsync``-ed before the rename and the parent folder after
  it, so a power loss cannot leave a renamed but empty file. It costs a few milliseconds per file (measured 4 ms on
  the development machine's disk against 0.1 ms without), so it is a parameter:

  - ``durable=False`` (default of the file writers): reports, cards, figures, dataset exports and test fixtures, which
    are small, frequent and cheap to redo.
  - ``durable=True`` (default of :func:`atomic_directory`, and passed by the caches): checkpoints and exported models
    (folders), :func:`largead.data.cache.write_cache`, :class:`largead.pretrain.temporal.SegmentCache`,
    :func:`largead.superpixels.save_superpixels` and its generator's manifest, the synthetic teacher's cache.

- **Recognisable temporaries.** A temporary is named ``.<name>.tmp-<host>-<pid>-<random>[<suffix>]`` (``.old-``
  for a folder moved aside during a replacement), where ``<host>`` is an 8-hex-digit hash of the host name and the
  PID namespace (so two containers sharing a host name do not mistake each other's PIDs) and ``<pid>`` the writing
  process. :func:`clean_stale_temporaries` removes those whose process is dead (leftovers of a killed writer);
  temporaries of live processes and of other hosts or containers (a shared file system) are kept, unless the caller
  says it is the folder's only writer (``all_owners=True``, e.g. while holding the run folder's lock).

The finished file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` minus the umask), a
finished folder those of ``os.mkdir`` (``0o777`` minus the umask), not ``mkstemp``'s owner-only ``0o600``/``0o700``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class CorruptFileError(ValueError):
    """A file exists but its content is damaged (truncated, corrupt, checksum mismatch). ``path`` names the file."""

    def __init__(self, path: PathLike, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


# ----------------------------------------------------------------------------------------------- permissions, fsync
def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    return 0o666 & ~_umask()


def fsync_file(path: PathLike) -> None:
    """Flush ``path``'s data to the disk (``os.fsync``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: PathLike) -> None:
    """Flush ``path``'s entries (names created, renamed or removed in it) to the disk. A no-op where folders cannot
    be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError as err:  # pragma: no cover - some file systems refuse fsync on folders
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_tree(path: PathLike) -> None:
    """``fsync`` every file and folder under ``path`` (folders after their contents), then ``path`` itself."""
    path = Path(path)
    if not path.is_dir():
        fsync_file(path)
        return
    for folder, _, files in os.walk(path, topdown=False):
        for name in files:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                fsync_file(p)
        fsync_directory(folder)


# ------------------------------------------------------------------------------------------ no-replace rename, swap
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


class _Unsupported(Exception):
    """renameat2 (or the flag) is not available here: use the fallback."""


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.2
    except (OSError, AttributeError):  # pragma: no cover - old C library
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2_fn = _load_renameat2()


def _renameat2(src: PathLike, dst: PathLike, flags: int) -> None:
    fn = _renameat2_fn
    if fn is None:
        raise _Unsupported
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        raise _Unsupported
    raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


def _exists(path: PathLike) -> bool:
    return os.path.lexists(path)


def rename_noreplace(src: PathLike, dst: PathLike) -> None:
    """Rename ``src`` (a file or a folder) to ``dst`` unless ``dst`` exists, as one atomic step.

    Raises :class:`FileExistsError` naming ``dst`` if it exists (also if it appeared a moment ago, written by another
    process). See the module docstring for the fallback where ``renameat2`` is not available.
    """
    try:
        _renameat2(src, dst, _RENAME_NOREPLACE)
        return
    except _Unsupported:
        pass
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "already exists; not replaced", os.fspath(dst)) from None
    if os.path.isdir(src) and not os.path.islink(src):
        try:
            os.mkdir(dst)  # reserve the name: exactly one of several racing writers gets it
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "already exists; not replaced", os.fspath(dst)) from None
        try:
            os.rename(src, dst)  # onto our own empty reservation
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(dst)
            raise
        return
    try:
        os.link(src, dst)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "already exists; not replaced", os.fspath(dst)) from None
    except OSError as err:  # no hard links on this file system: reserve the name with O_EXCL instead
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        try:
            os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "already exists; not replaced", os.fspath(dst)) from None
        os.replace(src, dst)
        return
    os.unlink(src)


def _remove(path: PathLike) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _replace(src: PathLike, dst: PathLike) -> None:
    """Move folder (or file) ``src`` to ``dst``, replacing whatever is there, with no moment where ``dst`` is absent
    where ``renameat2(RENAME_EXCHANGE)`` is available."""
    for _ in range(100):  # each retry means another writer changed dst in between
        try:
            _renameat2(src, dst, _RENAME_EXCHANGE)
        except FileNotFoundError:  # dst is absent
            try:
                rename_noreplace(src, dst)
                return
            except FileExistsError:
                continue
        except _Unsupported:
            break
        else:  # src now holds the old content
            _remove(src)
            return
    else:  # pragma: no cover - a pathological race
        raise OSError(errno.EAGAIN, "could not replace it: other writers keep changing it", os.fspath(dst))
    if not _exists(dst) or not os.path.isdir(src):
        os.replace(src, dst)  # a file replaces atomically; a folder onto nothing
        return
    old = _temporary_name(Path(dst), "old")
    os.replace(dst, old)
    os.replace(src, dst)
    _remove(old)


# ------------------------------------------------------------------------------------------------------ temporaries
def _host_token() -> str:
    ident = socket.gethostname()
    with contextlib.suppress(OSError):  # the PID namespace: constant on a host, its own in each container
        ident += f"|pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    return hashlib.sha1(ident.encode()).hexdigest()[:8]


_HOST = _host_token()
_TEMP_RE = re.compile(r"^\.(?P<target>.+?)\.(?P<kind>tmp|old)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]+(?:\..*)?$",
                      re.DOTALL)
# Folders written by largead <= 0.1's trainer.atomic_directory: ".<name>.tmp-<pid>" / ".<name>.old-<pid>" (no host).
# Recognised only on request (``legacy=True``): the pattern is loose enough to match a user's own file name.
_LEGACY_RE = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$", re.DOTALL)


def _prefix(name: str, kind: str = "tmp") -> str:
    return f".{name}.{kind}-{_HOST}-{os.getpid()}-"


def _temporary_name(final: Path, kind: str = "tmp") -> Path:
    """A fresh (not created) temporary name beside ``final``."""
    return final.with_name(_prefix(final.name, kind) + os.urandom(6).hex())


def temporary_path(final: PathLike) -> Path:
    """A fresh name (not created) beside ``final`` for a temporary that :func:`clean_stale_temporaries` recognises as
    this process's: for writers that fill a folder themselves and commit it with :func:`commit_directory` (e.g. a
    checkpoint that several processes write; the main process picks the name and shares it)."""
    return _temporary_name(Path(final))


def temporary_owner(name: str, legacy: bool = False) -> tuple[str, int] | None:
    """``(host token, pid)`` of a temporary name written by this module, or ``None`` if ``name`` is not one.

    ``legacy``: also recognise ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` (largead <= 0.1's
    ``trainer.atomic_directory``), attributed to this host.
    """
    m = _TEMP_RE.match(name)
    if m:
        return m["host"], int(m["pid"])
    m = _LEGACY_RE.match(name) if legacy else None
    if m:
        return _HOST, int(m["pid"])
    return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a real owner: keep it
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OverflowError:
        return False
    try:  # a killed but not yet reaped child is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def clean_stale_temporaries(folder: PathLike, *, recursive: bool = False, all_owners: bool = False,
                            legacy: bool = False) -> list[Path]:
    """Remove the temporaries (files and folders, see the module docstring) in ``folder`` whose writer is dead.

    A temporary is stale when it was written on this host (and PID namespace) by a process that no longer runs (a
    zombie counts as dead). Temporaries of live processes (a concurrent writer, this process) and of other hosts or
    containers are kept. ``all_owners=True`` removes every recognised temporary but this process's own, whoever
    wrote it: only for a caller that knows it is the folder's only writer (it holds the folder's lock).
    ``legacy=True`` also removes ``.<name>.tmp-<pid>`` / ``.old-<pid>`` *folders* of dead processes (largead <= 0.1's
    ``trainer.atomic_directory``). ``recursive``: search sub-folders too. A missing ``folder`` is fine. Returns the
    removed paths, sorted.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            owner = temporary_owner(entry.name)
            if owner is None and legacy and entry.is_dir(follow_symlinks=False):
                owner = temporary_owner(entry.name, legacy=True)
            if owner is not None:
                host, pid = owner
                if (host, pid) == (_HOST, os.getpid()):
                    continue  # our own, in use
                if all_owners or (host == _HOST and not _pid_alive(pid)):
                    _remove(entry.path)
                    removed.append(Path(entry.path))
                    log.info("removed %s, left behind by process %d (no longer writing)", entry.path, pid)
                continue
            if recursive and entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return sorted(removed)


# ------------------------------------------------------------------------------------------------------ file writes
@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None, *, durable: bool = False,
                overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it becomes ``path``, else it is removed.

    For writers that want a file name (``np.save``, ``safetensors.torch.save_file``, ``Figure.savefig``): the
    temporary name keeps ``path``'s suffix (or ``suffix``) so format detection by extension still works.
    ``durable``: ``fsync`` the file before and its folder after the rename. ``overwrite=False``: raise
    :class:`FileExistsError` (and keep the existing file) if ``path`` exists when the block ends.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path.name), suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        if durable:
            fsync_file(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            rename_noreplace(tmp, path)
        if durable:
            fsync_directory(path.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: PathLike, data: bytes, *, durable: bool = False, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (``durable``, ``overwrite``: see :func:`atomic_path`); returns it."""
    with atomic_path(path, durable=durable, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, *, durable: bool = False, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable, overwrite=overwrite)


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2, *, sort_keys: bool = False,
                      durable: bool = False, overwrite: bool = True) -> Path:
    """Write ``obj`` as JSON (keys in the given order unless ``sort_keys``, trailing newline) to ``path``
    atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n", durable=durable,
                             overwrite=overwrite)


# ---------------------------------------------------------------------------------------------------- folder writes
def commit_directory(tmp: PathLike, final_dir: PathLike, *, overwrite: bool = True, durable: bool = True) -> Path:
    """Move the finished folder ``tmp`` to ``final_dir`` (same parent folder) in one step; returns ``final_dir``.

    ``overwrite=False``: :class:`FileExistsError` if ``final_dir`` exists, decided atomically with the rename
    (``tmp`` is then left in place for the caller to remove). ``overwrite=True``: an existing ``final_dir`` is swapped
    out and removed. ``durable``: every file and folder under ``tmp`` is ``fsync``-ed before, the parent after.
    For writers that cannot use :func:`atomic_directory` (e.g. several processes filling one checkpoint folder).
    """
    tmp, final = Path(tmp), Path(final_dir)
    if durable:
        fsync_tree(tmp)
    if overwrite:
        _replace(tmp, final)
    else:
        rename_noreplace(tmp, final)
    if durable:
        fsync_directory(final.parent)
    return final


@contextlib.contextmanager
def atomic_directory(final_dir: PathLike, *, overwrite: bool = True, durable: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final_dir``; when the block succeeds it becomes ``final_dir``.

    On error (or if the final step fails) the temporary folder is deleted and ``final_dir`` is left untouched.
    ``overwrite=False``: :class:`FileExistsError` if ``final_dir`` exists, checked on entry (before any work) and
    again atomically with the final rename (a concurrent writer that finished first wins; this one fails).
    ``overwrite=True``: an existing ``final_dir`` is replaced (readers see the old or the new folder, see the module
    docstring). ``durable`` (default ``True``): see :func:`commit_directory`.
    """
    final = Path(final_dir)
    if not overwrite and _exists(final):
        raise FileExistsError(errno.EEXIST, "already exists; not replaced", os.fspath(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(final.name), dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        commit_directory(tmp, final, overwrite=overwrite, durable=durable)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = [
    "CorruptFileError", "atomic_directory", "atomic_path", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "clean_stale_temporaries", "commit_directory", "fsync_directory", "fsync_file", "fsync_tree",
    "rename_noreplace", "temporary_owner", "temporary_path",
]
