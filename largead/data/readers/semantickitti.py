"""SemanticKITTI reader.

Layout (semantic-kitti-api README; KITTI odometry for ``calib.txt``, ``times.txt`` and ``image_2``)::

    <root>/sequences/XX/velodyne/NNNNNN.bin   # float32 x 4: x, y, z, remission 0-1            (required)
    <root>/sequences/XX/labels/NNNNNN.label   # uint32: semantic id | instance id << 16         (train / val)
    <root>/sequences/XX/poses.txt             # camera-0 poses, 12 floats a line              (temporal use)
    <root>/sequences/XX/calib.txt             # P0..P3, Tr (velodyne -> camera 0)             (cameras, poses)
    <root>/sequences/XX/times.txt             # seconds, one a line                           (optional)
    <root>/sequences/XX/image_2/NNNNNN.png    # left colour camera                            (cameras=True)

The semantic-kitti-api layout (``velodyne/``, ``labels/``, ``poses.txt``) is enough for LiDAR-only use; ``calib.txt``
and ``times.txt`` come with KITTI odometry's calibration download. Which option needs which file:

- ``cameras=True`` needs ``calib.txt`` (``P2`` and ``Tr``) and ``image_2/``;
- poses need ``poses.txt`` and ``calib.txt`` (its ``Tr`` turns the camera-0 poses into LiDAR poses): ``poses=True``
  requires them, ``poses=None`` (default) reads them where both exist, ``poses=False`` never does. A sequence
  without poses gives ``pose = identity`` and its frames have no temporal successor: :meth:`next_index` raises,
  naming the missing file, because temporal pairs (the temporal pretraining objective) need the LiDAR poses;
- ``times.txt`` is optional (without it ``timestamp = 0.0``);
- ``labels/`` (the ``label_dir`` option) is required for the train and val splits.

Labels are mapped through the learning map to 0..18 / -1. Splits as SemanticKITTI / SLidR: train 00-07, 09, 10;
val 08; test 11-21 (no labels). Poses: the LiDAR-to-world pose is ``Tr^-1 @ pose @ Tr``
(:func:`~largead.data.geometry.kitti_lidar_poses`), whose world frame is the LiDAR frame of the first scan. Cameras:
``image_2`` with intrinsics and rigid ``lidar_to_camera`` split out of ``P2 @ Tr``
(:func:`~largead.data.geometry.kitti_lidar_to_camera`). ``frame.token`` is ``"XX/NNNNNN"``, the camera token
``"XX/image_2/NNNNNN"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from largead.data.frame import CameraView, Frame
from largead.data.geometry import kitti_lidar_poses, kitti_lidar_to_camera
from largead.data.labels import SEMANTICKITTI_CLASSES, apply_lut, semantickitti_lut
from largead.data.readers._kitti_io import (
    present_sequences,
    read_bin,
    read_calib,
    read_image,
    read_label,
    read_poses,
    read_times,
)
from largead.data.registry import LidarDataset, register_dataset

SEMANTICKITTI_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "val": ("08",),
    "test": tuple(f"{s:02d}" for s in range(11, 22)),
}
"""Sequence folders of each split (official)."""


@register_dataset("semantickitti")
class SemanticKITTIDataset(LidarDataset):
    """SemanticKITTI scans (see the module docstring).

    Args:
        root: folder holding ``sequences/`` (or the ``sequences`` folder itself).
        split: ``train``, ``val`` or ``test``.
        cameras: attach ``image_2`` as a camera view.
        sequences: override the split's sequence folders (e.g. ``("00",)``).
        label_dir: folder next to ``velodyne/`` holding the ``.label`` files (default ``labels``); readers of
            datasets that ship other labels for the same scans (ScribbleKITTI's ``scribbles``) pass theirs.
        poses: ``True`` requires ``poses.txt`` + ``calib.txt``; ``None`` reads them where present; ``False`` never
            (see the module docstring).

    Sequences of the split that are absent on disk are skipped with a warning and listed in
    ``missing_sequences``; an error is raised if none is present.
    """

    class_names: ClassVar[tuple[str, ...]] = SEMANTICKITTI_CLASSES
    has_cameras: ClassVar[bool] = True
    temporal: ClassVar[bool] = True
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    label_fraction_unit: ClassVar[str] = "frame"

    def __init__(self, root: str | Path | None, split: str = "train", cameras: bool = False,
                 sequences: Sequence[str] | None = None, label_dir: str = "labels",
                 poses: bool | None = None) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name} has no split {split!r}; available: {', '.join(self.splits)}")
        if root is None:
            raise ValueError(f"{self.name}: root (the folder holding sequences/) is required")
        if poses not in (None, True, False):
            raise ValueError(f"{self.name}: poses must be True, False or None (read where present), got {poses!r}")
        base = Path(root)
        seq_root = base if base.name == "sequences" else base / "sequences"
        if not seq_root.is_dir():
            raise FileNotFoundError(f"{seq_root}: SemanticKITTI sequences folder not found (expected "
                                    "<root>/sequences/XX/velodyne/)")
        self.root = seq_root
        self.split = split
        self.load_cameras = cameras
        self.has_labels = split != "test"
        self.label_dir = label_dir
        wanted = tuple(sequences) if sequences is not None else SEMANTICKITTI_SPLITS[split]
        present, missing = present_sequences(seq_root, wanted, split, marker="velodyne", required=True,
                                             who=self.name)
        self.missing_sequences = tuple(missing)
        self._lut = semantickitti_lut()
        self._files: list[Path] = []
        self._seq: list[str] = []
        self._pos: list[int] = []
        self._poses: list[np.ndarray] = []
        self._times: list[float] = []
        self._calib: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # seq -> (K, lidar_to_camera)
        self._no_poses: dict[str, str] = {}  # seq -> why it has no poses
        for s in sorted(present):
            d = seq_root / s
            files = sorted((d / "velodyne").glob("*.bin"))
            if not files:
                raise FileNotFoundError(f"{d / 'velodyne'}: no .bin scans")
            if self.has_labels and not (d / label_dir).is_dir():
                raise FileNotFoundError(f"{d / label_dir}: label folder not found (split {split!r} is labelled; "
                                        f"expected {label_dir}/NNNNNN.label beside velodyne/)")
            calib_path, poses_path = d / "calib.txt", d / "poses.txt"
            need_calib = cameras or poses is True
            if need_calib and not calib_path.is_file():
                why = "cameras=True (P2, Tr)" if cameras else "poses=True (Tr turns camera-0 poses into LiDAR poses)"
                raise FileNotFoundError(f"{calib_path}: calibration file not found; needed for {why}")
            wants_tr = need_calib or (poses is None and poses_path.is_file())  # Tr turns camera poses into LiDAR ones
            calib = read_calib(calib_path) if calib_path.is_file() and wants_tr else {}
            tr = None
            if calib:
                if "Tr" not in calib:
                    raise ValueError(f"{calib_path}: no 'Tr' (velodyne to camera 0) entry")
                tr = np.vstack([calib["Tr"], [0, 0, 0, 1]])
            if cameras:
                if "P2" not in calib:
                    raise ValueError(f"{calib_path}: no 'P2' entry (needed for cameras=True)")
                self._calib[s] = kitti_lidar_to_camera(tr, calib["P2"], what=str(calib_path))
            if poses is True and not poses_path.is_file():
                raise FileNotFoundError(f"{poses_path}: poses file not found; needed for poses=True (temporal use)")
            if poses is False:
                self._no_poses[s] = "poses=False"
            elif not poses_path.is_file():
                self._no_poses[s] = f"{poses_path} not found"
            elif tr is None:
                self._no_poses[s] = f"{calib_path} not found (its Tr turns the camera-0 poses into LiDAR poses)"
            if s in self._no_poses:
                self._poses.extend([np.eye(4)] * len(files))
            else:
                cam_poses = read_poses(poses_path)
                if len(cam_poses) != len(files):
                    raise ValueError(f"{poses_path}: has {len(cam_poses)} entries but velodyne/ has {len(files)} scans")
                self._poses.extend(kitti_lidar_poses(cam_poses, tr))
            times_path = d / "times.txt"
            if times_path.is_file():
                times = read_times(times_path)
                if len(times) != len(files):
                    raise ValueError(f"{times_path}: has {len(times)} entries but velodyne/ has {len(files)} scans")
                self._times.extend(times.tolist())
            else:
                self._times.extend([0.0] * len(files))
            self._files.extend(files)
            self._seq.extend([s] * len(files))
            self._pos.extend(range(len(files)))

    @property
    def has_poses(self) -> bool:
        """Whether every sequence read has LiDAR poses (``poses.txt`` + ``calib.txt``)."""
        return not self._no_poses

    def __len__(self) -> int:
        return len(self._files)

    def sequence_of(self, i: int) -> tuple[str, int]:
        return self._seq[i], self._pos[i]

    def next_index(self, i: int, n: int = 1) -> int | None:
        """Index of the scan ``n`` after scan ``i`` in the same sequence, or ``None``.

        Raises ``ValueError`` when the sequence has no poses: a temporal pair is only usable with both poses.
        """
        seq = self._seq[i]
        if seq in self._no_poses:
            raise ValueError(f"{self.name}: sequence {seq} has no LiDAR poses ({self._no_poses[seq]}); temporal "
                             "pairs need poses.txt and calib.txt (Tr) in the sequence folder, or turn the temporal "
                             "objective off")
        j = i + n
        if 0 <= j < len(self) and self._seq[j] == self._seq[i] and self._pos[j] == self._pos[i] + n:
            return j
        return None

    def label_path(self, i: int) -> Path:
        """Path of the ``.label`` file of frame ``i``: ``<sequence>/<label_dir>/NNNNNN.label`` (may not exist)."""
        path = self._files[i]
        return path.parent.parent / self.label_dir / f"{path.stem}.label"

    def frame(self, i: int) -> Frame:
        path = self._files[i]
        seq, pos = self._seq[i], self._pos[i]
        points = read_bin(path, columns=4, dtype=np.float32)
        labels = instances = None
        if self.has_labels:
            sem, inst = read_label(self.label_path(i), len(points))
            labels, instances = apply_lut(self._lut, sem), inst
        cams: list[CameraView] = []
        if self.load_cameras:
            image = read_image(path.parent.parent / "image_2" / f"{path.stem}.png")
            k, l2c = self._calib[seq]
            cams.append(CameraView(image=image, intrinsics=k, lidar_to_camera=l2c, name="image_2",
                                   token=f"{seq}/image_2/{path.stem}"))
        frame = Frame(points=points, labels=labels, instances=instances, pose=self._poses[i],
                      timestamp=self._times[i], sequence=seq, index=pos, dataset=self.name,
                      token=f"{seq}/{path.stem}", cameras=cams)
        return frame.validate(str(path))
