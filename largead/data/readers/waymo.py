"""Waymo Open Dataset v2 (parquet components) reader, registered as ``"waymo"``.

Layout (one parquet file per segment and component)::

    <root>/<training|validation|testing>/<component>/<segment_context_name>.parquet

Components used: ``lidar`` (range images), ``lidar_calibration`` (extrinsics, beam inclinations), ``vehicle_pose``
(world-from-vehicle per frame), optionally ``lidar_segmentation`` (labels), ``lidar_pose`` (per-pixel poses of the TOP
return 1 for motion compensation), ``camera_image`` and ``camera_calibration``. Column names are the flat v2 names
``key.segment_context_name``, ``key.frame_timestamp_micros``, ``key.laser_name`` / ``key.camera_name`` and
``[ComponentClass].field.subfield`` (source: waymo-research/waymo-open-dataset ``src/waymo_open_dataset/v2/``).

Range image to points (source: ``utils/range_image_utils.py`` ``compute_inclination``, ``compute_range_image_polar``,
``compute_range_image_cartesian``; ``utils/frame_utils.py`` ``convert_range_image_to_point_cloud``):

- inclination of row ``i``: ``beam_inclination.values`` when present, else ``min + (i + 0.5) / H * (max - min)``;
  the vector is then reversed so row 0 is the highest beam;
- azimuth of column ``c``: ``((W - c - 0.5) / W * 2 - 1) * pi - atan2(E[1, 0], E[0, 0])`` with ``E`` the
  lidar-to-vehicle extrinsic (the yaw correction puts the azimuth in the vehicle frame after rotation by ``E``);
- sensor point ``r (cos i cos a, cos i sin a, sin i)``, vehicle point ``R p + t``; valid pixels have range > 0;
- TOP return 1 and 2 may be motion compensated with the per-pixel ``lidar_pose`` (roll, pitch, yaw, x, y, z, a
  world-from-vehicle pose at the pixel's time): ``p_frame = inv(world_from_vehicle) (R_pix p + t_pix)``. The
  devkit does this for the TOP lidar only, as here (``motion_compensation=True`` when the component exists).

Frame conventions: the points of a Waymo :class:`Frame` are in the **vehicle frame** (the common frame of all five
lidars; every public loader, Pointcept included, works there), so ``Frame.pose`` is ``world_from_vehicle`` and
``CameraView.lidar_to_camera`` maps vehicle-frame points into the camera. Waymo's camera frame is x forward, y left,
z up; ours is x right, y down, z forward, so ``lidar_to_camera = A @ inv(camera_to_vehicle)`` with
``A = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]`` (:data:`WAYMO_TO_OPENCV_CAMERA`). Lens distortion (k1, k2, p1, p2, k3)
and rolling shutter are ignored: the pinhole ``[[f_u, 0, c_u], [0, f_v, c_v], [0, 0, 1]]`` is used, the usual
approximation of image-to-LiDAR pretraining code.

Labels: the 23 segmentation ids become ``id - 1`` (22 classes) and 0 (undefined) becomes ignore; only TOP has labels,
so points of the other lidars are ignore when labels exist; frames without a segmentation row have ``labels=None``
(``labelled_only=True`` keeps only labelled frames, as segmentation training does). Intensity is the raw return
intensity (unbounded, mostly 0-1); ``intensity="tanh"`` applies ``tanh`` as Pointcept's Waymo preprocessing does.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from largead.data.frame import IGNORE_INDEX, CameraView, Frame
from largead.data.labels import build_lut
from largead.data.labels_extra import WAYMO_CLASSES, WAYMO_LEARNING_MAP
from largead.data.readers._kitti_io import one_line
from largead.data.registry import LidarDataset, register_dataset

LASER_NAMES = {1: "TOP", 2: "FRONT", 3: "SIDE_LEFT", 4: "SIDE_RIGHT", 5: "REAR"}
CAMERA_NAMES = {1: "FRONT", 2: "FRONT_LEFT", 3: "FRONT_RIGHT", 4: "SIDE_LEFT", 5: "SIDE_RIGHT"}
SPLIT_DIRS = {"train": "training", "val": "validation", "test": "testing"}
REQUIRED_COMPONENTS = ("lidar", "lidar_calibration", "vehicle_pose")
"""Components every use needs; ``lidar_segmentation`` (labels) and ``lidar_pose`` (motion compensation) are used
when present, the camera components with cameras."""
CAMERA_COMPONENTS = ("camera_image", "camera_calibration")

WAYMO_TO_OPENCV_CAMERA = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
"""Maps Waymo camera axes (x forward, y left, z up) to ours (x right, y down, z forward)."""

KEY_SEGMENT = "key.segment_context_name"
KEY_TIME = "key.frame_timestamp_micros"
KEY_LASER = "key.laser_name"
KEY_CAMERA = "key.camera_name"
LIDAR = "[LiDARComponent]"
CALIB = "[LiDARCalibrationComponent]"
SEG = "[LiDARSegmentationLabelComponent]"
LPOSE = "[LiDARPoseComponent]"
VPOSE = "[VehiclePoseComponent].world_from_vehicle.transform"
CAM_IMAGE = "[CameraImageComponent].image"
CAM_CALIB = "[CameraCalibrationComponent]"


# ----------------------------------------------------------------------------------------------------------- geometry
def beam_inclinations(height: int, inclination_min: float, inclination_max: float,
                      values: Sequence[float] | None = None) -> np.ndarray:
    """Per-row inclination (radians) of a range image of ``height`` rows, row 0 the highest beam.

    ``values`` (the non-uniform calibration, lowest beam first) wins when given; otherwise the rows are spread
    uniformly between ``inclination_min`` and ``inclination_max`` at bin centres. Returns ``(height,)`` float64.
    """
    if values is not None and len(values) > 0:
        incl = np.asarray(values, dtype=np.float64)
        if incl.shape != (height,):
            raise ValueError(f"beam_inclination.values has {incl.size} entries, expected {height} (range image rows)")
    else:
        incl = inclination_min + (np.arange(height, dtype=np.float64) + 0.5) / height * (inclination_max - inclination_min)
    return incl[::-1].copy()


def range_image_to_points(range_image: np.ndarray, extrinsic: np.ndarray,
                          inclinations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert a Waymo range image to vehicle-frame points.

    ``range_image``: ``(H, W, C)`` with channel 0 the range in metres; ``extrinsic``: ``(4, 4)`` lidar-to-vehicle;
    ``inclinations``: ``(H,)`` from :func:`beam_inclinations`. Returns ``xyz (M, 3)`` float64 for the pixels with
    range > 0 in row-major order, and the ``(H, W)`` bool mask of those pixels.
    """
    w = range_image.shape[1]
    ext = np.asarray(extrinsic, dtype=np.float64)
    az_correction = np.arctan2(ext[1, 0], ext[0, 0])
    azimuth = ((w - np.arange(w, dtype=np.float64) - 0.5) / w * 2.0 - 1.0) * np.pi - az_correction
    rng = range_image[..., 0].astype(np.float64)
    mask = rng > 0
    rows, cols = np.nonzero(mask)
    r = rng[rows, cols]
    incl = inclinations[rows]
    az = azimuth[cols]
    cos_i = np.cos(incl)
    sensor = np.stack([r * cos_i * np.cos(az), r * cos_i * np.sin(az), r * np.sin(incl)], axis=1)
    return sensor @ ext[:3, :3].T + ext[:3, 3], mask


