"""nuScenes v1.0 writer: tables, keyframes and sweeps, six cameras, the lidarseg add-on.

Layout written (nutonomy/nuscenes-devkit ``docs/schema_nuscenes.md`` and ``python-sdk/nuscenes/nuscenes.py``; the
lidarseg add-on as the devkit loads it: ``lidarseg.json`` records ``token``, ``sample_data_token``, ``filename``,
one ``lidarseg/<version>/<token>_lidarseg.bin`` (uint8 per point) per record, and ``category.json`` carrying the
``index`` of each category)::

    <root>/<version>/{category,attribute,visibility,instance,sensor,calibrated_sensor,ego_pose,log,scene,sample,
                      sample_data,sample_annotation,map,lidarseg}.json
    <root>/samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin      # keyframes, float32 x 5
    <root>/samples/CAM_*/<log>__CAM_*__<timestamp>.jpg
    <root>/sweeps/LIDAR_TOP/..., <root>/sweeps/CAM_*/...               # non-keyframes (is_key_frame = false)
    <root>/lidarseg/<version>/<lidar sample_data token>_lidarseg.bin     # keyframes only
    <root>/maps/<token>.png

Keyframe ``sample_data`` go to ``samples/``, the others to ``sweeps/`` (the devkit maintainers: "``sample_data`` that
correspond to a keyframe are stored in ``samples``, whereas the others are stored in ``sweeps``", nuscenes-devkit
issue #602). Every ``sample_data`` of a channel is chained by ``prev`` / ``next`` through keyframes and sweeps alike;
a sweep's ``sample_token`` is the keyframe sample nearest in time (issue #995: "the nearest sample which the
non-keyframe sweep is associated with"; ties go to the later one). Only keyframes form ``sample`` records and get
lidarseg labels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largead.data.export._common import (
    atomic_write_bytes,
    check_fresh,
    encode_image,
    group_by_sequence,
    raw_labels,
    token,
    validate_frames,
)
from largead.data.frame import Frame
from largead.data.geometry import check_rigid, invert_rigid, matrix_to_quaternion
from largead.data.labels import NUSCENES_LIDARSEG_CATEGORIES, nuscenes_inverse_lut

__all__ = ["CAMERA_EGO_MOTION", "NUSCENES_LIDAR_TO_EGO", "write_nuscenes"]

NUSCENES_LIDAR_TO_EGO = np.array([
    [0.0, 1.0, 0.0, 0.943713],
    [-1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 1.84023],
    [0.0, 0.0, 0.0, 1.0],
])
"""Default LiDAR mounting written to ``calibrated_sensor`` (nuScenes-like: 1.84 m up, x of the LiDAR to the right)."""

CAMERA_EGO_MOTION = np.array([
    [np.cos(0.01), -np.sin(0.01), 0.0, 0.12],
    [np.sin(0.01), np.cos(0.01), 0.0, 0.01],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
])
"""A small ego motion between LiDAR and camera timestamps (12 cm, 0.57 degrees): pass it as ``camera_ego_motion``
to exercise the devkit's full chain lidar -> ego(t_lidar) -> global -> ego(t_cam) -> camera."""

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log", "scene",
          "sample", "sample_data", "sample_annotation", "map", "lidarseg")


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
    keyframe_every: int = 1,
    lidarseg: bool = True,
) -> None:
    """Write frames as a nuScenes ``version`` dataset (see the module docstring for the layout).

    Each ``frame.sequence`` becomes a scene of that name (use official names, e.g. ``scene-0061``, for the official
    splits to find them) and each frame one LIDAR_TOP ``sample_data`` with one camera ``sample_data`` per camera.
    Frame ``j`` of a sequence (in index order) is a keyframe when ``j % keyframe_every == 0`` and a sweep otherwise
    (nuScenes: 20 Hz LiDAR, 2 Hz keyframes, so ``keyframe_every=10`` mimics it; labels of sweeps are not written).
    ``frame.token`` (or a deterministic hash) becomes the LIDAR_TOP sample_data token and ``CameraView.token`` the
    camera sample_data token; ``CameraView.name`` is the camera channel (default ``CAM_<i>``). Ring ids come from
    ``frame.extra["ring"]`` when present, else 0.

    The calibration chain is inverted so that the devkit's chain lidar -> ego(t_lidar) -> global -> ego(t_cam) ->
    camera reproduces each ``lidar_to_camera``: the LiDAR ``calibrated_sensor`` is ``lidar_to_ego`` (default
    :data:`NUSCENES_LIDAR_TO_EGO`), the LiDAR ``ego_pose`` is ``frame.pose @ lidar_to_ego^-1``, each camera's
    ``ego_pose`` is the LiDAR's followed by ``camera_ego_motion`` (ego motion between the two timestamps, in the
    ego frame; default none) and its ``calibrated_sensor`` is ``M^-1 @ lidar_to_ego @ lidar_to_camera^-1``.
    Identical calibrations share one record. ``inverse_lut`` maps ``train_id + 1`` to the raw index written
    (default: each nuScenes class to one representative category, ignore -> 0 "noise"); keyframes without labels
    get no lidarseg record. ``lidarseg=False`` writes the tables as the base nuScenes v1.0 download has them,
    without the lidarseg add-on (no ``lidarseg.json``, no label files, ``category.json`` without ``index``).

    Every frame is validated before anything is written; ``root`` must not already hold ``version``; data files
    are written first and the tables last, each atomically, so an interrupted export leaves no loadable
    (half-written) dataset.
    """
    inv = nuscenes_inverse_lut() if inverse_lut is None else np.asarray(inverse_lut, dtype=np.int64)
    l2e = NUSCENES_LIDAR_TO_EGO if lidar_to_ego is None else check_rigid(lidar_to_ego, "lidar_to_ego")
    motion = np.eye(4) if camera_ego_motion is None else check_rigid(camera_ego_motion, "camera_ego_motion")
    if int(keyframe_every) < 1:
        raise ValueError(f"keyframe_every must be >= 1, got {keyframe_every}")
    groups = group_by_sequence(frames)
    validate_frames(groups, inv, what="scene", max_raw=255)
    tokens = [f.token or token("lidar", f.sequence, f.index) for f in frames]
    if len(set(tokens)) != len(tokens):
        raise ValueError("frame tokens are not unique")

    root = Path(root)
    check_fresh([root / version, root / "lidarseg" / version],
                f"a nuScenes {version} dataset is already there; the devkit requires exactly one label file per "
                "lidarseg record")
    t: dict[str, list[dict]] = {name: [] for name in TABLES}
    for i, name in enumerate(NUSCENES_LIDARSEG_CATEGORIES):
        rec = {"token": token("category", name), "name": name, "description": name}
        t["category"].append({**rec, "index": i} if lidarseg else rec)

    sensors: dict[str, str] = {}

    def sensor_token(channel: str, modality: str) -> str:
        if channel not in sensors:
            sensors[channel] = token("sensor", channel)
            t["sensor"].append({"token": sensors[channel], "channel": channel, "modality": modality})
        return sensors[channel]

    calib_tokens: dict[tuple, str] = {}

    def calib_token(sensor: str, m: np.ndarray, k: np.ndarray | None) -> str:
        rec = {"sensor_token": sensor, **_rigid_record(m),
               "camera_intrinsic": [] if k is None else np.asarray(k, dtype=float).tolist()}
        key = (sensor, json.dumps(rec, sort_keys=True))
        if key not in calib_tokens:
            calib_tokens[key] = token("calibrated_sensor", *key)
            t["calibrated_sensor"].append({"token": calib_tokens[key], **rec})
        return calib_tokens[key]

    def ego_token(sd_token: str, m: np.ndarray, ts: int) -> str:
        tok = token("ego_pose", sd_token)
        t["ego_pose"].append({"token": tok, "timestamp": ts, **_rigid_record(m)})
        return tok

    files: list[tuple[Path, bytes]] = []
    lidar_calib = calib_token(sensor_token("LIDAR_TOP", "lidar"), l2e, None)
    l2e_inv = invert_rigid(l2e)
    motion_inv = invert_rigid(motion)
    map_token = token("map", version)
    token_of = dict(zip((id(f) for f in frames), tokens))
    all_sd: set[str] = set()
    for seq, fs in groups.items():
        logfile = f"largead-{seq}"
        log_token = token("log", seq)
        t["log"].append({"token": log_token, "logfile": logfile, "vehicle": "largead",
                         "date_captured": "2018-01-01", "location": location})
        scene_token = token("scene", seq)
        stamps = np.array([int(round(f.timestamp * 1e6)) for f in fs], dtype=np.int64)
        if len(np.unique(stamps)) != len(stamps) or (np.diff(stamps) <= 0).any():
            raise ValueError(f"scene {seq!r}: frame timestamps must increase with the frame index, got "
                             f"{stamps.tolist()}")
        key_pos = np.arange(0, len(fs), int(keyframe_every))
        sample_tokens = [token("sample", seq, fs[j].index) for j in key_pos]
        # each sample_data belongs to the keyframe sample nearest in time (ties: the later one)
        gap = np.abs(stamps[:, None] - stamps[key_pos][None, :])
        nearest = len(key_pos) - 1 - np.argmin(gap[:, ::-1], axis=1)
        for k, j in enumerate(key_pos):
            t["sample"].append({"token": sample_tokens[k], "timestamp": int(stamps[j]), "scene_token": scene_token,
                                "prev": sample_tokens[k - 1] if k else "",
                                "next": sample_tokens[k + 1] if k + 1 < len(key_pos) else ""})
        channel_chain: dict[str, list[str]] = {}  # channel -> sample_data tokens in time order (prev/next links)
        sd_records: dict[str, dict] = {}
        for j, f in enumerate(fs):
            ts = int(stamps[j])
            key = j % int(keyframe_every) == 0
            folder = "samples" if key else "sweeps"
            sample_token = sample_tokens[int(nearest[j])]
            lidar_sd = token_of[id(f)]
            ego_lidar = np.asarray(f.pose, dtype=float) @ l2e_inv
            fname = f"{folder}/LIDAR_TOP/{logfile}__LIDAR_TOP__{ts}.pcd.bin"
            ring = np.asarray(f.extra.get("ring", np.zeros(f.num_points)), dtype=np.float32).reshape(-1, 1)
            files.append((root / fname, np.hstack([f.points[:, :4].astype(np.float32), ring]).tobytes()))
            sd_records[lidar_sd] = {
                "token": lidar_sd, "sample_token": sample_token, "ego_pose_token": ego_token(lidar_sd, ego_lidar, ts),
                "calibrated_sensor_token": lidar_calib, "timestamp": ts, "fileformat": "pcd", "is_key_frame": key,
                "height": 0, "width": 0, "filename": fname}
            channel_chain.setdefault("LIDAR_TOP", []).append(lidar_sd)
            if key and lidarseg and f.labels is not None:
                lfile = f"lidarseg/{version}/{lidar_sd}_lidarseg.bin"
                files.append((root / lfile, raw_labels(f.labels, inv, seq).astype(np.uint8).tobytes()))
                t["lidarseg"].append({"token": lidar_sd, "sample_data_token": lidar_sd, "filename": lfile})
            cam_ts = ts + int(round(camera_time_offset * 1e6))
            for c, cam in enumerate(f.cameras):
                channel = cam.name or f"CAM_{c}"
                cam_sd = cam.token or token("camera", seq, f.index, channel)
                cam_to_ego = motion_inv @ l2e @ invert_rigid(cam.lidar_to_camera)
                cfile = f"{folder}/{channel}/{logfile}__{channel}__{cam_ts}.jpg"
                files.append((root / cfile, encode_image(cam.image, "JPEG", jpeg_quality)))
                sd_records[cam_sd] = {
                    "token": cam_sd, "sample_token": sample_token,
                    "ego_pose_token": ego_token(cam_sd, ego_lidar @ motion, cam_ts),
                    "calibrated_sensor_token": calib_token(sensor_token(channel, "camera"), cam_to_ego, cam.intrinsics),
                    "timestamp": cam_ts, "fileformat": "jpg", "is_key_frame": key,
                    "height": cam.height, "width": cam.width, "filename": cfile}
                channel_chain.setdefault(channel, []).append(cam_sd)
        for chain in channel_chain.values():
            for j, tok in enumerate(chain):
                sd_records[tok]["prev"] = chain[j - 1] if j else ""
                sd_records[tok]["next"] = chain[j + 1] if j + 1 < len(chain) else ""
        if all_sd & set(sd_records):
            raise ValueError(f"scene {seq!r}: sample_data tokens collide with another scene's")
        all_sd |= set(sd_records)
        t["sample_data"].extend(sd_records.values())
        t["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(key_pos),
                           "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                           "name": seq, "description": f"largead export of sequence {seq}"})

    map_file = f"maps/{map_token}.png"
    files.append((root / map_file, encode_image(np.zeros((8, 8, 3), dtype=np.uint8), "PNG")))
    t["map"].append({"token": map_token, "log_tokens": [r["token"] for r in t["log"]], "category": "semantic_prior",
                     "filename": map_file})
    if not t["lidarseg"]:
        del t["lidarseg"]

    for path, data in files:
        atomic_write_bytes(path, data)
    for name, records in t.items():
        atomic_write_bytes(root / version / f"{name}.json", json.dumps(records, indent=0).encode())
