"""Colours of the viewer: class palettes (the datasets' own where they publish one), id palettes and colour ramps.

Class colours, as published by the datasets' authors:

- SemanticKITTI: ``color_map`` of ``config/semantic-kitti.yaml`` in the SemanticKITTI API (PRBonn/semantic-kitti-api;
  read from the copy in angrycaptain19/semantic-kitti-api), keyed by raw label id and written in **BGR** order. A
  training id takes the colour of its raw id in ``learning_map_inv``
  (:data:`largead.data.labels.SEMANTICKITTI_LEARNING_MAP_INV`), as the API's visualiser does.
- nuScenes-lidarseg: ``get_colormap()`` of nuscenes-devkit (``python-sdk/nuscenes/utils/color_map.py``), keyed by raw
  category name, **RGB**. A benchmark class takes the colour of its representative raw category
  (:data:`largead.data.labels.NUSCENES_CLASS_TO_RAW`; e.g. ``bus`` is ``vehicle.bus.rigid``).
- The synthetic world names its raw SemanticKITTI equivalents
  (:data:`largead.data.synthetic.SYNTHETIC_TO_SEMANTICKITTI`), so it is drawn in SemanticKITTI's colours.

Any other class list (a dataset without published colours, a model's own classes) gets :func:`largead.viz.label_colors`
(tab20, then HSV), the palette of the project's static figures. A reader may also declare ``class_colors`` (a
``(C, 3)`` uint8 or [0, 1] float array) on its class; that wins over everything here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from largead.viz import IGNORE_COLOR

# raw SemanticKITTI id -> (B, G, R), semantic-kitti.yaml ``color_map``
SEMANTICKITTI_COLOR_MAP_BGR: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0), 1: (0, 0, 255), 10: (245, 150, 100), 11: (245, 230, 100), 13: (250, 80, 100), 15: (150, 60, 30),
    16: (255, 0, 0), 18: (180, 30, 80), 20: (255, 0, 0), 30: (30, 30, 255), 31: (200, 40, 255), 32: (90, 30, 150),
    40: (255, 0, 255), 44: (255, 150, 255), 48: (75, 0, 75), 49: (75, 0, 175), 50: (0, 200, 255), 51: (50, 120, 255),
    52: (0, 150, 255), 60: (170, 255, 150), 70: (0, 175, 0), 71: (0, 60, 135), 72: (80, 240, 150), 80: (150, 240, 255),
    81: (0, 0, 255), 99: (255, 255, 50), 252: (245, 150, 100), 256: (255, 0, 0), 253: (200, 40, 255),
    254: (30, 30, 255), 255: (90, 30, 150), 257: (250, 80, 100), 258: (180, 30, 80), 259: (255, 0, 0),
}
"""semantic-kitti.yaml ``color_map`` (BGR, as in the file)."""

# raw nuScenes-lidarseg category -> (R, G, B), nuscenes-devkit get_colormap()
NUSCENES_COLORMAP_RGB: dict[str, tuple[int, int, int]] = {
    "noise": (0, 0, 0), "animal": (70, 130, 180), "human.pedestrian.adult": (0, 0, 230),
    "human.pedestrian.child": (135, 206, 235), "human.pedestrian.construction_worker": (100, 149, 237),
    "human.pedestrian.personal_mobility": (219, 112, 147), "human.pedestrian.police_officer": (0, 0, 128),
    "human.pedestrian.stroller": (240, 128, 128), "human.pedestrian.wheelchair": (138, 43, 226),
    "movable_object.barrier": (112, 128, 144), "movable_object.debris": (210, 105, 30),
    "movable_object.pushable_pullable": (105, 105, 105), "movable_object.trafficcone": (47, 79, 79),
    "static_object.bicycle_rack": (188, 143, 143), "vehicle.bicycle": (220, 20, 60),
    "vehicle.bus.bendy": (255, 127, 80),
    "vehicle.bus.rigid": (255, 69, 0), "vehicle.car": (255, 158, 0), "vehicle.construction": (233, 150, 70),
    "vehicle.emergency.ambulance": (255, 83, 0), "vehicle.emergency.police": (255, 215, 0),
    "vehicle.motorcycle": (255, 61, 99), "vehicle.trailer": (255, 140, 0), "vehicle.truck": (255, 99, 71),
    "flat.driveable_surface": (0, 207, 191), "flat.other": (175, 0, 75), "flat.sidewalk": (75, 0, 75),
    "flat.terrain": (112, 180, 60), "static.manmade": (222, 184, 135), "static.other": (255, 228, 196),
    "static.vegetation": (0, 175, 0), "vehicle.ego": (255, 240, 245),
}
"""nuscenes-devkit ``get_colormap()`` (RGB, as in the file)."""

IGNORE_RGB: tuple[int, int, int] = tuple(int(round(255 * c)) for c in IGNORE_COLOR)  # type: ignore[assignment]
"""Colour of ignored / unlabelled points and of points with no superpoint or segment (``largead.viz.IGNORE_COLOR``)."""


def semantickitti_palette() -> np.ndarray:
    """(19, 3) uint8 RGB of the SemanticKITTI training ids (through ``learning_map_inv``)."""
    from largead.data.labels import SEMANTICKITTI_CLASSES, SEMANTICKITTI_LEARNING_MAP_INV

    bgr = [SEMANTICKITTI_COLOR_MAP_BGR[SEMANTICKITTI_LEARNING_MAP_INV[i]] for i in range(len(SEMANTICKITTI_CLASSES))]
    return np.array(bgr, dtype=np.uint8)[:, ::-1].copy()


def nuscenes_palette() -> np.ndarray:
    """(16, 3) uint8 RGB of the nuScenes-lidarseg benchmark classes (their representative raw category's colour)."""
    from largead.data.labels import NUSCENES_CLASS_TO_RAW, NUSCENES_CLASSES

    return np.array([NUSCENES_COLORMAP_RGB[NUSCENES_CLASS_TO_RAW[c]] for c in NUSCENES_CLASSES], dtype=np.uint8)


def synthetic_palette() -> np.ndarray:
    """(12, 3) uint8 RGB of the synthetic world's classes, in the colours of their SemanticKITTI equivalents."""
    from largead.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_TO_SEMANTICKITTI

    bgr = [SEMANTICKITTI_COLOR_MAP_BGR[SYNTHETIC_TO_SEMANTICKITTI[c]] for c in SYNTHETIC_CLASSES]
    return np.array(bgr, dtype=np.uint8)[:, ::-1].copy()


def _as_uint8(colors: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(colors)
    if arr.shape != (n, 3):
        raise ValueError(f"{what}: expected ({n}, 3) colours, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"{what}: float colours must lie in [0, 1]")
        return np.rint(arr * 255).astype(np.uint8)
    return arr.astype(np.uint8)


def class_palette(class_names: Sequence[str], class_colors: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """``(palette (C, 3) uint8 RGB, where the colours come from)`` for a class list.

    ``class_colors`` (a reader's own, ``(C, 3)`` uint8 or [0, 1] floats) wins; then a class list equal to
    SemanticKITTI's, nuScenes-lidarseg's or the synthetic world's gets that dataset's published colours; anything else
    gets :func:`largead.viz.label_colors`.
    """
    from largead.data.labels import NUSCENES_CLASSES, SEMANTICKITTI_CLASSES
    from largead.data.synthetic import SYNTHETIC_CLASSES

    names = tuple(class_names)
    if class_colors is not None:
        return _as_uint8(class_colors, len(names), "class_colors"), "the dataset reader's class_colors"
    if names == SEMANTICKITTI_CLASSES:
        return semantickitti_palette(), "SemanticKITTI (semantic-kitti.yaml color_map)"
    if names == NUSCENES_CLASSES:
        return nuscenes_palette(), "nuScenes-lidarseg (nuscenes-devkit colormap)"
    if names == SYNTHETIC_CLASSES:
        return synthetic_palette(), "SemanticKITTI colours of the synthetic classes' equivalents"
    from largead.viz import label_colors

    return np.rint(label_colors(len(names)) * 255).astype(np.uint8), "fixed palette (largead.viz.label_colors)"


def id_palette(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) uint8 RGB for ``n`` segment ids: hues stepped by the golden ratio (neighbouring ids far apart in hue),
    saturation and value varied in a short cycle so that ids sharing a hue still differ. Deterministic in ``seed``."""
    from matplotlib.colors import hsv_to_rgb

    i = np.arange(int(n), dtype=np.float64)
    hue = (0.13 + 0.618033988749895 * (i + seed)) % 1.0
    sat = 0.55 + 0.35 * ((i * 7 + seed) % 4) / 3
    val = 0.98 - 0.22 * ((i * 5 + seed) % 3) / 2
    return np.rint(hsv_to_rgb(np.stack([hue, sat, val], 1)) * 255).astype(np.uint8).reshape(-1, 3)


def ramp(name: str, size: int = 256) -> np.ndarray:
    """(size, 3) uint8 RGB samples of the matplotlib colour map ``name`` (``turbo``, ``viridis``, ...), low to high."""
    from matplotlib import colormaps

    if name not in colormaps:
        raise KeyError(f"unknown colour map {name!r}")
    return np.rint(colormaps[name](np.linspace(0.0, 1.0, size))[:, :3] * 255).astype(np.uint8)


__all__ = ["IGNORE_RGB", "NUSCENES_COLORMAP_RGB", "SEMANTICKITTI_COLOR_MAP_BGR", "class_palette", "id_palette",
           "nuscenes_palette", "ramp", "semantickitti_palette", "synthetic_palette"]
