"""Test data recipes: random frames and hand-made range images. Every file is written by the library's writers
(:mod:`largead.data.export`, :mod:`largead.data.readers._kitti_io`); nothing here writes a format itself.

``make_frames`` builds frames with a random LiDAR-like cloud, labels (some ignore), a moving pose and rigidly mounted
pinhole cameras looking around the car; ``make_nuscenes_fixture`` / ``make_semantickitti_fixture`` write them with the
library writers and return the frames written (the expected values for reader tests). ``make_waymo_segment`` is a
Waymo segment of hand-placed range-image pixels whose points are computed by hand in ``test_waymo.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largead.data.export import (
    CAMERA_EGO_MOTION,
    WaymoCamera,
    WaymoLaser,
    WaymoSegment,
    write_nuscenes,
    write_semantickitti,
)
from largead.data.frame import IGNORE_INDEX, CameraView, Frame
from largead.data.geometry import axis_angle_to_matrix

NUSCENES_CHANNELS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
NUSCENES_YAWS_DEG = (0.0, -55.0, -110.0, 180.0, 110.0, 55.0)


def camera_extrinsics(yaw_deg: float, position=(0.3, 0.0, -0.2), tilt_deg: float = 2.0) -> np.ndarray:
    """LiDAR-to-camera transform of a camera at ``position`` (LiDAR frame) looking horizontally along ``yaw_deg``.

    LiDAR axes x forward, y left, z up; camera axes x right, y down, z forward. ``tilt_deg`` pitches it slightly.
    """
    th = np.deg2rad(yaw_deg)
    forward = np.array([np.cos(th), np.sin(th), 0.0])
    right = np.array([np.sin(th), -np.cos(th), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    rot = np.stack([right, down, forward])  # rows: camera axes in LiDAR coordinates
    rot = axis_angle_to_matrix([1.0, 0.0, 0.0], np.deg2rad(tilt_deg)) @ rot
    c = np.array([np.cos(th) * position[0], np.sin(th) * position[0], position[2]])
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = -rot @ c
    return m


def block_image(rng: np.random.Generator, height: int, width: int, block: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 image of random flat-coloured blocks (compresses well, structure survives JPEG)."""
    hb, wb = -(-height // block), -(-width // block)
    colours = rng.integers(0, 256, size=(hb, wb, 3), dtype=np.uint8)
    return np.repeat(np.repeat(colours, block, 0), block, 1)[:height, :width].copy()


def make_frames(
    sequences: Sequence[str] = ("scene-0061", "scene-0103"),
    frames_per_sequence: int = 3,
    num_points: int = 3000,
    num_classes: int = 16,
    camera_yaws_deg: Sequence[float] = NUSCENES_YAWS_DEG,
    camera_names: Sequence[str] = NUSCENES_CHANNELS,
    image_size: tuple[int, int] = (48, 80),
    intensity_scale: float = 255.0,
    seed: int = 0,
    dt: float = 0.5,
) -> list[Frame]:
    """Frames of a car driving along a curve, each with a random cloud, labels (some ignore) and cameras."""
    rng = np.random.default_rng(seed)
    h, w = image_size
    k = np.array([[0.6 * w, 0.0, w / 2 - 0.5], [0.0, 0.6 * w, h / 2 - 0.5], [0.0, 0.0, 1.0]])
    frames = []
    for s, seq in enumerate(sequences):
        base_t = 1.5e9 + 1000.0 * s
        for j in range(frames_per_sequence):
            r = rng.uniform(2.0, 40.0, num_points)
            phi = rng.uniform(-np.pi, np.pi, num_points)
            z = rng.uniform(-1.8, 3.0, num_points)
            pts = np.stack([r * np.cos(phi), r * np.sin(phi), z, rng.uniform(0, intensity_scale, num_points)], 1)
            labels = rng.integers(0, num_classes, num_points)
            labels[rng.random(num_points) < 0.1] = IGNORE_INDEX
            yaw = 0.1 * j + s
            pose = np.eye(4)
            pose[:3, :3] = axis_angle_to_matrix([0.0, 0.0, 1.0], yaw)
            pose[:3, 3] = [100.0 * s + 5.0 * j, 20.0 + 0.5 * j * j, 0.3]
            cams = [
                CameraView(image=block_image(rng, h, w), intrinsics=k.copy(),
                           lidar_to_camera=camera_extrinsics(yaw_c), name=name)
                for yaw_c, name in zip(camera_yaws_deg, camera_names)
            ]
            frames.append(Frame(
                points=pts.astype(np.float32), labels=labels.astype(np.int64),
                instances=rng.integers(0, 5, num_points).astype(np.int64), pose=pose, timestamp=base_t + dt * j,
                sequence=seq, index=j, dataset="fixture", cameras=cams,
                extra={"ring": rng.integers(0, 32, num_points)},
            ))
    return frames


def make_nuscenes_fixture(
    root: str | Path,
    scenes: Sequence[str] = ("scene-0061", "scene-0103"),
    frames_per_scene: int = 3,
    num_points: int = 3000,
    version: str = "v1.0-mini",
    seed: int = 0,
) -> list[Frame]:
    """Write a tiny nuScenes ``version`` dataset (scenes x keyframes, LIDAR_TOP + 6 cameras, lidarseg) to ``root``.

    Default scene names are official (``scene-0061``: train / mini_train, ``scene-0103``: val / mini_val).
    Returns the frames written, with training-id labels.
    """
    frames = make_frames(scenes, frames_per_scene, num_points, seed=seed)
    write_nuscenes(frames, root, version=version, camera_ego_motion=CAMERA_EGO_MOTION, camera_time_offset=0.02)
    return frames


def make_semantickitti_fixture(
    root: str | Path,
    sequences: Sequence[str] = ("00", "08"),
    frames_per_sequence: int = 3,
    num_points: int = 2000,
    seed: int = 0,
) -> list[Frame]:
    """Write a tiny SemanticKITTI tree (velodyne, labels, calib, poses, times, image_2) to ``root``."""
    frames = make_frames(sequences, frames_per_sequence, num_points, num_classes=19, camera_yaws_deg=(0.0,),
                         camera_names=("image_2",), image_size=(40, 120), intensity_scale=1.0, seed=seed, dt=0.1)
    write_semantickitti(frames, root)
    return frames


def random_scan(rng: np.random.Generator, n: int, columns: int = 4) -> np.ndarray:
    """(n, columns) float32 points in a 40 m cube with intensity (column 3) in [0, 1)."""
    pts = rng.uniform(-20, 20, size=(n, columns)).astype(np.float32)
    pts[:, 3] = rng.uniform(0, 1, size=n)
    return pts


# ------------------------------------------------------------------------------------------------------------ Waymo
def yaw_transform(yaw: float, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rotation about z by ``yaw`` plus translation ``t``."""
    m = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = t
    return m


WAYMO_H, WAYMO_W = 4, 8
WAYMO_IMIN, WAYMO_IMAX = -0.2, 0.1
WAYMO_EXT = yaw_transform(math.radians(30.0), (1.5, -0.25, 2.0))
"""TOP lidar of :func:`make_waymo_segment`: range image size, uniform inclination range, lidar-to-vehicle extrinsic."""


def _waymo_top_ranges(f: int) -> np.ndarray:
    ri = np.zeros((WAYMO_H, WAYMO_W, 4), np.float32)
    ri[1, 1] = [10.0, 0.5, 0.0, 0.0]  # the target of the geometry test
    ri[0, 6] = [20.0, 2.0, 0.0, 0.0]
    ri[3, 3] = [5.0 + f, 0.25, 0.0, 0.0]
    return ri


def make_waymo_segment(values=None, cameras=True, pixel_pose=None) -> WaymoSegment:
    """Segment ``seg_a``: 3 frames; TOP with 3 returns per frame (target at row 1, col 1, range 10 m) and FRONT with
    one; segmentation on frames 0 and 2; two cameras (FRONT along vehicle +x, 6x8 images of constant 40 + frame;
    FRONT_LEFT along +y, 4x8 images of constant 80 + frame: Waymo's cameras differ in size)."""
    top = WaymoLaser(1, WAYMO_EXT, WAYMO_IMIN, WAYMO_IMAX, values, [_waymo_top_ranges(f) for f in range(3)])
    front_ri = np.zeros((3, 6, 4), np.float32)
    front_ri[2, 2] = [3.0, 0.75, 0, 0]
    front = WaymoLaser(2, yaw_transform(0.0, (4.0, 0.0, 0.5)), -0.5, 0.5, None, [front_ri] * 3)
    seg = np.zeros((WAYMO_H, WAYMO_W, 2), np.int32)
    seg[1, 1] = [7, 1]  # instance 7, car -> 0
    seg[0, 6] = [0, 22]  # sidewalk -> 21
    seg[3, 3] = [0, 0]  # undefined -> ignore
    poses = [yaw_transform(0.1 * f, (10.0 * f, 0.0, 0.0)) for f in range(3)]
    cams = []
    if cameras:
        # camera 1 looks along vehicle +x from (2, 0, 1.6): its Waymo axes equal the vehicle's
        cams = [WaymoCamera(1, (100.0, 110.0, 4.0, 3.0), yaw_transform(0.0, (2.0, 0.0, 1.6)), (6, 8),
                            [np.full((6, 8, 3), 40 + f, np.uint8) for f in range(3)]),
                WaymoCamera(2, (90.0, 90.0, 4.0, 2.0), yaw_transform(math.pi / 2, (0.0, 1.0, 1.6)), (4, 8),
                            [np.full((4, 8, 3), 80 + f, np.uint8) for f in range(3)])]
    return WaymoSegment("seg_a", [1000, 1100, 1200], [top, front], poses, {0: seg, 2: seg}, cameras=cams,
                        pixel_pose={} if pixel_pose is None else {0: pixel_pose})


def assert_one_line_error(call, exc: type[BaseException], pattern: str) -> BaseException:
    """``call()`` raises ``exc`` whose message matches ``pattern`` and is one non-empty line; returns the error."""
    import pytest

    with pytest.raises(exc, match=pattern) as info:
        call()
    message = str(info.value)
    assert message.strip() and "\n" not in message, f"not a one-line error: {message!r}"
    return info.value
