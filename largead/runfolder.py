"""A training run's output folder: one run at a time, verified checkpoints, a log that survives kills.

The file-level half of :mod:`largead.trainer` (which adds accelerate and several processes on top). Nothing here
imports torch or accelerate at module level.

Lock
    :class:`RunLock` takes an exclusive ``fcntl.flock`` on ``<output_dir>/.largead.lock`` and writes the holder's pid,
    host, start time and command line into it. A second run on the same folder is refused with
    :class:`RunLockedError` naming the holder. The operating system releases the lock when the holder exits or is
    killed; a clean exit also removes the file, so a lock file found with a previous holder's details means that
    holder died (:attr:`RunLock.previous`, reported by the trainer). Works on local file systems (and on NFS, where
    Linux emulates ``flock`` with POSIX locks).

Checkpoint manifests
    :func:`write_manifest` records the size and SHA-256 of every file of a checkpoint folder in ``manifest.json``,
    written last (after the files are flushed to disk); :func:`verify_checkpoint` checks it and raises
    :class:`CheckpointError` with a short reason: missing manifest (an incomplete, empty or older checkpoint), a
    missing, truncated or altered file, an unexpected file, a pickle that is not plain tensor data (checked with
    torch's ``weights_only`` unpickler, nothing is executed), or any ``custom_checkpoint_*.pkl`` (accelerate's pickled
    custom state, which it unpickles with code execution; largead writes custom state as JSON instead).

Losses log
    :class:`LossLog` reads ``losses.jsonl`` on resume (a torn last line from a kill mid-write is dropped and
    reported; steps after the checkpoint resumed from are dropped), rewrites it atomically only if that changed it,
    and appends one line per step with a flush.

Leftovers
    :func:`remove_stale_temporaries` removes the temporary files and folders an interrupted run leaves in its output
    folder (partial checkpoints, half-exported encoders); call it only while holding the lock.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCK_FILE = ".largead.lock"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "largead-checkpoint"
MANIFEST_VERSION = 1
CUSTOM_STATE = "custom_state_{}.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-" + CHECKPOINT_PREFIX
OLD_PREFIX = ".old-" + CHECKPOINT_PREFIX
SUMMARY_FILE = "summary.json"
LOSSES_FILE = "losses.jsonl"

_PICKLED_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


class RunLockedError(RuntimeError):
    """Another run holds the output folder's lock."""


class CheckpointError(RuntimeError):
    """A checkpoint folder failed verification or cannot be loaded safely."""


class RunWriteError(RuntimeError):
    """Writing part of a run (a checkpoint, the losses log, the final export) failed: disk full, read-only folder,
    no permission. The message says what is intact."""


class CheckpointWriteError(RunWriteError):
    """Writing a checkpoint failed; its partial folder was removed and the previous checkpoint is intact."""


def note(message: str) -> None:
    """A one-line report on stderr (the trainer calls it on the main process only)."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- durability


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's data and metadata to disk (:func:`largead.fileio.fsync_file` /
    :func:`~largead.fileio.fsync_directory`)."""
    from largead.fileio import fsync_directory, fsync_file

    (fsync_directory if Path(path).is_dir() else fsync_file)(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _is_stale_temporary(name: str) -> bool:
    """Names of the temporaries largead writes in a run folder (top level and ``checkpoints/``)."""
    if name.startswith((TMP_PREFIX, OLD_PREFIX)):
        return True
    for final in ("encoder", "model"):  # largead.fileio.atomic_directory: .<name>.tmp-<pid> / .<name>.old-<pid>
        if name.startswith((f".{final}.tmp-", f".{final}.old-")):
            return True
    # largead.fileio.atomic_path: .<name>.<random><suffix> beside the run's own files
    return any(name.startswith(f".{final}.") for final in (LOSSES_FILE, SUMMARY_FILE, "run_config.json"))


def remove_stale_temporaries(output_dir: str | os.PathLike) -> list[tuple[Path, int]]:
    """Remove the temporaries an interrupted run left in ``output_dir`` (and ``output_dir/checkpoints``):
    ``.tmp-checkpoint-N`` / ``.old-checkpoint-N`` folders, ``.encoder.tmp-<pid>`` and the like, half-written
    ``.losses.jsonl.*`` files. Returns ``[(path, bytes)]`` of what was removed. Call it only while holding the run's
    lock (then every such temporary belongs to a dead run, so unlike
    :func:`largead.fileio.clean_stale_temporaries`, which serves writers without a lock, no owner check is needed).
    """
    removed = []
    for folder in (Path(output_dir), Path(output_dir) / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if _is_stale_temporary(p.name):
                size = _size(p)
                _remove(p)
                removed.append((p, size))
    return removed


# --------------------------------------------------------------------------------------------------------- lock


def _read_holder(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 65536, 0)
    if not raw.strip():
        return None
    try:
        info = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"raw": raw[:200].decode("utf-8", "replace")}
    return info if isinstance(info, dict) else {"raw": str(info)[:200]}


def describe_holder(info: dict[str, Any] | None) -> str:
    """``pid 123 on host h, started 2025-01-01T10:00:00+00:00`` from a lock file's content."""
    if not info:
        return "a run that is starting (no details written yet)"
    if "raw" in info:
        return f"unknown holder ({info['raw']!r})"
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(info["started"])) if "started" in info else "?"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {started}"


