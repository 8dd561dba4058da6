"""SemanticKITTI and ScribbleKITTI writers.

SemanticKITTI (semantic-kitti-api README "Folder structure" and ``semantic-kitti.yaml``; KITTI odometry devkit for
``calib.txt`` / ``times.txt``)::

    <root>/sequences/NN/velodyne/NNNNNN.bin     # float32 x 4: x, y, z, remission
    <root>/sequences/NN/labels/NNNNNN.label     # uint32: semantic id (lower 16 bits) | instance id << 16
    <root>/sequences/NN/image_2/NNNNNN.png      # left colour camera
    <root>/sequences/NN/calib.txt               # P0, P1, P2, P3 (3x4), Tr (velodyne -> camera 0, 3x4)
    <root>/sequences/NN/poses.txt               # camera-0 poses, 12 floats a line
    <root>/sequences/NN/times.txt               # seconds, one a line

ScribbleKITTI (ouenal/scribblekitti README) adds ``sequences/NN/scribbles/NNNNNN.label`` (same format; unannotated
points 0) for the training sequences of a full SemanticKITTI tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largead.data.export._common import (
    check_fresh,
    encode_image,
    group_by_sequence,
    raw_labels,
    validate_frames,
)
from largead.data.frame import Frame
from largead.data.geometry import invert_rigid
from largead.data.labels import semantickitti_inverse_lut
from largead.data.readers._kitti_io import (
    atomic_write_bytes,
    write_bin,
    write_calib,
    write_label,
    write_poses,
    write_times,
)

__all__ = ["KITTI_DEFAULT_INTRINSICS", "kitti_sequence_names", "scribble_mask", "write_scribblekitti",
           "write_semantickitti"]

KITTI_DEFAULT_INTRINSICS = np.array([[718.856, 0.0, 607.1928], [0.0, 718.856, 185.2157], [0.0, 0.0, 1.0]])
"""Intrinsics written to ``P0..P3`` when the frames carry no camera (KITTI odometry sequence 00's values)."""


def kitti_sequence_names(sequences: Sequence[str], sequence_names: dict[str, str] | None = None) -> dict[str, str]:
    """``frame.sequence -> "NN"`` folder names: ``sequence_names`` when given, else the sequence itself when it is a
    2-digit number, else ``00, 01, ...`` in order of appearance. Raises on collisions or missing entries."""
    names: dict[str, str] = {}
    for n, seq in enumerate(sequences):
        if sequence_names is not None:
            if seq not in sequence_names:
                raise KeyError(f"sequence_names has no entry for sequence {seq!r}")
            names[seq] = sequence_names[seq]
        else:
            names[seq] = seq if (len(seq) == 2 and seq.isdigit()) else f"{n:02d}"
    if len(set(names.values())) != len(names):
        raise ValueError(f"sequence folder names collide: {names}")
    return names


def _sequence_calibration(fs: list[Frame], seq: str, camera: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(K, lidar_to_camera, has_camera) of a sequence; KITTI stores one calibration per sequence."""
    k_ref = l2c_ref = None
    first_has = len(fs[0].cameras) > camera
    for f in fs:
        where = f"sequence {seq!r} frame {f.index}"
        has_cam = len(f.cameras) > camera
        if has_cam != first_has:
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
        return KITTI_DEFAULT_INTRINSICS, np.eye(4), False
    return k_ref, l2c_ref, True


def write_semantickitti(
    frames: Sequence[Frame],
    root: str | Path,
    sequence_names: dict[str, str] | None = None,
    inverse_lut: np.ndarray | None = None,
    camera: int = 0,
    write_images: bool = True,
    label_dir: str = "labels",
    calib: bool = True,
    poses: bool = True,
    times: bool = True,
) -> dict[str, str]:
    """Write frames as a SemanticKITTI tree (see the module docstring).

    Args:
        frames: frames of one or more sequences (grouped by ``frame.sequence``, ordered by ``frame.index``; file
            ``NNNNNN`` is the frame's position in its sequence).
        root: dataset root (the folder holding ``sequences/``).
        sequence_names: ``frame.sequence -> "NN"`` folder names (default :func:`kitti_sequence_names`).
        inverse_lut: training id -> raw id table indexed by ``train_id + 1`` (default SemanticKITTI's
            ``learning_map_inv``, ignore -> 0 "unlabeled").
        camera: which ``frame.cameras`` entry becomes ``image_2`` (with ``P2`` and ``Tr``); its intrinsics and
            ``lidar_to_camera`` must be constant within a sequence.
        write_images: write ``image_2/NNNNNN.png`` (lossless) when frames have cameras.
        label_dir: folder of the ``.label`` files (``scribbles`` for ScribbleKITTI's weak labels).
        calib, poses, times: write ``calib.txt`` / ``poses.txt`` / ``times.txt`` (switch one off to reproduce a
            partial download: the semantic-kitti-api layout has ``poses.txt`` but not the other two).

    Calibration written: ``Tr = lidar_to_camera`` of the chosen camera, ``P0..P3 = K [I | 0]``, so the reader's
    ``K``, ``P2 @ Tr`` chain reproduces ``lidar_to_camera``. Poses: ``poses.txt`` holds camera-0 poses
    ``Tr @ pose @ Tr^-1``, the inverse of the reader's ``Tr^-1 @ pose_cam @ Tr``. Frames without labels get no
    ``.label`` file. Every frame is validated before anything is written. Returns the ``frame.sequence -> folder``
    mapping used.
    """
    inv = semantickitti_inverse_lut() if inverse_lut is None else np.asarray(inverse_lut, dtype=np.int64)
    groups = group_by_sequence(frames)
    names = kitti_sequence_names(list(groups), sequence_names)
    validate_frames(groups, inv)
    calibs = {seq: _sequence_calibration(fs, seq, camera) for seq, fs in groups.items()}

    root = Path(root)
    check_fresh([root / "sequences" / names[s] for s in groups],
                "left-over scans would be read as part of the sequence")
    for seq, fs in groups.items():
        d = root / "sequences" / names[seq]
        k, tr, has_cam = calibs[seq]
        for pos, f in enumerate(fs):
            stem = f"{pos:06d}"
            write_bin(d / "velodyne" / f"{stem}.bin", f.points[:, :4])
            if f.labels is not None:
                write_label(d / label_dir / f"{stem}.label", raw_labels(f.labels, inv, stem), f.instances)
            if write_images and has_cam:
                atomic_write_bytes(d / "image_2" / f"{stem}.png", encode_image(f.cameras[camera].image, "PNG"))
        if calib:
            p = np.hstack([k, np.zeros((3, 1))])
            write_calib(d / "calib.txt", {"P0": p, "P1": p, "P2": p, "P3": p, "Tr": tr[:3]})
        if poses:
            tr_inv = invert_rigid(tr)
            write_poses(d / "poses.txt", np.stack([tr @ f.pose @ tr_inv for f in fs]))
        if times:
            write_times(d / "times.txt", np.array([f.timestamp for f in fs]))
    return names


def scribble_mask(num_points: int, keep_every: int = 4) -> np.ndarray:
    """(N,) bool: the points a synthetic scribble annotates (every ``keep_every``-th point in scan order).

    Real scribbles are strokes drawn over the scan; what the readers need is only that most points are unannotated
    (raw 0) and the rest carry dense-label ids, which this gives deterministically.
    """
    return np.arange(num_points) % int(keep_every) == 0


def write_scribblekitti(
    frames: Sequence[Frame],
    root: str | Path,
    train_sequences: Sequence[str] | None = None,
    keep_every: int = 4,
    **options,
) -> dict[str, str]:
    """Write a SemanticKITTI tree (:func:`write_semantickitti`, ``options`` go there) plus ScribbleKITTI's
    ``scribbles/NNNNNN.label`` for the training sequences: the dense raw label on :func:`scribble_mask` points,
    0 (unannotated) elsewhere; instance ids are kept on annotated points.

    ``train_sequences`` are the ``"NN"`` folders that get scribbles (default: every written folder in SemanticKITTI's
    train split, 00-07, 09, 10). Returns the ``frame.sequence -> folder`` mapping.
    """
    from largead.data.readers.semantickitti import SEMANTICKITTI_SPLITS

    names = write_semantickitti(frames, root, **options)
    inv = options.get("inverse_lut")
    inv = semantickitti_inverse_lut() if inv is None else np.asarray(inv, dtype=np.int64)
    train = set(SEMANTICKITTI_SPLITS["train"] if train_sequences is None else train_sequences)
    groups = group_by_sequence(frames)
    for seq, fs in groups.items():
        if names[seq] not in train:
            continue
        d = Path(root) / "sequences" / names[seq] / "scribbles"
        for pos, f in enumerate(fs):
            if f.labels is None:
                continue
            keep = scribble_mask(f.num_points, keep_every)
            sem = np.where(keep, raw_labels(f.labels, inv, f"{seq} {pos}"), 0)
            inst = None if f.instances is None else np.where(keep, f.instances, 0)
            write_label(d / f"{pos:06d}.label", sem, inst)
    return names
