"""A Hugging Face ``datasets`` parquet cache of frames from any registered dataset, or a mix of datasets.

Layout written by :func:`write_cache` (atomically: a temporary sibling directory renamed into place)::

    <out_dir>/cache_info.json                      # format version, sources, class lists, frame count, shards
    <out_dir>/data/shard-00000-of-00004.parquet    # one row group per frame
    <out_dir>/images/<row>_<camera>.png            # only with image_mode="files"

Each row is one :class:`~largead.data.frame.Frame`. Columns (``datasets`` features, stored in the parquet schema
metadata so ``load_dataset("parquet", ...)`` recovers them): ``dataset``, ``sequence``, ``token`` (string),
``index`` (int64), ``timestamp`` (float64), ``pose`` (16 float64, row-major), ``points`` (variable-length list of
``C``-float32 rows: a 2-D float32 array), ``labels`` / ``instances`` (int64 lists, null when absent), ``cameras``
(list of structs: ``name``, ``token``, ``image`` PNG/JPEG bytes or null, ``image_path`` (relative to the cache)
or empty, ``height``, ``width``, ``intrinsics`` (9 float64), ``lidar_to_camera`` (16 float64), optional
``instance_mask`` / ``semantic_mask`` as ``.npy`` bytes), ``extra_json`` (the plain values of ``frame.extra``) and
``extra_arrays`` (``{key, position, npy}`` records of its arrays and lists of arrays; a tuple comes back as a list).

Reading: :class:`CachedDataset` is a :class:`~largead.data.registry.LidarDataset` with random access (one parquet
row group per frame) and :meth:`CachedDataset.stream` iterates frames through ``load_dataset("parquet",
streaming=True)``, optionally sharded across processes with ``datasets.distributed.split_dataset_by_node`` (each
rank sees a disjoint part; together they cover every frame).
"""

from __future__ import annotations

import inspect
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from largead.data.frame import CameraView, Frame
from largead.data.registry import LidarDataset
from largead.fileio import CorruptFileError, atomic_directory, clean_stale_temporaries

CACHE_FORMAT_VERSION = 1
IMAGE_MODES = ("png", "jpeg", "files", "none")


def cache_features(point_columns: int = 4):
    """The ``datasets.Features`` of a cache whose points have ``point_columns`` columns."""
    from datasets import Features, List, Value

    camera = {
        "name": Value("string"), "token": Value("string"), "image": Value("binary"), "image_path": Value("string"),
        "height": Value("int32"), "width": Value("int32"), "intrinsics": List(Value("float64"), length=9),
        "lidar_to_camera": List(Value("float64"), length=16), "instance_mask": Value("binary"),
        "semantic_mask": Value("binary"),
    }
    return Features({
        "dataset": Value("string"), "sequence": Value("string"), "token": Value("string"), "index": Value("int64"),
        "timestamp": Value("float64"), "pose": List(Value("float64"), length=16),
        "points": List(List(Value("float32"), length=point_columns)),
        "labels": List(Value("int64")), "instances": List(Value("int64")),
        "cameras": List(camera),
        "extra_json": Value("string"), "extra_arrays": List({"key": Value("string"), "position": Value("int32"), "npy": Value("binary")}),
    })


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _npy_load(data: bytes, what: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"cache: {what} is not a readable .npy payload: {err}") from err


def _encode_image(image: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG" if fmt == "png" else "JPEG", **({"quality": 95} if fmt == "jpeg"
                                                                                    else {}))
    return buf.getvalue()


def _split_extra(extra: dict[str, Any], where: str) -> tuple[str, list[dict]]:
    """``frame.extra`` -> (JSON text of the plain values, ``.npy`` records of arrays and lists of arrays)."""
    plain, arrays = {}, []
    for key, val in extra.items():
        if isinstance(val, np.ndarray):
            arrays.append({"key": key, "position": -1, "npy": _npy_bytes(val)})
        elif isinstance(val, (list, tuple)) and val and all(isinstance(v, np.ndarray) for v in val):
            arrays += [{"key": key, "position": k, "npy": _npy_bytes(v)} for k, v in enumerate(val)]
        elif isinstance(val, np.generic):
            plain[key] = val.item()
        else:
            plain[key] = val
    try:
        text = json.dumps(plain)
    except TypeError as err:
        raise ValueError(f"{where}: frame.extra holds a value that is neither JSON-serialisable nor an array or a "
                         f"list of arrays: {err}") from err
    return text, arrays


