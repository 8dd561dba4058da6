"""Waymo Open Dataset v2 writer: one parquet file per segment and component, under the official column names.

Layout (waymo-research/waymo-open-dataset ``tutorial/tutorial_v2.ipynb`` reads ``{dataset_dir}/{tag}/{context_name}
.parquet``; the bucket ``waymo_open_dataset_v_2_0_0`` holds ``training/``, ``validation/``, ``testing/``; tags from
``src/waymo_open_dataset/v2/__init__.py`` ``TAG_BY_COMPONENT``)::

    <root>/<training|validation|testing>/<tag>/<segment_context_name>.parquet

Columns and Arrow types follow the v2 component dataclasses and their schema tests (``src/waymo_open_dataset/v2/``
``perception/{base,lidar,context,pose,camera_image}.py``, ``column_types.py``, ``perception/segmentation_test.py``,
``perception/context_test.py``, ``perception/camera_image_test.py``):

- keys ``key.segment_context_name`` (string), ``key.frame_timestamp_micros`` (int64), ``key.laser_name`` /
  ``key.camera_name`` (int8);
- ``lidar``: ``[LiDARComponent].range_image_return{1,2}.values`` list<float32> (flattened [H, W, 4]: range,
  intensity, elongation, no-label-zone) and ``.shape`` fixed_size_list<int32>[3];
- ``lidar_calibration`` (segment + laser): ``[LiDARCalibrationComponent].extrinsic.transform`` fixed_size_list
  <double>[16] (row-major lidar -> vehicle), ``.beam_inclination.{min,max}`` double, ``.beam_inclination.values``
  list<double> (lowest beam first);
- ``lidar_segmentation``: ``[LiDARSegmentationLabelComponent].range_image_return{1,2}.{values,shape}`` (int32
  [H, W, 2]: instance id, semantic class), TOP only;
- ``lidar_pose``: ``[LiDARPoseComponent].range_image_return1.{values,shape}`` (float32 [H, W, 6]: roll, pitch, yaw,
  x, y, z of the vehicle pose at each pixel);
- ``vehicle_pose``: ``[VehiclePoseComponent].world_from_vehicle.transform``;
- ``camera_calibration`` (segment + camera): ``[CameraCalibrationComponent].intrinsic.{f_u,f_v,c_u,c_v,k1,k2,p1,p2,
  k3}`` double, ``.extrinsic.transform`` (camera -> vehicle, Waymo camera axes x forward, y left, z up),
  ``.width`` / ``.height`` int32, ``.rolling_shutter_direction`` int8;
- ``camera_image``: ``[CameraImageComponent].image`` (JPEG bytes), ``.pose.transform``,
  ``.velocity.linear_velocity.{x,y,z}`` float32, ``.velocity.angular_velocity.{x,y,z}`` double, ``.pose_timestamp``
  double, ``.rolling_shutter_params.{shutter,camera_trigger_time,camera_readout_done_time}`` double.

:func:`write_waymo_segment` writes given range images (:class:`WaymoSegment`); :func:`write_waymo` turns frames
into range images first (inverting the reader's range-image geometry, see its docstring).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from largead.data.export._common import check_fresh, encode_image, group_by_sequence, raw_labels, validate_frames
from largead.data.frame import Frame
from largead.data.geometry import check_rigid, invert_rigid
from largead.data.labels import inverse_lut as _inverse_lut
from largead.data.labels_extra import WAYMO_LEARNING_MAP
from largead.data.readers.waymo import (
    CAMERA_NAMES,
    SPLIT_DIRS,
    WAYMO_TO_OPENCV_CAMERA,
)
from largead.fileio import atomic_path

__all__ = [
    "WAYMO_COMPONENTS",
    "WAYMO_LIDAR_COMPONENTS",
    "WaymoCamera",
    "WaymoLaser",
    "WaymoSegment",
    "waymo_segment_name",
    "write_waymo",
    "write_waymo_segment",
]

WAYMO_COMPONENTS = ("lidar", "lidar_calibration", "vehicle_pose", "lidar_segmentation", "lidar_pose",
                    "camera_calibration", "camera_image")
"""The components the reader uses (``lidar_segmentation``, ``lidar_pose`` and the camera ones are optional)."""

WAYMO_LIDAR_COMPONENTS = ("lidar", "lidar_calibration", "vehicle_pose", "lidar_segmentation")
"""A LiDAR-only download (what LiDAR segmentation needs)."""

WAYMO_TOP_POSITION = (1.43, 0.0, 2.184)
"""Where :func:`write_waymo` mounts the TOP lidar by default (vehicle frame, metres; roughly Waymo's)."""

_CAMERA_IDS = {name: cam for cam, name in CAMERA_NAMES.items()}


@dataclass
class WaymoLaser:
    """One lidar: its calibration and per-frame range images (``(H, W, 4)`` float32, return 1 and optionally 2)."""

    laser: int
    extrinsic: np.ndarray  # (4, 4) lidar -> vehicle
    inclination_min: float
    inclination_max: float
    inclination_values: Sequence[float] | None  # lowest beam first, or None for uniform
    ranges: list[np.ndarray]
    ranges2: list[np.ndarray] | None = None  # default: zeros (no second returns)


@dataclass
class WaymoCamera:
    """One camera: pinhole intrinsics ``(f_u, f_v, c_u, c_v)``, camera -> vehicle extrinsic (Waymo camera axes),
    image size ``(height, width)`` and the per-frame images (``(H, W, 3)`` uint8, JPEG-encoded on write)."""

    camera: int
    intrinsic: tuple[float, float, float, float]
    camera_to_vehicle: np.ndarray
    size: tuple[int, int]
    images: list[np.ndarray] = field(default_factory=list)


@dataclass
class WaymoSegment:
    """Everything written for one segment."""

    name: str
    timestamps: list[int]  # micros, one per frame
    lasers: list[WaymoLaser]
    poses: list[np.ndarray]  # world_from_vehicle per frame
    segmentation: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (H, W, 2) int32, TOP return 1
    segmentation2: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> return 2 (default zeros)
    cameras: list[WaymoCamera] = field(default_factory=list)
    pixel_pose: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (H, W, 6) TOP pixel pose


def _flat(arr: np.ndarray) -> list:
    return np.asarray(arr).reshape(-1).tolist()


def write_waymo_segment(
    root: str | Path,
    segment: WaymoSegment,
    split_dir: str = "training",
    components: Collection[str] = WAYMO_COMPONENTS,
    drop: Mapping[str, str] | None = None,
    jpeg_quality: int = 95,
) -> None:
    """Write ``segment`` as the v2 ``components`` under ``root/split_dir`` (see the module docstring).

    Components without data (no segmentation, no pixel poses, no cameras) are not written. ``drop`` removes one
    column per component (to test readers against incomplete files). Each file is written atomically.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    unknown = sorted(set(components) - set(WAYMO_COMPONENTS))
    if unknown:
        raise ValueError(f"unknown Waymo components {unknown}; expected some of {list(WAYMO_COMPONENTS)}")
    drop = dict(drop or {})
    base = Path(root) / split_dir
    seg = segment
    n_frames = len(seg.timestamps)
    f32, i32 = pa.list_(pa.float32()), pa.list_(pa.int32())
    shape3 = pa.list_(pa.int32(), 3)
    t16 = pa.list_(pa.float64(), 16)

    def write(component: str, cols: dict[str, pa.Array]) -> None:
        if component not in components:
            return
        cols = {k: v for k, v in cols.items() if k != drop.get(component)}
        with atomic_path(base / component / f"{seg.name}.parquet") as tmp:
            pq.write_table(pa.table(cols), tmp)

    def key(n: int) -> dict[str, pa.Array]:
        return {"key.segment_context_name": pa.array([seg.name] * n, pa.string())}

    def image_cols(prefix: str, images: list[np.ndarray], values_type: pa.DataType) -> dict[str, pa.Array]:
        return {f"{prefix}.values": pa.array([_flat(i) for i in images], values_type),
                f"{prefix}.shape": pa.array([list(i.shape) for i in images], shape3)}

    rows = [(f, las) for f in range(n_frames) for las in seg.lasers]
    lidar = {**key(len(rows)),
             "key.frame_timestamp_micros": pa.array([seg.timestamps[f] for f, _ in rows], pa.int64()),
             "key.laser_name": pa.array([las.laser for _, las in rows], pa.int8())}
    for r in (1, 2):
        imgs = [las.ranges[f] if r == 1 else (las.ranges2[f] if las.ranges2 else np.zeros_like(las.ranges[f]))
                for f, las in rows]
        lidar.update(image_cols(f"[LiDARComponent].range_image_return{r}", imgs, f32))
    write("lidar", lidar)

    cal = "[LiDARCalibrationComponent]"
    write("lidar_calibration", {
        **key(len(seg.lasers)),
        "key.laser_name": pa.array([las.laser for las in seg.lasers], pa.int8()),
        f"{cal}.extrinsic.transform": pa.array([_flat(las.extrinsic) for las in seg.lasers], t16),
        f"{cal}.beam_inclination.min": pa.array([las.inclination_min for las in seg.lasers], pa.float64()),
        f"{cal}.beam_inclination.max": pa.array([las.inclination_max for las in seg.lasers], pa.float64()),
        f"{cal}.beam_inclination.values": pa.array(
            [None if las.inclination_values is None else [float(v) for v in las.inclination_values]
             for las in seg.lasers], pa.list_(pa.float64())),
    })
    write("vehicle_pose", {
        **key(n_frames), "key.frame_timestamp_micros": pa.array(seg.timestamps, pa.int64()),
        "[VehiclePoseComponent].world_from_vehicle.transform": pa.array([_flat(p) for p in seg.poses], t16),
    })
    if seg.segmentation:
        fr = sorted(seg.segmentation)
        cols = {**key(len(fr)), "key.frame_timestamp_micros": pa.array([seg.timestamps[f] for f in fr], pa.int64()),
                "key.laser_name": pa.array([1] * len(fr), pa.int8())}
        for r in (1, 2):
            imgs = [seg.segmentation[f] if r == 1 else seg.segmentation2.get(f, np.zeros_like(seg.segmentation[f]))
                    for f in fr]
            cols.update(image_cols(f"[LiDARSegmentationLabelComponent].range_image_return{r}",
                                   [np.asarray(i, np.int32) for i in imgs], i32))
        write("lidar_segmentation", cols)
    if seg.pixel_pose:
        fr = sorted(seg.pixel_pose)
        write("lidar_pose", {
            **key(len(fr)), "key.frame_timestamp_micros": pa.array([seg.timestamps[f] for f in fr], pa.int64()),
            "key.laser_name": pa.array([1] * len(fr), pa.int8()),
            **image_cols("[LiDARPoseComponent].range_image_return1", [seg.pixel_pose[f] for f in fr], f32),
        })
    if seg.cameras:
        cc = "[CameraCalibrationComponent]"
        intr = {n: [c.intrinsic[j] for c in seg.cameras] for j, n in enumerate(("f_u", "f_v", "c_u", "c_v"))}
        intr.update({n: [0.0] * len(seg.cameras) for n in ("k1", "k2", "p1", "p2", "k3")})
        write("camera_calibration", {
            **key(len(seg.cameras)), "key.camera_name": pa.array([c.camera for c in seg.cameras], pa.int8()),
            **{f"{cc}.intrinsic.{n}": pa.array(v, pa.float64()) for n, v in intr.items()},
            f"{cc}.extrinsic.transform": pa.array([_flat(c.camera_to_vehicle) for c in seg.cameras], t16),
            f"{cc}.width": pa.array([c.size[1] for c in seg.cameras], pa.int32()),
            f"{cc}.height": pa.array([c.size[0] for c in seg.cameras], pa.int32()),
            f"{cc}.rolling_shutter_direction": pa.array([2] * len(seg.cameras), pa.int8()),  # LEFT_TO_RIGHT
        })
        images, names, stamps, poses = [], [], [], []
        for f in range(n_frames):
            for c in seg.cameras:
                if len(c.images) != n_frames:
                    raise ValueError(f"segment {seg.name}: camera {c.camera} has {len(c.images)} images for "
                                     f"{n_frames} frames")
                images.append(encode_image(c.images[f], "JPEG", jpeg_quality))
                names.append(c.camera)
                stamps.append(seg.timestamps[f])
                poses.append(_flat(seg.poses[f]))
        ci = "[CameraImageComponent]"
        n = len(images)
        write("camera_image", {
            **key(n), "key.frame_timestamp_micros": pa.array(stamps, pa.int64()),
            "key.camera_name": pa.array(names, pa.int8()),
            f"{ci}.image": pa.array(images, pa.binary()),
            f"{ci}.pose.transform": pa.array(poses, t16),
            **{f"{ci}.velocity.linear_velocity.{a}": pa.array([0.0] * n, pa.float32()) for a in "xyz"},
            **{f"{ci}.velocity.angular_velocity.{a}": pa.array([0.0] * n, pa.float64()) for a in "xyz"},
            f"{ci}.pose_timestamp": pa.array([s * 1e-6 for s in stamps], pa.float64()),
            **{f"{ci}.rolling_shutter_params.{p}": pa.array([s * 1e-6 for s in stamps], pa.float64())
               for p in ("camera_trigger_time", "camera_readout_done_time")},
            f"{ci}.rolling_shutter_params.shutter": pa.array([0.0] * n, pa.float64()),
        })


def waymo_segment_name(sequence: str, n: int = 0) -> str:
    """A Waymo-style ``segment_context_name`` (``<19 digits>_<start>_000_<end>_000``) derived from ``sequence``."""
    digits = int(hashlib.md5(sequence.encode()).hexdigest(), 16) % 10**19
    start = 1000 + 20 * n
    return f"{digits:019d}_{start}_000_{start + 20}_000"


def _default_extrinsic(columns: int) -> np.ndarray:
    """TOP lidar mount whose yaw puts azimuth bin ``k`` of a ``columns``-bin spinning sensor (azimuth ``k 2pi / W``)
    exactly on range-image column ``W//2 - k``: yaw ``pi - (W//2 + 0.5) 2pi / W`` (``-pi / W`` for even W)."""
    d = 2 * np.pi / columns
    yaw = np.pi - (columns // 2 + 0.5) * d
    m = np.eye(4)
    m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    m[:3, 3] = WAYMO_TOP_POSITION
    return m


def _range_images(f: Frame, ring: np.ndarray, beams: int, columns: int, extrinsic: np.ndarray,
                  raw: np.ndarray | None, where: str) -> tuple[np.ndarray, ...]:
    """Return-1 / return-2 range images (H, W, 4) and segmentation images (H, W, 2) of one frame."""
    xyz = f.points[:, :3].astype(np.float64)
    r = np.linalg.norm(xyz, axis=1)
    if (r <= 0).any():
        raise ValueError(f"{where}: a point at the sensor origin has no range image pixel")
    yaw = np.arctan2(extrinsic[1, 0], extrinsic[0, 0])
    az_vehicle = np.arctan2(xyz[:, 1], xyz[:, 0]) + yaw
    col = np.mod(np.rint((np.pi - az_vehicle) / (2 * np.pi / columns) - 0.5).astype(np.int64), columns)
    cell = ring * columns + col
    order = np.lexsort((r, cell))  # per cell, the nearest return first
    cell_sorted = cell[order]
    first = np.ones(len(order), bool)
    first[1:] = cell_sorted[1:] != cell_sorted[:-1]
    rank = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    if len(rank) and rank.max() > 1:
        raise ValueError(f"{where}: more than two points fall in one range-image pixel (a pixel holds two returns)")
    ri = np.zeros((2, beams * columns, 4), np.float32)
    seg = np.zeros((2, beams * columns, 2), np.int32)
    ret = rank
    ri[ret, cell_sorted, 0] = r[order]
    ri[ret, cell_sorted, 1] = f.points[order, 3]
    if raw is not None:
        inst = np.zeros(f.num_points, np.int64) if f.instances is None else f.instances
        seg[ret, cell_sorted, 0] = inst[order]
        seg[ret, cell_sorted, 1] = raw[order]
    shape = (beams, columns)
    return (ri[0].reshape(*shape, 4), ri[1].reshape(*shape, 4), seg[0].reshape(*shape, 2), seg[1].reshape(*shape, 2))


def write_waymo(
    frames: Sequence[Frame],
    root: str | Path,
    split: str = "train",
    columns: int = 2650,
    beams: int | None = None,
    lidar_to_vehicle: np.ndarray | None = None,
    inverse_lut: np.ndarray | None = None,
    segment_names: Mapping[str, str] | None = None,
    components: Collection[str] = WAYMO_COMPONENTS,
    jpeg_quality: int = 95,
) -> dict[str, str]:
    """Write frames as Waymo v2 segments (one per ``frame.sequence``) under ``root/<split dir>`` (TOP lidar only).

    Frames hold a spinning LiDAR's points in its own frame with ``frame.extra["ring"]`` (beam, 0 = top). Each point
    becomes a pixel of a ``beams x columns`` TOP range image: row = ring, column from its azimuth by the reader's
    formula (azimuth of column ``c`` is ``pi - (c + 0.5) 2pi / W`` in the vehicle frame), range = its distance; the
    nearer of two points in one pixel goes to return 1, the other to return 2, and a third is an error. The beam
    inclinations written (``beam_inclination.values``) are each ring's mean elevation (rings without points
    interpolated). With the default mount (:func:`_default_extrinsic`: yaw aligned to ``columns`` bins, position
    :data:`WAYMO_TOP_POSITION`) the points of a ``columns``-bin sensor are reproduced exactly (up to float32); other
    points move to their pixel's azimuth (at most half a column).

    The reader returns vehicle-frame points (``lidar_to_vehicle @ p``), so ``world_from_vehicle`` is written as
    ``frame.pose @ lidar_to_vehicle^-1`` and each camera's camera -> vehicle extrinsic as
    ``lidar_to_vehicle @ lidar_to_camera^-1 @ A`` (``A``: our camera axes -> Waymo's). ``CameraView.name`` must be a
    Waymo camera name (FRONT, FRONT_LEFT, FRONT_RIGHT, SIDE_LEFT, SIDE_RIGHT); images may differ in size, as Waymo's
    do. Labels are Waymo training ids turned into segmentation ids (default ``id + 1``, ignore -> 0 undefined);
    frames without labels get no ``lidar_segmentation`` row. ``components`` chooses what is written (e.g.
    :data:`WAYMO_LIDAR_COMPONENTS` for a LiDAR-only download). Returns ``frame.sequence -> segment name``.
    """
    if split not in SPLIT_DIRS:
        raise ValueError(f"split must be one of {list(SPLIT_DIRS)}, got {split!r}")
    inv = _inverse_lut(WAYMO_LEARNING_MAP, 22) if inverse_lut is None else np.asarray(inverse_lut, dtype=np.int64)
    ext = _default_extrinsic(columns) if lidar_to_vehicle is None else check_rigid(lidar_to_vehicle, "lidar_to_vehicle")
    groups = group_by_sequence(frames)
    validate_frames(groups, inv)
    names = {s: (segment_names or {}).get(s) or waymo_segment_name(s, n) for n, s in enumerate(groups)}
    base = Path(root) / SPLIT_DIRS[split]
    check_fresh([base / c / f"{names[s]}.parquet" for s in groups for c in components],
                "a segment is written once, whole")
    ext_inv = invert_rigid(ext)
    segments = []
    for seq, fs in groups.items():
        stamps = [int(round(f.timestamp * 1e6)) for f in fs]
        if len(set(stamps)) != len(stamps):
            raise ValueError(f"sequence {seq!r}: frames share a timestamp (microseconds {stamps}); Waymo keys frames "
                             "by timestamp")
        rings = []
        for f in fs:
            ring = np.asarray(f.extra.get("ring", []), dtype=np.int64)
            if ring.shape != (f.num_points,) or (len(ring) and ring.min() < 0):
                raise ValueError(f"sequence {seq!r} frame {f.index}: write_waymo needs extra['ring'] (beam index >= 0, "
                                 "0 = top) for every point")
            rings.append(ring)
        h = beams if beams is not None else int(max((r.max() for r in rings if len(r)), default=0)) + 1
        if any(len(r) and r.max() >= h for r in rings):
            raise ValueError(f"sequence {seq!r}: ring ids exceed beams={h}")
        # per-ring mean elevation over the sequence (rows without points interpolated), top beam first
        elev_sum, elev_n = np.zeros(h), np.zeros(h)
        for f, ring in zip(fs, rings):
            xyz = f.points[:, :3].astype(np.float64)
            e = np.arctan2(xyz[:, 2], np.linalg.norm(xyz[:, :2], axis=1))
            elev_sum += np.bincount(ring, e, minlength=h)
            elev_n += np.bincount(ring, minlength=h)
        have = elev_n > 0
        if not have.any():
            raise ValueError(f"sequence {seq!r}: no points to write")
        incl = np.interp(np.arange(h), np.flatnonzero(have), elev_sum[have] / elev_n[have])
        if h > 1 and not (np.diff(incl) < 0).all():
            raise ValueError(f"sequence {seq!r}: ring elevations must decrease from ring 0 (top) down, got {incl}")
        r1, r2, s1, s2 = [], [], {}, {}
        for j, (f, ring) in enumerate(zip(fs, rings)):
            where = f"sequence {seq!r} frame {f.index}"
            raw = None if f.labels is None else raw_labels(f.labels, inv, where)
            a, b, sa, sb = _range_images(f, ring, h, columns, ext, raw, where)
            r1.append(a)
            r2.append(b)
            if raw is not None:
                s1[j], s2[j] = sa, sb
        cams: dict[str, WaymoCamera] = {}
        for f in fs:
            for cam in f.cameras:
                if cam.name not in _CAMERA_IDS:
                    raise ValueError(f"sequence {seq!r} frame {f.index}: camera {cam.name!r} is not a Waymo camera "
                                     f"({', '.join(_CAMERA_IDS)})")
                k = np.asarray(cam.intrinsics, float)
                c2v = ext @ invert_rigid(cam.lidar_to_camera) @ WAYMO_TO_OPENCV_CAMERA
                entry = cams.setdefault(cam.name, WaymoCamera(_CAMERA_IDS[cam.name],
                                                              (k[0, 0], k[1, 1], k[0, 2], k[1, 2]), c2v,
                                                              (cam.height, cam.width)))
                if entry.size != (cam.height, cam.width) or not np.allclose(entry.camera_to_vehicle, c2v, atol=1e-9):
                    raise ValueError(f"sequence {seq!r} frame {f.index}: camera {cam.name} calibration or size changes "
                                     "within the segment; Waymo stores one per segment")
                entry.images.append(cam.image)
        for name, c in cams.items():
            if len(c.images) != len(fs):
                raise ValueError(f"sequence {seq!r}: camera {name} is missing from some frames")
        segments.append(WaymoSegment(
            name=names[seq], timestamps=stamps,
            lasers=[WaymoLaser(1, ext, float(incl.min()), float(incl.max()), incl[::-1].tolist(), r1, r2)],
            poses=[np.asarray(f.pose, float) @ ext_inv for f in fs], segmentation=s1, segmentation2=s2,
            cameras=sorted(cams.values(), key=lambda c: c.camera)))
    for seg in segments:
        write_waymo_segment(root, seg, SPLIT_DIRS[split], components, jpeg_quality=jpeg_quality)
    return names
