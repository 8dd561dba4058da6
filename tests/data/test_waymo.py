"""Waymo v2 parquet reader: geometry against hand computation, labels, cameras, poses, bad input."""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures import (
    WAYMO_EXT,
    WAYMO_H,
    WAYMO_IMAX,
    WAYMO_IMIN,
    WAYMO_W,
    assert_one_line_error,
    make_waymo_segment,
    yaw_transform,
)

from largead.data import IGNORE_INDEX, get_dataset, list_datasets
from largead.data.export import WAYMO_COMPONENTS, WAYMO_LIDAR_COMPONENTS, write_waymo_segment
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
    with pytest.raises(FileNotFoundError, match="training: Waymo v2 split folder not found"):
        get_dataset("waymo", str(tmp_path), "train")


def _parquet(root, component):
    return os.path.join(root, "training", component, "seg_a.parquet")


def _set_column(root, component, column, values, type_):
    t = pq.read_table(_parquet(root, component))
    t = t.set_column(t.schema.get_field_index(column), column, pa.array(values * t.num_rows, type_))
    pq.write_table(t, _parquet(root, component))


def _truncate(path):
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])


def _written(**drop):
    def write(root):
        fx = _fixture()
        fx.segmentation = drop.pop("segmentation", fx.segmentation)
        write_waymo_segment(root, fx, drop=drop.get("drop"), components=drop.get("components", WAYMO_COMPONENTS))
    return write


def _open(root, split="train", **options):
    return get_dataset("waymo", str(root), split, **options)


# (case, what to write and break, how to read it, exception, message): one-line errors naming file and column
BAD_INPUT = [
    ("wrong root", lambda r: None, lambda r: _open(r),
     FileNotFoundError, r"training: Waymo v2 split folder not found \(expected <root>/training/<component>/"),
    ("unknown split", _written(), lambda r: _open(r, "validation"),
     ValueError, r"'waymo' has no split 'validation'; available: train, val, test"),
    ("missing required component", _written(components=("lidar", "lidar_calibration")), lambda r: _open(r),
     FileNotFoundError, r"training/vehicle_pose: Waymo v2 component 'vehicle_pose' not found \(required: lidar, "
                        r"lidar_calibration, vehicle_pose\)"),
    ("cameras without camera_image", _written(components=WAYMO_LIDAR_COMPONENTS), lambda r: _open(r, cameras=True),
     FileNotFoundError, r"training/camera_image: Waymo v2 component 'camera_image' not found; cameras=True needs "
                        r"camera_image and camera_calibration"),
    ("cameras without camera_calibration", _written(components=(*WAYMO_LIDAR_COMPONENTS, "camera_image")),
     lambda r: _open(r, cameras=True), FileNotFoundError,
     r"training/camera_calibration: Waymo v2 component 'camera_calibration' not found; cameras=True"),
    ("missing segment file", lambda r: (_written()(r), os.remove(_parquet(r, "vehicle_pose"))),
     lambda r: _open(r)[0], FileNotFoundError, r"vehicle_pose/seg_a\.parquet: Waymo component file not found"),
    ("corrupt parquet", lambda r: (_written()(r), _truncate(_parquet(r, "lidar"))), lambda r: _open(r),
     ValueError, r"lidar/seg_a\.parquet: not a readable parquet file \(truncated or corrupt\)"),
    ("corrupt calibration parquet", lambda r: (_written()(r), _truncate(_parquet(r, "lidar_calibration"))),
     lambda r: _open(r)[0], ValueError, r"lidar_calibration/seg_a\.parquet: not a readable parquet file"),
    ("missing column", _written(drop={"lidar_calibration": "[LiDARCalibrationComponent].beam_inclination.max"}),
     lambda r: _open(r)[0], ValueError,
     r"lidar_calibration/seg_a\.parquet: missing Waymo v2 columns \['\[LiDARCalibrationComponent\]"
     r"\.beam_inclination\.max'\]"),
    ("range image shape", lambda r: (_written()(r), _set_column(r, "lidar", "[LiDARComponent].range_image_return1"
                                                                ".shape", [[4, 9, 4]], pa.list_(pa.int32()))),
     lambda r: _open(r)[0], ValueError, r"seg_a\.parquet: laser TOP return 1 range image has 128 values but its "
                                         r"shape column says \[4, 9, 4\]"),
    ("segmentation shape", _written(segmentation={0: np.zeros((H, W - 1, 2), np.int32)}), lambda r: _open(r)[0],
     ValueError, r"lidar_segmentation/seg_a\.parquet: segmentation return 1 has shape \[4, 7, 2\], expected "
                 r"\[4, 8, 2\]"),
    ("extrinsic length", lambda r: (_written()(r), _set_column(r, "lidar_calibration",
                                                               "[LiDARCalibrationComponent].extrinsic.transform",
                                                               [[1.0] * 12], pa.list_(pa.float64()))),
     lambda r: _open(r)[0], ValueError, r"lidar_calibration/seg_a\.parquet: laser 1 extrinsic has 12 values, "
                                         r"expected 16"),
    ("undecodable image", lambda r: (_written()(r), _set_column(r, "camera_image", "[CameraImageComponent].image",
                                                                [b"not a jpeg"], pa.binary())),
     lambda r: _open(r, cameras=True)[0], ValueError,
     r"camera_image/seg_a\.parquet: camera FRONT image at 1000 is not a decodable JPEG"),
    ("image size vs calibration", lambda r: (_written()(r), _set_column(r, "camera_calibration",
                                                                        "[CameraCalibrationComponent].width", [9],
                                                                        pa.int32())),
     lambda r: _open(r, cameras=True)[0], ValueError,
     r"camera_image/seg_a\.parquet: camera FRONT image is 8x6, calibration says 9x6"),
    ("bad cameras option", _written(), lambda r: _open(r, cameras="yes"),
     ValueError, r"waymo: cameras must be True, False or None"),
    ("unknown laser", _written(), lambda r: _open(r, lasers=("ROOF",)),
     ValueError, r"waymo: unknown lasers \['ROOF'\]"),
]


