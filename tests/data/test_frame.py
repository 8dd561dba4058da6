from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fixtures import make_frames

from largead.data.frame import Frame


@pytest.fixture()
def frame() -> Frame:
    return make_frames(("s",), 1, 30, camera_yaws_deg=(0.0, 90.0), camera_names=("a", "b"))[0]


def test_valid_frame_passes_and_reports_properties(frame):
    assert frame.validate("x") is frame
    assert frame.num_points == 30
    assert (frame.cameras[0].height, frame.cameras[0].width) == (48, 80)


def test_non_finite_points(frame):
    frame.points[[2, 5], 1] = np.nan
    with pytest.raises(ValueError, match="scan.bin: 2 of 30 points have non-finite"):
        frame.validate("scan.bin")


def test_points_shape(frame):
    frame.points = frame.points[:, :3]
    with pytest.raises(ValueError, match=r"src: points must be an \(N, 4\) array, got shape \(30, 3\)"):
        frame.validate("src")


def test_labels_count_mismatch(frame):
    frame.labels = frame.labels[:-1]
    with pytest.raises(ValueError, match=r"src: labels has shape \(29,\), expected \(30,\)"):
        frame.validate("src")


def test_non_rigid_pose(frame):
    frame.pose = frame.pose * 2.0
    with pytest.raises(ValueError, match="src: pose: last row"):
        frame.validate("src")


def test_camera_problems(frame):
    bad_k = dataclasses.replace(frame.cameras[1], intrinsics=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="src: camera b: intrinsics must be a finite, invertible 3x3"):
        dataclasses.replace(frame, cameras=[frame.cameras[0], bad_k]).validate("src")
    skew = frame.cameras[0].lidar_to_camera.copy()
    skew[0, 1] += 0.2
    bad_e = dataclasses.replace(frame.cameras[0], lidar_to_camera=skew)
    with pytest.raises(ValueError, match="src: camera a: lidar_to_camera: rotation block is not a proper rotation"):
        dataclasses.replace(frame, cameras=[bad_e]).validate("src")
    bad_img = dataclasses.replace(frame.cameras[0], image=frame.cameras[0].image.astype(np.float32))
    with pytest.raises(ValueError, match="src: camera a: image must be .H, W, 3. uint8"):
        dataclasses.replace(frame, cameras=[bad_img]).validate("src")
