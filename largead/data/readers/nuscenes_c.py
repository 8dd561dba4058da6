"""nuScenes-C (Robo3D) reader, registered as ``"nuscenes_c"``.

Layout (ldkong1205/Robo3D ``docs/DATA_PREPARE.md``)::

    <root>/<corruption>/<light|moderate|heavy>/samples/LIDAR_TOP/<original name>.pcd.bin   # float32 x 5
    <root>/<corruption>/<light|moderate|heavy>/lidarseg/<version>/<token>_lidarseg.bin      # uint8 raw indices

The corrupted sweeps keep the original file names and tokens, so the original nuScenes tables (at
``nuscenes_root``) index them: this reader composes :class:`~largead.data.readers.nuscenes.NuScenesDataset` (split,
scene order, poses, cameras) and only redirects the point and label files to the corruption's folder. Robo3D labels
the points it adds with ids outside nuScenes' 0-31 (fog 41, snow 42, crosstalk 43): they map to ignore; any other
id above 31 is an error. Cameras are not corrupted; with ``cameras=True`` they come from the original dataset
(:meth:`~largead.data.readers.nuscenes.NuScenesDataset.camera_views`, which reads the tables and images only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from largead.data.frame import Frame
from largead.data.labels import NUSCENES_CLASSES
from largead.data.labels_extra import CORRUPTIONS, NUSCENES_C_ADDED_IDS, SEVERITIES
from largead.data.readers.nuscenes import NuScenesDataset
from largead.data.registry import LidarDataset, register_dataset


@register_dataset("nuscenes_c")
class NuScenesCDataset(LidarDataset):
    """One corruption x severity of nuScenes-C over the original nuScenes tables.

    Args:
        root: the nuScenes-C folder (holding ``<corruption>/<severity>/``).
        split: ``val`` (nuScenes-C is the validation set), ``mini_val`` or ``all`` (for small fixtures / exports).
        corruption: one of the eight Robo3D names; severity: ``light`` / ``moderate`` / ``heavy``.
        nuscenes_root: the original nuScenes ``dataroot`` (tables, and images when ``cameras=True``).
        version: table version of the original dataset; nusc: an already loaded ``NuScenes`` to share.
    """

    class_names = NUSCENES_CLASSES
    has_cameras = True
    temporal = True
    splits = ("val", "mini_val", "all")

    def __init__(self, root: str | Path | None, split: str = "val", corruption: str = "fog",
                 severity: str = "light", nuscenes_root: str | Path | None = None, version: str = "v1.0-trainval",
                 cameras: bool = False, nusc: Any = None) -> None:
        if split not in self.splits:
            raise ValueError(f"nuscenes_c has no split {split!r}; available: {', '.join(self.splits)}")
        if root is None:
            raise ValueError("nuscenes_c: root (the nuScenes-C folder) is required")
        if corruption not in CORRUPTIONS:
            raise ValueError(f"nuscenes_c: corruption must be one of {CORRUPTIONS}, got {corruption!r}")
        if severity not in SEVERITIES:
            raise ValueError(f"nuscenes_c: severity must be one of {SEVERITIES}, got {severity!r}")
        if nuscenes_root is None and nusc is None:
            raise ValueError("nuscenes_c: nuscenes_root (the original nuScenes dataroot with its tables) is required")
        self.corruption, self.severity = corruption, severity
        self.corrupt_root = Path(root) / corruption / severity
        if not self.corrupt_root.is_dir():
            raise FileNotFoundError(f"{self.corrupt_root}: nuScenes-C folder for {corruption}/{severity} not found")
        self.base = NuScenesDataset(nuscenes_root, split, version=version, cameras=cameras, nusc=nusc)
        self.split = split
        self.load_cameras = cameras

    def __len__(self) -> int:
        return len(self.base)

    def sequence_of(self, i: int) -> tuple[str, int]:
        return self.base.sequence_of(i)

    def next_index(self, i: int, n: int = 1) -> int | None:
        return self.base.next_index(i, n)

    def frame(self, i: int) -> Frame:
        base = self.base
        token = base.lidar_token(i)
        pc_path, points, ring, labels = base.read_lidar(i, self.corrupt_root, NUSCENES_C_ADDED_IDS)
        sd = base.nusc.get("sample_data", token)
        cameras = base.camera_views(i) if self.load_cameras else []
        sample = base.nusc.get("sample", sd["sample_token"])
        seq, pos = base.sequence_of(i)
        return Frame(points=points, labels=labels, pose=base.lidar_pose(i), timestamp=sd["timestamp"] * 1e-6,
                     sequence=seq, index=pos, dataset=self.name, token=token, cameras=cameras,
                     extra={"ring": ring, "sample_token": sample["token"], "scene_token": sample["scene_token"],
                            "corruption": self.corruption, "severity": self.severity}).validate(str(pc_path))
