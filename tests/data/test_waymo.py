"""Waymo v2 parquet reader: geometry against hand computation, labels, cameras, poses, bad input."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from fixtures import (
    WAYMO_EXT,
    WAYMO_H,
    WAYMO_IMAX,
    WAYMO_IMIN,
    WAYMO_W,
    make_waymo_segment,
    yaw_transform,
)

from largead.data import IGNORE_INDEX, get_dataset, list_datasets
from largead.data.export import write_waymo_segment
from largead.data.labels_extra import WAYMO_CLASSES

H, W, IMIN, IMAX, EXT = WAYMO_H, WAYMO_W, WAYMO_IMIN, WAYMO_IMAX, WAYMO_EXT
_fixture = make_waymo_segment


@pytest.fixture
def root(tmp_path):
    write_waymo_segment(tmp_path, _fixture())
    return str(tmp_path)


def test_registered():
    assert "waymo" in list_datasets()


def test_point_at_known_range_azimuth_inclination(root):
    ds = get_dataset("waymo", root, "train", cameras=False, motion_compensation=False)
    assert len(ds) == 3
    f = ds[0]
    assert f.points.shape == (3, 4)  # three valid TOP pixels, return 2 empty
    # hand computation for pixel (row 1, col 1): rows are reversed, so row 1 is the 3rd of 4 uniform bins from min
    incl = IMIN + (4 - 1 - 1 + 0.5) / 4 * (IMAX - IMIN)
    # a pure-yaw extrinsic: the vehicle-frame azimuth is the column's uncorrected azimuth
    az = ((W - 1 - 0.5) / W * 2 - 1) * math.pi
    expect = np.array([10 * math.cos(incl) * math.cos(az), 10 * math.cos(incl) * math.sin(az),
                       10 * math.sin(incl)]) + EXT[:3, 3]
    np.testing.assert_allclose(f.points[1, :3], expect, atol=1e-5)  # row-major: (0,6), (1,1), (3,3)
    np.testing.assert_allclose(f.points[:, 3], [2.0, 0.5, 0.25])
    # range is preserved relative to the sensor origin
    np.testing.assert_allclose(np.linalg.norm(f.points[:, :3] - EXT[:3, 3], axis=1), [20.0, 10.0, 5.0], rtol=1e-6)


def test_nonuniform_inclinations(tmp_path):
    values = [-0.3, -0.1, 0.0, 0.2]  # lowest beam first, as stored
    write_waymo_segment(tmp_path, _fixture(values=values, cameras=False))
    f = get_dataset("waymo", str(tmp_path), "train", cameras=False)[0]
    # row 1 -> reversed values[2] = 0.0: the point lies at the sensor's height
    assert abs(f.points[1, 2] - EXT[2, 3]) < 1e-5
    # row 0 -> highest beam 0.2
    assert abs(math.asin((f.points[0, 2] - EXT[2, 3]) / 20.0) - 0.2) < 1e-5


def test_labels_instances_pose_and_time(root):
    ds = get_dataset("waymo", root, "train", cameras=False)
    assert ds.class_names == WAYMO_CLASSES and ds.num_classes == 22
    f0, f1 = ds[0], ds[1]
    np.testing.assert_array_equal(f0.labels, [21, 0, IGNORE_INDEX])
    np.testing.assert_array_equal(f0.instances, [0, 7, 0])
    assert f1.labels is None  # frame 1 has no segmentation row
    np.testing.assert_allclose(f1.pose, yaw_transform(0.1, (10.0, 0, 0)))
    assert f1.timestamp == pytest.approx(1100e-6) and f1.sequence == "seg_a" and f1.index == 1
    assert ds.next_index(0) == 1 and ds.next_index(2) is None and ds.next_frame(0, 2).index == 2
    f0.validate("waymo frame")


def test_labelled_only_all_lasers_and_tanh(root):
    ds = get_dataset("waymo", root, "train", cameras=False, labelled_only=True, lasers="all", intensity="tanh")
    assert len(ds) == 2 and ds.next_index(0) is None  # frames 0 and 2; position 1 is not in the index
    f = ds[0]
    assert f.num_points == 4
    # FRONT point: label ignore, xyz from its own calibration
    np.testing.assert_array_equal(f.labels, [21, 0, IGNORE_INDEX, IGNORE_INDEX])
    np.testing.assert_array_equal(f.extra["laser"], [1, 1, 1, 2])
    np.testing.assert_allclose(f.points[:, 3], np.tanh([2.0, 0.5, 0.25, 0.75]), rtol=1e-6)
    incl = -0.5 + (3 - 1 - 2 + 0.5) / 3 * 1.0
    az = ((6 - 2 - 0.5) / 6 * 2 - 1) * math.pi
    expect = 3.0 * np.array([math.cos(incl) * math.cos(az), math.cos(incl) * math.sin(az), math.sin(incl)])
    np.testing.assert_allclose(f.points[3, :3], expect + [4.0, 0.0, 0.5], atol=1e-5)


def test_cameras_axes_and_projection(root):
    f = get_dataset("waymo", root, "train")[0]
    assert [c.name for c in f.cameras] == ["FRONT", "FRONT_LEFT"]
    front, left = f.cameras
    assert front.image.shape == (6, 8, 3) and abs(int(front.image.mean()) - 40) <= 2  # JPEG of constant 40
    assert left.image.shape == (4, 8, 3) and abs(int(left.image.mean()) - 80) <= 2  # a smaller camera
    np.testing.assert_allclose(front.intrinsics, [[100, 0, 4], [0, 110, 3], [0, 0, 1]])
    # a vehicle point 10 m ahead of the FRONT camera, 1 m to its left, 0.5 m above it
    p = np.array([12.0, 1.0, 2.1, 1.0])
    c = front.lidar_to_camera @ p
    np.testing.assert_allclose(c[:3], [-1.0, -0.5, 10.0], atol=1e-9)  # x right, y down, z forward
    # FRONT_LEFT looks along vehicle +y: a point 5 m along +y from it is straight ahead
    c2 = left.lidar_to_camera @ np.array([0.0, 6.0, 1.6, 1.0])
    np.testing.assert_allclose(c2[:3], [0.0, 0.0, 5.0], atol=1e-9)
    f.validate("waymo frame")


def test_motion_compensation_with_pixel_pose(tmp_path):
    shift = np.zeros((H, W, 6), np.float32)
    shift[..., 3] = 0.5  # each pixel's vehicle pose is 0.5 m further along world x (frame 0 pose is identity)
    write_waymo_segment(tmp_path, _fixture(cameras=False, pixel_pose=shift))
    plain = get_dataset("waymo", str(tmp_path), "train", cameras=False, motion_compensation=False)[0]
    comp = get_dataset("waymo", str(tmp_path), "train", cameras=False)[0]
    np.testing.assert_allclose(comp.points[:, :3] - plain.points[:, :3], [[0.5, 0, 0]] * 3, atol=1e-5)


def test_validation_split_dir(tmp_path):
    write_waymo_segment(tmp_path, _fixture(cameras=False), "validation")
    assert len(get_dataset("waymo", str(tmp_path), "val", cameras=False)) == 3
    with pytest.raises(FileNotFoundError, match="training"):
        get_dataset("waymo", str(tmp_path), "train")


def test_missing_column_names_file_and_column(tmp_path):
    write_waymo_segment(tmp_path, _fixture(cameras=False),
                drop={"lidar_calibration": "[LiDARCalibrationComponent].beam_inclination.max"})
    ds = get_dataset("waymo", str(tmp_path), "train", cameras=False)
    with pytest.raises(ValueError, match=r"lidar_calibration.*seg_a\.parquet.*beam_inclination\.max"):
        ds[0]


def test_range_image_shape_mismatch(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_waymo_segment(tmp_path, _fixture(cameras=False))
    path = os.path.join(tmp_path, "training", "lidar", "seg_a.parquet")
    t = pq.read_table(path)
    col = "[LiDARComponent].range_image_return1.shape"
    t = t.set_column(t.schema.get_field_index(col), col, pa.array([[4, 9, 4]] * t.num_rows, pa.list_(pa.int32())))
    pq.write_table(t, path)
    with pytest.raises(ValueError, match=r"seg_a\.parquet.*range image has 128 values.*\[4, 9, 4\]"):
        get_dataset("waymo", str(tmp_path), "train", cameras=False)[0]


def test_segmentation_shape_mismatch(tmp_path):
    fx = _fixture(cameras=False)
    fx.segmentation = {0: np.zeros((H, W - 1, 2), np.int32)}
    write_waymo_segment(tmp_path, fx)
    with pytest.raises(ValueError, match=r"lidar_segmentation.*\[4, 7, 2\], expected \[4, 8, 2\]"):
        get_dataset("waymo", str(tmp_path), "train", cameras=False)[0]


def test_truncated_parquet(tmp_path):
    write_waymo_segment(tmp_path, _fixture(cameras=False))
    path = os.path.join(tmp_path, "training", "lidar", "seg_a.parquet")
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"lidar.seg_a\.parquet.*truncated or corrupt"):
        get_dataset("waymo", str(tmp_path), "train", cameras=False)


def test_waymo_label_map_value_by_value():
    from largead.data.labels import apply_lut, build_lut
    from largead.data.labels_extra import WAYMO_LEARNING_MAP

    # segmentation.proto ids 0..22 (REFERENCE.md); training id = id - 1, undefined -> ignore
    proto = ["undefined", "car", "truck", "bus", "other_vehicle", "motorcyclist", "bicyclist", "pedestrian", "sign",
             "traffic_light", "pole", "construction_cone", "bicycle", "motorcycle", "building", "vegetation",
             "tree_trunk", "curb", "road", "lane_marker", "other_ground", "walkable", "sidewalk"]
    ids = apply_lut(build_lut(WAYMO_LEARNING_MAP, 23), np.arange(23))
    assert ids[0] == IGNORE_INDEX
    assert [WAYMO_CLASSES[i] for i in ids[1:]] == proto[1:]
