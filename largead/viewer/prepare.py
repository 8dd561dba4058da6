"""Data preparation for ``largead view``: frames, model outputs and everything the page draws, as compact arrays.

Every step reuses the library: readers (:func:`largead.data.get_dataset`), the one projection
(:func:`largead.data.geometry.project_points`) and pairing (:func:`~largead.data.geometry.frame_pairs`), superpixel
sources and :func:`~largead.superpixels.superpoint_ids`, RANSAC ground + HDBSCAN from
:mod:`largead.pretrain.temporal`, the encoder's ``embed`` and :class:`~largead.models.heads.SegmentationModel`, and
:func:`largead.viz.feature_colors` for the PCA colours. Nothing here loops over points.

Coordinates: a sequence of frames is drawn in the LiDAR frame of its first frame (``inv(pose_0) @ pose_k``), so
z stays up, the first sensor sits at the origin and float32 keeps centimetres.

Features are stored compactly (:func:`quantize_features`): ``int8`` keeps, per point, ``round(127 f / max|f|)`` and no
scale, because the page only needs cosine similarities and the cosine is blind to a per-point scale; ``float16``
keeps the values; ``float32`` is exact.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from largead.data.frame import IGNORE_INDEX, Frame
from largead.data.geometry import frame_pairs, invert_rigid

FEATURE_DTYPES = ("int8", "float16", "float32")
IMAGE_FORMATS = ("jpeg", "png")


# --------------------------------------------------------------------------------------------------------------------
# Inputs: scans and frames
# --------------------------------------------------------------------------------------------------------------------
def load_scan(path: str | os.PathLike) -> np.ndarray:
    """Read one scan as ``(N, 4)`` float32 ``x, y, z, intensity``.

    ``.bin`` is KITTI's flat float32 x 4, ``.pcd.bin`` nuScenes' float32 x 5 (the ring column is dropped), ``.npy`` an
    ``(N, >= 4)`` array. Raises ``FileNotFoundError`` / ``ValueError`` naming the file and what was expected.
    """
    from largead.data.readers._kitti_io import read_bin

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such scan file")
    name = p.name.lower()
    if name.endswith(".bin"):
        pts = read_bin(p, columns=5 if name.endswith(".pcd.bin") else 4)
    elif name.endswith(".npy"):
        try:
            pts = np.load(p, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{p}: not a plain .npy array ({err})") from None
    else:
        raise ValueError(f"{p}: unsupported scan format; expected .bin (KITTI float32 x 4), .pcd.bin (nuScenes "
                         "float32 x 5) or .npy (N, >= 4)")
    if pts.ndim != 2 or pts.shape[1] < 4 or pts.dtype.kind not in "fiu":
        raise ValueError(f"{p}: expected an (N, >= 4) numeric array of x, y, z, intensity, got shape {pts.shape} "
                         f"dtype {pts.dtype}")
    if len(pts) == 0:
        raise ValueError(f"{p}: the scan has no points")
    if not np.isfinite(pts[:, :4]).all():
        raise ValueError(f"{p}: the scan has non-finite coordinates or intensity")
    return np.ascontiguousarray(pts[:, :4], dtype=np.float32)


def semantickitti_layout(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(root, sequence)`` if ``path`` is ``<root>/sequences/<seq>/velodyne/<stem>.bin`` in a complete
    SemanticKITTI sequence folder (``calib.txt``, ``poses.txt``, ``times.txt``), else ``None``."""
    p = Path(path).resolve()
    name = p.name.lower()
    if not name.endswith(".bin") or name.endswith(".pcd.bin") or p.parent.name != "velodyne":
        return None
    seq_dir = p.parent.parent
    if seq_dir.parent.name != "sequences":
        return None
    if not all((seq_dir / f).is_file() for f in ("calib.txt", "poses.txt", "times.txt")):
        return None
    return seq_dir.parent.parent, seq_dir.name


@dataclass
class Source:
    """Frames to show and what is known about them."""

    frames: list[Frame]
    dataset: str | None = None  # registry name of the reader, when the frames come from one
    class_names: tuple[str, ...] | None = None
    class_colors: np.ndarray | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)


