"""Writers of every supported dataset's official on-disk layout, and synthetic samples in those layouts.

Each writer validates every frame before writing anything, writes each file atomically (:mod:`largead.fileio`),
refuses a root that already holds what it would write, and is the inverse of its reader: ``reader(write(frames))``
gives back the points, labels (through the benchmark's class map), poses, timestamps and cameras, up to float
precision, JPEG compression and the quantisation the format imposes (Waymo range images). The layouts, with their
sources, are in each module's docstring and in ``docs/datasets.md``.

- :mod:`.nuscenes`: :func:`write_nuscenes` (v1.0 tables, keyframes and sweeps, six cameras, lidarseg add-on).
- :mod:`.kitti`: :func:`write_semantickitti`, :func:`write_scribblekitti`.
- :mod:`.waymo`: :func:`write_waymo` (frames -> range images), :func:`write_waymo_segment` (given range images).
- :mod:`.family`: :func:`write_rellis3d`, :func:`write_semanticposs`, :func:`write_semanticstf`,
  :func:`write_synlidar`, :func:`write_daps3d`, :func:`write_synth4d`.
- :mod:`.corrupted`: :func:`write_nuscenes_c`, :func:`write_semantickitti_c` (Robo3D layouts from a clean root).
- :mod:`.samples`: :func:`write_official_samples` (all of the above from the synthetic world, for tests and dry runs).
"""

from largead.data.export.corrupted import write_nuscenes_c, write_semantickitti_c
from largead.data.export.family import (
    write_daps3d,
    write_rellis3d,
    write_semanticposs,
    write_semanticstf,
    write_synlidar,
    write_synth4d,
)
from largead.data.export.kitti import KITTI_DEFAULT_INTRINSICS, write_scribblekitti, write_semantickitti
from largead.data.export.nuscenes import CAMERA_EGO_MOTION, NUSCENES_LIDAR_TO_EGO, write_nuscenes
from largead.data.export.samples import (
    OFFICIAL_SAMPLES,
    OfficialSample,
    SampleSize,
    write_official_sample,
    write_official_samples,
)
from largead.data.export.waymo import (
    WAYMO_COMPONENTS,
    WAYMO_LIDAR_COMPONENTS,
    WaymoCamera,
    WaymoLaser,
    WaymoSegment,
    write_waymo,
    write_waymo_segment,
)

__all__ = [
    "CAMERA_EGO_MOTION",
    "KITTI_DEFAULT_INTRINSICS",
    "NUSCENES_LIDAR_TO_EGO",
    "OFFICIAL_SAMPLES",
    "WAYMO_COMPONENTS",
    "WAYMO_LIDAR_COMPONENTS",
    "OfficialSample",
    "SampleSize",
    "WaymoCamera",
    "WaymoLaser",
    "WaymoSegment",
    "write_daps3d",
    "write_nuscenes",
    "write_nuscenes_c",
    "write_official_sample",
    "write_official_samples",
    "write_rellis3d",
    "write_scribblekitti",
    "write_semantickitti",
    "write_semantickitti_c",
    "write_semanticposs",
    "write_semanticstf",
    "write_synlidar",
    "write_synth4d",
    "write_waymo",
    "write_waymo_segment",
]
