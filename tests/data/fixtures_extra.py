"""Tiny on-disk fixtures, in each dataset's real format, for the transfer-dataset readers (written into tmp_path)."""

from __future__ import annotations

import io
import math
import os
import pickle
from dataclasses import dataclass, field

import numpy as np

# ------------------------------------------------------------------------------------------------------------ Waymo
W_SEG = "[LiDARSegmentationLabelComponent]"
W_LIDAR = "[LiDARComponent]"
W_CALIB = "[LiDARCalibrationComponent]"


def yaw_transform(yaw: float, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rotation about z by ``yaw`` plus translation ``t``."""
    m = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = t
    return m


@dataclass
class WaymoLaser:
    """One lidar of the fixture: range images per frame and its calibration."""

    laser: int
    extrinsic: np.ndarray
    inclination_min: float
    inclination_max: float
    inclination_values: list[float] | None
    ranges: list[np.ndarray]  # per frame (H, W, 4) float32 range images, return 1
    ranges2: list[np.ndarray] | None = None  # return 2 (default: zeros = no second returns)


@dataclass
class WaymoCamera:
    camera: int
    intrinsic: tuple[float, float, float, float]  # f_u, f_v, c_u, c_v
    camera_to_vehicle: np.ndarray
    size: tuple[int, int] = (6, 8)  # (height, width)


@dataclass
class WaymoFixture:
    segment: str
    timestamps: list[int]
    lasers: list[WaymoLaser]
    poses: list[np.ndarray]  # world_from_vehicle per frame
    segmentation: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> (H, W, 2) int32 (TOP, ret 1)
    cameras: list[WaymoCamera] = field(default_factory=list)
    pixel_pose: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> (H, W, 6) TOP pixel pose


def _flat(arr: np.ndarray) -> list:
    return np.asarray(arr).reshape(-1).tolist()


def write_waymo(root: str, fx: WaymoFixture, split_dir: str = "training", drop: dict[str, str] | None = None) -> None:
    """Write ``fx`` as Waymo v2 parquet components under ``root/split_dir``; ``drop`` removes a column per component."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    drop = drop or {}
    base = os.path.join(root, split_dir)

    def write(component: str, cols: dict[str, pa.Array]) -> None:
        os.makedirs(os.path.join(base, component), exist_ok=True)
        cols = {k: v for k, v in cols.items() if k != drop.get(component)}
        pq.write_table(pa.table(cols), os.path.join(base, component, f"{fx.segment}.parquet"))

    n_frames = len(fx.timestamps)
    rows = [(f, las) for f in range(n_frames) for las in fx.lasers]
    key = lambda n: {"key.segment_context_name": pa.array([fx.segment] * n, pa.string())}
    f32 = pa.list_(pa.float32())
    t16 = pa.list_(pa.float64(), 16)  # transforms are fixed_size_list<double>[16] in the v2 files
    i32 = pa.list_(pa.int32())
    lidar = {**key(len(rows)),
             "key.frame_timestamp_micros": pa.array([fx.timestamps[f] for f, _ in rows], pa.int64()),
             "key.laser_name": pa.array([las.laser for _, las in rows], pa.int8())}
    for r in (1, 2):
        imgs = [las.ranges[f] if r == 1 else (las.ranges2[f] if las.ranges2 else np.zeros_like(las.ranges[f]))
                for f, las in rows]
        lidar[f"{W_LIDAR}.range_image_return{r}.values"] = pa.array([_flat(i) for i in imgs], f32)
        lidar[f"{W_LIDAR}.range_image_return{r}.shape"] = pa.array([list(i.shape) for i in imgs], i32)
    write("lidar", lidar)

    write("lidar_calibration", {
        **key(len(fx.lasers)),
        "key.laser_name": pa.array([las.laser for las in fx.lasers], pa.int8()),
        f"{W_CALIB}.extrinsic.transform": pa.array([_flat(las.extrinsic) for las in fx.lasers], t16),
        f"{W_CALIB}.beam_inclination.min": pa.array([las.inclination_min for las in fx.lasers], pa.float64()),
        f"{W_CALIB}.beam_inclination.max": pa.array([las.inclination_max for las in fx.lasers], pa.float64()),
        f"{W_CALIB}.beam_inclination.values": pa.array([las.inclination_values for las in fx.lasers],
                                                       pa.list_(pa.float64())),
    })
    write("vehicle_pose", {
        **key(n_frames), "key.frame_timestamp_micros": pa.array(fx.timestamps, pa.int64()),
        "[VehiclePoseComponent].world_from_vehicle.transform": pa.array([_flat(p) for p in fx.poses],
                                                                         t16),
    })
    if fx.segmentation:
        fr = sorted(fx.segmentation)
        seg = {**key(len(fr)), "key.frame_timestamp_micros": pa.array([fx.timestamps[f] for f in fr], pa.int64()),
               "key.laser_name": pa.array([1] * len(fr), pa.int8())}
        for r in (1, 2):
            imgs = [fx.segmentation[f] if r == 1 else np.zeros_like(fx.segmentation[f]) for f in fr]
            seg[f"{W_SEG}.range_image_return{r}.values"] = pa.array([_flat(i) for i in imgs], i32)
            seg[f"{W_SEG}.range_image_return{r}.shape"] = pa.array([list(i.shape) for i in imgs], i32)
        write("lidar_segmentation", seg)
    if fx.pixel_pose:
        fr = sorted(fx.pixel_pose)
        write("lidar_pose", {
            **key(len(fr)), "key.frame_timestamp_micros": pa.array([fx.timestamps[f] for f in fr], pa.int64()),
            "key.laser_name": pa.array([1] * len(fr), pa.int8()),
            "[LiDARPoseComponent].range_image_return1.values": pa.array([_flat(fx.pixel_pose[f]) for f in fr], f32),
            "[LiDARPoseComponent].range_image_return1.shape": pa.array([list(fx.pixel_pose[f].shape) for f in fr],
                                                                       i32),
        })
    if fx.cameras:
        cc = "[CameraCalibrationComponent]"
        write("camera_calibration", {
            **key(len(fx.cameras)), "key.camera_name": pa.array([c.camera for c in fx.cameras], pa.int8()),
            **{f"{cc}.intrinsic.{n}": pa.array([c.intrinsic[j] for c in fx.cameras], pa.float64())
               for j, n in enumerate(("f_u", "f_v", "c_u", "c_v"))},
            f"{cc}.extrinsic.transform": pa.array([_flat(c.camera_to_vehicle) for c in fx.cameras],
                                                  t16),
            f"{cc}.width": pa.array([c.size[1] for c in fx.cameras], pa.int32()),
            f"{cc}.height": pa.array([c.size[0] for c in fx.cameras], pa.int32()),
        })
        images, names, stamps = [], [], []
        for f in range(n_frames):
            for c in fx.cameras:
                buf = io.BytesIO()
                img = np.full((*c.size, 3), 40 * c.camera + f, np.uint8)
                Image.fromarray(img).save(buf, format="JPEG", quality=95)
                images.append(buf.getvalue())
                names.append(c.camera)
                stamps.append(fx.timestamps[f])
        write("camera_image", {**key(len(images)), "key.frame_timestamp_micros": pa.array(stamps, pa.int64()),
                               "key.camera_name": pa.array(names, pa.int8()),
                               "[CameraImageComponent].image": pa.array(images, pa.binary())})


WAYMO_H, WAYMO_W = 4, 8
WAYMO_IMIN, WAYMO_IMAX = -0.2, 0.1
WAYMO_EXT = yaw_transform(math.radians(30.0), (1.5, -0.25, 2.0))
"""TOP lidar of :func:`make_waymo_fixture`: range image size, uniform inclination range, lidar-to-vehicle extrinsic."""


def _waymo_top_ranges(f: int) -> np.ndarray:
    ri = np.zeros((WAYMO_H, WAYMO_W, 4), np.float32)
    ri[1, 1] = [10.0, 0.5, 0.0, 0.0]  # the target of the geometry test
    ri[0, 6] = [20.0, 2.0, 0.0, 0.0]
    ri[3, 3] = [5.0 + f, 0.25, 0.0, 0.0]
    return ri


def make_waymo_fixture(values=None, cameras=True, pixel_pose=None) -> WaymoFixture:
    """Segment ``seg_a``: 3 frames; TOP with 3 returns per frame (target at row 1, col 1, range 10 m) and FRONT with
    one; segmentation on frames 0 and 2; two cameras (FRONT along vehicle +x, FRONT_LEFT along +y)."""
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
        cams = [WaymoCamera(1, (100.0, 110.0, 4.0, 3.0), yaw_transform(0.0, (2.0, 0.0, 1.6))),
                WaymoCamera(2, (90.0, 90.0, 4.0, 3.0), yaw_transform(math.pi / 2, (0.0, 1.0, 1.6)))]
    return WaymoFixture("seg_a", [1000, 1100, 1200], [top, front], poses, {0: seg, 2: seg}, cams,
                        {} if pixel_pose is None else {0: pixel_pose})


# ------------------------------------------------------------------------------------------------ KITTI-like files
def write_bin(path: str, points: np.ndarray, dtype=np.float32) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.asarray(points, dtype=dtype).tofile(path)


def write_label(path: str, semantic: np.ndarray, instance: np.ndarray | None = None, dtype=np.uint32) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sem = np.asarray(semantic).astype(np.uint32)
    inst = np.zeros_like(sem) if instance is None else np.asarray(instance).astype(np.uint32)
    ((inst << 16) | sem).astype(dtype).tofile(path)


def write_poses(path: str, poses: list[np.ndarray]) -> None:
    """KITTI ``poses.txt``: 12 floats a line (first three rows of each 4x4)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for p in poses:
            f.write(" ".join(f"{v:.9e}" for v in np.asarray(p)[:3].reshape(-1)) + "\n")


def write_calib(path: str, tr: np.ndarray | None = None) -> None:
    """KITTI odometry ``calib.txt`` with P0..P3 and Tr (velodyne -> camera 0)."""
    tr = np.eye(4) if tr is None else tr
    p = np.array([[700.0, 0, 600, 0], [0, 700.0, 180, 0], [0, 0, 1, 0]])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for k in range(4):
            f.write(f"P{k}: " + " ".join(f"{v:.9e}" for v in p.reshape(-1)) + "\n")
        f.write("Tr: " + " ".join(f"{v:.9e}" for v in tr[:3].reshape(-1)) + "\n")


def random_scan(rng: np.random.Generator, n: int, columns: int = 4) -> np.ndarray:
    pts = rng.uniform(-20, 20, size=(n, columns)).astype(np.float32)
    pts[:, 3] = rng.uniform(0, 1, size=n)
    return pts


def write_pickle(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)