def sequence_indices(dataset: Any, index: int, frames: int) -> tuple[list[int], list[str]]:
    """Indices of ``frames`` consecutive sweeps of ``dataset`` starting at ``index`` (``next_index``), and notes.

    A sequence that ends early gives fewer frames (with a note); a dataset whose frames are not ordered in time
    (``temporal = False``) cannot give more than one and raises ``ValueError``.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    n = len(dataset)
    if not -n <= index < n:
        raise IndexError(f"{getattr(dataset, 'name', 'dataset')}: frame index {index} out of range for {n} frames")
    index %= n
    if frames == 1:
        return [index], []
    if not getattr(dataset, "temporal", False):
        raise ValueError(f"dataset {getattr(dataset, 'name', '?')!r} has no temporal order (temporal = False): "
                         f"cannot show {frames} consecutive frames")
    out = [index]
    for k in range(1, frames):
        j = dataset.next_index(index, k)
        if j is None:
            break
        out.append(j)
    notes = [] if len(out) == frames else [f"the sequence ends after {len(out)} of the {frames} frames asked for"]
    return out, notes


def open_dataset(name: str, root: str | os.PathLike | None, split: str, options: dict[str, Any] | None = None,
                 cameras: bool = True) -> Any:
    """``get_dataset(name, root, split, **options)``, asking for camera images (``cameras=True``) from readers that
    take a ``cameras`` option, unless ``options`` sets it."""
    from largead.data import dataset_class, get_dataset

    opts = dict(options or {})
    cls = dataset_class(name)
    if cameras and "cameras" not in opts and "cameras" in inspect.signature(cls.__init__).parameters:
        opts["cameras"] = True
    return get_dataset(name, None if root is None else os.fspath(root), split, **opts)


def source_from_dataset(dataset: Any, index: int, frames: int = 1) -> Source:
    """Frames ``index ..`` (``frames`` consecutive ones) of an opened dataset."""
    idx, notes = sequence_indices(dataset, index, frames)
    loaded = [dataset[i] for i in idx]
    cls = type(dataset)
    colors = getattr(cls, "class_colors", None)
    return Source(frames=loaded, dataset=getattr(dataset, "name", None) or None,
                  class_names=tuple(dataset.class_names) or None, class_colors=colors,
                  description=f"{getattr(dataset, 'name', 'dataset')} frame {idx[0]}"
                              + (f" (+{len(idx) - 1} following)" if len(idx) > 1 else ""),
                  notes=notes)


def source_from_scan(path: str | os.PathLike, frames: int = 1, cameras: bool = True) -> Source:
    """Frames from a scan file.

    A ``.bin`` inside a complete SemanticKITTI sequence folder (:func:`semantickitti_layout`) is opened through the
    SemanticKITTI reader, so it comes with its labels (when ``labels/<stem>.label`` exists), pose, ``image_2`` camera
    (when ``image_2/<stem>.png`` exists and ``cameras``) and the following sweeps. Any other file is a bare scan:
    points only, one frame.
    """
    from largead.data.readers.semantickitti import SemanticKITTIDataset

    path = Path(path)
    layout = semantickitti_layout(path)
    if layout is None:
        if frames > 1:
            raise ValueError(f"{path}: --frames {frames} needs a sequence: give a scan inside a SemanticKITTI "
                             "sequences/<seq>/velodyne/ folder, or --dataset/--root/--index")
        pts = load_scan(path)
        return Source(frames=[Frame(points=pts, token=path.name).validate(str(path))], description=str(path))
    root, seq = layout
    seq_dir = root / "sequences" / seq
    stem = path.stem
    has_labels = (seq_dir / "labels" / f"{stem}.label").is_file()
    with_cams = cameras and (seq_dir / "image_2" / f"{stem}.png").is_file()
    # the reader takes a sequence override with any split; "test" means "no labels"
    ds = SemanticKITTIDataset(root, split="train" if has_labels else "test", cameras=with_cams, sequences=(seq,))
    stems = sorted(p.stem for p in (seq_dir / "velodyne").glob("*.bin"))
    index = stems.index(stem)
    src = source_from_dataset(ds, index, frames)
    if src.frames[0].token != f"{seq}/{stem}":  # the reader orders files as sorted() does; check, do not assume
        raise RuntimeError(f"{path}: the SemanticKITTI reader returned frame {src.frames[0].token}, "
                           f"expected {seq}/{stem}")
    src.description = f"{path} (SemanticKITTI sequence {seq}" + ("" if has_labels else ", no labels") + ")"
    return src


def source_from_points(points: np.ndarray, name: str = "points") -> Source:
    """A bare scan given as an array ``(N, >= 4)``."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ValueError(f"{name}: expected an (N, >= 4) array of x, y, z, intensity, got shape {pts.shape}")
    frame = Frame(points=np.ascontiguousarray(pts[:, :4], dtype=np.float32), token=name)
    return Source(frames=[frame.validate(name)], description=name)


