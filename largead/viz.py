"""Shared plotting: bird's-eye views coloured by label or feature, camera images with projected points by depth.

Matplotlib only, through the object API (``matplotlib.figure.Figure``; no pyplot state, works headless with the Agg
backend). Functions draw into a given ``Axes`` so they compose; :func:`render_frame` lays out a whole frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from largead.data.frame import IGNORE_INDEX, Frame
from largead.data.geometry import project_points, transform_points
from largead.fileio import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

IGNORE_COLOR = (0.45, 0.45, 0.45)
"""RGB of ignored / unlabelled points."""

BACKGROUND = "#14161a"


def label_colors(num_classes: int) -> np.ndarray:
    """(num_classes, 3) float RGB in [0, 1], distinct per class (tab20 order for up to 20 classes, then HSV)."""
    from matplotlib import colormaps

    if num_classes <= 20:
        tab = colormaps["tab20"].colors
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # saturated colours first
        return np.array([tab[i] for i in order[:num_classes]], dtype=np.float64)
    hsv = colormaps["hsv"](np.linspace(0, 1, num_classes, endpoint=False))
    return hsv[:, :3]


def colorize_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, 3) RGB per point; :data:`IGNORE_INDEX` (or any id outside ``0..num_classes-1``) gets :data:`IGNORE_COLOR`."""
    lab = np.asarray(labels, dtype=np.int64)
    table = np.vstack([label_colors(num_classes), IGNORE_COLOR])
    idx = np.where((lab >= 0) & (lab < num_classes), lab, num_classes)
    return table[idx]


def colorize_values(values: np.ndarray, cmap: str = "turbo", vmin: float | None = None,
                    vmax: float | None = None) -> np.ndarray:
    """(N, 3) RGB of scalar ``values`` through ``cmap`` (range: given, else the 1st-99th percentiles)."""
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float64)
    lo = np.percentile(v, 1) if vmin is None and len(v) else (vmin if vmin is not None else 0.0)
    hi = np.percentile(v, 99) if vmax is None and len(v) else (vmax if vmax is not None else 1.0)
    t = np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1)
    return colormaps[cmap](t)[:, :3]


