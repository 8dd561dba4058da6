"""Bulk feature extraction: per-point encoder features of many scans, resumable, with a throughput report.

    >>> from largead.extract import extract_features, file_source, dataset_source   # doctest: +SKIP
    >>> stats = extract_features(encoder, file_source(["scans/*.bin"]), "features/")  # doctest: +SKIP
    >>> print(stats.summary())                                                        # doctest: +SKIP

Sources name their scans: :func:`file_source` takes files, folders (every scan file inside, sorted) and globs;
:func:`dataset_source` takes a dataset reader's split (frames are named by their token). Scans are read in
background processes (a ``torch.utils.data.DataLoader`` with ``workers`` workers, so reading overlaps with the
network), embedded ``batch_size`` at a time with :meth:`LargeADEncoder.embed` (``precision="auto"``: bfloat16 where
the hardware has it) and written as

- ``format="npy"``: one ``<name>.npy`` (N, D) float32 per scan, rows in the scan's point order. A name holding
  ``/`` (KITTI tokens ``"08/000123"``) becomes a sub-folder. A file that is already there and valid (a complete
  2-D float32 ``.npy`` of the model's width) is skipped, so an interrupted run resumes where it stopped;
- ``format="parquet"``: shards ``<prefix>-00000-of-000NN.parquet`` of ``shard_size`` scans each, columns ``name``
  (string), ``num_points`` (int32) and ``features`` (list of fixed-size lists of float32), which
  ``datasets.load_dataset("parquet", data_files=...)`` opens; a complete shard is skipped on a rerun.

Every file is written atomically (:mod:`largead.fileio`): an interrupted run leaves whole files or none. An empty
scan, an unreadable file or a point beyond the voxel grid's range is an error naming the scan; ``max_range``
drops points farther than that many metres from the sensor first (their feature rows are NaN, so rows still align
with the input points) and the summary says how many.
"""

from __future__ import annotations

import glob
import inspect
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from largead.fileio import atomic_path

SCAN_SUFFIXES = (".pcd.bin", ".bin", ".npy", ".npz")
FORMATS = ("npy", "parquet")


class ExtractionError(ValueError):
    """A scan or an output that stops the extraction (the message names the file)."""


# --------------------------------------------------------------------------------------------------------------------
# Reading scans
# --------------------------------------------------------------------------------------------------------------------
def _scan_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in SCAN_SUFFIXES if lower.endswith(s)), None)


