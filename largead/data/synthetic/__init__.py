"""The procedural synthetic driving world: the default dataset of every command.

    >>> from largead.data.synthetic import SyntheticWorld, SyntheticConfig
    >>> world = SyntheticWorld(SyntheticConfig(seed=0))
    >>> frame = world.frame(0, 3)          # sequence 0, frame 3: points, labels, instances, pose, 6 cameras
    >>> from largead.data import get_dataset
    >>> ds = get_dataset("synthetic", split="train", num_sequences=4, frames_per_sequence=8)

Streets with buildings, vegetation, poles, signs, vehicles, cyclists and pedestrians (see :mod:`.world`), scanned by a
ray-cast spinning LiDAR and rendered by ray-cast pinhole cameras of the same scene (see :mod:`.sensors`). Frames are
generated on access, deterministically from ``(seed, sequence, frame)``; nothing is cached on disk.

Two simulated sensors for multi-source experiments: ``SyntheticConfig.nuscenes_like()`` (32 beams, intensity 0-255,
6 cameras) and ``SyntheticConfig.kitti_like()`` (64 beams, intensity 0-1, one front camera).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largead.data.frame import CameraView, Frame
from largead.data.registry import LidarDataset, register_dataset
from largead.data.synthetic.sensors import Camera, Lidar, make_cameras
from largead.data.synthetic.world import (
    SYNTHETIC_CLASSES,
    Layout,
    SyntheticConfig,
    generate_layout,
)

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_TO_NUSCENES",
    "SYNTHETIC_TO_SEMANTICKITTI",
    "VAL_SEQUENCE_OFFSET",
    "SyntheticConfig",
    "SyntheticDataset",
    "SyntheticWorld",
    "benchmark_lut",
    "export_lut",
    "write_synthetic",
]

VAL_SEQUENCE_OFFSET = 1_000_000
"""The validation split uses world sequences ``VAL_SEQUENCE_OFFSET + i``; training uses ``i``; they never meet."""

SYNTHETIC_TO_NUSCENES: dict[str, str] = {
    "road": "flat.driveable_surface",
    "sidewalk": "flat.sidewalk",
    "terrain": "flat.terrain",
    "building": "static.manmade",
    "vegetation": "static.vegetation",
    "trunk": "static.vegetation",
    "pole": "static.manmade",
    "traffic_sign": "static.manmade",
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "bicyclist": "vehicle.bicycle",
    "pedestrian": "human.pedestrian.adult",
}
"""Synthetic class -> nuScenes-lidarseg raw category (lossy: trunk, pole and sign merge as nuScenes does)."""

SYNTHETIC_TO_SEMANTICKITTI: dict[str, int] = {
    "road": 40,
    "sidewalk": 48,
    "terrain": 72,
    "building": 50,
    "vegetation": 70,
    "trunk": 71,
    "pole": 80,
    "traffic_sign": 81,
    "car": 10,
    "truck": 18,
    "bicyclist": 31,
    "pedestrian": 30,
}
"""Synthetic class -> SemanticKITTI raw label id (one to one, so the SemanticKITTI round trip is lossless)."""

_TRANSFER_TARGETS: dict[str, dict[str, int]] = {
    # Waymo segmentation ids (protos/segmentation.proto); terrain -> walkable
    "waymo": {"road": 18, "sidewalk": 22, "terrain": 21, "building": 14, "vegetation": 15, "trunk": 16, "pole": 10,
              "traffic_sign": 8, "car": 1, "truck": 2, "bicyclist": 6, "pedestrian": 7},
    # RELLIS-3D ontology ids (rellis.yaml); road -> asphalt, building and sign -> object are not evaluated there
    "rellis3d": {"road": 10, "sidewalk": 23, "terrain": 3, "building": 12, "vegetation": 19, "trunk": 4, "pole": 5,
                 "traffic_sign": 9, "car": 8, "truck": 8, "bicyclist": 17, "pedestrian": 17},
    # SemanticPOSS raw ids (CENet semantic-poss.yaml)
    "semanticposs": {"road": 22, "sidewalk": 22, "terrain": 22, "building": 15, "vegetation": 9, "trunk": 8,
                     "pole": 13, "traffic_sign": 10, "car": 7, "truck": 7, "bicyclist": 6, "pedestrian": 4},
    # SemanticSTF ids 0-20 (SemanticKITTI class index + 1)
    "semanticstf": {"road": 9, "sidewalk": 11, "terrain": 17, "building": 13, "vegetation": 15, "trunk": 16,
                    "pole": 18, "traffic_sign": 19, "car": 1, "truck": 4, "bicyclist": 7, "pedestrian": 6},
    # SynLiDAR raw ids (SynLiDAR README)
    "synlidar": {"road": 8, "sidewalk": 9, "terrain": 22, "building": 18, "vegetation": 20, "trunk": 21, "pole": 24,
                 "traffic_sign": 23, "car": 1, "truck": 3, "bicyclist": 16, "pedestrian": 13},
    # DAPS-3D stores SemanticKITTI raw ids
    "daps3d": dict(SYNTHETIC_TO_SEMANTICKITTI),
    # Synth4D CARLA semantic tags (gipso-sfouda synthetic.yaml); CARLA has no cyclist tag: riders are pedestrians
    "synth4d": {"road": 7, "sidewalk": 8, "terrain": 22, "building": 1, "vegetation": 9, "trunk": 9, "pole": 5,
                "traffic_sign": 12, "car": 10, "truck": 10, "bicyclist": 4, "pedestrian": 4},
}
"""Synthetic class -> raw label id written for each transfer dataset (ignore is written as that dataset's 0)."""

_TARGETS = ("nuscenes", "semantickitti", *_TRANSFER_TARGETS)


def export_lut(target: str) -> np.ndarray:
    """(C + 1,) int64 indexed by ``synthetic train id + 1``: the raw label id written for ``target``.

    ``target`` is ``"nuscenes"`` (raw lidarseg category index, via :data:`SYNTHETIC_TO_NUSCENES`),
    ``"semantickitti"`` (raw id, via :data:`SYNTHETIC_TO_SEMANTICKITTI`) or a transfer dataset (``waymo``,
    ``rellis3d``, ``semanticposs``, ``semanticstf``, ``synlidar``, ``daps3d``, ``synth4d``; maps in
    ``_TRANSFER_TARGETS``); ignore is written as 0 (``noise`` / ``unlabeled`` / ``undefined`` / ``void``). Pass it as
    ``inverse_lut`` to the writers of :mod:`largead.data.export`.
    """
    if target == "nuscenes":
        from largead.data.labels import NUSCENES_LIDARSEG_CATEGORIES

        index = {name: i for i, name in enumerate(NUSCENES_LIDARSEG_CATEGORIES)}
        raw = [index[SYNTHETIC_TO_NUSCENES[c]] for c in SYNTHETIC_CLASSES]
    elif target == "semantickitti":
        raw = [SYNTHETIC_TO_SEMANTICKITTI[c] for c in SYNTHETIC_CLASSES]
    elif target in _TRANSFER_TARGETS:
        raw = [_TRANSFER_TARGETS[target][c] for c in SYNTHETIC_CLASSES]
    else:
        raise ValueError(f"unknown export target {target!r}; expected one of {_TARGETS}")
    return np.array([0, *raw], dtype=np.int64)


def _reader_lut(target: str) -> np.ndarray:
    """The raw -> training id table the ``target`` reader applies (its default options)."""
    from largead.data import labels_extra as lx
    from largead.data.labels import build_lut, nuscenes_lidarseg_lut, semantickitti_lut

    tables = {
        "waymo": (lx.WAYMO_LEARNING_MAP, 23), "rellis3d": (lx.RELLIS3D_LEARNING_MAP, 65536),
        "semanticposs": (lx.SEMANTICPOSS_LEARNING_MAP, 65536), "semanticstf": (lx.SEMANTICSTF_LEARNING_MAP, 21),
        "synlidar": (lx.SYNLIDAR_TO_SEMANTICKITTI_COSMIX, 65536), "daps3d": (lx.DAPS3D_LEARNING_MAP, 65536),
        "synth4d": (lx.SYNTH4D_LEARNING_MAP, 23),
    }
    if target == "nuscenes":
        return nuscenes_lidarseg_lut()
    if target == "semantickitti":
        return semantickitti_lut()
    if target not in tables:
        raise ValueError(f"unknown export target {target!r}; expected one of {_TARGETS}")
    return build_lut(*tables[target])


def benchmark_lut(target: str) -> np.ndarray:
    """(C,) int64: synthetic train id -> the training id that ``target``'s reader gives after an export.

    Composes :func:`export_lut` with the reader's raw -> train map (its default options). Injective for
    SemanticKITTI; for nuScenes, trunk joins vegetation and pole / traffic_sign join manmade; other targets merge
    or ignore classes as their label sets require (e.g. RELLIS-3D does not evaluate road = asphalt).
    """
    from largead.data.labels import apply_lut

    return apply_lut(_reader_lut(target), export_lut(target)[1:])


def write_synthetic(frames: Sequence[Frame], root: str | Path, layout: str, **options) -> None:
    """Write synthetic frames in a real dataset layout, readable by that dataset's reader.

    ``layout`` is ``"nuscenes"`` (:func:`~largead.data.export.write_nuscenes`, default version ``v1.0-mini``; open
    with ``get_dataset("nuscenes", root, split="all", version=...)``) or ``"semantickitti"``
    (:func:`~largead.data.export.write_semantickitti`; sequences become ``00, 01, ...``). Labels are written
    through :func:`export_lut`, so the reader returns :func:`benchmark_lut` of the synthetic labels. ``options``
    go to the writer. For every other official layout, with frames sized and named as each dataset needs, see
    :func:`largead.data.export.write_official_samples`.
    """
    from largead.data.export import write_nuscenes, write_semantickitti

    if layout == "nuscenes":
        write_nuscenes(frames, root, **{"inverse_lut": export_lut("nuscenes"), **options})
    elif layout == "semantickitti":
        write_semantickitti(frames, root, **{"inverse_lut": export_lut("semantickitti"), **options})
    else:
        raise ValueError(f"unknown layout {layout!r}; expected 'nuscenes' or 'semantickitti'")


class SyntheticWorld:
    """Frames of the synthetic world described by a :class:`SyntheticConfig`.

    ``frame(sequence, index)`` is a pure function of ``(config, sequence, index)``. The static layout of the few most
    recently used sequences is kept in memory (cheap to regenerate; nothing goes to disk).
    """

    def __init__(self, config: SyntheticConfig | None = None, cache_sequences: int = 8) -> None:
        self.config = config if config is not None else SyntheticConfig()
        self.lidar = Lidar(self.config)
        self.cameras: list[Camera] = make_cameras(self.config)
        self._cache: OrderedDict[int, Layout] = OrderedDict()
        self._cache_size = max(int(cache_sequences), 1)

    def layout(self, sequence: int) -> Layout:
        """The static description of sequence ``sequence`` (ground, primitives at t = 0, ego trajectory)."""
        sequence = int(sequence)
        if sequence in self._cache:
            self._cache.move_to_end(sequence)
            return self._cache[sequence]
        layout = generate_layout(self.config, sequence)
        self._cache[sequence] = layout
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return layout

    def sequence_name(self, sequence: int) -> str:
        return f"{self.config.tag}-{int(sequence):07d}"

    def timestamp(self, index: int) -> float:
        """Seconds since the start of a sequence of frame ``index``."""
        return float(index) * self.config.frame_interval

    def frame(self, sequence: int, index: int) -> Frame:
        """Generate frame ``index`` of sequence ``sequence``.

        Returns a :class:`Frame` with points (N, 4) in the LiDAR frame (intensity times ``intensity_scale``),
        labels over :data:`SYNTHETIC_CLASSES` (IGNORE_INDEX never occurs: rays that hit nothing give no point),
        instance ids (0 for road, sidewalk, terrain), the LiDAR-to-world pose, the timestamp, one
        :class:`CameraView` per camera with ``semantic_mask`` (IGNORE_INDEX for sky) and ``instance_mask``, and
        ``extra["ring"]`` (N,) int64 beam index (0 = top beam) and ``extra["camera_depth"]``, one (H, W) float32
        depth map per camera (camera z of the surface seen, metres; 0 for sky).
        """
        cfg = self.config
        if not 0 <= int(index) < cfg.frames_per_sequence:
            raise IndexError(f"synthetic frame index {index} out of range: sequences have "
                             f"{cfg.frames_per_sequence} frames (SyntheticConfig.frames_per_sequence)")
        layout = self.layout(sequence)
        t = self.timestamp(index)
        prims = layout.prims.at_time(t)
        pose = layout.pose(t)
        rng = np.random.default_rng([int(cfg.seed), int(sequence), int(index), 1])
        points, labels, instances, ring = self.lidar.scan(prims, layout.ground, pose, rng)
        name = self.sequence_name(sequence)
        token = f"{name}-{int(index):03d}"
        views, depths = [], []
        for cam in self.cameras:
            image, sem, inst, depth = cam.render(prims, layout.ground, pose, rng, cfg.image_noise,
                                                  (layout.sun, layout.ambient, layout.exposure))
            depths.append(depth)
            views.append(CameraView(image=image, intrinsics=cam.intrinsics.copy(),
                                    lidar_to_camera=cam.lidar_to_camera.copy(), name=cam.name,
                                    token=f"{token}-{cam.name}", instance_mask=inst, semantic_mask=sem))
        return Frame(points=points, labels=labels, instances=instances, pose=pose, timestamp=t, sequence=name,
                     index=int(index), dataset=cfg.tag, token=token, cameras=views,
                     extra={"ring": ring, "camera_depth": depths})


@register_dataset("synthetic")
class SyntheticDataset(LidarDataset):
    """The synthetic world as a dataset: ``num_sequences`` sequences of ``frames_per_sequence`` frames per split.

    Frame ``i`` is frame ``i % frames_per_sequence`` of the split's sequence ``i // frames_per_sequence``; ``train``
    uses world sequences ``0 .. num_sequences - 1`` and ``val`` sequences ``VAL_SEQUENCE_OFFSET + i``. ``root`` is
    accepted for a uniform signature and ignored. Any other :class:`SyntheticConfig` field may be passed as a
    keyword (``azimuth_resolution``, ``max_range``, ``dropout``, ``camera_layout``, ``tag``, ...).
    """

    class_names = SYNTHETIC_CLASSES
    has_cameras = True
    temporal = True
    splits = ("train", "val")
    label_fraction_unit = "frame"  # label fractions keep every k-th frame: small worlds have few sequences

    def __init__(self, root: str | None = None, split: str = "train", seed: int = 0, num_sequences: int = 4,
                 frames_per_sequence: int = 8, beams: int = 32, num_cameras: int = 6,
                 image_size: tuple[int, int] = (96, 160), intensity_scale: float = 255.0, **options) -> None:
        if split not in self.splits:
            raise ValueError(f"synthetic: unknown split {split!r}; available: {', '.join(self.splits)}")
        if num_sequences < 1:
            raise ValueError(f"synthetic: num_sequences must be >= 1, got {num_sequences}")
        fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
        unknown = sorted(set(options) - fields)
        if unknown:
            import difflib

            accepted = sorted(fields | {"num_sequences"})
            hint = "".join(f" ({u!r}: did you mean {c[0]!r}?)" for u in unknown
                           if (c := difflib.get_close_matches(u, accepted, n=1)))
            raise ValueError(f"synthetic: unknown option(s) {unknown}{hint}; accepted: {', '.join(accepted)}")
        self.split = split
        self.num_sequences = int(num_sequences)
        self.config = SyntheticConfig(seed=seed, frames_per_sequence=frames_per_sequence, beams=beams,
                                      num_cameras=num_cameras, image_size=tuple(image_size),
                                      intensity_scale=intensity_scale, **options)
        self.world = SyntheticWorld(self.config)
        self._first = 0 if split == "train" else VAL_SEQUENCE_OFFSET

    @property
    def frames_per_sequence(self) -> int:
        return self.config.frames_per_sequence

    def __len__(self) -> int:
        return self.num_sequences * self.frames_per_sequence

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"synthetic: frame index {i} out of range for {len(self)} frames")
        seq, idx = divmod(int(i), self.frames_per_sequence)
        return self._first + seq, idx

    def frame(self, i: int) -> Frame:
        seq, idx = self._locate(i)
        return self.world.frame(seq, idx)

    def sequence_of(self, i: int) -> tuple[str, int]:
        seq, idx = self._locate(i)
        return self.world.sequence_name(seq), idx

    def next_index(self, i: int, n: int = 1) -> int | None:
        _, idx = self._locate(i)
        j = idx + n
        return i + n if 0 <= j < self.frames_per_sequence else None
