"""Small samples of every supported dataset in its official on-disk layout, written from the synthetic world.

    >>> from largead.data.export import write_official_samples
    >>> samples = write_official_samples("/tmp/official")          # a few seconds, a few MB
    >>> s = samples["nuscenes"]
    >>> from largead.data import get_dataset
    >>> ds = get_dataset(s.dataset, s.root, "pretrain", **s.options)

Each sample is a few sequences of a few frames of the procedural world (:mod:`largead.data.synthetic`), scanned by
a sensor shaped like the dataset's (beam count and intensity scale; cameras named, placed and sized like the real
rig, scaled down) and written by the dataset's writer in :mod:`largead.data.export`. Sequence / scene names are the
official ones, so the readers' official splits find train and validation data: nuScenes scenes ``scene-0061``
(train, mini_train, SLidR's ``pretrain``), ``scene-1094`` (train, mini_train, held out by SLidR: ``pretrain_val``),
``scene-0103`` (val, mini_val); SemanticKITTI, ScribbleKITTI and DAPS-1 sequences 00-10 (train 00-07, 09, 10;
val 08); SemanticPOSS 00-05; SynLiDAR 00-12; RELLIS-3D ``00000`` (train), ``00001`` (val), ``00002`` (test);
SemanticSTF ``train``, ``val`` (with weathers) and ``test`` (no labels, as published); Synth4D ``Town03`` (train) and
``Town06`` (val); Waymo one segment in ``training`` and one in ``validation``, with labels on every other frame (as
Waymo labels a subset of frames); nuScenes-C and SemanticKITTI-C all 8 corruptions x 3 severities of the val data.

The labels are the synthetic classes written through :func:`largead.data.synthetic.export_lut`, so a reader gives
:func:`largead.data.synthetic.benchmark_lut` of the synthetic labels. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from largead.data.frame import Frame

__all__ = ["OFFICIAL_SAMPLES", "OfficialSample", "SampleSize", "write_official_sample", "write_official_samples"]


@dataclass(frozen=True)
class SampleSize:
    """How big the samples are.

    ``frames``: frames per sequence of nuScenes (keyframes), SemanticKITTI / ScribbleKITTI (sequences 00 and 08)
    and Waymo; ``transfer_frames``: frames per sequence everywhere else (>= 2 keeps temporal pairs);
    ``beams`` and ``azimuth_resolution`` (degrees): the LiDAR grid (16 x 180 gives ~2,500 points a scan);
    ``image_scale``: camera images are the real sizes times this (nuScenes 1600x900, KITTI 1241x376, Waymo 1920x1280
    front / 1920x886 side), at least 8 pixels; ``sweeps``: nuScenes sweeps between two keyframes.
    """

    frames: int = 3
    transfer_frames: int = 2
    beams: int = 16
    azimuth_resolution: float = 2.0
    image_scale: float = 1 / 20
    sweeps: int = 1
    seed: int = 0

    def image(self, width: int, height: int) -> tuple[int, int]:
        return max(8, round(height * self.image_scale)), max(8, round(width * self.image_scale))

    @property
    def columns(self) -> int:
        return round(360.0 / self.azimuth_resolution)


@dataclass(frozen=True)
class OfficialSample:
    """One written sample: open it with ``get_dataset(dataset, root, split, **options)``.

    ``splits`` gives the number of frames each split reads (with ``options``; a ``<split>_labelled`` entry counts
    the frames of ``<split>`` that have labels, for Waymo's ``labelled_only=True``); ``cameras`` the cameras per
    frame (0 for LiDAR-only datasets); ``frames`` the synthetic frames written, in writing order, with synthetic
    labels (the expected values of a round trip; empty for the corrupted sets).
    """

    key: str
    dataset: str
    root: Path
    options: dict = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    cameras: int = 0
    frames: tuple[Frame, ...] = field(default=(), repr=False, compare=False)


class _FramePool:
    """Synthetic frames per sensor profile, generated once and shared by the samples that use the same sensor."""

    def __init__(self, size: SampleSize) -> None:
        from largead.data.synthetic import SyntheticConfig, SyntheticWorld

        common = {"seed": size.seed, "beams": size.beams, "azimuth_resolution": size.azimuth_resolution,
                  "max_range": 60.0}
        n = max(size.frames * (size.sweeps + 1), size.transfer_frames, size.frames)
        self.size = size
        self.worlds = {
            "nuscenes": SyntheticWorld(SyntheticConfig(
                **common, intensity_scale=255.0, num_cameras=6, camera_layout="nuscenes",
                image_size=size.image(1600, 900), frame_interval=0.5 / (size.sweeps + 1), frames_per_sequence=n,
                tag="nuscenes")),
            "kitti": SyntheticWorld(SyntheticConfig(
                **common, intensity_scale=1.0, num_cameras=1, camera_layout="kitti",
                image_size=size.image(1241, 376), frame_interval=0.1, frames_per_sequence=n, tag="kitti")),
            "waymo": SyntheticWorld(SyntheticConfig(
                **common, intensity_scale=1.0, num_cameras=5, camera_layout="waymo",
                image_size=size.image(1920, 1280), frame_interval=0.1, frames_per_sequence=n, tag="waymo")),
            "lidar": SyntheticWorld(SyntheticConfig(
                **common, intensity_scale=1.0, num_cameras=0, frame_interval=0.1, frames_per_sequence=n,
                tag="lidar")),
        }
        self._cache: dict[tuple[str, int, int], Frame] = {}

    def sequence(self, profile: str, world_sequence: int, name: str, count: int, t0: float = 0.0) -> list[Frame]:
        """``count`` consecutive frames of world sequence ``world_sequence``, renamed ``name`` / ``0..count-1``,
        tokens cleared (writers make their own), timestamps shifted by ``t0`` seconds."""
        out = []
        for j in range(count):
            k = (profile, world_sequence, j)
            if k not in self._cache:
                self._cache[k] = self.worlds[profile].frame(world_sequence, j)
            f = self._cache[k]
            out.append(dataclasses.replace(
                f, sequence=name, index=j, token="", timestamp=t0 + f.timestamp, extra=dict(f.extra),
                cameras=[dataclasses.replace(c, token="") for c in f.cameras]))
        return out


# -------------------------------------------------------------------------------------------------------- builders
NUSCENES_SCENES = ("scene-0061", "scene-1094", "scene-0103")
LIDAR_WORLD = 300
"""World sequences ``300 + s`` feed sequence ``s`` of every LiDAR-only sample: the transfer datasets share their
scans (written in each one's format and label ids), which keeps the samples quick to build."""
KITTI_SEQUENCES = tuple(f"{s:02d}" for s in range(11))


def _nuscenes(pool: _FramePool, root: Path, version: str) -> list[Frame]:
    from largead.data.export.nuscenes import CAMERA_EGO_MOTION, write_nuscenes
    from largead.data.synthetic import export_lut

    size = pool.size
    n = size.frames * (size.sweeps + 1) - size.sweeps  # keyframes at both ends
    frames = [f for s, scene in enumerate(NUSCENES_SCENES)
              for f in pool.sequence("nuscenes", s, scene, n, t0=1.5e9 + 100.0 * s)]
    write_nuscenes(frames, root, version=version, inverse_lut=export_lut("nuscenes"),
                   camera_ego_motion=CAMERA_EGO_MOTION, camera_time_offset=0.01, keyframe_every=size.sweeps + 1)
    return frames


def _sample_nuscenes(pool: _FramePool, root: Path) -> OfficialSample:
    frames = _nuscenes(pool, root / "nuscenes", "v1.0-trainval")
    k = pool.size.frames
    return OfficialSample("nuscenes", "nuscenes", root / "nuscenes", {},
                          {"train": 2 * k, "val": k, "pretrain": k, "pretrain_val": k, "all": 3 * k}, 6, tuple(frames))


def _sample_nuscenes_mini(pool: _FramePool, root: Path) -> OfficialSample:
    frames = _nuscenes(pool, root / "nuscenes-mini", "v1.0-mini")
    k = pool.size.frames
    return OfficialSample("nuscenes_mini", "nuscenes", root / "nuscenes-mini", {"version": "v1.0-mini"},
                          {"mini_train": 2 * k, "mini_val": k, "all": 3 * k}, 6, tuple(frames))


def _kitti_frames(pool: _FramePool, profile: str) -> list[Frame]:
    size = pool.size
    return [f for s, seq in enumerate(KITTI_SEQUENCES)
            for f in pool.sequence(profile, 100 + s, seq, size.frames if seq in ("00", "08") else size.transfer_frames)]


def _kitti_splits(size: SampleSize) -> dict[str, int]:
    return {"train": size.frames + 9 * size.transfer_frames, "val": size.frames}


def _sample_semantickitti(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.kitti import write_semantickitti
    from largead.data.synthetic import export_lut

    frames = _kitti_frames(pool, "kitti")
    write_semantickitti(frames, root / "semantickitti", inverse_lut=export_lut("semantickitti"))
    return OfficialSample("semantickitti", "semantickitti", root / "semantickitti", {"cameras": True},
                          _kitti_splits(pool.size), 1, tuple(frames))


def _sample_scribblekitti(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.kitti import write_scribblekitti
    from largead.data.synthetic import export_lut

    frames = _kitti_frames(pool, "kitti")
    write_scribblekitti(frames, root / "scribblekitti", inverse_lut=export_lut("semantickitti"))
    return OfficialSample("scribblekitti", "scribblekitti", root / "scribblekitti", {"cameras": True},
                          _kitti_splits(pool.size), 1, tuple(frames))


def _sample_waymo(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.waymo import write_waymo
    from largead.data.synthetic import export_lut

    size = pool.size
    written = []
    for s, split in enumerate(("train", "val")):
        frames = pool.sequence("waymo", 200 + s, f"waymo-{split}", size.frames, t0=1.55e9 + 100.0 * s)
        frames = [f if j % 2 == 0 else dataclasses.replace(f, labels=None, instances=None)
                  for j, f in enumerate(frames)]  # Waymo labels a subset of its frames
        write_waymo(frames, root / "waymo", split, columns=size.columns, beams=size.beams,
                    inverse_lut=export_lut("waymo"))
        written += frames
    labelled = (size.frames + 1) // 2
    return OfficialSample("waymo", "waymo", root / "waymo", {},
                          {"train": size.frames, "val": size.frames, "train_labelled": labelled,
                           "val_labelled": labelled}, 5, tuple(written))


def _sample_rellis3d(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.family import write_rellis3d
    from largead.data.synthetic import export_lut

    n = pool.size.transfer_frames
    frames = [f for s in range(3) for f in pool.sequence("lidar", LIDAR_WORLD + s, f"{s:05d}", n)]
    write_rellis3d(frames, root / "rellis3d", inverse_lut=export_lut("rellis3d"),
                   organised=(pool.size.beams, pool.size.columns))
    return OfficialSample("rellis3d", "rellis3d", root / "rellis3d", {}, {"train": n, "val": n, "test": n},
                          frames=tuple(frames))


def _sample_semanticposs(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.family import write_semanticposs
    from largead.data.synthetic import export_lut

    n = pool.size.transfer_frames
    frames = [f for s in range(6) for f in pool.sequence("lidar", LIDAR_WORLD + s, f"{s:02d}", n)]
    write_semanticposs(frames, root / "semanticposs", inverse_lut=export_lut("semanticposs"))
    return OfficialSample("semanticposs", "semanticposs", root / "semanticposs", {},
                          {"train": 5 * n, "val": n, "test": n}, frames=tuple(frames))


def _sample_semanticstf(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.family import write_semanticstf
    from largead.data.synthetic import export_lut

    n = pool.size.transfer_frames
    frames = [f for s, split in enumerate(("train", "val", "test"))
              for f in pool.sequence("lidar", LIDAR_WORLD + s, f"2019-01-0{s + 1}_stf", n)]
    splits = {f"2019-01-0{s + 1}_stf": split for s, split in enumerate(("train", "val", "test"))}
    write_semanticstf(frames, root / "semanticstf", split_of_sequence=splits, inverse_lut=export_lut("semanticstf"))
    return OfficialSample("semanticstf", "semanticstf", root / "semanticstf", {}, {"train": n, "val": n, "test": n},
                          frames=tuple(frames))


def _sample_synlidar(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.family import write_synlidar
    from largead.data.synthetic import export_lut

    n = pool.size.transfer_frames
    frames = [f for s in range(13) for f in pool.sequence("lidar", LIDAR_WORLD + s, f"{s:02d}", n)]
    write_synlidar(frames, root / "synlidar", layout="sequences", inverse_lut=export_lut("synlidar"))
    return OfficialSample("synlidar", "synlidar", root / "synlidar", {},
                          {"train": 10 * n, "val": 3 * n, "all": 13 * n}, frames=tuple(frames))


def _sample_daps3d(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.family import write_daps3d
    from largead.data.synthetic import export_lut

    n = pool.size.transfer_frames
    frames = [f for s, seq in enumerate(KITTI_SEQUENCES) for f in pool.sequence("lidar", LIDAR_WORLD + s, seq, n)]
    write_daps3d(frames, root / "daps3d" / "daps-1", inverse_lut=export_lut("daps3d"))
    return OfficialSample("daps3d", "daps3d", root / "daps3d" / "daps-1", {}, {"train": 10 * n, "val": n},
                          frames=tuple(frames))


def _sample_daps3d_daps2(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.family import DAPS2_SEQUENCES, write_daps3d
    from largead.data.synthetic import export_lut

    n = pool.size.transfer_frames
    frames = [f for s, seq in enumerate(DAPS2_SEQUENCES)
              for f in pool.sequence("lidar", LIDAR_WORLD + s, seq, n, t0=1.6e9 + 100.0 * s)]
    write_daps3d(frames, root / "daps3d" / "daps-2", variant="daps-2", fmt="npy", inverse_lut=export_lut("daps3d"))
    return OfficialSample("daps3d_daps2", "daps3d", root / "daps3d" / "daps-2", {"variant": "daps-2"},
                          {"val": 3 * n}, frames=tuple(frames))


def _sample_synth4d(pool: _FramePool, root: Path) -> OfficialSample:
    from largead.data.export.family import write_synth4d
    from largead.data.synthetic import export_lut

    n = pool.size.transfer_frames
    frames = [f for s, town in enumerate(("Town03", "Town06"))
              for f in pool.sequence("lidar", LIDAR_WORLD + s, town, n)]
    write_synth4d(frames, root / "synth4d", inverse_lut=export_lut("synth4d"))
    return OfficialSample("synth4d", "synth4d", root / "synth4d", {}, {"train": n, "val": n}, frames=tuple(frames))


def _sample_semantickitti_c(pool: _FramePool, root: Path, samples: dict[str, OfficialSample]) -> OfficialSample:
    from largead.data.export.corrupted import write_semantickitti_c

    source = samples["semantickitti"].root
    n = write_semantickitti_c(source, root / "semantickitti_c", seed=pool.size.seed)
    return OfficialSample("semantickitti_c", "semantickitti_c", root / "semantickitti_c", {}, {"val": n})


def _sample_nuscenes_c(pool: _FramePool, root: Path, samples: dict[str, OfficialSample]) -> OfficialSample:
    from largead.data.export.corrupted import write_nuscenes_c

    source = samples["nuscenes"].root
    n = write_nuscenes_c(source, root / "nuscenes_c", seed=pool.size.seed)
    return OfficialSample("nuscenes_c", "nuscenes_c", root / "nuscenes_c", {"nuscenes_root": str(source)}, {"val": n})


OFFICIAL_SAMPLES: dict[str, Callable] = {
    "nuscenes": _sample_nuscenes,
    "nuscenes_mini": _sample_nuscenes_mini,
    "semantickitti": _sample_semantickitti,
    "waymo": _sample_waymo,
    "scribblekitti": _sample_scribblekitti,
    "rellis3d": _sample_rellis3d,
    "semanticposs": _sample_semanticposs,
    "semanticstf": _sample_semanticstf,
    "synlidar": _sample_synlidar,
    "daps3d": _sample_daps3d,
    "daps3d_daps2": _sample_daps3d_daps2,
    "synth4d": _sample_synth4d,
    "semantickitti_c": _sample_semantickitti_c,
    "nuscenes_c": _sample_nuscenes_c,
}
"""Sample key -> builder. Keys are registry names, plus ``nuscenes_mini`` (``v1.0-mini`` tables) and
``daps3d_daps2`` (DAPS-2: ``.npy`` files with non-numeric stems). The corrupted sets are made from the clean
samples (``semantickitti_c`` from ``semantickitti``, ``nuscenes_c`` from ``nuscenes``)."""

_NEEDS = {"semantickitti_c": "semantickitti", "nuscenes_c": "nuscenes"}


def write_official_samples(root: str | Path, keys: Sequence[str] | None = None,
                           size: SampleSize | None = None) -> dict[str, OfficialSample]:
    """Write the samples ``keys`` (default all of :data:`OFFICIAL_SAMPLES`) under ``root/<folder>``; returns
    ``{key: OfficialSample}``. A corrupted set pulls in its clean sample. ``root`` must not hold earlier samples."""
    size = size or SampleSize()
    wanted = list(OFFICIAL_SAMPLES) if keys is None else list(keys)
    unknown = [k for k in wanted if k not in OFFICIAL_SAMPLES]
    if unknown:
        raise ValueError(f"unknown sample keys {unknown}; expected some of {list(OFFICIAL_SAMPLES)}")
    for k in list(wanted):
        if k in _NEEDS and _NEEDS[k] not in wanted:
            wanted.insert(0, _NEEDS[k])
    root = Path(root)
    pool = _FramePool(size)
    out: dict[str, OfficialSample] = {}
    for k in sorted(wanted, key=lambda k: k in _NEEDS):  # clean samples first
        builder = OFFICIAL_SAMPLES[k]
        out[k] = builder(pool, root, out) if k in _NEEDS else builder(pool, root)
    return {k: out[k] for k in wanted}


def write_official_sample(key: str, root: str | Path, size: SampleSize | None = None) -> OfficialSample:
    """Write one sample (see :func:`write_official_samples`)."""
    return write_official_samples(root, [key], size)[key]