def view_transforms(frames: Sequence[Frame]) -> list[np.ndarray]:
    """(4, 4) transforms from each frame's LiDAR frame to the first frame's: ``inv(pose_0) @ pose_k``."""
    base = invert_rigid(frames[0].pose)
    return [base @ np.asarray(f.pose, dtype=np.float64) for f in frames]


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """An encoder (features) and, for a fine-tuned segmentation model, its classifier (predictions)."""

    name: str
    encoder: Any  # LargeADEncoder
    segmentation: Any = None  # SegmentationModel or None
    class_names: tuple[str, ...] | None = None
    norm_key: str | None = None  # input_norm key recorded by fine-tuning (segmentation.json)
    trained_on: str | None = None  # dataset recorded by fine-tuning

    @property
    def feature_description(self) -> str:
        if self.segmentation is not None:
            return f"decoder features ({self.segmentation.encoder.decoder_channels}-d, before the classifier)"
        c = self.encoder.config
        return f"encoder output ({c.out_channels}-d{', L2-normalised' if c.normalize_output else ''})"


def load_model(model: Any, device: str = "cpu", offline: bool = False) -> LoadedModel:
    """A zoo name / Hub id / folder, or an already built ``LargeADEncoder`` / ``SegmentationModel``.

    A folder holding ``segmentation.json`` is a fine-tuned segmentation model (loaded with
    :meth:`SegmentationModel.from_pretrained`, which keeps its classifier); anything else loads with
    :meth:`LargeADEncoder.from_pretrained`. The model is put in eval mode on ``device``.
    """
    import json as _json

    from largead.models.encoder import LargeADEncoder
    from largead.models.heads import SEGMENTATION_FILE, SegmentationModel

    if isinstance(model, SegmentationModel):
        model = model.to(device).eval()
        names = tuple(model.class_names) if model.class_names else tuple(str(i) for i in range(model.num_classes))
        return LoadedModel(name=type(model).__name__, encoder=model.encoder, segmentation=model, class_names=names)
    if isinstance(model, LargeADEncoder):
        return LoadedModel(name=model.describe(), encoder=model.to(device).eval())
    name = os.fspath(model)
    folder = Path(name)
    if folder.is_dir() and (folder / SEGMENTATION_FILE).is_file():
        seg = SegmentationModel.from_pretrained(folder).to(device).eval()
        meta = _json.loads((folder / SEGMENTATION_FILE).read_text())
        names = tuple(seg.class_names) if seg.class_names else tuple(str(i) for i in range(seg.num_classes))
        return LoadedModel(name=name, encoder=seg.encoder, segmentation=seg, class_names=names,
                           norm_key=meta.get("input_norm_key"), trained_on=meta.get("dataset"))
    encoder = LargeADEncoder.from_pretrained(name, local_files_only=offline)
    return LoadedModel(name=name, encoder=encoder.to(device).eval())


def choose_norm_key(model: LoadedModel, dataset: str | None, requested: str | None) -> tuple[str | None, str]:
    """The ``input_norm`` key to embed with, and a sentence saying why.

    ``requested`` wins (it must exist in the model's ``input_norm``); then a fine-tuned model's recorded key when the
    frames come from the dataset it was trained on (or from no named dataset); then the dataset's name when the model
    has statistics for it; otherwise raw intensity.
    """
    norm = dict(model.encoder.config.input_norm)
    if requested is not None:
        if norm and requested not in norm:
            raise KeyError(f"the model has no input normalisation for {requested!r}; it knows {sorted(norm)}")
        return requested, f"intensity normalised with the model's statistics for {requested!r}"
    if model.norm_key is not None and (dataset is None or dataset == model.trained_on) and model.norm_key in norm:
        return model.norm_key, f"intensity normalised as in fine-tuning ({model.norm_key!r})"
    if dataset is not None and dataset in norm:
        return dataset, f"intensity normalised with the model's statistics for {dataset!r}"
    if norm:
        return None, (f"raw intensity: the model has input statistics for {sorted(norm)} but none was chosen "
                      "(pass input_norm_key= / --norm-key)")
    return None, "raw intensity (the model stores no input normalisation)"


