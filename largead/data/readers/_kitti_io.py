"""Parsing and writing of the KITTI-format files shared by SemanticKITTI and its family.

``.bin`` point files (flat float32 records; nuScenes' ``.pcd.bin`` too), ``.label`` files (uint32: semantic id in
the lower 16 bits, instance id in the upper 16), ``calib.txt`` (``KEY: v1 v2 ...`` lines), ``poses.txt`` (12 floats a
line, a row-major 3x4 transform), ``times.txt`` (one float a line, seconds) and camera images. Every reader
validates and raises ``ValueError`` / ``FileNotFoundError`` naming the file and the problem; every writer writes
atomically (temp file + ``os.replace``). :func:`present_sequences` is the one place that decides which sequence
folders of a split exist (and warns about the others).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largead.data.geometry import check_rigid
from largead.fileio import atomic_write_bytes  # noqa: F401 - re-exported for the writers below and export.py

PathLike = str | os.PathLike


def one_line(err: BaseException | str) -> str:
    """An error's text on one line (library messages such as Arrow's or PIL's may span several)."""
    return " ".join(str(err).split())


def _require(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} file not found")
    return p


def read_bin(path: PathLike, columns: int = 4, dtype: np.dtype | type = np.float32,
             check_finite: bool = True) -> np.ndarray:
    """Read a flat binary point file as an ``(N, columns)`` array of ``dtype``.

    Raises if the file is missing, its size is not a multiple of one record (``columns * itemsize`` bytes), or (for
    float data, with ``check_finite``) any value is NaN or infinite.
    """
    p = _require(path, "point")
    dt = np.dtype(dtype)
    record = columns * dt.itemsize
    size = p.stat().st_size
    if size % record:
        raise ValueError(f"{p}: truncated or malformed point file: {size} bytes is not a multiple of the "
                         f"{record}-byte record ({columns} x {dt.name})")
    pts = np.fromfile(p, dtype=dt).reshape(-1, columns)
    if check_finite and dt.kind == "f":
        bad = ~np.isfinite(pts).all(axis=1)
        if bad.any():
            raise ValueError(f"{p}: {int(bad.sum())} of {len(pts)} points have non-finite values "
                             f"(first at row {int(np.argmax(bad))})")
    return pts


def read_raw_label(path: PathLike, n_points: int | None = None, dtype: np.dtype | type = np.uint32) -> np.ndarray:
    """Read a per-point label file of ``dtype`` records as int64, checking its length against ``n_points``."""
    p = _require(path, "label")
    dt = np.dtype(dtype)
    size = p.stat().st_size
    if size % dt.itemsize:
        raise ValueError(f"{p}: truncated or malformed label file: {size} bytes is not a multiple of "
                         f"{dt.itemsize} ({dt.name} per point)")
    raw = np.fromfile(p, dtype=dt).astype(np.int64)
    if n_points is not None and len(raw) != n_points:
        raise ValueError(f"{p}: has {len(raw)} labels but the point cloud has {n_points} points")
    return raw


def read_label(path: PathLike, n_points: int | None = None,
               dtype: np.dtype | type = np.uint32) -> tuple[np.ndarray, np.ndarray]:
    """Read a SemanticKITTI ``.label`` file: ``(semantic, instance)`` int64 arrays (lower / upper 16 bits)."""
    raw = read_raw_label(path, n_points, dtype)
    return raw & 0xFFFF, raw >> 16


def read_image(path: PathLike) -> np.ndarray:
    """Read a camera image file (PNG, JPEG, ...) as ``(H, W, 3)`` uint8 RGB; errors name the file."""
    from PIL import Image

    p = _require(path, "camera image")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{p}: not a decodable image (truncated or corrupt): {one_line(err)}") from err


