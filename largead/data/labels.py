"""Class lists and label maps, as data, with lookup-table builders.

Convention: training ids are 0-based and :data:`~largead.data.frame.IGNORE_INDEX` (-1) marks points that are not
evaluated. SLidR / the official configs use 1-based ids with 0 = ignore (nuScenes 1..16, SemanticKITTI 1..19); our
id is theirs minus one, and their 0 is our -1.

Sources: nuScenes-lidarseg category indices as in the devkit's ``category.json`` (field ``index``) and SLidR's
``downstream/dataloader_nuscenes.py`` eval map; SemanticKITTI's ``semantic-kitti.yaml`` (``labels``,
``learning_map``, ``learning_map_inv``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from largead.data.frame import IGNORE_INDEX

# ---------------------------------------------------------------------------------------------------------------
# nuScenes-lidarseg

NUSCENES_LIDARSEG_CATEGORIES: tuple[str, ...] = (
    "noise",  # 0
    "animal",  # 1
    "human.pedestrian.adult",  # 2
    "human.pedestrian.child",  # 3
    "human.pedestrian.construction_worker",  # 4
    "human.pedestrian.personal_mobility",  # 5
    "human.pedestrian.police_officer",  # 6
    "human.pedestrian.stroller",  # 7
    "human.pedestrian.wheelchair",  # 8
    "movable_object.barrier",  # 9
    "movable_object.debris",  # 10
    "movable_object.pushable_pullable",  # 11
    "movable_object.trafficcone",  # 12
    "static_object.bicycle_rack",  # 13
    "vehicle.bicycle",  # 14
    "vehicle.bus.bendy",  # 15
    "vehicle.bus.rigid",  # 16
    "vehicle.car",  # 17
    "vehicle.construction",  # 18
    "vehicle.emergency.ambulance",  # 19
    "vehicle.emergency.police",  # 20
    "vehicle.motorcycle",  # 21
    "vehicle.trailer",  # 22
    "vehicle.truck",  # 23
    "flat.driveable_surface",  # 24
    "flat.other",  # 25
    "flat.sidewalk",  # 26
    "flat.terrain",  # 27
    "static.manmade",  # 28
    "static.other",  # 29
    "static.vegetation",  # 30
    "vehicle.ego",  # 31
)
"""The 32 raw nuScenes-lidarseg categories; position = the ``index`` stored in ``category.json`` and label files."""

NUSCENES_CLASSES: tuple[str, ...] = (
    "barrier",  # 0
    "bicycle",  # 1
    "bus",  # 2
    "car",  # 3
    "construction_vehicle",  # 4
    "motorcycle",  # 5
    "pedestrian",  # 6
    "traffic_cone",  # 7
    "trailer",  # 8
    "truck",  # 9
    "driveable_surface",  # 10
    "other_flat",  # 11
    "sidewalk",  # 12
    "terrain",  # 13
    "manmade",  # 14
    "vegetation",  # 15
)
"""The 16 nuScenes-lidarseg benchmark classes; position = training id (official id minus one)."""

NUSCENES_LIDARSEG_MAP: dict[str, str | None] = {
    "noise": None,
    "animal": None,
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.personal_mobility": None,
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.stroller": None,
    "human.pedestrian.wheelchair": None,
    "movable_object.barrier": "barrier",
    "movable_object.debris": None,
    "movable_object.pushable_pullable": None,
    "movable_object.trafficcone": "traffic_cone",
    "static_object.bicycle_rack": None,
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.emergency.ambulance": None,
    "vehicle.emergency.police": None,
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.other": None,
    "static.vegetation": "vegetation",
    "vehicle.ego": None,
}
"""Raw lidarseg category name -> benchmark class name (``None`` = ignored)."""

NUSCENES_CLASS_TO_RAW: dict[str, str] = {
    "barrier": "movable_object.barrier",
    "bicycle": "vehicle.bicycle",
    "bus": "vehicle.bus.rigid",
    "car": "vehicle.car",
    "construction_vehicle": "vehicle.construction",
    "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
    "trailer": "vehicle.trailer",
    "truck": "vehicle.truck",
    "driveable_surface": "flat.driveable_surface",
    "other_flat": "flat.other",
    "sidewalk": "flat.sidewalk",
    "terrain": "flat.terrain",
    "manmade": "static.manmade",
    "vegetation": "static.vegetation",
}
"""Inverse map used when writing labels: each class -> one representative raw category; ignore -> ``noise``."""

# ---------------------------------------------------------------------------------------------------------------
# SemanticKITTI

SEMANTICKITTI_RAW_NAMES: dict[int, str] = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle", 16: "on-rails",
    18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist", 32: "motorcyclist", 40: "road", 44: "parking",
    48: "sidewalk", 49: "other-ground", 50: "building", 51: "fence", 52: "other-structure", 60: "lane-marking",
    70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign", 99: "other-object",
    252: "moving-car", 253: "moving-bicyclist", 254: "moving-person", 255: "moving-motorcyclist",
    256: "moving-on-rails", 257: "moving-bus", 258: "moving-truck", 259: "moving-other-vehicle",
}
"""Raw SemanticKITTI label ids (lower 16 bits of a ``.label`` entry) and their names."""

SEMANTICKITTI_CLASSES: tuple[str, ...] = (
    "car",  # 0
    "bicycle",  # 1
    "motorcycle",  # 2
    "truck",  # 3
    "other-vehicle",  # 4
    "person",  # 5
    "bicyclist",  # 6
    "motorcyclist",  # 7
    "road",  # 8
    "parking",  # 9
    "sidewalk",  # 10
    "other-ground",  # 11
    "building",  # 12
    "fence",  # 13
    "vegetation",  # 14
    "trunk",  # 15
    "terrain",  # 16
    "pole",  # 17
    "traffic-sign",  # 18
)
"""The 19 SemanticKITTI benchmark classes; position = training id (official learning-map id minus one)."""

_I = IGNORE_INDEX
SEMANTICKITTI_LEARNING_MAP: dict[int, int] = {
    0: _I, 1: _I, 52: _I, 99: _I,
    10: 0, 252: 0,
    11: 1,
    15: 2,
    18: 3, 258: 3,
    13: 4, 16: 4, 20: 4, 256: 4, 257: 4, 259: 4,
    30: 5, 254: 5,
    31: 6, 253: 6,
    32: 7, 255: 7,
    40: 8, 60: 8,
    44: 9,
    48: 10,
    49: 11,
    50: 12,
    51: 13,
    70: 14,
    71: 15,
    72: 16,
    80: 17,
    81: 18,
}
"""Raw SemanticKITTI id -> 0-based training id (the official ``learning_map`` minus one; its 0 is our -1).