@pytest.mark.parametrize("case, breaks, reads, exc, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(tmp_path, case, breaks, reads, exc, message):
    breaks(tmp_path)
    assert_one_line_error(lambda: reads(tmp_path), exc, message)


def test_lidar_only_download(tmp_path):
    """v2 components are downloaded separately: a LiDAR-only download (no camera folders) reads by default, with
    labels, and without cameras; the full download gives the cameras by default."""
    write_waymo_segment(tmp_path / "lidar_only", _fixture(), components=WAYMO_LIDAR_COMPONENTS)
    assert sorted(os.listdir(tmp_path / "lidar_only" / "training")) == sorted(WAYMO_LIDAR_COMPONENTS)
    ds = get_dataset("waymo", tmp_path / "lidar_only", "train")
    assert not ds.load_cameras
    f = ds[0]
    assert f.cameras == [] and f.labels is not None and f.num_points == 3
    assert get_dataset("waymo", tmp_path / "lidar_only", "train", cameras=False)[2].cameras == []
    write_waymo_segment(tmp_path / "full", _fixture())
    assert [c.name for c in get_dataset("waymo", tmp_path / "full", "train")[0].cameras] == ["FRONT", "FRONT_LEFT"]
    assert get_dataset("waymo", tmp_path / "full", "train", cameras=False)[0].cameras == []


def test_waymo_label_map_value_by_value():
    from largead.data.labels import apply_lut, build_lut
    from largead.data.labels_extra import WAYMO_LEARNING_MAP

    # segmentation.proto ids 0..22 (waymo-open-dataset protos/segmentation.proto); training id = id - 1, undefined -> ignore
    proto = ["undefined", "car", "truck", "bus", "other_vehicle", "motorcyclist", "bicyclist", "pedestrian", "sign",
             "traffic_light", "pole", "construction_cone", "bicycle", "motorcycle", "building", "vegetation",
             "tree_trunk", "curb", "road", "lane_marker", "other_ground", "walkable", "sidewalk"]
    ids = apply_lut(build_lut(WAYMO_LEARNING_MAP, 23), np.arange(23))
    assert ids[0] == IGNORE_INDEX
    assert [WAYMO_CLASSES[i] for i in ids[1:]] == proto[1:]