@dataclass
class RunLock:
    """An exclusive lock on a run folder (see the module docstring). :meth:`acquire` it, :meth:`release` it."""

    path: Path
    fd: int
    previous: dict[str, Any] | None = None  # details left by a holder that died without releasing

    @classmethod
    def acquire(cls, output_dir: str | os.PathLike) -> RunLock:
        """Create ``output_dir`` if needed and lock it; :class:`RunLockedError` if another process holds it."""
        out = Path(output_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"output folder {out} is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
        path = out / LOCK_FILE
        for _ in range(100):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_holder(fd) if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else None
                os.close(fd)
                if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise RunLockedError(f"{out} is in use by another run ({describe_holder(holder)}); wait for it to "
                                         f"finish or use another --output-dir") from None
                raise
            # a holder that releases unlinks the file: make sure we locked the file that is at `path` now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - only under a storm of concurrent starts
            raise RunLockedError(f"could not lock {path}: it kept being replaced by other runs")
        previous = _read_holder(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        return cls(path, fd, previous)

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = -1


# ------------------------------------------------------------------------------------------------- checkpoints


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a folder named ``checkpoint-<step>``, else ``None``."""
    name = Path(path).name
    if not name.startswith(CHECKPOINT_PREFIX) or not name[len(CHECKPOINT_PREFIX):].isdigit():
        return None
    return int(name[len(CHECKPOINT_PREFIX):])


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every folder named ``checkpoint-<step>`` under ``output_dir/checkpoints``, oldest first
    (complete or not: :func:`verify_checkpoint` tells)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in root.iterdir() if p.is_dir()]
    return sorted((s, p) for s, p in found if s is not None)


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(folder: str | os.PathLike, step: int, processes: int = 1, sync: bool = True) -> dict[str, Any]:
    """Write ``folder/manifest.json`` (size and SHA-256 of every other file) as the checkpoint's last file. With
    ``sync`` the files are flushed to disk first and the manifest and the folder after, so a power loss cannot leave a
    manifest that vouches for data not on disk."""
    from largead.fileio import atomic_write_json

    folder = Path(folder)
    files = {}
    for rel in _files(folder):
        p = folder / rel
        if sync:
            fsync_path(p)
        files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "step": int(step),
                "processes": int(processes), "files": files}
    atomic_write_json(folder / MANIFEST_FILE, manifest, sort_keys=True)
    if sync:
        fsync_path(folder / MANIFEST_FILE)
        fsync_path(folder)
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a checkpoint folder; :class:`CheckpointError` if it is missing or malformed."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        if Path(folder).is_dir() and not any(Path(folder).iterdir()):
            raise CheckpointError("the folder is empty")
        raise CheckpointError(f"it has no {MANIFEST_FILE} (an incomplete checkpoint, or one written before largead "
                              "wrote manifests: largead.runfolder.adopt_checkpoint(folder) makes a complete one "
                              "resumable)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{MANIFEST_FILE} is unreadable ({type(err).__name__})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict)
            or not all(isinstance(v, dict) and {"size", "sha256"} <= set(v) for v in files.values())):
        raise CheckpointError(f"{MANIFEST_FILE} is not a largead checkpoint manifest")
    return manifest


def adopt_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    """Make a checkpoint written before largead wrote manifests resumable: its ``custom_checkpoint_{i}.pkl`` files
    (accelerate's pickled custom state) are read with torch's ``weights_only`` unpickler (a plain state dict loads,
    anything that would run code is refused) and rewritten as ``custom_state_{i}.json``, then the manifest is
    written. Only for folders you trust to be complete: the manifest vouches for whatever is there. Returns it."""
    from accelerate.utils import load

    from largead.fileio import atomic_write_json

    folder = Path(folder)
    step = checkpoint_step(folder)
    if not folder.is_dir() or step is None:
        raise CheckpointError(f"{folder}: not a folder named {CHECKPOINT_PREFIX}<step>")
    for pkl in sorted(folder.glob("custom_checkpoint_*.pkl")):
        index = pkl.stem.rsplit("_", 1)[1]
        try:
            state = load(str(pkl), map_location="cpu")
            text = json.dumps(state)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"{pkl}: not plain data, refused ({_weights_only_error(err)})") from None
        atomic_write_json(folder / CUSTOM_STATE.format(index), json.loads(text), sort_keys=True)
        pkl.unlink()
    return write_manifest(folder, step)


def checkpoint_size(folder: str | os.PathLike) -> int:
    """Bytes of a checkpoint folder (from its manifest when it has one)."""
    try:
        return sum(int(v["size"]) for v in read_manifest(folder)["files"].values())
    except CheckpointError:
        return _size(Path(folder))


def _weights_only_error(err: BaseException) -> str:
    """The reason torch's weights-only unpickler gave, without its advice to allow the global."""
    import re

    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    if found:
        return f"it calls {found.group(1)}, which is not tensor data"
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def check_pickles(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Open every pickled file of a checkpoint with torch's ``weights_only`` unpickler (as accelerate loads them),
    so nothing in it can run code and a damaged or foreign file is named before loading starts; refuse any
    ``custom_checkpoint_*.pkl`` (accelerate would unpickle it with ``weights_only=False``)."""
    from accelerate.utils import load

    folder = Path(folder)
    for rel in names:
        name = Path(rel).name
        if name.startswith("custom_checkpoint_") and name.endswith(".pkl"):
            raise CheckpointError(f"{rel} is accelerate's pickled custom state, which would be unpickled with code "
                                  "execution: refused (largead saves custom state as JSON)")
        if not name.endswith(_PICKLED_SUFFIXES):
            continue
        try:
            obj = load(str(folder / rel), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any failure means the file cannot be trusted
            raise CheckpointError(f"{rel} cannot be loaded as plain tensor data, nothing in it was run "
                                  f"({_weights_only_error(err)})") from None
        if name.startswith("random_states_") and not (
                isinstance(obj, dict) and {"random_state", "numpy_random_seed", "torch_manual_seed"} <= set(obj)):
            raise CheckpointError(f"{rel} is not an RNG state (missing keys)")


def verify_checkpoint(folder: str | os.PathLike, load_pickles: bool = True) -> dict[str, Any]:
    """Check a checkpoint folder against its manifest (and, with ``load_pickles``, :func:`check_pickles`); returns the
    manifest. :class:`CheckpointError`'s message is a short reason (what is missing, truncated or altered)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError("it is not a folder")
    manifest = read_manifest(folder)
    files = manifest["files"]
    for rel, meta in sorted(files.items()):
        p = folder / rel
        if not p.is_file():
            raise CheckpointError(f"{rel} is missing")
        size = p.stat().st_size
        if size != int(meta["size"]):
            kind = "truncated" if size < int(meta["size"]) else "grown"
            raise CheckpointError(f"{rel} has {size} bytes, the manifest says {meta['size']} ({kind})")
        if sha256_file(p) != meta["sha256"]:
            raise CheckpointError(f"{rel} does not match its checksum (altered or damaged)")
    extra = sorted(set(_files(folder)) - set(files))
    if extra:
        raise CheckpointError(f"{extra[0]} is not in the manifest (an unexpected file)")
    if load_pickles:
        check_pickles(folder, files)
    return manifest


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None, current_step: int | None = None) -> list[Path]:
    """Remove checkpoints after ``current_step`` (the stale future of a run that resumed from an earlier one) and all
    but the newest ``keep`` (``None``: keep all; 0: none). Each is renamed to ``.old-checkpoint-N`` before deletion,
    so an interrupted removal never leaves a half-deleted ``checkpoint-N``. Returns the removed folders."""
    ckpts = list_checkpoints(output_dir)
    doomed = [p for s, p in ckpts if current_step is not None and s > current_step]
    kept = [p for s, p in ckpts if current_step is None or s <= current_step]
    if keep is not None:
        doomed += kept[: max(0, len(kept) - int(keep))]
    for p in doomed:
        aside = p.with_name(OLD_PREFIX + p.name[len(CHECKPOINT_PREFIX):])
        _remove(aside)
        os.replace(p, aside)
        shutil.rmtree(aside)
    return doomed


# ------------------------------------------------------------------------------------------------- write errors


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _errno(err: BaseException) -> int | None:
    """The errno behind an error, also when a library wrapped it (torch's ``inline_container`` RuntimeError,
    safetensors' ``IoError(Os { code: 28 ...})``)."""
    seen = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return e.errno
        text = str(e)
        for code in _NO_SPACE + _NOT_WRITABLE:
            if f"code: {code}," in text or os.strerror(code) in text:
                return code
        e = e.__cause__ or e.__context__
    return None


def describe_write_error(err: BaseException, where: str | os.PathLike, what: str, intact: str) -> str:
    """One line for a failed write: ``no space left on <where> while writing <what>; <intact>`` (or ``cannot write
    to``, or the error itself). A torch writer's bare ``unexpected pos`` failure counts as a full disk when the file
    system has (almost) no space left."""
    code = _errno(err)
    if code is None and isinstance(err, RuntimeError) and any(s in str(err) for s in ("unexpected pos",
                                                                                       "file write failed")):
        try:
            if shutil.disk_usage(where).free < (1 << 20):
                code = errno.ENOSPC
        except OSError:
            pass
    if code in _NO_SPACE:
        return f"no space left on {where} while writing {what}; {intact}"
    if code in _NOT_WRITABLE:
        return f"cannot write to {where} ({os.strerror(code).lower()}) while writing {what}; {intact}"
    detail = " ".join(str(err).split())[:300] or type(err).__name__
    return f"writing {what} to {where} failed ({type(err).__name__}: {detail}); {intact}"


def run_write_error(err: BaseException, where: str | os.PathLike, what: str,
                    output_dir: str | os.PathLike) -> RunWriteError:
    """:class:`RunWriteError` for a write that failed during a run in ``output_dir``
    (:func:`describe_write_error`), saying which checkpoint is intact (the newest one) or that none was saved yet."""
    last = list_checkpoints(output_dir)[-1:]
    intact = f"the previous checkpoint {last[0][1].name} is intact" if last else "no checkpoint was saved yet"
    return RunWriteError(describe_write_error(err, where, what, intact))


# ------------------------------------------------------------------------------------------------------ losses log


@dataclass
class LossLog:
    """``losses.jsonl``: one JSON object per optimiser step (``{"step": N, ...}``).

    Opening it for a run that resumes at ``resume_step`` reads the existing file: a torn last line (a kill while it
    was being written) is dropped and reported with ``report``; any other unreadable line is an error naming the line;
    lines of steps after ``resume_step`` are dropped (the steps are redone). The file is rewritten, atomically, only
    when that changed it, and only at the first :meth:`append` (nothing is written before the run's first step).
    ``write=False`` (processes other than the main one) reads but never writes.
    """

    path: Path
    resume_step: int = 0
    write: bool = True
    report: Callable[[str], None] = note
    records: list[dict[str, Any]] = field(default_factory=list)
    _rewrite: str | None = None
    _fh: Any = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        kept: list[bytes] = []
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                    raise ValueError("no integer 'step'")
            except (ValueError, UnicodeDecodeError) as err:
                if i == len(lines) - 1:
                    if self.write:
                        self.report(f"{self.path}: dropped a torn last line ({len(line)} bytes, left by an "
                                    "interrupted write)")
                    break
                raise ValueError(f"{self.path}: line {i + 1} is not a step record ({err}); fix or delete that "
                                 "line to resume") from None
            if rec["step"] <= self.resume_step:
                kept.append(line)
                self.records.append(rec)
        text = b"".join(ln + b"\n" for ln in kept)
        if text != raw:
            self._rewrite = text.decode("utf-8")

    def append(self, record: dict[str, Any]) -> None:
        """Add one step's record (flushed at once)."""
        self.records.append(record)
        if not self.write:
            return
        if self._rewrite is not None:
            from largead.fileio import atomic_write_text

            atomic_write_text(self.path, self._rewrite)
            self._rewrite = None
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def sync(self) -> None:
        """Flush the log to disk (called before each checkpoint, so the log is durable up to it)."""
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_PREFIX",
    "CUSTOM_STATE",
    "LOCK_FILE",
    "LOSSES_FILE",
    "MANIFEST_FILE",
    "SUMMARY_FILE",
    "CheckpointError",
    "CheckpointWriteError",
    "LossLog",
    "RunLock",
    "RunLockedError",
    "RunWriteError",
    "adopt_checkpoint",
    "run_write_error",
    "check_pickles",
    "checkpoint_size",
    "checkpoint_step",
    "describe_holder",
    "describe_write_error",
    "fsync_path",
    "list_checkpoints",
    "note",
    "prune_checkpoints",
    "read_manifest",
    "remove_stale_temporaries",
    "sha256_file",
    "verify_checkpoint",
    "write_manifest",
]