def run_model(model: LoadedModel, frames: Sequence[Frame], norm_key: str | None
              ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per-frame features (N_k, D) float32 and, for a segmentation model, predicted training ids (N_k,) int64.

    Features are the encoder's ``embed`` output; for a segmentation model they are its decoder features (the input
    of the classifier) and the predictions the argmax of :meth:`SegmentationModel.point_logits`.
    """
    import torch

    feats: list[np.ndarray] = []
    preds: list[np.ndarray] | None = [] if model.segmentation is not None else None
    with torch.no_grad():
        for f in frames:
            pts = torch.from_numpy(np.ascontiguousarray(f.points[:, :4], dtype=np.float32))
            if model.segmentation is None:
                out = model.encoder.embed(pts, dataset=norm_key)
            else:
                batch = model.encoder.voxelize([pts], dataset=norm_key)
                out = model.encoder.decoder_forward(batch).index_select(0, batch.inverse)
                preds.append(model.segmentation.point_logits(batch).argmax(1).cpu().numpy().astype(np.int64))
            feats.append(out.float().cpu().numpy())
    return feats, preds


# --------------------------------------------------------------------------------------------------------------------
# Compact storage
# --------------------------------------------------------------------------------------------------------------------
def quantize_features(features: np.ndarray, dtype: str = "int8") -> tuple[np.ndarray, np.ndarray | None]:
    """``(stored, scale)`` for features ``(N, D)``.

    ``int8``: ``stored = round(127 * f / max_j |f_j|)`` per point and ``scale = max_j |f_j| / 127`` (N,) float32, so
    ``stored * scale[:, None]`` is within ``scale / 2`` of ``f`` in every component; an all-zero row stays zero.
    ``float16`` / ``float32``: the values cast, ``scale`` is ``None``. The page keeps only ``stored`` (cosine
    similarity does not depend on a per-point scale).
    """
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"feature_dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features have non-finite values")
    if dtype == "float32":
        return np.ascontiguousarray(f), None
    if dtype == "float16":
        big = float(np.abs(f).max(initial=0.0))
        if big > 65504.0:
            raise ValueError(f"features reach {big:g}, beyond float16's range (65504); use feature_dtype='int8'")
        return f.astype(np.float16), None
    peak = np.abs(f).max(axis=1)
    scale = (peak / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(f / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_features(stored: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`quantize_features` (up to its rounding): float32 (N, D)."""
    f = np.asarray(stored).astype(np.float32)
    return f if scale is None else f * np.asarray(scale, dtype=np.float32)[:, None]


