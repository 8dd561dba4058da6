"""Label maps checked value by value against literal expectations typed from the official configs (semantic-kitti-api config/semantic-kitti.yaml, nuscenes-devkit lidarseg)."""

from __future__ import annotations

import numpy as np
import pytest

from largead.data.labels import (
    NUSCENES_CLASSES,
    NUSCENES_LIDARSEG_CATEGORIES,
    SEMANTICKITTI_CLASSES,
    SEMANTICKITTI_LEARNING_MAP,
    apply_lut,
    build_lut,
    nuscenes_inverse_lut,
    nuscenes_lidarseg_lut,
    semantickitti_inverse_lut,
    semantickitti_lut,
)

# Official lidarseg index -> SLidR's 1-based eval id (0 = ignore), typed from SLidR's downstream eval map.
SLIDR_NUSCENES_EVAL = {
    0: 0, 1: 0, 2: 7, 3: 7, 4: 7, 5: 0, 6: 7, 7: 0, 8: 0, 9: 1, 10: 0, 11: 0, 12: 8, 13: 0, 14: 2, 15: 3, 16: 3,
    17: 4, 18: 5, 19: 0, 20: 0, 21: 6, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 0, 30: 16, 31: 0,
}


def test_nuscenes_raw_categories_in_official_index_order():
    assert len(NUSCENES_LIDARSEG_CATEGORIES) == 32
    assert NUSCENES_LIDARSEG_CATEGORIES[0] == "noise"
    assert NUSCENES_LIDARSEG_CATEGORIES[9] == "movable_object.barrier"
    assert NUSCENES_LIDARSEG_CATEGORIES[17] == "vehicle.car"
    assert NUSCENES_LIDARSEG_CATEGORIES[24] == "flat.driveable_surface"
    assert NUSCENES_LIDARSEG_CATEGORIES[30] == "static.vegetation"
    assert NUSCENES_LIDARSEG_CATEGORIES[31] == "vehicle.ego"


def test_nuscenes_classes_alphabetical_as_reference():
    assert NUSCENES_CLASSES == (
        "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "traffic_cone",
        "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade", "vegetation")


@pytest.mark.parametrize("raw, official", sorted(SLIDR_NUSCENES_EVAL.items()))
def test_nuscenes_lut_value_by_value(raw, official):
    # our ids are the official 1-based ids minus one, official 0 (ignore) is -1
    assert nuscenes_lidarseg_lut()[raw] == official - 1


def test_nuscenes_named_examples():
    lut = nuscenes_lidarseg_lut()
    idx = {n: i for i, n in enumerate(NUSCENES_LIDARSEG_CATEGORIES)}
    cls = {n: i for i, n in enumerate(NUSCENES_CLASSES)}
    assert lut[idx["human.pedestrian.police_officer"]] == cls["pedestrian"] == 6
    assert lut[idx["vehicle.bus.bendy"]] == lut[idx["vehicle.bus.rigid"]] == cls["bus"] == 2
    assert lut[idx["vehicle.emergency.ambulance"]] == -1
    assert lut[idx["static_object.bicycle_rack"]] == -1


def test_nuscenes_inverse_round_trips():
    inv = nuscenes_inverse_lut()
    assert inv[0] == 0  # ignore -> noise
    ids = np.arange(-1, 16)
    np.testing.assert_array_equal(nuscenes_lidarseg_lut()[inv[ids + 1]], ids)


# (raw id, official learning-map id) typed from semantic-kitti-api config/semantic-kitti.yaml (learning_map).
SEMANTICKITTI_OFFICIAL = [
    (0, 0), (1, 0), (52, 0), (99, 0), (10, 1), (252, 1), (11, 2), (15, 3), (18, 4), (258, 4), (13, 5), (16, 5),
    (20, 5), (256, 5), (257, 5), (259, 5), (30, 6), (254, 6), (31, 7), (253, 7), (32, 8), (255, 8), (40, 9), (60, 9),
    (44, 10), (48, 11), (49, 12), (50, 13), (51, 14), (70, 15), (71, 16), (72, 17), (80, 18), (81, 19),
]


@pytest.mark.parametrize("raw, official", SEMANTICKITTI_OFFICIAL)
def test_semantickitti_learning_map_value_by_value(raw, official):
    assert SEMANTICKITTI_LEARNING_MAP[raw] == official - 1
    assert semantickitti_lut()[raw] == official - 1


def test_semantickitti_map_covers_exactly_the_official_ids():
    assert sorted(SEMANTICKITTI_LEARNING_MAP) == sorted(r for r, _ in SEMANTICKITTI_OFFICIAL)
    assert SEMANTICKITTI_CLASSES[0] == "car" and SEMANTICKITTI_CLASSES[18] == "traffic-sign"
    assert len(SEMANTICKITTI_CLASSES) == 19


def test_semantickitti_inverse_is_official_learning_map_inv():
    inv = semantickitti_inverse_lut()
    assert inv.tolist() == [0, 10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81]
    ids = np.arange(-1, 19)
    np.testing.assert_array_equal(semantickitti_lut()[inv[ids + 1]], ids)


def test_unknown_raw_ids_map_to_ignore():
    # Robo3D's added ids (fog 21, snow 22, crosstalk 23) and anything beyond the table
    out = apply_lut(semantickitti_lut(), np.array([21, 22, 23, 10, 1000, 65535]))
    assert out.tolist() == [-1, -1, -1, 0, -1, -1]


def test_build_lut_validates():
    assert build_lut({2: 5, 0: 1}).tolist() == [1, -1, 5]
    assert build_lut({1: 3}, size=4, default=9).tolist() == [9, 3, 9, 9]
    with pytest.raises(ValueError, match="too small"):
        build_lut({5: 1}, size=3)
    with pytest.raises(ValueError, match=">= 0"):
        build_lut({-2: 1})
