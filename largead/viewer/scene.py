"""Assemble what the page draws: one :class:`ViewData` (JSON metadata + named typed arrays) from frames and a model.

The page gets, for all ``N`` points of all frames (frames concatenated in order, ``meta["frames"][k]["offset"]``):

=================  =====================  ===========================================================================
array              dtype, shape           content
=================  =====================  ===========================================================================
``positions``      float32 (N, 3)         x, y, z in the first frame's LiDAR frame (metres)
``intensity``      float32 (N,)           the scan's intensity column, as stored
``gt``             int16 (N,)             ground-truth training ids, -1 ignore (when the frames are labelled)
``pred``           int16 (N,)             predicted training ids (fine-tuned segmentation model)
``features``       int8 / float16 / f32   per-point features (:func:`~largead.viewer.prepare.quantize_features`)
``pca``            uint8 (N, 3)           first three principal components of the features as RGB
``superpoints``    int16/32 (N,)          global superpixel id of each point's pixel, -1 unpaired
``sp_palette``     uint8 (S, 3)           colour of each superpixel id (same colours as the image overlays)
``segments``       int16/32 (N,)          RANSAC ground + HDBSCAN segment, -1 ground / noise
``seg_palette``    uint8 (K, 3)           colour of each segment
``proj_index``     uint32 (P,)            point of each projection into a camera image
``proj_uv``        float32 (P, 2)         its pixel (u = column, v = row) in the *original* image, as
                                          :func:`largead.data.geometry.project_points` returns it
=================  =====================  ===========================================================================

``float16`` features travel as their raw 16-bit patterns (``uint16``) and are decoded in the page.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from largead.data.frame import IGNORE_INDEX
from largead.data.geometry import project_points, transform_points
from largead.viewer import prepare
from largead.viewer.palettes import IGNORE_RGB, class_palette, id_palette, ramp

FORMAT_VERSION = 1
RAMPS = ("turbo", "viridis")


@dataclass
class ViewOptions:
    """Size and look of a view.

    Attributes:
        max_image_width: camera images are shrunk (Lanczos) to at most this many pixels wide (``None``: as they are).
        image_format: ``jpeg`` (small) or ``png`` (exact) for camera images and superpixel overlays.
        image_quality: JPEG quality 1-95.
        feature_dtype: ``int8`` (per-point scaled, 1 byte per value), ``float16`` or ``float32``.
        point_size: initial point size in pixels (the page has a slider).
        segment_params: :class:`largead.pretrain.temporal.SegmentParams` of the segments mode (default: the
            pretraining defaults with ``downsample=0.1`` m to bound HDBSCAN's cost on dense scans).
        superpixel_ignore_zero: id 0 means "no mask" (SAM / panoptic / synthetic-vfm maps); ``None``: true for every
            source except ``slic``.
    """

    max_image_width: int | None = 480
    image_format: str = "jpeg"
    image_quality: int = 80
    feature_dtype: str = "int8"
    point_size: float = 2.0
    segment_params: Any = None
    superpixel_ignore_zero: bool | None = None

    def __post_init__(self) -> None:
        if self.max_image_width is not None and int(self.max_image_width) < 16:
            raise ValueError(f"max_image_width must be >= 16 pixels (or None), got {self.max_image_width}")
        if self.image_format not in prepare.IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {prepare.IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= int(self.image_quality) <= 95:
            raise ValueError(f"image_quality must be in 1..95, got {self.image_quality}")
        if self.feature_dtype not in prepare.FEATURE_DTYPES:
            raise ValueError(f"feature_dtype must be one of {prepare.FEATURE_DTYPES}, got {self.feature_dtype!r}")
        if not 0.5 <= float(self.point_size) <= 16:
            raise ValueError(f"point_size must be in [0.5, 16] pixels, got {self.point_size}")


@dataclass
class ViewData:
    """Everything a page needs: JSON-ready ``meta`` and named numpy ``arrays`` (see the module docstring)."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per preparation step

    def array_bytes(self) -> dict[str, int]:
        """Raw bytes of each array (before base64)."""
        return {k: int(v.nbytes) for k, v in self.arrays.items()}

    def image_bytes(self) -> int:
        """Characters of all embedded image data URLs."""
        return sum(len(c["image"]) + len(c.get("overlay") or "") for f in self.meta["frames"] for c in f["cameras"])


def _mode(key: str, label: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "label": label, "kind": kind, **extra}


def build_view(
    source: prepare.Source,
    model: prepare.LoadedModel | None = None,
    *,
    features: np.ndarray | Sequence[np.ndarray] | None = None,
    norm_key: str | None = None,
    norm_note: str | None = None,
    superpixels: str | None = None,
    superpixel_options: dict[str, Any] | None = None,
    segments: bool | None = None,
    query: int | None = None,
    title: str | None = None,
    options: ViewOptions | None = None,
) -> ViewData:
    """Prepare a view of ``source``'s frames (see :func:`largead.viewer.view` for the arguments).

    ``features``: per-point features computed elsewhere (e.g. ``largead embed``), ``(N, D)`` for all frames'
    points in order or one ``(N_k, D)`` array per frame, instead of a ``model``. ``norm_key`` is the model's
    ``input_norm`` key and ``norm_note`` the sentence saying why (both from
    :func:`~largead.viewer.prepare.choose_norm_key`).
    ``segments=None`` computes the RANSAC + HDBSCAN segments only for a sequence of two or more frames. ``query``:
    a point (index into all points, frame after frame) picked when the page opens.
    """
    opts = options or ViewOptions()
    frames = source.frames
    if not frames:
        raise ValueError("nothing to show: no frames")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    counts = np.array([f.num_points for f in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n = int(offsets[-1])
    transforms = prepare.view_transforms(frames)
    moved = [transform_points(f.points, t) for f, t in zip(frames, transforms, strict=True)]
    positions = np.concatenate(moved).astype(np.float32)
    intensity = np.concatenate([f.points[:, 3] for f in frames]).astype(np.float32)
    arrays: dict[str, np.ndarray] = {"positions": positions, "intensity": intensity}
    info: list[list[str]] = [["input", source.description or "points"]]
    if source.dataset:
        info.append(["dataset", source.dataset])
    notes = list(source.notes)
    modes = [
        _mode("height", "height (z)", "ramp", ramp="turbo", field="z", unit="m",
              range=prepare.robust_range(positions[:, 2])),
        _mode("intensity", "intensity", "ramp", ramp="turbo", field="intensity", unit="",
              range=prepare.robust_range(intensity)),
    ]
    point_fields: list[dict[str, Any]] = []

    # ---- ground truth
    class_names = source.class_names
    if any(f.labels is not None for f in frames):
        gt = np.concatenate([f.labels if f.labels is not None else np.full(f.num_points, IGNORE_INDEX)
                             for f in frames]).astype(np.int64)
        if class_names is None:
            class_names = tuple(str(i) for i in range(int(gt.max(initial=-1)) + 1))
        palette, palette_source = class_palette(class_names, source.class_colors)
        gt = np.where((gt >= 0) & (gt < len(class_names)), gt, IGNORE_INDEX)
        arrays["gt"] = gt.astype(np.int16)
        modes.append(_mode("gt", "ground truth", "classes", array="gt", names=list(class_names),
                           palette=palette.tolist(), legend=prepare.legend(gt, class_names, palette),
                           palette_source=palette_source))
        point_fields.append({"label": "class", "array": "gt", "mode": "gt"})
    lap("frames")

    # ---- model: features, predictions, PCA
    feature_meta = None
    if model is not None and features is not None:
        raise ValueError("give a model or features, not both")
    if model is not None or features is not None:
        if model is not None:
            feats, preds = prepare.run_model(model, frames, norm_key)
            description, model_name = model.feature_description, model.name
        else:
            feats, preds = _given_features(features, counts), None
            description, model_name = f"given features ({feats[0].shape[1]}-d)", "none (features given)"
        lap("model")
        f_all = np.concatenate(feats, 0)
        stored, _ = prepare.quantize_features(f_all, opts.feature_dtype)
        arrays["features"] = stored.view(np.uint16) if opts.feature_dtype == "float16" else stored
        arrays["pca"] = prepare.pca_rgb(f_all)
        feature_meta = {"array": "features", "dtype": opts.feature_dtype, "dim": int(f_all.shape[1]),
                        "description": description}
        info.append(["model", model_name])
        info.append(["features", f"{description}, stored as {opts.feature_dtype}"])
        modes.append(_mode("pca", "features (PCA \u2192 RGB)", "rgb", array="pca"))
        if preds is not None:
            pred = np.concatenate(preds).astype(np.int64)
            names = model.class_names or tuple(str(i) for i in range(int(pred.max(initial=0)) + 1))
            same = class_names is not None and tuple(names) == tuple(class_names)
            palette, palette_source = class_palette(names, source.class_colors if same else None)
            arrays["pred"] = pred.astype(np.int16)
            modes.append(_mode("pred", "predicted class", "classes", array="pred", names=list(names),
                               palette=palette.tolist(), legend=prepare.legend(pred, names, palette),
                               palette_source=palette_source))
            point_fields.append({"label": "predicted", "array": "pred", "mode": "pred"})
            if "gt" in arrays and same:
                labelled = arrays["gt"] >= 0
                acc = float((pred[labelled] == arrays["gt"][labelled]).mean()) if labelled.any() else float("nan")
                if math.isfinite(acc):
                    info.append(["accuracy", f"{100 * acc:.1f}% of {int(labelled.sum())} labelled points"])
        modes.append(_mode("similarity", "similarity to the clicked point", "similarity", ramp="viridis"))
        lap("features")
    if model is not None:
        info.append(["model input", norm_note or (f"intensity normalised with {norm_key!r}" if norm_key
                                                  else "raw intensity")])

    # ---- camera images and projections
    proj_index, proj_uv = [], []
    p_count = 0
    frame_meta = []
    for k, (f, t) in enumerate(zip(frames, transforms, strict=True)):
        cams = []
        for cam in f.cameras:
            valid, uv = project_points(f.points, cam.lidar_to_camera, cam.intrinsics, cam.height, cam.width)
            idx = np.flatnonzero(valid)
            depth = transform_points(f.points[idx], cam.lidar_to_camera)[:, 2]
            idx = idx[np.argsort(-depth, kind="stable")]  # far to near: the page draws nearer points last
            image, size = prepare.encode_image(cam.image, opts.max_image_width, opts.image_format, opts.image_quality)
            cams.append({"name": cam.name or cam.token or f"camera {len(cams)}", "width": cam.width,
                         "height": cam.height, "image": image, "size": list(size), "overlay": None,
                         "proj": [p_count, p_count + len(idx)]})
            proj_index.append(idx + offsets[k])
            proj_uv.append(uv[idx])
            p_count += len(idx)
        frame_meta.append({"name": f.token or f"frame {k}", "sequence": f.sequence, "index": f.index,
                           "timestamp": f.timestamp, "offset": int(offsets[k]), "count": int(counts[k]),
                           "pose": np.round(t, 6).tolist(), "cameras": cams})
    if p_count:
        arrays["proj_index"] = np.concatenate(proj_index).astype(np.uint32)
        arrays["proj_uv"] = np.concatenate(proj_uv).astype(np.float32)
    lap("images")

    # ---- superpoints
    if superpixels is not None:
        _add_superpoints(frames, frame_meta, offsets, arrays, modes, info, superpixels, superpixel_options or {}, opts)
        point_fields.append({"label": "superpoint", "array": "superpoints", "mode": "superpoints"})
        lap("superpoints")

    # ---- segments (RANSAC ground + HDBSCAN over all frames)
    if segments or (segments is None and len(frames) > 1):
        from largead.pretrain.temporal import SegmentParams

        params = opts.segment_params or SegmentParams(downsample=0.1)
        seg, k_seg = prepare.compact_ids(np.concatenate(prepare.sequence_segments(frames, params)))
        arrays["segments"] = _small_ids(seg)
        arrays["seg_palette"] = id_palette(max(k_seg, 1), seed=7)
        label = "temporal segments" if len(frames) > 1 else "segments"
        modes.append(_mode("segments", f"{label} (RANSAC ground + HDBSCAN)", "ids", array="segments",
                           palette_array="seg_palette", count=k_seg,
                           legend_text=f"{k_seg} segments over {len(frames)} frame(s); grey: ground and noise"))
        info.append(["segments", f"RANSAC ground + HDBSCAN (min_cluster_size {params.min_cluster_size}, "
                                  f"downsample {params.downsample} m), clustered jointly in global coordinates"])
        point_fields.append({"label": "segment", "array": "segments", "mode": "segments"})
        lap("segments")

    if query is not None and not 0 <= int(query) < n:
        raise IndexError(f"query point {query} out of range for {n} points")
    keys = [m["key"] for m in modes]
    initial = ("similarity" if query is not None and "similarity" in keys else
               "pca" if "pca" in keys else "gt" if "gt" in keys else "height")
    from largead import __version__

    meta = {
        "format": FORMAT_VERSION,
        "generator": f"largead {__version__}",
        "title": title or source.description or "largead view",
        "num_points": n,
        "frames": frame_meta,
        "modes": modes,
        "features": feature_meta,
        "point_fields": point_fields,
        "ramps": {name: ramp(name).tolist() for name in RAMPS},
        "ignore_color": list(IGNORE_RGB),
        "initial": {"mode": initial, "query": None if query is None else int(query), "point_size": opts.point_size},
        "info": info,
        "notes": notes,
    }
    return ViewData(meta=prepare.json_safe(meta), arrays=arrays, seconds=seconds)


def _small_ids(ids: np.ndarray) -> np.ndarray:
    """Ids (``-1`` = none) as int16 when they fit, else int32: half the bytes for the usual few thousand ids."""
    return ids.astype(np.int16 if int(ids.max(initial=-1)) < 32767 else np.int32)


def _given_features(features: np.ndarray | Sequence[np.ndarray], counts: np.ndarray) -> list[np.ndarray]:
    """Split / check features given by the caller: one (N_k, D) float array per frame."""
    if isinstance(features, np.ndarray):
        if features.ndim != 2 or len(features) != int(counts.sum()):
            raise ValueError(f"features must be ({int(counts.sum())}, D) for the {int(counts.sum())} points of the "
                             f"frames, got shape {features.shape}")
        return np.split(np.asarray(features, dtype=np.float32), np.cumsum(counts)[:-1])
    parts = [np.asarray(f, dtype=np.float32) for f in features]
    if len(parts) != len(counts):
        raise ValueError(f"got features for {len(parts)} frames, but there are {len(counts)}")
    for k, (f, c) in enumerate(zip(parts, counts, strict=True)):
        if f.ndim != 2 or len(f) != c or f.shape[1] != parts[0].shape[1]:
            raise ValueError(f"features of frame {k} must be ({int(c)}, {parts[0].shape[1]}), got shape {f.shape}")
    return parts


def _add_superpoints(frames: Sequence[Any], frame_meta: list[dict[str, Any]], offsets: np.ndarray,
                     arrays: dict[str, np.ndarray], modes: list[dict[str, Any]], info: list[list[str]],
                     name: str, source_options: dict[str, Any], opts: ViewOptions) -> None:
    """Superpixels of every camera of every frame -> per-point superpoint ids, a palette and image overlays."""
    from largead.superpixels import get_source

    if not any(f.cameras for f in frames):
        raise ValueError(f"superpixels={name!r} needs camera images, but the frames have none")
    src = get_source(name, **source_options)
    ignore_zero = opts.superpixel_ignore_zero if opts.superpixel_ignore_zero is not None else name != "slic"
    point_ids, maps_all, bases = [], [], []
    base = 0
    for f in frames:
        maps = src.segment_batch([c.image for c in f.cameras], f.cameras) if f.cameras else []
        if maps:
            ids, offs = prepare.superpoints(f, maps, ignore_zero)
            ids = np.where(ids >= 0, ids + base, -1)
        else:
            ids, offs = np.full(f.num_points, -1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        point_ids.append(ids)
        maps_all.append(maps)
        bases.append((base, offs))
        base += int(offs[-1])
    palette = id_palette(max(base, 1))
    arrays["superpoints"] = _small_ids(np.concatenate(point_ids))
    arrays["sp_palette"] = palette
    for fm, maps, f, (b, offs) in zip(frame_meta, maps_all, frames, bases, strict=True):
        for c, (cam_meta, m, cam) in enumerate(zip(fm["cameras"], maps, f.cameras, strict=True)):
            gid = m.astype(np.int64) + offs[c] + b
            if ignore_zero:
                gid = np.where(m == 0, -1, gid)
            overlay = prepare.superpixel_overlay(cam.image, gid, palette)
            cam_meta["overlay"] = prepare.encode_image(overlay, opts.max_image_width, opts.image_format,
                                                       opts.image_quality)[0]
    n_paired = int((arrays["superpoints"] >= 0).sum())
    n_sp = len(np.unique(arrays["superpoints"][arrays["superpoints"] >= 0]))
    modes.append(_mode("superpoints", f"superpoints ({name})", "ids", array="superpoints", palette_array="sp_palette",
                       count=n_sp, legend_text=f"{n_sp} superpoints from {base} {name} superpixels; "
                                               f"{n_paired} of {len(arrays['superpoints'])} points paired with a "
                                               "pixel; grey: unpaired"))
    info.append(["superpixels", f"{name} {src.params() or ''}".strip()])