def cosine_to(features: np.ndarray, query: int) -> np.ndarray:
    """Cosine similarity (N,) of every row of ``features`` to row ``query`` (float64; zero rows give 0)."""
    f = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(f, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    return (f @ f[query]) / (safe * safe[query])


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """(N, 3) uint8: the first three principal components of ``features`` as RGB (:func:`largead.viz.feature_colors`,
    components fitted over all frames together so colours agree between frames)."""
    from largead.viz import feature_colors

    return np.rint(feature_colors(features) * 255).astype(np.uint8)


def robust_range(values: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
    """``(percentile lo, percentile hi)`` of ``values``, widened to a non-empty interval."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return 0.0, 1.0
    a, b = (float(x) for x in np.percentile(v, [lo, hi]))
    if b - a < 1e-6:
        a, b = a - 0.5, b + 0.5
    return a, b


def encode_image(image: np.ndarray, max_width: int | None, fmt: str = "jpeg", quality: int = 80
                 ) -> tuple[str, tuple[int, int]]:
    """``(data URL, (width, height))`` of an RGB image, shrunk (Lanczos) to at most ``max_width`` pixels wide."""
    from PIL import Image

    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {fmt!r}")
    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    img = _shrink(img, max_width, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=int(quality), optimize=True)
    else:
        img.save(buf, format="PNG", optimize=True)
    mime = "image/jpeg" if fmt == "jpeg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}", img.size


def _shrink(img: Any, max_width: int | None, resample: Any) -> Any:
    if max_width is not None and img.width > max_width:
        height = max(1, round(img.height * max_width / img.width))
        img = img.resize((int(max_width), height), resample)
    return img


def superpixel_overlay(image: np.ndarray, ids: np.ndarray, palette: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with each superpixel painted in its colour (``palette[ids]``, ``ids < 0`` left unpainted) at
    ``alpha`` and segment boundaries darkened: (H, W, 3) uint8."""
    from skimage.segmentation import find_boundaries

    img = np.asarray(image, dtype=np.float32)
    ids = np.asarray(ids)
    painted = ids >= 0
    colour = np.asarray(palette, dtype=np.float32)[np.where(painted, ids, 0)]
    out = np.where(painted[..., None], (1 - alpha) * img + alpha * colour, img)
    edges = find_boundaries(ids, mode="inner")
    out[edges] *= 0.35
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# Superpoints and segments
# --------------------------------------------------------------------------------------------------------------------
def superpoints(frame: Frame, maps: Sequence[np.ndarray], ignore_zero: bool) -> tuple[np.ndarray, np.ndarray]:
    """Superpoint of each point of ``frame`` from its cameras' superpixel ``maps``: ``(ids (N,), offsets (C+1,))``.

    Points and pixels are paired by :func:`largead.data.geometry.frame_pairs` (SLidR's rule) and ids made global over
    the cameras by :func:`largead.superpixels.superpoint_ids` (``offsets``: see
    :func:`~largead.superpixels.segment_offsets`).
    A point seen by several cameras takes its first camera's superpixel; with ``ignore_zero`` pixels of id 0 ("no
    mask" for SAM / panoptic sources) pair with nothing. Unpaired points get -1.
    """
    from largead.superpixels import segment_offsets, superpoint_ids

    n = frame.num_points
    out = np.full(n, -1, dtype=np.int64)
    offsets = segment_offsets(list(maps)).numpy()
    pairs = frame_pairs(frame)
    if len(pairs) == 0:
        return out, offsets
    ids = superpoint_ids(pairs, list(maps)).numpy()
    keep = np.ones(len(ids), dtype=bool)
    if ignore_zero:
        keep = ids - offsets[pairs.camera] != 0
    point, ids = pairs.point[keep], ids[keep]
    first_point, first = np.unique(point, return_index=True)  # pairs come camera by camera: first = first camera
    out[first_point] = ids[first]
    return out, offsets


def sequence_segments(frames: Sequence[Frame], params: Any = None) -> list[np.ndarray]:
    """Segments shared by all ``frames`` (the temporal objective's, for any number of frames): ground removed per
    sweep by RANSAC, the rest of all sweeps clustered together in global coordinates by HDBSCAN
    (:func:`~largead.pretrain.temporal.segment_sweeps`). Ground and noise are -1. For two frames this is
    :func:`~largead.pretrain.temporal.segment_pair`, which the tests check.
    """
    from largead.pretrain.temporal import SegmentParams, segment_sweeps

    return segment_sweeps([f.points for f in frames], [f.pose for f in frames],
                          params if params is not None else SegmentParams())


def compact_ids(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber ids ``>= 0`` as ``0..K-1`` in increasing order (``-1`` stays): ``(ids (N,) int32, K)``."""
    ids = np.asarray(ids, dtype=np.int64)
    valid = ids >= 0
    uniq, inv = np.unique(ids[valid], return_inverse=True)
    out = np.full(ids.shape, -1, dtype=np.int32)
    out[valid] = inv.astype(np.int32)
    return out, int(len(uniq))


# --------------------------------------------------------------------------------------------------------------------
# Legends
# --------------------------------------------------------------------------------------------------------------------
def legend(labels: np.ndarray, class_names: Sequence[str], palette: np.ndarray) -> list[dict[str, Any]]:
    """One entry per class ``{"id", "name", "color" (#rrggbb), "count"}`` in training-id order, plus an ``ignore``
    entry (``id`` -1) when some point is ignored (label -1 or outside ``0..C-1``)."""
    lab = np.asarray(labels, dtype=np.int64)
    c = len(class_names)
    inside = (lab >= 0) & (lab < c)
    counts = np.bincount(lab[inside], minlength=c)
    out = [{"id": i, "name": str(class_names[i]), "color": _hex(palette[i]), "count": int(counts[i])} for i in range(c)]
    ignored = int((~inside).sum())
    if ignored:
        from largead.viewer.palettes import IGNORE_RGB

        out.append({"id": IGNORE_INDEX, "name": "ignore", "color": _hex(IGNORE_RGB), "count": ignored})
    return out


def _hex(rgb: Sequence[int]) -> str:
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars / arrays turned into Python numbers / lists (for ``json.dumps``)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


__all__ = [
    "FEATURE_DTYPES", "IMAGE_FORMATS", "LoadedModel", "Source", "choose_norm_key", "compact_ids", "cosine_to",
    "dequantize_features", "encode_image", "legend", "load_model", "load_scan", "open_dataset", "pca_rgb",
    "quantize_features", "robust_range", "run_model", "semantickitti_layout", "sequence_indices",
    "sequence_segments", "source_from_dataset", "source_from_points", "source_from_scan", "superpixel_overlay",
    "superpoints", "view_transforms",
]
