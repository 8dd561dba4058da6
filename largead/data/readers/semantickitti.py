"""SemanticKITTI reader.

Layout: ``<root>/sequences/XX/velodyne/NNNNNN.bin`` (float32 x 4: x, y, z, remission 0-1),
``labels/NNNNNN.label`` (uint32: semantic id in the lower 16 bits, mapped through the learning map to 0..18 / -1;
instance id in the upper 16; the folder name is the ``label_dir`` option), ``calib.txt`` (``P0..P3``, ``Tr``),
``poses.txt`` (camera-0 poses), ``times.txt`` and ``image_2/NNNNNN.png``. Splits as SemanticKITTI / SLidR:
train 00-07, 09, 10; val 08; test 11-21 (no labels).

Poses: ``poses.txt`` holds camera-0 poses; the LiDAR-to-world pose is ``Tr^-1 @ pose @ Tr``
(:func:`~largead.data.geometry.kitti_lidar_poses`), whose world frame is the LiDAR frame of the first scan.
Cameras (``cameras=True``, used for image-to-LiDAR pretraining): ``image_2`` with intrinsics and rigid
``lidar_to_camera`` split out of ``P2 @ Tr`` (:func:`~largead.data.geometry.kitti_lidar_to_camera`).
``frame.token`` is ``"XX/NNNNNN"``, the camera token ``"XX/image_2/NNNNNN"``.
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

    Sequences of the split that are absent on disk are skipped with a warning and listed in
    ``missing_sequences``; an error is raised if none is present.
    """

    class_names: ClassVar[tuple[str, ...]] = SEMANTICKITTI_CLASSES
    has_cameras: ClassVar[bool] = True
    temporal: ClassVar[bool] = True
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    label_fraction_unit: ClassVar[str] = "frame"

    def __init__(self, root: str | Path | None, split: str = "train", cameras: bool = False,
                 sequences: Sequence[str] | None = None, label_dir: str = "labels") -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name} has no split {split!r}; available: {', '.join(self.splits)}")
        if root is None:
            raise ValueError(f"{self.name}: root (the folder holding sequences/) is required")
        base = Path(root)
        seq_root = base if base.name == "sequences" else base / "sequences"
        if not seq_root.is_dir():
            raise FileNotFoundError(f"{seq_root}: SemanticKITTI sequences folder not found")
        self.root = seq_root
        self.split = split
        self.load_cameras = cameras
        self.has_labels = split != "test"
        self.label_dir = label_dir
        wanted = tuple(sequences) if sequences is not None else SEMANTICKITTI_SPLITS[split]
        present, missing = present_sequences(seq_root, wanted, split, marker="velodyne", required=True)
        self.missing_sequences = tuple(missing)
        self._lut = semantickitti_lut()
        self._files: list[Path] = []
        self._seq: list[str] = []
        self._pos: list[int] = []
        self._poses: list[np.ndarray] = []
        self._times: list[float] = []
        self._calib: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # seq -> (Tr 4x4, K, lidar_to_cam)
        for s in sorted(present):
            d = seq_root / s
            files = sorted((d / "velodyne").glob("*.bin"))
            calib = read_calib(d / "calib.txt")
            if "Tr" not in calib:
                raise ValueError(f"{d / 'calib.txt'}: no 'Tr' (velodyne to camera 0) entry")
            tr = np.vstack([calib["Tr"], [0, 0, 0, 1]])
            k = l2c = np.eye(3)
            if cameras:
                if "P2" not in calib:
                    raise ValueError(f"{d / 'calib.txt'}: no 'P2' entry (needed for cameras=True)")
                k, l2c = kitti_lidar_to_camera(tr, calib["P2"], what=str(d / "calib.txt"))
            self._calib[s] = (tr, k, l2c)
            poses = read_poses(d / "poses.txt")
            times = read_times(d / "times.txt")
            for name, arr in (("poses.txt", poses), ("times.txt", times)):
                if len(arr) != len(files):
                    raise ValueError(f"{d / name}: has {len(arr)} entries but velodyne/ has {len(files)} scans")
            self._poses.extend(kitti_lidar_poses(poses, tr))
            self._times.extend(times.tolist())
            self._files.extend(files)
            self._seq.extend([s] * len(files))
            self._pos.extend(range(len(files)))

    def __len__(self) -> int:
        return len(self._files)

    def sequence_of(self, i: int) -> tuple[str, int]:
        return self._seq[i], self._pos[i]

    def next_index(self, i: int, n: int = 1) -> int | None:
        """Index of the scan ``n`` after scan ``i`` in the same sequence, or ``None``."""
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
            _, k, l2c = self._calib[seq]
            cams.append(CameraView(image=image, intrinsics=k, lidar_to_camera=l2c, name="image_2",
                                   token=f"{seq}/image_2/{path.stem}"))
        frame = Frame(points=points, labels=labels, instances=instances, pose=self._poses[i],
                      timestamp=self._times[i], sequence=seq, index=pos, dataset=self.name,
                      token=f"{seq}/{path.stem}", cameras=cams)
        return frame.validate(str(path))