def _looks_like_five_columns(path: Path) -> bool:
    """A float32 file whose 5th column (read as 5 columns) is a small non-negative integer on every row (the
    nuScenes ring index) is almost surely x, y, z, intensity, ring; read as 4 columns, that position cycles through
    all the fields of the records."""
    flat = np.fromfile(path, dtype=np.float32, count=min(path.stat().st_size // 4, 5 * 4096))
    if flat.size < 5 * 8 or flat.size % 5:
        return False
    ring = flat.reshape(-1, 5)[:, 4]
    return bool(np.all(np.isfinite(ring)) and np.all(ring == np.round(ring)) and np.all((ring >= 0) & (ring < 256)))


def read_scan(path: str | os.PathLike[str], columns: int | None = None) -> np.ndarray:
    """Load a scan as an (N, 4) float32 array of x, y, z, intensity.

    Formats: ``.bin`` (flat float32 records of ``columns`` values, default 4: KITTI-style x, y, z, intensity),
    ``.pcd.bin`` (nuScenes, default 5 columns: x, y, z, intensity, ring), ``.npy`` (N, >=4) and ``.npz`` (array
    ``points``). For a ``.bin`` of unstated width, a size that is no multiple of 16 bytes or a file that looks like
    5 columns is an error asking for ``columns``. Raises ValueError naming the file for a missing, malformed,
    empty or non-finite scan.
    """
    path = Path(path)
    if not path.is_file():
        raise ExtractionError(f"{path}: no such file")
    suffix = _scan_suffix(path.name)
    if suffix is None:
        raise ExtractionError(f"{path}: unsupported scan format; expected {', '.join(SCAN_SUFFIXES)}")
    if columns is not None and (isinstance(columns, bool) or int(columns) < 4):
        raise ExtractionError(f"columns must be an integer >= 4 (x, y, z, intensity, ...), got {columns!r}")
    if suffix in (".bin", ".pcd.bin"):
        size = path.stat().st_size
        if columns is None:
            columns = 5 if suffix == ".pcd.bin" else 4
            if suffix == ".bin" and size % 16:
                hint = (", e.g. --columns 5 for nuScenes x, y, z, intensity, ring (the size divides by 20)"
                        if size % 20 == 0 else "")
                raise ExtractionError(f"{path}: {size} bytes is not a multiple of 16 (4 float32 columns: x, y, z, "
                                      f"intensity); give the number of float32 columns per point with --columns"
                                      f"{hint}")
            if suffix == ".bin" and size % 20 == 0 and _looks_like_five_columns(path):
                raise ExtractionError(f"{path}: looks like 5 float32 columns per point (x, y, z, intensity, ring: "
                                      "the 5th is a small integer on every row); say --columns 5 (or --columns 4 "
                                      "if it really has 4)")
        record = 4 * int(columns)
        if size % record:
            raise ExtractionError(f"{path}: {size} bytes is not a multiple of the {record}-byte record "
                                  f"({columns} float32 columns)")
        pts = np.fromfile(path, dtype=np.float32).reshape(-1, int(columns))
    elif suffix == ".npy":
        try:
            pts = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ExtractionError(f"{path}: not a readable .npy array ({err})") from None
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                if "points" not in z:
                    raise ExtractionError(f"{path}: .npz has no 'points' array (keys: {', '.join(z.files)})")
                pts = z["points"]
        except (ValueError, OSError) as err:
            if isinstance(err, ExtractionError):
                raise
            raise ExtractionError(f"{path}: not a readable .npz archive ({err})") from None
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ExtractionError(f"{path}: expected an (N, >=4) array of x, y, z, intensity, got shape {pts.shape}")
    if pts.shape[0] == 0:
        raise ExtractionError(f"{path}: empty scan (0 points)")
    if not np.issubdtype(pts.dtype, np.number):
        raise ExtractionError(f"{path}: expected numbers, got dtype {pts.dtype}")
    pts = np.ascontiguousarray(pts[:, :4], dtype=np.float32)
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise ExtractionError(f"{path}: {int(bad.sum())} of {len(pts)} points have non-finite coordinates or "
                              f"intensity (first at row {int(np.argmax(bad))})")
    return pts


# --------------------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------------------
class ScanSource(torch.utils.data.Dataset):
    """Named scans: ``names[i]`` and ``load(i) -> (N, 4) float32``; ``__getitem__`` never raises (it returns the
    error text, so a reader process's failure reaches the main process as one clear message)."""

    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, i: int) -> str:
        return self.names[i]

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, self.load(i), None
        except Exception as err:  # noqa: BLE001 - handed to the main process, which raises it with the scan's name
            message = str(err).strip().replace("\n", " ")
            return i, None, message if self.describe(i) in message else f"{self.describe(i)}: {message}"


def _common_names(paths: list[Path]) -> list[str]:
    """Output names: file stems, or paths relative to the common folder (without suffix) when stems collide."""
    stems = [p.name[: -len(_scan_suffix(p.name) or "")] for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    root = Path(os.path.commonpath([str(p.parent.resolve()) for p in paths]))
    names = []
    for p, stem in zip(paths, stems, strict=True):
        rel = p.parent.resolve().relative_to(root)
        names.append((rel / stem).as_posix())
    return names


class FileSource(ScanSource):
    """Scan files (see :func:`file_source`)."""

    def __init__(self, paths: Sequence[Path], columns: int | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.names = _common_names(self.paths)
        self.columns = columns

    def describe(self, i: int) -> str:
        return str(self.paths[i])

    def load(self, i: int) -> np.ndarray:
        return read_scan(self.paths[i], self.columns)


def file_source(inputs: Sequence[str | os.PathLike[str]], columns: int | None = None) -> FileSource:
    """Scans from files, folders (their scan files, sorted, not recursive) and glob patterns (``*``, ``?``, ``[``,
    ``**``), in the order given. A path or pattern that yields nothing, or a file named twice, is an error."""
    if not inputs:
        raise ExtractionError("no scans given")
    paths: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _scan_suffix(q.name))
            if not found:
                raise ExtractionError(f"{p}: folder holds no scan files ({', '.join(SCAN_SUFFIXES)})")
            paths += found
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(text):
            found = sorted(Path(q) for q in glob.glob(text, recursive=True) if _scan_suffix(q) and Path(q).is_file())
            if not found:
                raise ExtractionError(f"{text}: pattern matches no scan files ({', '.join(SCAN_SUFFIXES)})")
            paths += found
        else:
            raise ExtractionError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise ExtractionError(f"{p}: given twice")
        seen.add(key)
    return FileSource(paths, columns)


def _safe_name(token: str, fallback: str) -> str:
    parts = [part for part in str(token).replace("\\", "/").split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return fallback
    return "/".join(parts)


def _frame_name(ds: Any, i: int) -> str:
    """A frame's output name without loading it: the reader's LiDAR token where it indexes one (nuScenes
    ``lidar_token``), else ``<sequence>/<position>`` (for KITTI layouts the same as ``Frame.token``)."""
    token = getattr(ds, "lidar_token", None)
    if callable(token):
        return _safe_name(token(i), f"{i:06d}")
    seq, pos = ds.sequence_of(i)
    return _safe_name(f"{seq}/{int(pos):06d}" if seq else f"{int(pos):06d}", f"{i:06d}")


class DatasetSource(ScanSource):
    """Frames of a dataset reader's split (see :func:`dataset_source`)."""

    def __init__(self, ds: Any, name: str, split: str, limit: int | None = None) -> None:
        self._ds, self.dataset_name, self.split = ds, name, split
        n = len(ds) if limit is None else min(int(limit), len(ds))
        self.names = [_frame_name(ds, i) for i in range(n)]  # one index lookup per frame
        if len(set(self.names)) != len(self.names):
            self.names = [f"{i:06d}" for i in range(n)]

    def describe(self, i: int) -> str:
        return f"{self.dataset_name} {self.split} frame {i} ({self.names[i]})"

    def load(self, i: int) -> np.ndarray:
        pts = np.asarray(self._ds[i].points)
        if pts.ndim != 2 or pts.shape[1] < 4:
            raise ExtractionError(f"expected (N, >=4) points, got shape {pts.shape}")
        if pts.shape[0] == 0:
            raise ExtractionError("empty scan (0 points)")
        return np.ascontiguousarray(pts[:, :4], dtype=np.float32)


def dataset_source(name: str, root: str | os.PathLike[str] | None, split: str, options: dict[str, Any] | None = None,
                   limit: int | None = None) -> DatasetSource:
    """Frames ``0 .. limit`` of ``get_dataset(name, root, split, **options)``, LiDAR only: a reader that can skip its
    cameras (``cameras=`` / ``num_cameras=``) is told to unless ``options`` says otherwise. Frames are named by
    :func:`_frame_name` (nuScenes: the LIDAR_TOP sample_data token; others ``<sequence>/<position>``)."""
    from largead.data import dataset_class, get_dataset

    opts = dict(options or {})
    params = inspect.signature(dataset_class(name).__init__).parameters
    if "cameras" in params and "cameras" not in opts:
        opts["cameras"] = False
    if "num_cameras" in params and "num_cameras" not in opts:
        opts["num_cameras"] = 0
    ds = get_dataset(name, None if root is None else os.fspath(root), split, **opts)
    return DatasetSource(ds, name, split, limit)


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------
def valid_npy(path: Path, dim: int) -> bool:
    """Whether ``path`` is a complete 2-D float32 ``.npy`` with ``dim`` columns (header and size checked)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return False
            offset = f.tell()
    except (OSError, ValueError):
        return False
    if len(shape) != 2 or shape[1] != dim or dtype != np.float32 or fortran:
        return False
    return path.stat().st_size == offset + shape[0] * shape[1] * 4


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _shard_paths(out_dir: Path, prefix: str, n_items: int, shard_size: int) -> list[Path]:
    n = max(1, math.ceil(n_items / shard_size))
    return [out_dir / f"{prefix}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]


def _valid_shard(path: Path, names: list[str]) -> bool:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["name"])
    except Exception:  # noqa: BLE001 - any unreadable shard is rewritten
        return False
    return table.column("name").to_pylist() == names


def _write_shard(path: Path, names: list[str], feats: list[np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = feats[0].shape[1]
    flat = pa.array(np.concatenate([f.reshape(-1) for f in feats]), type=pa.float32())
    offsets = np.zeros(len(feats) + 1, np.int64)
    offsets[1:] = np.cumsum([f.shape[0] for f in feats])
    rows = pa.LargeListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(flat, dim))
    table = pa.table({"name": pa.array(names, pa.string()),
                      "num_points": pa.array([f.shape[0] for f in feats], pa.int32()), "features": rows})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# --------------------------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------------------------
def embed_points(encoder: Any, scans: Sequence[np.ndarray], *, dataset: str | None = None, precision: str = "auto",
                 max_range: float | None = None) -> tuple[list[np.ndarray], list[int]]:
    """Per-point features (N_b, D) float32 of (N_b, 4) scans in one forward pass, as numpy arrays.

    ``max_range`` (metres): points farther from the sensor are left out of the pass and get NaN rows, so rows still
    align with the input; the second result counts them per scan. A scan with no point left is a ValueError.
    """
    keeps: list[np.ndarray | None] = []
    inputs = []
    for b, pts in enumerate(scans):
        keep = None
        if max_range is not None:
            keep = np.linalg.norm(np.asarray(pts[:, :3], dtype=np.float64), axis=1) <= max_range
            if not keep.any():
                raise ValueError(f"scan {b}: no point within max_range={max_range} m")
            pts = pts[keep]
        keeps.append(keep)
        inputs.append(torch.from_numpy(np.ascontiguousarray(pts)))
    with torch.no_grad():
        feats = encoder.embed(inputs, dataset=dataset, precision=precision)
    out, dropped = [], []
    for keep, f in zip(keeps, feats, strict=True):
        arr = f.float().cpu().numpy()
        if keep is not None:
            full = np.full((keep.shape[0], arr.shape[1]), np.nan, np.float32)
            full[keep] = arr
            arr = full
        out.append(arr)
        dropped.append(0 if keep is None else int((~keep).sum()))
    return out, dropped


@dataclass
class ExtractStats:
    """What :func:`extract_features` did: scans embedded and skipped, points, seconds, points dropped by range."""

    scans: int = 0
    skipped: int = 0
    points: int = 0
    seconds: float = 0.0
    dropped: int = 0
    precision: str = ""
    written: list[Path] = field(default_factory=list)

    @property
    def scans_per_s(self) -> float:
        return self.scans / self.seconds if self.seconds > 0 else 0.0

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: counts and throughput."""
        line = (f"embedded {self.scans} scans ({self.points} points) in {self.seconds:.1f} s: "
                f"{self.scans_per_s:.2f} scans/s, {self.points_per_s:,.0f} points/s ({self.precision})")
        if self.skipped:
            line += f"; skipped {self.skipped} already done"
        if self.dropped:
            line += f"; dropped {self.dropped} points beyond max_range (NaN rows)"
        return line


def extract_features(encoder: Any, source: ScanSource, out: str | os.PathLike[str], *, dataset: str | None = None,
                     precision: str = "auto", batch_size: int = 1, workers: int = 1, fmt: str = "npy",
                     shard_size: int = 256, prefix: str = "features", overwrite: bool = False,
                     max_range: float | None = None, progress: bool = True) -> ExtractStats:
    """Embed every scan of ``source`` with ``encoder`` (eval mode) into ``out`` (a folder); see the module docstring.

    ``dataset`` is the input-normalisation key passed to :meth:`LargeADEncoder.embed`; ``workers`` reader processes
    (0: read in this process); ``overwrite`` recomputes outputs that already exist.
    """
    from tqdm.auto import tqdm

    from largead.sparse.inference import resolve_precision

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if int(batch_size) < 1 or int(workers) < 0 or int(shard_size) < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1 and workers >= 0, got {batch_size}, {shard_size}, "
                         f"{workers}")
    if max_range is not None and not (math.isfinite(max_range) and max_range > 0):
        raise ValueError(f"max_range must be a positive number of metres, got {max_range!r}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExtractionError(f"{out_dir}: exists and is not a folder (several scans need an output folder)")
    dtype = resolve_precision(precision, encoder.device)
    dim = int(encoder.config.out_channels)
    stats = ExtractStats(precision=f"{precision} -> {str(dtype).replace('torch.', '')}")
    encoder.eval()

    # what is left to do
    if fmt == "npy":
        targets = [out_dir / f"{name}.npy" for name in source.names]
        todo = [i for i, t in enumerate(targets) if overwrite or not valid_npy(t, dim)]
        shards = []
    else:
        shard_files = _shard_paths(out_dir, prefix, len(source), shard_size)
        shards = [(path, list(range(s * shard_size, min((s + 1) * shard_size, len(source)))))
                  for s, path in enumerate(shard_files)]
        shards = [(p, idx) for p, idx in shards if overwrite or not _valid_shard(p, [source.names[i] for i in idx])]
        todo = [i for _, idx in shards for i in idx]
    stats.skipped = len(source) - len(todo)
    if not todo:
        return stats
    out_dir.mkdir(parents=True, exist_ok=True)

    subset = torch.utils.data.Subset(source, todo)
    loader = torch.utils.data.DataLoader(subset, batch_size=int(batch_size), shuffle=False, num_workers=int(workers),
                                         collate_fn=list, prefetch_factor=2 if workers else None,
                                         persistent_workers=False)
    pending: dict[int, np.ndarray] = {}
    shard_of = {i: s for s, (_, idx) in enumerate(shards) for i in idx}
    remaining = {s: len(idx) for s, (_, idx) in enumerate(shards)}
    bar = tqdm(total=len(todo), unit="scan", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for batch in loader:
            for _, _, err in batch:
                if err is not None:
                    raise ExtractionError(err)
            items = [(i, pts) for i, pts, _ in batch]
            try:
                feats, dropped = embed_points(encoder, [pts for _, pts in items], dataset=dataset,
                                              precision=precision, max_range=max_range)
            except ValueError as err:
                message = str(err)
                b = 0
                if len(items) > 1 and message.startswith("scan "):
                    b = int(message.split()[1].rstrip(",:"))
                raise ExtractionError(f"{source.describe(items[b][0])}: {message}") from None
            stats.dropped += sum(dropped)
            for (i, _), arr in zip(items, feats, strict=True):
                stats.scans += 1
                stats.points += int(arr.shape[0])
                if fmt == "npy":
                    target = out_dir / f"{source.names[i]}.npy"
                    _write_npy(target, arr)
                    stats.written.append(target)
                else:
                    pending[i] = arr
                    s = shard_of[i]
                    remaining[s] -= 1
                    if remaining[s] == 0:
                        path, idx = shards[s]
                        _write_shard(path, [source.names[j] for j in idx], [pending.pop(j) for j in idx])
                        stats.written.append(path)
            bar.update(len(items))
    finally:
        bar.close()
    stats.seconds = time.perf_counter() - start
    return stats


__all__ = ["FORMATS", "SCAN_SUFFIXES", "DatasetSource", "ExtractStats", "ExtractionError", "FileSource",
           "ScanSource", "dataset_source", "embed_points", "extract_features", "file_source", "read_scan",
           "valid_npy"]