def _parse_floats(p: Path, lineno: int, text: str) -> np.ndarray:
    try:
        vals = np.array([float(t) for t in text.split()], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{p}: line {lineno}: cannot parse numbers ({one_line(err)})") from None
    if not np.isfinite(vals).all():
        raise ValueError(f"{p}: line {lineno}: non-finite value")
    return vals


def read_calib(path: PathLike) -> dict[str, np.ndarray]:
    """Read a KITTI ``calib.txt``: ``{key: matrix}``.

    12-value entries become (3, 4) matrices (``P0..P3``, ``Tr``, ``Tr_velo_to_cam``...), 9-value entries (3, 3)
    (``R0_rect``), anything else a flat vector. ``Tr``-like entries must be rigid transforms and ``P``-like entries
    must have an invertible left 3x3 block; both are checked here so errors name the file.
    """
    p = _require(path, "calibration")
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise ValueError(f"{p}: line {lineno}: expected 'KEY: values', got {line[:60]!r}")
        key, rest = line.split(":", 1)
        vals = _parse_floats(p, lineno, rest)
        out[key.strip()] = vals.reshape(3, 4) if vals.size == 12 else vals.reshape(3, 3) if vals.size == 9 else vals
    for key, m in out.items():
        if key.startswith("Tr"):
            if m.shape != (3, 4):
                raise ValueError(f"{p}: {key} must have 12 values, got {m.size}")
            check_rigid(np.vstack([m, [0, 0, 0, 1]]), f"{p}: {key}")
        elif key.startswith("P") and m.shape == (3, 4):
            det = float(np.linalg.det(m[:, :3]))
            if abs(det) < 1e-9:
                raise ValueError(f"{p}: {key} is singular (det of its left 3x3 block is {det:.3g})")
    return out


def read_poses(path: PathLike) -> np.ndarray:
    """Read a KITTI ``poses.txt`` (12 floats a line, row-major 3x4) as (M, 4, 4) float64 rigid transforms."""
    p = _require(path, "poses")
    rows = []
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        vals = _parse_floats(p, lineno, line)
        if vals.size != 12:
            raise ValueError(f"{p}: line {lineno}: expected 12 values (a 3x4 pose), got {vals.size}")
        m = np.vstack([vals.reshape(3, 4), [0, 0, 0, 1]])
        check_rigid(m, f"{p}: line {lineno}")
        rows.append(m)
    return np.stack(rows) if rows else np.zeros((0, 4, 4))


def present_sequences(parent: PathLike, wanted: Sequence[str], split: str, marker: str = "", who: str = "",
                      required: bool = False) -> tuple[list[str], list[str]]:
    """Split the sequence folders ``wanted`` under ``parent`` into ``(present, missing)``, order kept.

    A sequence is present when ``<parent>/<seq>/<marker>`` is a folder (``marker=""``: the sequence folder itself).
    With ``required``, ``FileNotFoundError`` is raised when none is present. Otherwise missing sequences are skipped
    with one ``UserWarning`` naming them, the split and ``parent`` (prefixed with ``who``, the dataset name, when
    given).
    """
    present = [s for s in wanted if os.path.isdir(os.path.join(parent, s, marker))]
    missing = [s for s in wanted if s not in present]
    if required and not present:
        has = f"has a {marker}/ folder" if marker else "is present"
        raise FileNotFoundError(f"{os.fspath(parent)}: none of the {split} sequences {', '.join(wanted)} {has}")
    if missing:
        prefix = f"{who}: " if who else ""
        warnings.warn(f"{prefix}{os.fspath(parent)}: sequences {', '.join(missing)} of split {split!r} are missing "
                      "and skipped", stacklevel=3)
    return present, missing


def read_times(path: PathLike) -> np.ndarray:
    """Read a KITTI ``times.txt`` (one float a line, seconds) as (M,) float64."""
    p = _require(path, "times")
    vals = [_parse_floats(p, i, line) for i, line in enumerate(p.read_text().splitlines(), 1) if line.strip()]
    for i, v in enumerate(vals):
        if v.size != 1:
            raise ValueError(f"{p}: entry {i + 1}: expected one timestamp, got {v.size} values")
    return np.array([v[0] for v in vals], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------
# Writers (atomic, through largead.fileio)


def write_bin(path: PathLike, points: np.ndarray, dtype: np.dtype | type = np.float32) -> None:
    """Write an (N, C) array as a flat binary record file."""
    atomic_write_bytes(path, np.ascontiguousarray(points, dtype=dtype).tobytes())


def write_label(path: PathLike, semantic: np.ndarray, instance: np.ndarray | None = None) -> None:
    """Write a SemanticKITTI ``.label``: ``uint32(semantic | instance << 16)``; both must fit in 16 bits."""
    sem = np.asarray(semantic, dtype=np.int64)
    inst = np.zeros_like(sem) if instance is None else np.asarray(instance, dtype=np.int64)
    for name, a in (("semantic", sem), ("instance", inst)):
        if len(a) and (a.min() < 0 or a.max() > 0xFFFF):
            raise ValueError(f"{path}: {name} ids must be in [0, 65535], got [{a.min()}, {a.max()}]")
    atomic_write_bytes(path, (sem | (inst << 16)).astype(np.uint32).tobytes())


def _fmt(vals: np.ndarray) -> str:
    return " ".join(f"{v:.17g}" for v in np.asarray(vals, dtype=np.float64).ravel())


def write_calib(path: PathLike, entries: dict[str, np.ndarray]) -> None:
    """Write ``calib.txt`` lines ``KEY: values`` (row-major) in the given order."""
    atomic_write_bytes(path, "".join(f"{k}: {_fmt(v)}\n" for k, v in entries.items()).encode())


def write_poses(path: PathLike, poses: np.ndarray) -> None:
    """Write (M, 4, 4) transforms as ``poses.txt`` (top 3x4 rows, 12 floats a line)."""
    atomic_write_bytes(path, "".join(_fmt(m[:3]) + "\n" for m in np.asarray(poses)).encode())


def write_times(path: PathLike, times: np.ndarray) -> None:
    """Write (M,) timestamps in seconds as ``times.txt``."""
    atomic_write_bytes(path, "".join(f"{t:.17g}\n" for t in np.asarray(times, dtype=np.float64)).encode())