def rotation_from_rpy(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` for arrays of angles, shape ``(..., 3, 3)`` (Waymo's convention)."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.stack([
        np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], axis=-1),
        np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], axis=-1),
        np.stack([-sp, cp * sr, cp * cr], axis=-1),
    ], axis=-2)


# --------------------------------------------------------------------------------------------------------- file access
def _read_table(path: str, columns: list[str], filters=None):
    """Read ``columns`` of the parquet file ``path`` (optionally filtered); errors name the file and the problem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: Waymo component file not found")
    try:
        names = set(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path}: not a readable parquet file (truncated or corrupt): {one_line(err)}") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path}: missing Waymo v2 columns {missing}; the file has {sorted(names)}")
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path}: failed to read parquet data (truncated or corrupt): {one_line(err)}") from None


def _image_cell(table, prefix: str, row: int, path: str, what: str, dtype) -> np.ndarray:
    """Row ``row`` of the range-image columns ``<prefix>.values`` / ``<prefix>.shape`` as an array of that shape.

    The flattened values are taken from the Arrow buffer without a round trip through Python lists; the element
    count must match the declared shape.
    """
    cell = table.column(f"{prefix}.values")[row]
    shape = table.column(f"{prefix}.shape")[row].as_py()
    if not cell.is_valid or shape is None:
        raise ValueError(f"{path}: {what} is null")
    arr = cell.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or int(np.prod(shape)) != arr.size:
        raise ValueError(f"{path}: {what} has {arr.size} values but its shape column says {list(shape)}")
    return arr.reshape(shape)


@register_dataset("waymo")
class WaymoDataset(LidarDataset):
    """Waymo Open Dataset v2 LiDAR segmentation frames (see the module docstring for conventions).

    Options: ``lasers`` (``("TOP",)`` by default, or ``"all"`` for the five lidars), ``returns`` (``(1, 2)``),
    ``intensity`` (``"raw"`` or ``"tanh"``), ``cameras`` (``None``, the default: load the five cameras when the
    split has both camera components, as a full download does, and none for a LiDAR-only download; ``True``:
    require them, an error names the missing component folder; ``False``: never read them), ``labelled_only``
    (keep frames with segmentation labels, as segmentation training needs: Waymo labels a subset of its frames),
    ``motion_compensation`` (TOP per-pixel poses when ``lidar_pose`` exists).

    Required components: ``lidar``, ``lidar_calibration``, ``vehicle_pose`` (each a folder of per-segment files; a
    missing folder is an error at construction naming it, a missing segment file an error at the frame naming it).
    """

    class_names = WAYMO_CLASSES
    has_cameras = True
    temporal = True
    splits = ("train", "val", "test")

    def __init__(self, root: str | None, split: str = "train", lasers: Sequence[str] | str = ("TOP",),
                 returns: Sequence[int] = (1, 2), intensity: str = "raw", cameras: bool | None = None,
                 labelled_only: bool = False, motion_compensation: bool = True, cache_segments: int = 2) -> None:
        if split not in SPLIT_DIRS:
            raise ValueError(f"waymo has no split {split!r}; available: {', '.join(SPLIT_DIRS)}")
        if root is None:
            raise ValueError("waymo: root (the directory holding training/ and validation/) is required")
        if cameras not in (None, True, False):
            raise ValueError(f"waymo: cameras must be True, False or None (when downloaded), got {cameras!r}")
        self.root = os.fspath(root)
        self.split = split
        self.split_dir = os.path.join(self.root, SPLIT_DIRS[split])
        if not os.path.isdir(self.split_dir):
            raise FileNotFoundError(f"{self.split_dir}: Waymo v2 split folder not found (expected "
                                    f"<root>/{SPLIT_DIRS[split]}/<component>/<segment>.parquet)")
        for component in REQUIRED_COMPONENTS:
            folder = os.path.join(self.split_dir, component)
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"{folder}: Waymo v2 component '{component}' not found (required: "
                                        f"{', '.join(REQUIRED_COMPONENTS)})")
        camera_folders = [os.path.join(self.split_dir, c) for c in CAMERA_COMPONENTS]
        if cameras is None:
            cameras = all(os.path.isdir(f) for f in camera_folders)
        elif cameras:
            for folder, component in zip(camera_folders, CAMERA_COMPONENTS):
                if not os.path.isdir(folder):
                    raise FileNotFoundError(f"{folder}: Waymo v2 component '{component}' not found; cameras=True "
                                            f"needs {' and '.join(CAMERA_COMPONENTS)} (v2 components are downloaded "
                                            "separately; pass cameras=False for LiDAR only)")
        names = {v: k for k, v in LASER_NAMES.items()}
        lasers = tuple(LASER_NAMES.values()) if lasers == "all" else tuple(lasers)
        unknown = [n for n in lasers if n not in names]
        if unknown:
            raise ValueError(f"waymo: unknown lasers {unknown}; choose from {list(names)} or 'all'")
        self.laser_ids = tuple(names[n] for n in lasers)
        if not set(returns) <= {1, 2} or not returns:
            raise ValueError(f"waymo: returns must be a non-empty subset of (1, 2), got {returns}")
        self.returns = tuple(returns)
        if intensity not in ("raw", "tanh"):
            raise ValueError(f"waymo: intensity must be 'raw' or 'tanh', got {intensity!r}")
        self.intensity = intensity
        self.load_cameras = cameras
        self.motion_compensation = motion_compensation
        self._lut = build_lut(WAYMO_LEARNING_MAP, 23)
        self._calib_cache: OrderedDict[str, dict] = OrderedDict()
        self._cache_size = max(1, cache_segments)
        self._build_index(labelled_only)

    # ---------------------------------------------------------------------------------------------------- index
    def _path(self, component: str, segment: str) -> str:
        return os.path.join(self.split_dir, component, f"{segment}.parquet")

    def _build_index(self, labelled_only: bool) -> None:
        lidar_dir = os.path.join(self.split_dir, "lidar")
        segments = sorted(f[: -len(".parquet")] for f in os.listdir(lidar_dir) if f.endswith(".parquet"))
        seg_col, ts_col, pos_col = [], [], []
        for seg in segments:
            # positions count every frame of the segment, so next_index follows real time steps
            all_ts = np.unique(np.asarray(_read_table(self._path("lidar", seg), [KEY_TIME])[KEY_TIME], np.int64))
            ts = all_ts
            if labelled_only:
                seg_path = self._path("lidar_segmentation", seg)
                if not os.path.isfile(seg_path):
                    continue
                labelled = np.asarray(_read_table(seg_path, [KEY_TIME])[KEY_TIME], dtype=np.int64)
                ts = ts[np.isin(ts, labelled)]
            seg_col += [seg] * len(ts)
            ts_col.append(ts)
            pos_col.append(np.searchsorted(all_ts, ts))
        self._segments = seg_col
        self._timestamps = np.concatenate(ts_col) if ts_col else np.zeros(0, np.int64)
        self._positions = np.concatenate(pos_col) if pos_col else np.zeros(0, np.int64)
        self._lookup = {(s, int(p)): i for i, (s, p) in enumerate(zip(seg_col, self._positions))}

    def __len__(self) -> int:
        return len(self._segments)

    def sequence_of(self, i: int) -> tuple[str, int]:
        return self._segments[i], int(self._positions[i])

    def next_index(self, i: int, n: int = 1) -> int | None:
        return self._lookup.get((self._segments[i], int(self._positions[i]) + n))

    # ------------------------------------------------------------------------------------------------- segments
    def _segment_calibration(self, seg: str) -> dict:
        """Lidar and camera calibration of one segment (cached for the last few segments)."""
        if seg in self._calib_cache:
            self._calib_cache.move_to_end(seg)
            return self._calib_cache[seg]
        path = self._path("lidar_calibration", seg)
        cols = [KEY_LASER, f"{CALIB}.extrinsic.transform", f"{CALIB}.beam_inclination.min",
                f"{CALIB}.beam_inclination.max", f"{CALIB}.beam_inclination.values"]
        t = _read_table(path, cols).to_pydict()
        lidars = {}
        for k, laser in enumerate(t[KEY_LASER]):
            ext = np.asarray(t[cols[1]][k], dtype=np.float64)
            if ext.size != 16:
                raise ValueError(f"{path}: laser {laser} extrinsic has {ext.size} values, expected 16")
            lidars[int(laser)] = (ext.reshape(4, 4), float(t[cols[2]][k]), float(t[cols[3]][k]), t[cols[4]][k])
        cams = {}
        if self.load_cameras:
            cpath = self._path("camera_calibration", seg)
            ccols = [KEY_CAMERA] + [f"{CAM_CALIB}.intrinsic.{f}" for f in ("f_u", "f_v", "c_u", "c_v")] + [
                f"{CAM_CALIB}.extrinsic.transform", f"{CAM_CALIB}.width", f"{CAM_CALIB}.height"]
            c = _read_table(cpath, ccols).to_pydict()
            for k, cam in enumerate(c[KEY_CAMERA]):
                fu, fv, cu, cv = (float(c[col][k]) for col in ccols[1:5])
                ext = np.asarray(c[ccols[5]][k], dtype=np.float64)
                if ext.size != 16:
                    raise ValueError(f"{cpath}: camera {cam} extrinsic has {ext.size} values, expected 16")
                cam_to_vehicle = ext.reshape(4, 4)
                k_mat = np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])
                cams[int(cam)] = (k_mat, WAYMO_TO_OPENCV_CAMERA @ np.linalg.inv(cam_to_vehicle),
                                  (int(c[ccols[7]][k]), int(c[ccols[6]][k])))
        entry = {"lidars": lidars, "cameras": cams}
        self._calib_cache[seg] = entry
        if len(self._calib_cache) > self._cache_size:
            self._calib_cache.popitem(last=False)
        return entry

    # ----------------------------------------------------------------------------------------------------- frame
    def frame(self, i: int) -> Frame:
        seg, ts = self._segments[i], int(self._timestamps[i])
        calib = self._segment_calibration(seg)
        where = [(KEY_TIME, "==", ts)]

        ppath = self._path("vehicle_pose", seg)
        prow = _read_table(ppath, [VPOSE], filters=where).column(VPOSE).to_pylist()
        if len(prow) != 1 or len(prow[0]) != 16:
            raise ValueError(f"{ppath}: expected one 16-value world_from_vehicle row for timestamp {ts}, got {prow}")
        pose = np.asarray(prow[0], dtype=np.float64).reshape(4, 4)

        lpath = self._path("lidar", seg)
        rcols = [f"{LIDAR}.range_image_return{r}.{p}" for r in self.returns for p in ("values", "shape")]
        lt = _read_table(lpath, [KEY_LASER] + rcols, filters=where + [(KEY_LASER, "in", list(self.laser_ids))])
        lasers = lt.column(KEY_LASER).to_numpy()
        seg_images = self._segmentation(seg, ts)
        pixel_pose = self._pixel_pose(seg, ts) if self.motion_compensation else None

        xyz_parts, inten_parts, lab_parts, inst_parts, laser_parts, ret_parts = [], [], [], [], [], []
        for k in np.argsort(lasers, kind="stable"):  # lasers in id order (TOP first), whatever the file order
            laser = int(lasers[k])
            if laser not in calib["lidars"]:
                raise ValueError(f"{self._path('lidar_calibration', seg)}: no calibration row for laser {laser}")
            ext, imin, imax, ivals = calib["lidars"][laser]
            for r in self.returns:
                ri = _image_cell(lt, f"{LIDAR}.range_image_return{r}", int(k), lpath,
                                 f"laser {LASER_NAMES.get(laser, laser)} return {r} range image", np.float32)
                if ri.shape[2] < 2:
                    raise ValueError(f"{lpath}: range image has {ri.shape[2]} channels, expected >= 2 (range, intensity)")
                incl = beam_inclinations(ri.shape[0], imin, imax, ivals)
                xyz, mask = range_image_to_points(ri, ext, incl)
                if laser == 1 and pixel_pose is not None:
                    xyz = self._compensate(xyz, mask, pixel_pose, pose, lpath)
                xyz_parts.append(xyz)
                inten_parts.append(ri[..., 1][mask])
                laser_parts.append(np.full(len(xyz), laser, np.int8))
                ret_parts.append(np.full(len(xyz), r, np.int8))
                if seg_images is not None:
                    sem, inst = self._labels_for(seg_images, laser, r, mask, seg)
                    lab_parts.append(sem)
                    inst_parts.append(inst)
        if not xyz_parts:
            raise ValueError(f"{lpath}: no range images for lasers {self.laser_ids} at timestamp {ts}")
        intensity = np.concatenate(inten_parts).astype(np.float32)
        if self.intensity == "tanh":
            intensity = np.tanh(intensity)
        points = np.concatenate([np.concatenate(xyz_parts).astype(np.float32), intensity[:, None]], axis=1)
        labels = instances = None
        if seg_images is not None:
            labels, instances = np.concatenate(lab_parts), np.concatenate(inst_parts)
        cams = self._cameras(seg, ts, calib) if self.load_cameras else []
        return Frame(points=points, labels=labels, instances=instances, pose=pose, timestamp=ts * 1e-6,
                     sequence=seg, index=int(self._positions[i]), dataset=self.name, token=f"{seg}/{ts}",
                     cameras=cams, extra={"laser": np.concatenate(laser_parts), "return": np.concatenate(ret_parts)}
                     ).validate(lpath)

    def _segmentation(self, seg: str, ts: int) -> dict[int, np.ndarray] | None:
        """TOP segmentation images ``{return: (H, W, 2)}`` at ``ts``, or ``None`` when the frame is unlabelled."""
        path = self._path("lidar_segmentation", seg)
        if not os.path.isfile(path):
            return None
        cols = [f"{SEG}.range_image_return{r}.{p}" for r in self.returns for p in ("values", "shape")]
        t = _read_table(path, cols, filters=[(KEY_TIME, "==", ts), (KEY_LASER, "==", 1)])
        if t.num_rows == 0:
            return None
        return {r: _image_cell(t, f"{SEG}.range_image_return{r}", 0, path, f"segmentation return {r}", np.int32)
                for r in self.returns}

    def _labels_for(self, seg_images: dict[int, np.ndarray], laser: int, ret: int, mask: np.ndarray,
                    seg: str) -> tuple[np.ndarray, np.ndarray]:
        n = int(mask.sum())
        if laser != 1:
            return np.full(n, IGNORE_INDEX, np.int64), np.zeros(n, np.int64)
        img = seg_images[ret]
        if img.shape[:2] != mask.shape or img.shape[2] != 2:
            raise ValueError(f"{self._path('lidar_segmentation', seg)}: segmentation return {ret} has shape "
                             f"{list(img.shape)}, expected [{mask.shape[0]}, {mask.shape[1]}, 2] to match the range image")
        sem = img[..., 1][mask]
        if sem.size and (sem.min() < 0 or sem.max() >= len(self._lut)):
            raise ValueError(f"{self._path('lidar_segmentation', seg)}: semantic ids outside 0..22 "
                             f"(min {sem.min()}, max {sem.max()})")
        return self._lut[sem], img[..., 0][mask].astype(np.int64)

    def _pixel_pose(self, seg: str, ts: int) -> np.ndarray | None:
        path = self._path("lidar_pose", seg)
        if not os.path.isfile(path):
            return None
        cols = [f"{LPOSE}.range_image_return1.values", f"{LPOSE}.range_image_return1.shape"]
        t = _read_table(path, cols, filters=[(KEY_TIME, "==", ts), (KEY_LASER, "==", 1)])
        if t.num_rows == 0:
            return None
        img = _image_cell(t, f"{LPOSE}.range_image_return1", 0, path, "TOP per-pixel pose", np.float64)
        if img.shape[2] != 6:
            raise ValueError(f"{path}: per-pixel pose has {img.shape[2]} channels, expected 6 (roll, pitch, yaw, x, y, z)")
        return img

    @staticmethod
    def _compensate(xyz: np.ndarray, mask: np.ndarray, pixel_pose: np.ndarray, frame_pose: np.ndarray,
                    path: str) -> np.ndarray:
        """Move TOP points from each pixel's vehicle pose to the frame's vehicle pose."""
        if pixel_pose.shape[:2] != mask.shape:
            raise ValueError(f"{path}: TOP per-pixel pose is {list(pixel_pose.shape)}, range image is {list(mask.shape)}")
        pp = pixel_pose[mask]
        rot = rotation_from_rpy(pp[:, 0], pp[:, 1], pp[:, 2])
        world = np.einsum("nij,nj->ni", rot, xyz) + pp[:, 3:6]
        inv = np.linalg.inv(frame_pose)
        return world @ inv[:3, :3].T + inv[:3, 3]

    def _cameras(self, seg: str, ts: int, calib: dict) -> list[CameraView]:
        from PIL import Image

        path = self._path("camera_image", seg)
        t = _read_table(path, [KEY_CAMERA, CAM_IMAGE], filters=[(KEY_TIME, "==", ts)]).to_pydict()
        views = []
        for cam, data in sorted(zip(t[KEY_CAMERA], t[CAM_IMAGE])):
            cam = int(cam)
            if cam not in calib["cameras"]:
                raise ValueError(f"{self._path('camera_calibration', seg)}: no calibration row for camera {cam}")
            k_mat, l2c, (h, w) = calib["cameras"][cam]
            try:
                image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            except Exception as err:  # PIL raises several types for bad bytes
                raise ValueError(f"{path}: camera {CAMERA_NAMES.get(cam, cam)} image at {ts} is not a decodable "
                                 f"JPEG: {one_line(err)}") from err
            if image.shape[:2] != (h, w):
                raise ValueError(f"{path}: camera {CAMERA_NAMES.get(cam, cam)} image is {image.shape[1]}x"
                                 f"{image.shape[0]}, calibration says {w}x{h}")
            views.append(CameraView(image=image, intrinsics=k_mat, lidar_to_camera=l2c,
                                    name=CAMERA_NAMES.get(cam, str(cam)), token=f"{seg}/{ts}/{cam}"))
        return views
