"""The one frame model every reader returns.

A :class:`Frame` is one LiDAR sweep with everything pretraining and evaluation need: the points in the LiDAR frame,
per-point labels already mapped to the dataset's training ids, the LiDAR-to-global pose, and zero or more calibrated
camera views. Readers differ only in how they parse files into this structure.

Conventions (relied on across the package):

- ``points``: ``(N, 4)`` float32 ``x, y, z, intensity`` in the LiDAR frame, metres. Intensity is kept on the
  dataset's own scale (nuScenes 0-255, SemanticKITTI 0-1); per-dataset normalisation happens in the pipeline.
- ``labels``: ``(N,)`` int64 training ids ``0 .. C-1``; :data:`IGNORE_INDEX` (-1) marks points that are not
  evaluated (unlabelled, noise, classes outside the benchmark).
- ``instances``: ``(N,)`` int64 instance ids, 0 for "no instance".
- ``pose``: ``(4, 4)`` float64 LiDAR-to-global transform at the sweep's timestamp.
- ``CameraView.lidar_to_camera``: ``(4, 4)`` float64 mapping LiDAR-frame points at the sweep's time to the camera
  frame at the image's time (for nuScenes it already folds in the ego motion between the two timestamps);
  ``intrinsics`` is the 3x3 pinhole matrix; camera axes are x right, y down, z forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE_INDEX = -1
"""Label value of points that are not evaluated and carry no training signal."""


@dataclass
class CameraView:
    """One calibrated image taken with (or near) the sweep."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    intrinsics: np.ndarray  # (3, 3) float64
    lidar_to_camera: np.ndarray  # (4, 4) float64
    name: str = ""  # e.g. "CAM_FRONT", "image_2"
    token: str = ""  # stable id of the image (nuScenes camera sample_data token); names superpixel files
    instance_mask: np.ndarray | None = None  # (H, W) int32 per-pixel instance ids (synthetic world only)
    semantic_mask: np.ndarray | None = None  # (H, W) int32 per-pixel training ids (synthetic world only)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Frame:
    """One LiDAR sweep and its calibrated cameras. See the module docstring for conventions."""

    points: np.ndarray
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    timestamp: float = 0.0  # seconds
    sequence: str = ""  # scene / sequence id
    index: int = 0  # position of the sweep within its sequence
    dataset: str = ""
    token: str = ""  # stable frame id (nuScenes LIDAR_TOP sample_data token, "<seq>/<frame>" for KITTI layouts)
    cameras: list[CameraView] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def validate(self, source: str = "frame") -> Frame:
        """Check shapes, dtypes and finiteness; raise ``ValueError`` naming ``source`` and the problem."""
        from largead.data.geometry import check_rigid  # local: geometry imports this module

        pts = self.points
        if not isinstance(pts, np.ndarray) or pts.ndim != 2 or pts.shape[1] < 4:
            raise ValueError(f"{source}: points must be an (N, 4) array, got shape {getattr(pts, 'shape', None)}")
        if not np.isfinite(pts[:, :4]).all():
            bad = int((~np.isfinite(pts[:, :4])).any(axis=1).sum())
            raise ValueError(f"{source}: {bad} of {len(pts)} points have non-finite coordinates or intensity")
        n = len(pts)
        for name in ("labels", "instances"):
            arr = getattr(self, name)
            if arr is not None and (arr.ndim != 1 or len(arr) != n):
                raise ValueError(f"{source}: {name} has shape {arr.shape}, expected ({n},) to match the points")
        check_rigid(self.pose, f"{source}: pose")
        for cam in self.cameras:
            where = f"{source}: camera {cam.name or cam.token}"
            if cam.image.ndim != 3 or cam.image.shape[2] != 3 or cam.image.dtype != np.uint8:
                raise ValueError(f"{where}: image must be (H, W, 3) uint8, got {cam.image.shape} {cam.image.dtype}")
            k = np.asarray(cam.intrinsics)
            if k.shape != (3, 3) or not np.isfinite(k).all() or abs(np.linalg.det(k)) < 1e-9:
                raise ValueError(f"{where}: intrinsics must be a finite, invertible 3x3 matrix, got {k.tolist()}")
            check_rigid(cam.lidar_to_camera, f"{where}: lidar_to_camera")
        return self
