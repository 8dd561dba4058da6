"""The Waymo v2 writer against the official schema: every component it writes has exactly the columns and Arrow
types of the v2 component definitions, transcribed here by hand from waymo-research/waymo-open-dataset
``src/waymo_open_dataset/v2/perception/``: ``context_test.py`` (camera and LiDAR calibration schemas),
``camera_image_test.py`` (camera_image schema), ``segmentation_test.py`` (lidar_segmentation schema), ``lidar.py``
(RangeImage / PoseRangeImage: values list<float32>, shape list<int32, 3>), ``pose.py`` + ``column_types.py``
(Transform: list<double, 16>), ``base.py`` (key columns and types); component tags from ``v2/__init__.py``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures import make_waymo_segment

from largead.data import get_dataset
from largead.data.export import WAYMO_COMPONENTS, write_waymo, write_waymo_segment

SEG = pa.string()
TS = pa.int64()
NAME = pa.int8()
T16 = pa.list_(pa.float64(), 16)
SHAPE = pa.list_(pa.int32(), 3)

OFFICIAL_SCHEMA = {
    "lidar": {
        "key.segment_context_name": SEG, "key.frame_timestamp_micros": TS, "key.laser_name": NAME,
        **{f"[LiDARComponent].range_image_return{r}.{f}": t for r in (1, 2)
           for f, t in (("values", pa.list_(pa.float32())), ("shape", SHAPE))},
    },
    "lidar_calibration": {
        "key.segment_context_name": SEG, "key.laser_name": NAME,
        "[LiDARCalibrationComponent].extrinsic.transform": T16,
        "[LiDARCalibrationComponent].beam_inclination.min": pa.float64(),
        "[LiDARCalibrationComponent].beam_inclination.max": pa.float64(),
        "[LiDARCalibrationComponent].beam_inclination.values": pa.list_(pa.float64()),
    },
    "lidar_segmentation": {
        "key.segment_context_name": SEG, "key.frame_timestamp_micros": TS, "key.laser_name": NAME,
        **{f"[LiDARSegmentationLabelComponent].range_image_return{r}.{f}": t for r in (1, 2)
           for f, t in (("values", pa.list_(pa.int32())), ("shape", SHAPE))},
    },
    "lidar_pose": {
        "key.segment_context_name": SEG, "key.frame_timestamp_micros": TS, "key.laser_name": NAME,
        "[LiDARPoseComponent].range_image_return1.values": pa.list_(pa.float32()),
        "[LiDARPoseComponent].range_image_return1.shape": SHAPE,
    },
    "vehicle_pose": {
        "key.segment_context_name": SEG, "key.frame_timestamp_micros": TS,
        "[VehiclePoseComponent].world_from_vehicle.transform": T16,
    },
    "camera_calibration": {
        "key.segment_context_name": SEG, "key.camera_name": NAME,
        **{f"[CameraCalibrationComponent].intrinsic.{k}": pa.float64()
           for k in ("f_u", "f_v", "c_u", "c_v", "k1", "k2", "p1", "p2", "k3")},
        "[CameraCalibrationComponent].extrinsic.transform": T16,
        "[CameraCalibrationComponent].width": pa.int32(),
        "[CameraCalibrationComponent].height": pa.int32(),
        "[CameraCalibrationComponent].rolling_shutter_direction": pa.int8(),
    },
    "camera_image": {
        "key.segment_context_name": SEG, "key.frame_timestamp_micros": TS, "key.camera_name": NAME,
        "[CameraImageComponent].image": pa.binary(),
        "[CameraImageComponent].pose.transform": T16,
        **{f"[CameraImageComponent].velocity.linear_velocity.{a}": pa.float32() for a in "xyz"},
        **{f"[CameraImageComponent].velocity.angular_velocity.{a}": pa.float64() for a in "xyz"},
        "[CameraImageComponent].pose_timestamp": pa.float64(),
        **{f"[CameraImageComponent].rolling_shutter_params.{p}": pa.float64()
           for p in ("shutter", "camera_trigger_time", "camera_readout_done_time")},
    },
}


def test_every_component_has_the_official_columns_and_types(tmp_path):
    seg = make_waymo_segment(pixel_pose=np.zeros((4, 8, 6), np.float32))
    write_waymo_segment(tmp_path, seg)
    assert sorted(p.name for p in (tmp_path / "training").iterdir()) == sorted(WAYMO_COMPONENTS)
    for component, want in OFFICIAL_SCHEMA.items():
        schema = pq.read_schema(tmp_path / "training" / component / "seg_a.parquet")
        assert dict(zip(schema.names, schema.types)) == want, component


def test_frames_writer_components_and_refusals(tmp_path, official_samples):
    frames = [f for f in official_samples["waymo"].frames if f.sequence == "waymo-train"]
    names = write_waymo(frames, tmp_path, "val", columns=180, components=("lidar", "lidar_calibration", "vehicle_pose"))
    seg = names["waymo-train"]
    assert sorted(p.name for p in (tmp_path / "validation").iterdir()) == ["lidar", "lidar_calibration",
                                                                           "vehicle_pose"]
    ds = get_dataset("waymo", tmp_path, "val")
    assert len(ds) == len(frames) and ds[0].labels is None and ds[0].cameras == []  # no labels, no cameras written
    with pytest.raises(FileExistsError, match=rf"validation/lidar/{seg}\.parquet: already exists"):
        write_waymo(frames, tmp_path, "val", columns=180)
    bad = list(frames)
    bad[1] = dataclasses.replace(bad[1], extra={})
    with pytest.raises(ValueError, match=r"frame 1: write_waymo needs extra\['ring'\]"):
        write_waymo(bad, tmp_path / "x", "train", columns=180)
    assert not (tmp_path / "x").exists()  # validated before anything was written
    with pytest.raises(ValueError, match=r"more than two points fall in one range-image pixel"):
        write_waymo(frames[:1], tmp_path / "y", "train", columns=4)  # 4 azimuth bins cannot hold a scan
    assert not (tmp_path / "y").exists()
