"""``largead.viewer.view``: write one self-contained HTML page showing a scan, its superpoints, features and
predictions. See :func:`view`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from largead.data.frame import Frame
from largead.fileio import atomic_write_text
from largead.viewer import prepare
from largead.viewer.html import render_html
from largead.viewer.scene import ViewData, ViewOptions, build_view


def _source(scan: Any, dataset: str | None, root: Any, split: str, index: int, frames: int,
            dataset_options: dict[str, Any] | None, cameras: bool) -> prepare.Source:
    if isinstance(scan, Frame):
        return prepare.Source(frames=[scan.validate("frame")], dataset=scan.dataset or None,
                              description=scan.token or "frame")
    if isinstance(scan, Sequence) and not isinstance(scan, (str, bytes)) and scan and all(
            isinstance(f, Frame) for f in scan):
        return prepare.Source(frames=[f.validate(f"frame {k}") for k, f in enumerate(scan)],
                              dataset=scan[0].dataset or None, description=f"{len(scan)} frames")
    if isinstance(scan, np.ndarray):
        if frames > 1:
            raise ValueError("frames > 1 needs a sequence (a dataset or a SemanticKITTI-layout scan), not an array")
        return prepare.source_from_points(scan)
    if scan is not None:
        if dataset is not None:
            raise ValueError("give either a scan or dataset=..., not both")
        return prepare.source_from_scan(scan, frames=frames, cameras=cameras)
    if dataset is None:
        raise ValueError("nothing to show: give a scan (file, array or Frame) or dataset=NAME (with root=, split=, "
                         "index=)")
    ds = prepare.open_dataset(dataset, root, split, dataset_options, cameras=cameras)
    return prepare.source_from_dataset(ds, index, frames)


def prepare_view(
    scan: str | os.PathLike | np.ndarray | Frame | Sequence[Frame] | None = None,
    *,
    dataset: str | None = None,
    root: str | os.PathLike | None = None,
    split: str = "val",
    index: int = 0,
    frames: int = 1,
    dataset_options: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    model: Any = None,
    features: np.ndarray | Sequence[np.ndarray] | None = None,
    input_norm_key: str | None = None,
    superpixels: str | None = None,
    superpixel_options: dict[str, Any] | None = None,
    segments: bool | None = None,
    cameras: bool = True,
    query: int | None = None,
    title: str | None = None,
    device: str = "cpu",
    offline: bool = False,
    **options: Any,
) -> ViewData:
    """Everything :func:`view` computes, without writing the page (arguments as :func:`view`)."""
    src = _source(scan, dataset, root, split, index, frames, dataset_options, cameras)
    if class_names is not None:
        src.class_names = tuple(class_names)
    if not cameras:  # copies: the caller's frames keep their cameras
        src.frames = [dataclasses.replace(f, cameras=[]) for f in src.frames]
    loaded = norm_key = note = None
    if model is not None:
        loaded = prepare.load_model(model, device=device, offline=offline)
        norm_key, note = prepare.choose_norm_key(loaded, src.dataset, input_norm_key)
    return build_view(src, loaded, features=features, norm_key=norm_key, norm_note=note, superpixels=superpixels,
                      superpixel_options=superpixel_options, segments=segments, query=query, title=title,
                      options=ViewOptions(**options))


def view(
    scan: str | os.PathLike | np.ndarray | Frame | Sequence[Frame] | None = None,
    out: str | os.PathLike = "view.html",
    *,
    dataset: str | None = None,
    root: str | os.PathLike | None = None,
    split: str = "val",
    index: int = 0,
    frames: int = 1,
    dataset_options: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    model: Any = None,
    features: np.ndarray | Sequence[np.ndarray] | None = None,
    input_norm_key: str | None = None,
    superpixels: str | None = None,
    superpixel_options: dict[str, Any] | None = None,
    segments: bool | None = None,
    cameras: bool = True,
    query: int | None = None,
    title: str | None = None,
    device: str = "cpu",
    offline: bool = False,
    max_image_width: int | None = 480,
    image_format: str = "jpeg",
    image_quality: int = 80,
    feature_dtype: str = "int8",
    point_size: float = 2.0,
    segment_params: Any = None,
    superpixel_ignore_zero: bool | None = None,
) -> Path:
    """Write an interactive 3D view of a scan (or a few consecutive frames) as one self-contained HTML file.

    The page opens from disk in any current browser with no server and no network (three.js is inlined). It shows
    the points coloured by height, intensity, ground-truth class, superpoints, predicted class, features (first three
    principal components as RGB) and, after a click on a point, the cosine similarity of every point's feature to
    the clicked point's (the LargeAD paper's Figure 4); the camera images with the points projected in the same
    colours; a frame slider for sequences.

    What to show (one of):
        scan: a ``.bin`` (KITTI float32 x 4; inside a SemanticKITTI ``sequences/<seq>/velodyne/`` folder it also
            brings labels, pose, ``image_2`` and following sweeps), ``.pcd.bin`` (nuScenes float32 x 5) or ``.npy``
            file; an ``(N, >= 4)`` array; a :class:`~largead.data.Frame` or a list of frames (a sequence).
        dataset, root, split, index, dataset_options: a frame of a registered dataset
            (:func:`largead.data.get_dataset`); readers with a ``cameras`` option are asked for their images.
        frames: show this many consecutive frames (placed with each frame's pose), with a slider.
        class_names: names of the label ids when the frames do not come from a dataset reader.
        cameras: include camera images (``False`` drops them and makes the file smaller).

    Model (optional):
        model: zoo name, Hub id, folder, or a loaded ``LargeADEncoder`` (features) / fine-tuned
            ``SegmentationModel`` (folder with ``segmentation.json``: predicted classes, and its decoder features).
        input_norm_key: which of the model's per-dataset intensity normalisations to apply (default: the dataset's
            name when the model has statistics for it, a fine-tuned model's own key, else raw intensity).
        features: per-point features computed elsewhere (``largead embed``'s ``.npy``), ``(N, D)`` for all points
            of all frames or one array per frame, instead of a model.
        device, offline: where to run the model; never contact the Hub.

    Extra colour modes:
        superpixels: a superpixel source (``largead.superpixels.list_sources()``: ``slic``, ``synthetic-vfm``,
            ``seem`` ...) whose superpixels, lifted to points through the point-pixel pairs, give the superpoints
            mode; ``superpixel_options`` are its options (``root=`` for precomputed maps, ...).
        segments: RANSAC ground + HDBSCAN segments over all frames (default: on for two or more frames).
        query: index of a point (all frames' points counted in order) to click when the page opens.

    Size and look: ``max_image_width`` (pixels), ``image_format`` (``jpeg``/``png``), ``image_quality``,
    ``feature_dtype`` (``int8``/``float16``/``float32``), ``point_size``, ``segment_params``
    (:class:`~largead.pretrain.temporal.SegmentParams`), ``superpixel_ignore_zero``; see
    :class:`~largead.viewer.scene.ViewOptions`.

    Returns the path written (atomically: a failed run leaves no partial file).
    """
    data = prepare_view(
        scan, dataset=dataset, root=root, split=split, index=index, frames=frames, dataset_options=dataset_options,
        class_names=class_names, model=model, features=features, input_norm_key=input_norm_key,
        superpixels=superpixels, superpixel_options=superpixel_options, segments=segments, cameras=cameras,
        query=query, title=title,
        device=device, offline=offline, max_image_width=max_image_width, image_format=image_format,
        image_quality=image_quality, feature_dtype=feature_dtype, point_size=point_size,
        segment_params=segment_params, superpixel_ignore_zero=superpixel_ignore_zero)
    return write_view(data, out)


def write_view(data: ViewData, out: str | os.PathLike) -> Path:
    """Render ``data`` and write it to ``out`` atomically (parent folders are created)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_html(data))
    return out