def _join_extra(text: str, records: list[dict], token: str) -> dict[str, Any]:
    extra: dict[str, Any] = json.loads(text) if text else {}
    for item in records:
        arr = _npy_load(item["npy"], f"extra[{item['key']!r}] of frame {token}")
        if item["position"] < 0:
            extra[item["key"]] = arr
        else:
            extra.setdefault(item["key"], []).append(arr)  # records are written in list order
    return extra


def _frame_table(frame: Frame, row: int, columns: int, image_mode: str, tmp_root: str, schema):
    """One-row ``pyarrow.Table`` of ``frame`` (arrays built from numpy buffers, not Python lists)."""
    import pyarrow as pa

    where = f"frame {row} ({frame.dataset}:{frame.token or frame.index})"
    pts = np.ascontiguousarray(frame.points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != columns:
        raise ValueError(f"{where}: points have shape {pts.shape}, but this cache stores {columns} columns per point "
                         f"(set by the first frame)")
    n = len(pts)

    def int_list(arr: np.ndarray | None, name: str):
        if arr is None:
            return pa.array([None], pa.list_(pa.int64()))
        a = np.asarray(arr, dtype=np.int64)
        if a.shape != (n,):
            raise ValueError(f"{where}: {name} has shape {a.shape}, expected ({n},)")
        return pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), pa.array(a))

    cams = []
    for k, cam in enumerate(frame.cameras if image_mode != "none" else []):
        entry = {"name": cam.name, "token": cam.token, "image": None, "image_path": "", "height": cam.height,
                 "width": cam.width, "intrinsics": np.asarray(cam.intrinsics, np.float64).reshape(-1).tolist(),
                 "lidar_to_camera": np.asarray(cam.lidar_to_camera, np.float64).reshape(-1).tolist(),
                 "instance_mask": None if cam.instance_mask is None else _npy_bytes(cam.instance_mask),
                 "semantic_mask": None if cam.semantic_mask is None else _npy_bytes(cam.semantic_mask)}
        if image_mode == "files":
            rel = os.path.join("images", f"{row:08d}_{k}.png")
            with open(os.path.join(tmp_root, rel), "wb") as fh:
                fh.write(_encode_image(cam.image, "png"))
            entry["image_path"] = rel
        else:
            entry["image"] = _encode_image(cam.image, image_mode)
        cams.append(entry)
    extra_json, extra_arrays = _split_extra(frame.extra, where)
    pose = np.asarray(frame.pose, np.float64).reshape(-1)
    arrays = [
        pa.array([frame.dataset]), pa.array([frame.sequence]), pa.array([frame.token]), pa.array([int(frame.index)]),
        pa.array([float(frame.timestamp)]),
        pa.FixedSizeListArray.from_arrays(pa.array(pose), 16),
        pa.ListArray.from_arrays(pa.array([0, n], pa.int32()),
                                 pa.FixedSizeListArray.from_arrays(pa.array(pts.reshape(-1)), columns)),
        int_list(frame.labels, "labels"), int_list(frame.instances, "instances"),
        pa.array([cams], schema.field("cameras").type), pa.array([extra_json]),
        pa.array([extra_arrays], schema.field("extra_arrays").type),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _iter_sources(sources) -> Iterator[tuple[Frame, LidarDataset | None]]:
    if isinstance(sources, LidarDataset):
        sources = [sources]
    elif isinstance(sources, Frame):
        raise TypeError("write_cache: pass an iterable of frames or datasets, not a single Frame")
    for src in sources:
        if isinstance(src, LidarDataset):
            for i in range(len(src)):
                yield src[i], src
        elif isinstance(src, Frame):
            yield src, None
        else:  # a nested iterable of frames
            for f in src:
                if not isinstance(f, Frame):
                    raise TypeError(f"write_cache: expected Frame objects, got {type(f).__name__}")
                yield f, None


def _count(sources) -> int | None:
    if isinstance(sources, LidarDataset):
        return len(sources)
    if isinstance(sources, (list, tuple)):
        total = 0
        for s in sources:
            if isinstance(s, (LidarDataset, list, tuple)):
                total += len(s)
            elif isinstance(s, Frame):
                total += 1
            else:
                return None
        return total
    return None


def write_cache(sources: LidarDataset | Iterable[Frame] | Sequence[LidarDataset | Iterable[Frame]], out_dir: str,
                *, image_mode: str = "png", frames_per_shard: int = 64, overwrite: bool = False,
                progress: bool = True, durable: bool = True) -> str:
    """Convert ``sources`` (a dataset, frames, or a list of datasets / frame iterables, written in order) to a cache.

    ``image_mode``: ``"png"`` (lossless bytes, default), ``"jpeg"`` (smaller, lossy), ``"files"`` (PNG files under
    ``images/``, paths in the table) or ``"none"`` (cameras dropped). Every frame is validated first. Returns
    ``out_dir``.

    The cache appears at ``out_dir`` only when complete (:func:`largead.fileio.atomic_directory`: written to a
    temporary sibling, ``fsync``-ed unless ``durable=False``, then renamed). With ``overwrite=False`` an existing
    ``out_dir`` raises :class:`FileExistsError`, checked before any work and again atomically with the final rename:
    of two writers racing for one ``out_dir`` exactly one succeeds, the other's cache is discarded with a
    ``FileExistsError`` that says so. ``overwrite=True`` replaces an existing cache in one step (readers see the old
    or the new one). Temporary folders left in ``out_dir``'s parent by killed writers are removed first.
    """
    if image_mode not in IMAGE_MODES:
        raise ValueError(f"write_cache: image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
    if frames_per_shard < 1:
        raise ValueError(f"write_cache: frames_per_shard must be >= 1, got {frames_per_shard}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    if not overwrite and os.path.lexists(out_dir):
        raise FileExistsError(f"{out_dir}: already exists; pass overwrite=True to replace it")
    clean_stale_temporaries(os.path.dirname(out_dir))  # folders of writers killed before they finished
    written = False
    try:
        with atomic_directory(out_dir, overwrite=overwrite, durable=durable) as tmp:
            _write_cache_folder(sources, str(tmp), image_mode, frames_per_shard, progress)
            written = True
    except FileExistsError:
        if overwrite or not written:
            raise
        raise FileExistsError(f"{out_dir}: another writer created it while this one was writing; its cache was kept "
                              "and this one discarded (pass overwrite=True to replace it)") from None
    return out_dir


def _write_cache_folder(sources, tmp: str, image_mode: str, frames_per_shard: int, progress: bool) -> None:
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    os.makedirs(os.path.join(tmp, "data"))
    if image_mode == "files":
        os.makedirs(os.path.join(tmp, "images"))
    classes: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    shard_rows: list[int] = []
    writer = None
    columns = schema = None
    row = 0
    for frame, src in tqdm(_iter_sources(sources), total=_count(sources), desc="caching frames",
                           disable=not progress, unit="frame"):
        frame.validate(f"write_cache frame {row} ({frame.dataset}:{frame.token or frame.index})")
        if columns is None:
            columns = int(frame.points.shape[1])
            schema = cache_features(columns).arrow_schema
        if src is not None:
            classes.setdefault(frame.dataset, list(src.class_names))
        counts[frame.dataset] = counts.get(frame.dataset, 0) + 1
        if writer is None or shard_rows[-1] == frames_per_shard:
            if writer is not None:
                writer.close()
            writer = pq.ParquetWriter(os.path.join(tmp, "data", f"shard-{len(shard_rows):05d}.parquet"), schema,
                                      write_page_checksum=True)
            shard_rows.append(0)
        writer.write_table(_frame_table(frame, row, columns, image_mode, tmp, schema))
        shard_rows[-1] += 1
        row += 1
    if writer is not None:
        writer.close()
    if row == 0:
        raise ValueError("write_cache: the sources yielded no frames")
    # final names carry the shard count, as Hugging Face's convention does
    names = []
    for k in range(len(shard_rows)):
        name = f"shard-{k:05d}-of-{len(shard_rows):05d}.parquet"
        os.replace(os.path.join(tmp, "data", f"shard-{k:05d}.parquet"), os.path.join(tmp, "data", name))
        names.append(name)
    info = {"format_version": CACHE_FORMAT_VERSION, "num_frames": row, "point_columns": columns,
            "image_mode": image_mode, "datasets": counts, "class_names": classes,
            "shards": [{"file": f"data/{n}", "frames": c} for n, c in zip(names, shard_rows)]}
    with open(os.path.join(tmp, "cache_info.json"), "w") as fh:
        json.dump(info, fh, indent=1)


# ------------------------------------------------------------------------------------------------------------ reading
def _decode_rows(table, root: str) -> list[Frame]:
    """Frames of a ``pyarrow.Table`` / ``RecordBatch`` with the cache schema."""
    import pyarrow as pa

    def col(name):
        c = table.column(name)
        return c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c

    n_rows = table.num_rows
    pts_col = col("points")
    offsets = pts_col.offsets.to_numpy()
    offsets = offsets - offsets[0]  # flatten() below starts at the first row of a (possibly sliced) array
    columns = pts_col.type.value_type.list_size
    values = pts_col.flatten().flatten().to_numpy(zero_copy_only=False)
    meta = {k: col(k).to_pylist() for k in ("dataset", "sequence", "token", "index", "timestamp", "extra_json")}
    poses = col("pose").flatten().to_numpy(zero_copy_only=False).reshape(-1, 4, 4)

    def ints(name):
        c = col(name)
        vals = c.flatten().to_numpy(zero_copy_only=False)
        offs = c.offsets.to_numpy()
        offs = offs - offs[0]
        valid = c.is_valid().to_numpy(zero_copy_only=False)
        return [vals[offs[r]: offs[r + 1]].astype(np.int64) if valid[r] else None for r in range(n_rows)]

    labels, instances = ints("labels"), ints("instances")
    cams = col("cameras").to_pylist()
    extras = col("extra_arrays").to_pylist()
    frames = []
    for r in range(n_rows):
        points = values[offsets[r] * columns: offsets[r + 1] * columns].reshape(-1, columns).copy()
        views = []
        for c in cams[r] or []:
            views.append(_decode_camera(c, root, meta["token"][r]))
        extra = _join_extra(meta["extra_json"][r], extras[r] or [], meta["token"][r])
        frames.append(Frame(points=points, labels=labels[r], instances=instances[r],
                            pose=poses[r].copy(), timestamp=meta["timestamp"][r],
                            sequence=meta["sequence"][r], index=meta["index"][r], dataset=meta["dataset"][r],
                            token=meta["token"][r], cameras=views, extra=extra))
    return frames


def _decode_camera(c: dict, root: str, token: str) -> CameraView:
    from PIL import Image

    if c["image"] is not None:
        data, where = c["image"], f"camera {c['name']} of frame {token}"
    else:
        path = os.path.join(root, c["image_path"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: cached image of camera {c['name']} (frame {token}) not found")
        with open(path, "rb") as fh:
            data, where = fh.read(), path
    try:
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as err:  # PIL raises several types for bad bytes
        raise ValueError(f"cache: {where}: image bytes are not decodable: {err}") from err
    if image.shape[:2] != (c["height"], c["width"]):
        raise ValueError(f"cache: {where}: image is {image.shape[1]}x{image.shape[0]}, table says "
                         f"{c['width']}x{c['height']}")
    mask = lambda b, what: None if b is None else _npy_load(b, f"{what} of {where}")
    return CameraView(image=image, intrinsics=np.asarray(c["intrinsics"], np.float64).reshape(3, 3),
                      lidar_to_camera=np.asarray(c["lidar_to_camera"], np.float64).reshape(4, 4), name=c["name"],
                      token=c["token"], instance_mask=mask(c["instance_mask"], "instance_mask"),
                      semantic_mask=mask(c["semantic_mask"], "semantic_mask"))


class CachedDataset(LidarDataset):
    """Frames of a cache written by :func:`write_cache`: random access and streaming.

    ``class_names`` is the source dataset's list when the cache holds one dataset (``class_names_of(name)`` for
    mixed caches). ``temporal`` follows the cache: ``next_index`` finds the frame with the same dataset and
    sequence and ``index + n``.
    """

    name = "cache"
    temporal = True
    splits = ("train",)

    def __init__(self, root: str, split: str = "train") -> None:
        import pyarrow.parquet as pq

        self.root = os.path.abspath(os.fspath(root))
        info_path = os.path.join(self.root, "cache_info.json")
        if not os.path.isfile(info_path):
            raise FileNotFoundError(f"{info_path}: not a largead cache (cache_info.json missing)")
        try:
            with open(info_path) as fh:
                self.info = json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{info_path}: not valid JSON: {err}") from err
        if self.info.get("format_version") != CACHE_FORMAT_VERSION:
            raise ValueError(f"{info_path}: cache format {self.info.get('format_version')} is not the supported "
                             f"{CACHE_FORMAT_VERSION}")
        self.files = [os.path.join(self.root, s["file"]) for s in self.info["shards"]]
        names = list(self.info["class_names"])
        self.class_names = tuple(self.info["class_names"][names[0]]) if len(names) == 1 else ()
        self._rows: list[tuple[int, int]] = []
        self._key_of: list[tuple[str, str, int]] = []
        self._keys: dict[tuple[str, str, int], int] = {}
        for k, (path, shard) in enumerate(zip(self.files, self.info["shards"])):
            try:
                pf = pq.ParquetFile(path, page_checksum_verification=True)
            except FileNotFoundError:
                raise FileNotFoundError(f"{path}: cache shard listed in cache_info.json not found") from None
            except Exception as err:  # pyarrow raises ArrowInvalid / OSError for damaged files
                raise CorruptFileError(path, f"cache shard is not readable parquet (truncated or corrupt): "
                                             f"{_one_line(err)}") from err
            if pf.metadata.num_rows != shard["frames"] or pf.metadata.num_row_groups != shard["frames"]:
                raise ValueError(f"{path}: holds {pf.metadata.num_rows} frames in {pf.metadata.num_row_groups} row "
                                 f"groups, cache_info.json says {shard['frames']}")
            try:
                keys = pf.read(columns=["dataset", "sequence", "index"]).to_pydict()
                keys = list(zip(keys["dataset"], keys["sequence"], keys["index"], strict=True))
            except Exception as err:  # a damaged page (CRC mismatch, bad header) or schema
                raise CorruptFileError(path, f"cache shard is damaged (truncated or corrupt): "
                                             f"{_one_line(err)}") from err
            for g, key in enumerate(keys):
                self._keys[key] = len(self._rows)
                self._key_of.append(key)
                self._rows.append((k, g))
        self._files_open: dict[int, Any] = {}

    def class_names_of(self, dataset: str) -> tuple[str, ...]:
        return tuple(self.info["class_names"].get(dataset, ()))

    def __len__(self) -> int:
        return len(self._rows)

    def _file(self, k: int):
        import pyarrow.parquet as pq

        if k not in self._files_open:
            self._files_open[k] = pq.ParquetFile(self.files[k], page_checksum_verification=True)
        return self._files_open[k]

    def frame(self, i: int) -> Frame:
        k, g = self._rows[i]
        try:
            table = self._file(k).read_row_group(g)
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError (page CRC mismatch) for damaged files
            raise CorruptFileError(self.files[k], f"row group {g} is not readable (corrupt): {_one_line(err)}") from err
        try:
            return _decode_rows(table, self.root)[0]
        except (KeyError, AttributeError, TypeError, IndexError) as err:  # a damaged schema in the footer
            raise CorruptFileError(self.files[k], f"row group {g} does not have the cache's columns (corrupt "
                                                  f"footer?): {type(err).__name__}: {_one_line(err)}") from err

    def sequence_of(self, i: int) -> tuple[str, int]:
        _, seq, idx = self._key_of[i]
        return seq, int(idx)

    def next_index(self, i: int, n: int = 1) -> int | None:
        ds, seq, idx = self._key_of[i]
        return self._keys.get((ds, seq, idx + n))

    def stream(self, rank: int | None = None, world_size: int | None = None, batch_rows: int = 1,
               shuffle_seed: int | None = None, shuffle_buffer: int = 16) -> Iterator[Frame]:
        """Iterate frames with ``load_dataset("parquet", streaming=True)``.

        With ``rank``/``world_size`` the stream is split by ``datasets.distributed.split_dataset_by_node``: whole
        shards per rank when the shard count divides ``world_size``, else every ``world_size``-th frame. With
        ``shuffle_seed`` shards and a ``shuffle_buffer`` of frames are shuffled (``IterableDataset.shuffle``).
        """
        ds = self.iterable_dataset(rank, world_size, shuffle_seed, shuffle_buffer)
        for batch in ds.iter(batch_size=batch_rows):
            yield from _decode_rows(batch, self.root)

    def iterable_dataset(self, rank: int | None = None, world_size: int | None = None,
                         shuffle_seed: int | None = None, shuffle_buffer: int = 16):
        """The underlying ``datasets.IterableDataset`` (arrow-formatted rows), split by node when asked."""
        from datasets import load_dataset
        from datasets.distributed import split_dataset_by_node

        ds = load_dataset("parquet", data_files={"train": self.files}, split="train", streaming=True)
        if shuffle_seed is not None:
            # Shard order is shuffled and frames pass through a shuffle buffer. Filling the buffer from several shards
            # at once is turned off: datasets' parquet reader then sleeps 5 s at the end of every pass (its
            # workaround for apache/arrow#45214); the parameter exists from datasets 4 on.
            kwargs = {"max_buffer_input_shards": 1} if "max_buffer_input_shards" in inspect.signature(
                ds.shuffle).parameters else {}
            ds = ds.shuffle(seed=shuffle_seed, buffer_size=shuffle_buffer, **kwargs)
        if (rank is None) != (world_size is None):
            raise ValueError("CachedDataset.stream: give both rank and world_size, or neither")
        if world_size is not None:
            if not 0 <= rank < world_size:
                raise ValueError(f"CachedDataset.stream: rank {rank} out of range for world_size {world_size}")
            ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
        return ds.with_format("arrow")