Moving classes fold into their static class. Raw ids absent from this dict (e.g. Robo3D's fog 21, snow 22,
crosstalk 23) map to ignore in :func:`semantickitti_lut`.
"""

SEMANTICKITTI_LEARNING_MAP_INV: dict[int, int] = {
    _I: 0, 0: 10, 1: 11, 2: 15, 3: 18, 4: 20, 5: 30, 6: 31, 7: 32, 8: 40, 9: 44, 10: 48, 11: 49, 12: 50, 13: 51,
    14: 70, 15: 71, 16: 72, 17: 80, 18: 81,
}
"""Training id -> raw SemanticKITTI id (official ``learning_map_inv``, shifted); ignore -> 0 (unlabeled)."""


# ---------------------------------------------------------------------------------------------------------------
# Lookup tables


def build_lut(mapping: Mapping[int, int], size: int | None = None, default: int = IGNORE_INDEX) -> np.ndarray:
    """Dense int64 lookup table ``lut[raw] = mapping[raw]`` of length ``size`` (default ``max key + 1``).

    Raw ids not in ``mapping`` get ``default``. Keys must be non-negative integers.
    """
    keys = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
    vals = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
    if len(keys) and keys.min() < 0:
        raise ValueError(f"lookup-table keys must be >= 0, got {int(keys.min())}")
    n = int(keys.max()) + 1 if size is None else int(size)
    if len(keys) and keys.max() >= n:
        raise ValueError(f"lookup-table size {n} is too small for key {int(keys.max())}")
    lut = np.full(n, default, dtype=np.int64)
    lut[keys] = vals
    return lut


def apply_lut(lut: np.ndarray, raw: np.ndarray, default: int = IGNORE_INDEX) -> np.ndarray:
    """Map integer array ``raw`` through ``lut``; values outside ``[0, len(lut))`` get ``default``. Returns int64."""
    r = np.asarray(raw).astype(np.int64, copy=False)
    inside = (r >= 0) & (r < len(lut))
    out = np.full(r.shape, default, dtype=np.int64)
    out[inside] = lut[r[inside]]
    return out


def nuscenes_lidarseg_lut() -> np.ndarray:
    """(32,) int64: raw lidarseg index -> training id 0..15 or -1."""
    cls_id = {c: i for i, c in enumerate(NUSCENES_CLASSES)}
    return np.array(
        [IGNORE_INDEX if NUSCENES_LIDARSEG_MAP[n] is None else cls_id[NUSCENES_LIDARSEG_MAP[n]]
         for n in NUSCENES_LIDARSEG_CATEGORIES],
        dtype=np.int64,
    )


def nuscenes_inverse_lut() -> np.ndarray:
    """(17,) int64 indexed by ``train_id + 1``: the raw lidarseg index written for each class (ignore -> 0 noise)."""
    raw_idx = {n: i for i, n in enumerate(NUSCENES_LIDARSEG_CATEGORIES)}
    return np.array([0] + [raw_idx[NUSCENES_CLASS_TO_RAW[c]] for c in NUSCENES_CLASSES], dtype=np.int64)


def semantickitti_lut() -> np.ndarray:
    """(260,) int64: raw SemanticKITTI id -> training id 0..18 or -1 (use with :func:`apply_lut`)."""
    return build_lut(SEMANTICKITTI_LEARNING_MAP)


def semantickitti_inverse_lut() -> np.ndarray:
    """(20,) int64 indexed by ``train_id + 1``: raw SemanticKITTI id of each class (ignore -> 0)."""
    return np.array([SEMANTICKITTI_LEARNING_MAP_INV[i] for i in range(-1, len(SEMANTICKITTI_CLASSES))],
                    dtype=np.int64)


def inverse_lut(mapping: Mapping[int, int], num_classes: int, ignore_raw: int = 0) -> np.ndarray:
    """(C + 1,) int64 indexed by ``train_id + 1``: a raw id for each training id of a raw -> train ``mapping``.

    Each class gets the smallest raw id that maps to it, ignore gets ``ignore_raw`` (the dataset's "unlabeled" id),
    so ``apply_lut(build_lut(mapping), inverse_lut(mapping, C))`` is ``[-1, 0, 1, ..., C-1]`` (used by the
    writers of :mod:`largead.data.export`). Raises if a class has no raw id or ``ignore_raw`` is not ignored.
    """
    out = np.full(num_classes + 1, -1, dtype=np.int64)
    for raw in sorted(mapping, reverse=True):
        train = int(mapping[raw])
        if not 0 <= train < num_classes:
            raise ValueError(f"mapping sends raw id {raw} to {train}, outside 0..{num_classes - 1}")
        out[train + 1] = raw
    missing = [c for c in range(num_classes) if out[c + 1] < 0]
    if missing:
        raise ValueError(f"no raw id maps to training ids {missing}")
    if ignore_raw in mapping:
        raise ValueError(f"ignore_raw {ignore_raw} is not ignored by the mapping (it maps to {mapping[ignore_raw]})")
    out[0] = ignore_raw
    return out