def feature_colors(features: np.ndarray) -> np.ndarray:
    """(N, 3) RGB of (N, D) features: first three principal components scaled to [0, 1] (D >= 1)."""
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0, keepdims=True)
    if f.shape[1] >= 3:
        _, _, vt = np.linalg.svd(f[:: max(1, len(f) // 20000)], full_matrices=False)
        f = f @ vt[:3].T
    else:
        f = np.pad(f, ((0, 0), (0, 3 - f.shape[1])))
    lo, hi = np.percentile(f, 2, axis=0), np.percentile(f, 98, axis=0)
    return np.clip((f - lo) / np.maximum(hi - lo, 1e-12), 0, 1)


def plot_bev(
    ax: Axes,
    points: np.ndarray,
    colors: np.ndarray,
    extent: float = 50.0,
    point_size: float = 0.6,
    title: str | None = None,
) -> None:
    """Bird's-eye view of ``points`` (N, >=3) in the LiDAR frame, x forward pointing up, y left pointing left.

    ``colors`` (N, 3) RGB (see :func:`colorize_labels` / :func:`colorize_values` / :func:`feature_colors`).
    ``extent``: half-width of the square shown, metres. Points are drawn far to near in height order so the ground
    does not hide objects.
    """
    pts = np.asarray(points)
    order = np.argsort(pts[:, 2], kind="stable")
    ax.set_facecolor(BACKGROUND)
    ax.scatter(-pts[order, 1], pts[order, 0], c=np.asarray(colors)[order], s=point_size, marker=".",
               linewidths=0, rasterized=True)
    ax.plot([0], [0], marker="^", color="white", markersize=4)  # the sensor, pointing forward
    for r in range(10, int(extent) + 1, 10):  # range rings
        th = np.linspace(0, 2 * np.pi, 200)
        ax.plot(r * np.cos(th), r * np.sin(th), color="white", alpha=0.12, linewidth=0.6)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, color="white", fontsize=11)


def plot_camera(
    ax: Axes,
    image: np.ndarray,
    uv: np.ndarray,
    values: np.ndarray,
    cmap: str = "turbo",
    vmin: float = 0.0,
    vmax: float | None = None,
    point_size: float = 2.0,
    title: str | None = None,
):
    """Camera ``image`` (H, W, 3) with points at pixel coordinates ``uv`` (P, 2) (u = column, v = row) coloured by
    ``values`` (P,) (typically depth in metres; far points drawn first). Returns the scatter artist (for colour bars).
    """
    order = np.argsort(-np.asarray(values), kind="stable")
    ax.imshow(image, interpolation="bilinear")
    vmax = float(np.percentile(values, 98)) if vmax is None and len(values) else (vmax or 1.0)
    sc = ax.scatter(uv[order, 0], uv[order, 1], c=np.asarray(values)[order], cmap=cmap, vmin=vmin, vmax=vmax,
                    s=point_size, marker="o", linewidths=0, alpha=0.85)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, color="white", fontsize=9)
    return sc


# nuScenes' physical arrangement for a 2 x 3 grid: front row left-to-right, back row left-to-right.
_NUSCENES_GRID = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")


def render_frame(
    frame: Frame,
    class_names: Sequence[str] | None = None,
    extent: float | None = None,
    min_depth: float = 1.0,
    title: str | None = None,
    point_colors: np.ndarray | None = None,
    bev_title: str | None = None,
) -> Figure:
    """A figure of one frame: BEV coloured by label (or intensity when unlabelled) with a class legend, and every
    camera with its projected points coloured by depth (shared colour bar). Returns a ``matplotlib.figure.Figure``.

    ``extent``: BEV half-width in metres (default: the 98th percentile of the points' horizontal range, rounded up
    to 10 m). ``point_colors`` (N, 3): colour the BEV with these instead (e.g. :func:`feature_colors` of per-point
    embeddings), titled ``bev_title``.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    cams = list(frame.cameras)
    if {c.name for c in cams} == set(_NUSCENES_GRID):
        cams.sort(key=lambda c: _NUSCENES_GRID.index(c.name))
    ncols = min(3, max(len(cams), 1))
    nrows = -(-len(cams) // ncols) if cams else 0
    aspect = cams[0].height / cams[0].width if cams else 0.5
    cam_w = 4.2 if ncols > 1 else 8.0  # inches per camera column
    fig_h = max(nrows * cam_w * aspect * 1.12 + 1.4, 5.5)
    bev_w = fig_h * 0.92
    fig_w = bev_w + (ncols * cam_w if cams else 0)
    fig = Figure(figsize=(fig_w, fig_h), facecolor=BACKGROUND)
    outer = fig.add_gridspec(1, 2 if cams else 1, width_ratios=[bev_w, ncols * cam_w] if cams else [1],
                             left=0.01, right=0.99, top=0.92, bottom=0.08, wspace=0.03)

    ax_bev = fig.add_subplot(outer[0, 0])
    pts = frame.points
    if extent is None:
        rng_xy = np.hypot(pts[:, 0], pts[:, 1])
        extent = float(10 * np.ceil(np.percentile(rng_xy, 98) / 10)) if len(pts) else 50.0
    bev_size = float(np.clip(8e4 / max(len(pts), 1), 0.8, 4.0))
    if point_colors is not None:
        if np.shape(point_colors) != (len(pts), 3):
            raise ValueError(f"point_colors must be ({len(pts)}, 3), got {np.shape(point_colors)}")
        plot_bev(ax_bev, pts, point_colors, extent, bev_size, title=bev_title or "LiDAR")
    elif frame.labels is not None:
        n_cls = len(class_names) if class_names else int(max(frame.labels.max(initial=-1) + 1, 1))
        plot_bev(ax_bev, pts, colorize_labels(frame.labels, n_cls), extent, bev_size,
                 title="LiDAR, coloured by label")
        present = np.unique(frame.labels[(frame.labels >= 0) & (frame.labels < n_cls)])
        cols = label_colors(n_cls)
        handles = [Patch(color=cols[c], label=class_names[c] if class_names else str(c)) for c in present]
        if (frame.labels == IGNORE_INDEX).any():
            handles.append(Patch(color=IGNORE_COLOR, label="ignore"))
        leg = ax_bev.legend(handles=handles, loc="lower left", fontsize=7, ncol=2, framealpha=0.6,
                            facecolor=BACKGROUND, edgecolor="none", labelcolor="white")
        leg.set_zorder(10)
    else:
        plot_bev(ax_bev, pts, colorize_values(pts[:, 3], "viridis"), extent, bev_size,
                 title="LiDAR, coloured by intensity")

    if cams:
        inner = outer[0, 1].subgridspec(nrows + 1, ncols, height_ratios=[1] * nrows + [0.06], hspace=0.12,
                                        wspace=0.03)
        sc = None
        all_depths = []
        projected = []
        for cam in cams:
            valid, uv = project_points(pts, cam.lidar_to_camera, cam.intrinsics, cam.height, cam.width, min_depth)
            depth = transform_points(pts[valid], cam.lidar_to_camera)[:, 2]
            projected.append((uv[valid], depth))
            all_depths.append(depth)
        depths = np.concatenate(all_depths) if all_depths else np.zeros(0)
        vmax = float(np.percentile(depths, 98)) if len(depths) else 1.0
        size = float(np.clip(300.0 / max(cams[0].height * cams[0].width, 1) ** 0.5, 0.3, 3.0))
        for k, (cam, (uv, depth)) in enumerate(zip(cams, projected)):
            ax = fig.add_subplot(inner[k // ncols, k % ncols])
            sc = plot_camera(ax, cam.image, uv, depth, vmax=vmax, point_size=size,
                             title=f"{cam.name or f'camera {k}'}  ({len(depth)} points)")
        cax = fig.add_subplot(inner[nrows, :])
        cb = fig.colorbar(sc, cax=cax, orientation="horizontal")
        cb.set_label("depth [m]", color="white", fontsize=9)
        cb.ax.tick_params(colors="white", labelsize=8)
    head = title or f"{frame.dataset or 'frame'}  {frame.sequence}  #{frame.index}  ({frame.num_points} points)"
    fig.suptitle(head, color="white", fontsize=13)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix) atomically; returns the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, facecolor=fig.get_facecolor())
    return Path(path)


def save_feature_bev(points: np.ndarray, features: np.ndarray, path: str | os.PathLike, title: str | None = None,
                     extent: float | None = None, point_size: float = 1.2) -> Path:
    """Write a PNG: bird's-eye view of ``points`` coloured by the first three principal components of ``features``
    (``point_size``: marker area in points^2; raise it for sparse scans)."""
    from matplotlib.figure import Figure

    pts = np.asarray(points)
    if extent is None:
        extent = float(np.clip(np.percentile(np.abs(pts[:, :2]), 98) if len(pts) else 50.0, 10.0, 80.0))
    fig = Figure(figsize=(6, 6), facecolor=BACKGROUND)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    plot_bev(ax, pts, feature_colors(features), extent=extent, point_size=point_size,
             title=title or "features (PCA -> RGB)")
    return save_figure(fig, path)


def find_query_point(labels: np.ndarray, instances: np.ndarray | None, points: np.ndarray, class_id: int,
                     min_points: int = 10) -> int | None:
    """Index of a query point on the largest object of class ``class_id`` (most points; at least ``min_points``):
    its point nearest to the object's median position. ``None`` when no such object exists."""
    on = np.flatnonzero(labels == class_id)
    if len(on) < min_points:
        return None
    inst = np.zeros(len(on), np.int64) if instances is None else np.asarray(instances)[on].astype(np.int64)
    _, inv, counts = np.unique(inst, return_inverse=True, return_counts=True)
    best = int(np.argmax(counts))
    if counts[best] < min_points:
        return None
    members = on[inv == best]
    centre = np.median(points[members, :3], axis=0)
    return int(members[np.argmin(np.linalg.norm(points[members, :3] - centre, axis=1))])


def frame_with_query(dataset: Sequence[Frame], class_names: Sequence[str],
                     wanted: Sequence[str] = ("car", "truck", "bicyclist", "pedestrian")) -> tuple[int, Frame, int]:
    """``(index, frame, query)``: the first frame of ``dataset`` with an object of the first class of ``wanted``
    that has one (an object of >= 20 points preferred, else >= 1), and the query point on it
    (:func:`find_query_point`)."""
    names = list(class_names)
    present = [c for c in wanted if c in names]
    for cls in present:
        for min_points in (20, 1):
            for i in range(len(dataset)):  # the frames of one small validation world
                frame = dataset[i]
                q = find_query_point(frame.labels, frame.instances, frame.points, names.index(cls), min_points)
                if q is not None:
                    return i, frame, q
    raise ValueError(f"no frame of {getattr(dataset, 'name', 'the dataset')} ({len(dataset)} frames) has a point of "
                     f"class {', '.join(present) or ', '.join(wanted)} to query")


def similarity_to_query(features: np.ndarray, query: int) -> np.ndarray:
    """Cosine similarity (N,) of every point's feature to the feature of point ``query``."""
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return f @ f[query]


def save_similarity_figure(points: np.ndarray, panels: Sequence[tuple[str, np.ndarray]], query: int,
                           path: str | os.PathLike, extent: float = 40.0, labels: np.ndarray | None = None,
                           class_names: Sequence[str] | None = None, point_size: float = 1.0) -> Path:
    """The paper's Figure 4 in one PNG: for each ``(title, features)`` panel, every point coloured by the cosine
    similarity of its feature to the query point's (violet low, yellow high), the query marked in red. With
    ``labels`` a first panel shows the ground truth classes for reference. ``point_size``: marker area in points^2
    (raise it for sparse scans)."""
    from matplotlib.figure import Figure

    pts = np.asarray(points)
    n = len(panels) + (labels is not None)
    fig = Figure(figsize=(4.2 * n, 4.6), facecolor=BACKGROUND)
    axes = [fig.add_axes((i / n + 0.005, 0.02, 1 / n - 0.01, 0.86)) for i in range(n)]
    k = 0
    if labels is not None:
        num = len(class_names) if class_names is not None else int(labels.max()) + 1
        qname = class_names[int(labels[query])] if class_names is not None and labels[query] >= 0 else "?"
        plot_bev(axes[0], pts, colorize_labels(labels, num), extent=extent, point_size=point_size,
                 title=f"ground truth (query: {qname})")
        k = 1
    for ax, (title, feats) in zip(axes[k:], panels):
        sim = similarity_to_query(feats, query)
        plot_bev(ax, pts, colorize_values(sim, cmap="viridis", vmin=float(np.percentile(sim, 2)), vmax=1.0),
                 extent=extent, point_size=point_size, title=title)
    for ax in axes:
        ax.plot([-pts[query, 1]], [pts[query, 0]], marker="o", color="red", markersize=7, markeredgecolor="white")
    fig.suptitle("cosine similarity to the query point (red)", color="white", fontsize=12)
    return save_figure(fig, path)


def __getattr__(name: str):  # noqa: ANN202 - lazy re-export (the viewer imports this module's colour helpers)
    if name == "view":
        from largead.viewer import view

        return view
    raise AttributeError(f"module 'largead.viz' has no attribute {name!r}")
