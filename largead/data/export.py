"""Write frames to disk in real dataset layouts (nuScenes v1.0 + lidarseg, SemanticKITTI).

Used by the test fixtures and by the synthetic world to materialise itself, so that the very same readers that open
the real datasets open it back. Both writers validate every frame before writing anything, write every file
atomically, and are the exact inverse of their reader: ``reader(write(frames))`` returns the same points, labels
(mapped through the benchmark's class map), poses, timestamps and LiDAR-to-camera transforms, up to float precision
(and JPEG compression for nuScenes images).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largead.data.frame import IGNORE_INDEX, Frame
from largead.data.geometry import (
    check_rigid,
    invert_rigid,
    matrix_to_quaternion,
)
from largead.data.labels import (
    NUSCENES_LIDARSEG_CATEGORIES,
    apply_lut,
    nuscenes_inverse_lut,
    semantickitti_inverse_lut,
)
from largead.data.readers._kitti_io import (
    atomic_write_bytes,
    write_bin,
    write_calib,
    write_label,
    write_poses,
    write_times,
)

NUSCENES_LIDAR_TO_EGO = np.array([
    [0.0, 1.0, 0.0, 0.943713],
    [-1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 1.84023],
    [0.0, 0.0, 0.0, 1.0],
])
"""Default LiDAR mounting written to ``calibrated_sensor`` (nuScenes-like: 1.84 m up, x of the LiDAR to the right)."""

KITTI_DEFAULT_INTRINSICS = np.array([[718.856, 0.0, 607.1928], [0.0, 718.856, 185.2157], [0.0, 0.0, 1.0]])
"""Intrinsics written to ``P0..P3`` when the frames carry no camera (KITTI odometry sequence 00's values)."""


def _group_by_sequence(frames: Sequence[Frame]) -> OrderedDict[str, list[Frame]]:
    groups: OrderedDict[str, list[Frame]] = OrderedDict()
    for f in frames:
        groups.setdefault(f.sequence, []).append(f)
    for seq, fs in groups.items():
        idx = [f.index for f in fs]
        if len(set(idx)) != len(idx):
            raise ValueError(f"sequence {seq!r}: frames have duplicate indices {sorted(idx)}")
        fs.sort(key=lambda f: f.index)
    return groups


def _raw_labels(labels: np.ndarray, inverse_lut: np.ndarray, where: str) -> np.ndarray:
    lab = np.asarray(labels, dtype=np.int64)
    lo, hi = IGNORE_INDEX, len(inverse_lut) - 2
    if len(lab) and (lab.min() < lo or lab.max() > hi):
        raise ValueError(f"{where}: labels must be in [{lo}, {hi}] for this label map, got [{lab.min()}, {lab.max()}]")
    return apply_lut(inverse_lut, lab + 1)


def _encode_image(image: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(image).save(buf, format=fmt, quality=quality, subsampling=0)
    else:
        Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# SemanticKITTI


def write_semantickitti(
    frames: Sequence[Frame],
    root: str | Path,
    sequence_names: dict[str, str] | None = None,
    inverse_lut: np.ndarray | None = None,
    camera: int = 0,
    write_images: bool = True,
) -> dict[str, str]:
    """Write frames as a SemanticKITTI tree ``root/sequences/XX/{velodyne,labels,image_2}``, ``calib.txt``,
    ``poses.txt``, ``times.txt``.

    Args:
        frames: frames of one or more sequences (grouped by ``frame.sequence``, ordered by ``frame.index``; file
            ``NNNNNN`` is the frame's position in its sequence).
        root: dataset root (the folder holding ``sequences/``).
        sequence_names: ``frame.sequence -> "XX"`` folder names. Default: the sequence itself if it is a 2-digit
            number, else ``"00", "01", ...`` in order of first appearance.
        inverse_lut: training id -> raw id table indexed by ``train_id + 1`` (default SemanticKITTI's
            ``learning_map_inv``, ignore -> 0 "unlabeled").
        camera: which ``frame.cameras`` entry becomes ``image_2`` (with ``P2`` and ``Tr``); its intrinsics and
            ``lidar_to_camera`` must be constant within a sequence, since KITTI stores one calibration per sequence.
        write_images: write ``image_2/NNNNNN.png`` (lossless) when frames have cameras.

    Calibration written: ``Tr = lidar_to_camera`` of the chosen camera, ``P0..P3 = K [I | 0]``, so the reader's
    ``K``, ``P2 @ Tr`` chain reproduces ``lidar_to_camera``. Poses: ``poses.txt`` holds camera-0 poses
    ``Tr @ pose @ Tr^-1``, the inverse of the reader's ``Tr^-1 @ pose_cam @ Tr``. Frames without labels get no
    ``.label`` file. Returns the ``frame.sequence -> folder`` mapping used.
    """
    inv = semantickitti_inverse_lut() if inverse_lut is None else np.asarray(inverse_lut, dtype=np.int64)
    groups = _group_by_sequence(frames)
    names: dict[str, str] = {}
    for n, seq in enumerate(groups):
        if sequence_names is not None:
            if seq not in sequence_names:
                raise KeyError(f"sequence_names has no entry for sequence {seq!r}")
            names[seq] = sequence_names[seq]
        else:
            names[seq] = seq if (len(seq) == 2 and seq.isdigit()) else f"{n:02d}"
    if len(set(names.values())) != len(names):
        raise ValueError(f"sequence folder names collide: {names}")

    # Validate everything before the first byte is written.
    calibs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for seq, fs in groups.items():
        k_ref = l2c_ref = None
        for f in fs:
            where = f"sequence {seq!r} frame {f.index}"
            f.validate(where)
            if f.labels is not None:
                _raw_labels(f.labels, inv, where)
            has_cam = len(f.cameras) > camera
            if (k_ref is not None or l2c_ref is not None) and has_cam != (k_ref is not None):
                raise ValueError(f"{where}: some frames of the sequence have camera {camera} and some do not")
            if has_cam:
                cam = f.cameras[camera]
                if k_ref is None:
                    k_ref, l2c_ref = np.asarray(cam.intrinsics, float), np.asarray(cam.lidar_to_camera, float)
                elif not (np.allclose(cam.intrinsics, k_ref, atol=1e-9) and
                          np.allclose(cam.lidar_to_camera, l2c_ref, atol=1e-9)):
                    raise ValueError(f"{where}: camera {camera} calibration differs from the sequence's first frame; "
                                     "KITTI layouts store one calibration per sequence")
        if k_ref is None:
            k_ref, l2c_ref = KITTI_DEFAULT_INTRINSICS, np.eye(4)
        calibs[seq] = (k_ref, l2c_ref)

    root = Path(root)
    for seq in groups:
        if (root / "sequences" / names[seq]).exists():
            raise FileExistsError(f"{root / 'sequences' / names[seq]}: already exists; write into a fresh root "
                                  "(left-over scans would be read as part of the sequence)")
    for seq, fs in groups.items():
        d = root / "sequences" / names[seq]
        k, tr = calibs[seq]
        p = np.hstack([k, np.zeros((3, 1))])
        write_calib(d / "calib.txt", {"P0": p, "P1": p, "P2": p, "P3": p, "Tr": tr[:3]})
        tr_inv = invert_rigid(tr)
        write_poses(d / "poses.txt", np.stack([tr @ f.pose @ tr_inv for f in fs]))
        write_times(d / "times.txt", np.array([f.timestamp for f in fs]))
        for pos, f in enumerate(fs):
            stem = f"{pos:06d}"
            write_bin(d / "velodyne" / f"{stem}.bin", f.points[:, :4])
            if f.labels is not None:
                inst = f.instances if f.instances is not None else None
                write_label(d / "labels" / f"{stem}.label", _raw_labels(f.labels, inv, stem), inst)
            if write_images and len(f.cameras) > camera:
                atomic_write_bytes(d / "image_2" / f"{stem}.png", _encode_image(f.cameras[camera].image, "PNG"))
    return names


# ---------------------------------------------------------------------------------------------------------------
# nuScenes


def _token(*parts: object) -> str:
    """Deterministic 32-hex token (the nuScenes token format) from ``parts``."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _rigid_record(m: np.ndarray) -> dict:
    return {"translation": [float(v) for v in m[:3, 3]],
            "rotation": [float(v) for v in matrix_to_quaternion(m[:3, :3])]}


def write_nuscenes(
    frames: Sequence[Frame],
    root: str | Path,
    version: str = "v1.0-mini",
    inverse_lut: np.ndarray | None = None,
    lidar_to_ego: np.ndarray | None = None,
    camera_ego_motion: np.ndarray | None = None,
    camera_time_offset: float = 0.0,
    jpeg_quality: int = 95,
    location: str = "singapore-onenorth",
) -> None:
    """Write frames as a nuScenes ``version`` dataset with lidarseg: tables under ``root/version``, point clouds
    ``samples/LIDAR_TOP/*.pcd.bin`` (float32 x 5: x, y, z, intensity, ring), images ``samples/<CHANNEL>/*.jpg``,
    labels ``lidarseg/<version>/<token>_lidarseg.bin`` (uint8 raw category indices) and a tiny map png.

    Each ``frame.sequence`` becomes a scene of that name (use official names, e.g. ``scene-0061``, for the official
    splits to find them) and each frame a keyframe sample. ``frame.token`` (or a deterministic hash) becomes the
    LIDAR_TOP sample_data token and ``CameraView.token`` the camera sample_data token; ``CameraView.name`` is the
    camera channel (default ``CAM_<i>``). Ring ids come from ``frame.extra["ring"]`` when present, else 0.

    The calibration chain is inverted so that the devkit's chain lidar -> ego(t_lidar) -> global -> ego(t_cam) ->
    camera reproduces each ``lidar_to_camera``: the LiDAR ``calibrated_sensor`` is ``lidar_to_ego`` (default
    :data:`NUSCENES_LIDAR_TO_EGO`), the LiDAR ``ego_pose`` is ``frame.pose @ lidar_to_ego^-1``, each camera's
    ``ego_pose`` is the LiDAR's followed by ``camera_ego_motion`` (ego motion between the two timestamps, in the
    ego frame; default none) and its ``calibrated_sensor`` is ``M^-1 @ lidar_to_ego @ lidar_to_camera^-1``.
    Identical calibrations share one record. ``inverse_lut`` maps ``train_id + 1`` to the raw index written
    (default: each nuScenes class to one representative category, ignore -> 0 "noise"); frames without labels get
    no lidarseg record. ``root`` must not already hold ``version``; data files are written first and the tables
    last, so an interrupted export leaves no loadable (half-written) dataset.
    """
    inv = nuscenes_inverse_lut() if inverse_lut is None else np.asarray(inverse_lut, dtype=np.int64)
    l2e = NUSCENES_LIDAR_TO_EGO if lidar_to_ego is None else check_rigid(lidar_to_ego, "lidar_to_ego")
    motion = np.eye(4) if camera_ego_motion is None else check_rigid(camera_ego_motion, "camera_ego_motion")
    groups = _group_by_sequence(frames)
    for seq, fs in groups.items():
        for f in fs:
            where = f"scene {seq!r} frame {f.index}"
            f.validate(where)
            if f.labels is not None:
                raw = _raw_labels(f.labels, inv, where)
                if len(raw) and raw.max() > 255:
                    raise ValueError(f"{where}: raw label index {raw.max()} does not fit a uint8 lidarseg file")
    tokens = [f.token or _token("lidar", f.sequence, f.index) for f in frames]
    if len(set(tokens)) != len(tokens):
        raise ValueError("frame tokens are not unique")

    root = Path(root)
    if (root / version).exists() or (root / "lidarseg" / version).exists():
        raise FileExistsError(f"{root / version}: a nuScenes {version} dataset already exists there; write into a "
                              "fresh root (the devkit requires exactly one label file per lidarseg record)")
    t: dict[str, list[dict]] = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log", "scene",
        "sample", "sample_data", "sample_annotation", "map", "lidarseg")}
    for i, name in enumerate(NUSCENES_LIDARSEG_CATEGORIES):
        t["category"].append({"token": _token("category", name), "name": name, "description": name, "index": i})

    sensors: dict[str, str] = {}

    def sensor_token(channel: str, modality: str) -> str:
        if channel not in sensors:
            sensors[channel] = _token("sensor", channel)
            t["sensor"].append({"token": sensors[channel], "channel": channel, "modality": modality})
        return sensors[channel]

    calib_tokens: dict[tuple, str] = {}

    def calib_token(sensor: str, m: np.ndarray, k: np.ndarray | None) -> str:
        rec = {"sensor_token": sensor, **_rigid_record(m),
               "camera_intrinsic": [] if k is None else np.asarray(k, dtype=float).tolist()}
        key = (sensor, json.dumps(rec, sort_keys=True))
        if key not in calib_tokens:
            calib_tokens[key] = _token("calibrated_sensor", *key)
            t["calibrated_sensor"].append({"token": calib_tokens[key], **rec})
        return calib_tokens[key]

    def ego_token(sd_token: str, m: np.ndarray, ts: int) -> str:
        tok = _token("ego_pose", sd_token)
        t["ego_pose"].append({"token": tok, "timestamp": ts, **_rigid_record(m)})
        return tok

    files: list[tuple[Path, bytes]] = []
    lidar_sensor = sensor_token("LIDAR_TOP", "lidar")
    lidar_calib = calib_token(lidar_sensor, l2e, None)
    l2e_inv = invert_rigid(l2e)
    motion_inv = invert_rigid(motion)
    map_token = _token("map", version)
    token_of = dict(zip((id(f) for f in frames), tokens))
    for seq, fs in groups.items():
        log_token = _token("log", seq)
        t["log"].append({"token": log_token, "logfile": f"largead-{seq}", "vehicle": "largead",
                         "date_captured": "2018-01-01", "location": location})
        scene_token = _token("scene", seq)
        sample_tokens = [_token("sample", seq, f.index) for f in fs]
        channel_chain: dict[str, list[str]] = {}  # channel -> sample_data tokens in order (prev/next links)
        sd_records: dict[str, dict] = {}
        for j, f in enumerate(fs):
            ts = int(round(f.timestamp * 1e6))
            t["sample"].append({"token": sample_tokens[j], "timestamp": ts, "scene_token": scene_token,
                                "prev": sample_tokens[j - 1] if j else "",
                                "next": sample_tokens[j + 1] if j + 1 < len(fs) else ""})
            lidar_sd = token_of[id(f)]
            ego_lidar = np.asarray(f.pose, dtype=float) @ l2e_inv
            fname = f"samples/LIDAR_TOP/{seq}__LIDAR_TOP__{ts}.pcd.bin"
            ring = np.asarray(f.extra.get("ring", np.zeros(f.num_points)), dtype=np.float32).reshape(-1, 1)
            pts5 = np.hstack([f.points[:, :4].astype(np.float32), ring])
            files.append((root / fname, pts5.tobytes()))
            sd_records[lidar_sd] = {
                "token": lidar_sd, "sample_token": sample_tokens[j],
                "ego_pose_token": ego_token(lidar_sd, ego_lidar, ts),
                "calibrated_sensor_token": lidar_calib, "timestamp": ts, "fileformat": "pcd", "is_key_frame": True,
                "height": 0, "width": 0, "filename": fname}
            channel_chain.setdefault("LIDAR_TOP", []).append(lidar_sd)
            if f.labels is not None:
                lfile = f"lidarseg/{version}/{lidar_sd}_lidarseg.bin"
                files.append((root / lfile, _raw_labels(f.labels, inv, seq).astype(np.uint8).tobytes()))
                t["lidarseg"].append({"token": lidar_sd, "sample_data_token": lidar_sd, "filename": lfile})
            cam_ts = ts + int(round(camera_time_offset * 1e6))
            for c, cam in enumerate(f.cameras):
                channel = cam.name or f"CAM_{c}"
                cam_sd = cam.token or _token("camera", seq, f.index, channel)
                cam_to_ego = motion_inv @ l2e @ invert_rigid(cam.lidar_to_camera)
                cfile = f"samples/{channel}/{seq}__{channel}__{cam_ts}.jpg"
                files.append((root / cfile, _encode_image(cam.image, "JPEG", jpeg_quality)))
                sd_records[cam_sd] = {
                    "token": cam_sd, "sample_token": sample_tokens[j],
                    "ego_pose_token": ego_token(cam_sd, ego_lidar @ motion, cam_ts),
                    "calibrated_sensor_token": calib_token(sensor_token(channel, "camera"), cam_to_ego, cam.intrinsics),
                    "timestamp": cam_ts, "fileformat": "jpg", "is_key_frame": True,
                    "height": cam.height, "width": cam.width, "filename": cfile}
                channel_chain.setdefault(channel, []).append(cam_sd)
        for chain in channel_chain.values():
            for j, tok in enumerate(chain):
                sd_records[tok]["prev"] = chain[j - 1] if j else ""
                sd_records[tok]["next"] = chain[j + 1] if j + 1 < len(chain) else ""
        if len(set(sd_records) & {r["token"] for r in t["sample_data"]}):
            raise ValueError(f"scene {seq!r}: sample_data tokens collide with another scene's")
        t["sample_data"].extend(sd_records.values())
        t["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(fs),
                           "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                           "name": seq, "description": f"largead export of sequence {seq}"})

    map_file = f"maps/{map_token}.png"
    files.append((root / map_file, _encode_image(np.zeros((8, 8, 3), dtype=np.uint8), "PNG")))
    t["map"].append({"token": map_token, "log_tokens": [r["token"] for r in t["log"]], "category": "semantic_prior",
                     "filename": map_file})
    if not t["lidarseg"]:
        del t["lidarseg"]

    for path, data in files:
        atomic_write_bytes(path, data)
    for name, records in t.items():
        atomic_write_bytes(root / version / f"{name}.json", json.dumps(records, indent=0).encode())
