"""Pretraining samples: frame -> (augment) -> point/pixel pairs -> superpixels -> segments with the next frame -> batch.

:class:`PretrainDataset` turns frames of one or more registered datasets with cameras into :class:`PretrainSample`
objects; :func:`collate_pretrain` stacks samples into a :class:`PretrainBatch` (voxels of every scan, images,
pairs mapped to voxels, global superpixel and segment ids) ready for :class:`largead.pretrain.model.PretrainModel`.

Policies (documented, never silent):

- Temporal pairs: with ``temporal=True`` only frames that have a frame ``frame_gap`` sweeps later in the same
  sequence are used (the last ``frame_gap`` frames of each sequence are left out of the index; the count is in
  :attr:`PretrainDataset.num_without_next`).
- A frame whose points project into no camera, a camera whose superpixel map has no usable segment, and a superpixel
  map whose size differs from its image raise ``ValueError`` naming the dataset, frame and camera.
- Superpixel id 0: the superpixel source says what it means in its maps (``source.zero_is_segment``, one rule per
  official generator, see :mod:`largead.superpixels.sources`); where it marks pixels no segment covers, those pixels
  and their pairs get id -1 and are ignored by the losses. ``superpixel_ignore_zero`` (``True``/``False``) overrides
  the source (:func:`ignores_zero`).
- Cameras of different sizes in one frame (Waymo: 1920x1280 front, 1920x886 side) stay separate arrays (a list per
  sample) until the resized crop gives them the configured common size; without a crop, :func:`collate_pretrain`
  keeps per-image sizes and :class:`largead.pretrain.model.PretrainModel` runs the teacher per size.
- Segments (RANSAC ground removal + joint HDBSCAN, :mod:`largead.pretrain.temporal`) are computed on the raw,
  un-augmented points and cached on disk; augmentations that drop points carry the segment ids along.
- Randomness of a sample depends only on ``(seed, epoch, index)`` (:func:`largead.trainer.sample_rng`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from largead.data.frame import Frame
from largead.data.geometry import Pairs, frame_pairs
from largead.pretrain.multisource import input_features
from largead.pretrain.temporal import SegmentCache, SegmentParams
from largead.profiling import section
from largead.sparse.voxelize import VoxelBatch, VoxelGrid, batch_voxelize
from largead.superpixels.superpoints import segment_offsets
from largead.trainer import sample_rng


@dataclass
class PretrainSample:
    """One training frame (and, for the temporal term, the frame ``frame_gap`` sweeps later).

    ``points`` (N, 4) float32 after augmentation; ``images`` one (H_c, W_c, 3) uint8 array per camera (sizes may
    differ between cameras); ``superpixels`` one (H_c, W_c) int64 id map per camera (``-1`` = ignored pixel);
    ``pairs`` point/pixel pairs into ``points`` and ``images``;
    ``segments`` (N,) int64 segment ids shared with ``next_segments`` (-1 = ground/noise); ``next_points`` (N', 4)
    or ``None`` when the temporal term is off.
    """

    dataset: str
    token: str
    index: int
    points: np.ndarray
    images: list[np.ndarray]
    superpixels: list[np.ndarray]
    pairs: Pairs
    segments: np.ndarray | None = None
    next_points: np.ndarray | None = None
    next_segments: np.ndarray | None = None


@dataclass
class PretrainBatch:
    """A collated batch of ``B`` samples (``B`` scans of frame t, then ``B`` next frames when temporal).

    - ``voxels``: :class:`VoxelBatch` of all scans (frame-t scans are batch indices ``0..B-1``, next frames
      ``B..2B-1``); ``scan_dataset`` (S,) int64 index into ``datasets`` of every scan.
    - ``images`` (C, 3, H, W) uint8 RGB (the teacher normalises) when every image has one size, else a list of C
      (3, H_c, W_c) tensors; ``image_sizes`` (C, 2) int64 (H_c, W_c); ``image_scan`` (C,) int64 scan of each image.
    - ``pair_voxel`` (P,) int64 voxel (row of the encoder output) of each pair; ``pair_superpixel`` (P,) global
      superpixel id; ``pixel_superpixel`` (sum_c H_c*W_c,) global id of every pixel, images in order, row-major per
      image (``-1`` ignored).
    - ``voxel_segment`` (M,) int64 global segment id of every voxel (its first point's), ``-1`` for none, ids shared
      between a scan and its next frame.
    """

    voxels: VoxelBatch
    scan_dataset: torch.Tensor
    datasets: list[str]
    images: torch.Tensor | list[torch.Tensor]
    image_scan: torch.Tensor
    pair_voxel: torch.Tensor
    pair_superpixel: torch.Tensor
    pixel_superpixel: torch.Tensor
    voxel_segment: torch.Tensor | None
    num_scans: int  # B (frame-t scans)
    tokens: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    image_sizes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.image_sizes is None:
            if not isinstance(self.images, torch.Tensor):
                raise ValueError("PretrainBatch: images given as a list need image_sizes")
            c, _, h, w = self.images.shape
            self.image_sizes = torch.tensor([[h, w]] * c, dtype=torch.int64).reshape(c, 2)

    def to(self, device: torch.device | str) -> PretrainBatch:
        def move(v: Any) -> Any:
            if isinstance(v, (torch.Tensor, VoxelBatch)):
                return v.to(device)
            if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
                return [t.to(device) for t in v]
            return v

        return PretrainBatch(**{k: move(v) for k, v in vars(self).items()})


@dataclass
class AugmentConfig:
    """SLidR's pretraining augmentations (``largead.data.augment``): rotation about z + x/y flips (+ optional
    scaling), drop-cuboid (kept only if every camera keeps ``cuboid_min_pairs`` pairs), per-image resized crop to
    ``crop_size`` (``None``: no crop) and horizontal flip. The same rotation/flip/scale is applied to the next frame."""

    rotate: bool = True
    flip_p: float = 0.5
    scale_range: tuple[float, float] | None = None
    drop_cuboid: bool = True
    cuboid_max_fraction: float = 0.2
    cuboid_min_pairs: int = 1024
    crop_size: tuple[int, int] | None = (224, 416)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (14.0 / 9.0, 17.0 / 9.0)
    crop_min_pairs: int = 1024
    crop_min_fraction: float = 0.75
    hflip_p: float = 0.5


@dataclass
class PretrainDataConfig:
    """How samples are built. ``superpixel_ignore_zero``: ``None`` (default) = ask the superpixel source what id 0
    means in its maps, ``True``/``False`` = override it (see the module docstring); ``max_cameras``: keep at most
    this many cameras per frame (random subset, SuperFlow uses 3 of 6; ``None`` = all); ``min_pairs``: fewer
    point-pixel pairs in a frame is an error; ``augment``: ``None`` = no augmentation."""

    temporal: bool = True
    frame_gap: int = 1
    segments: SegmentParams = field(default_factory=SegmentParams)
    superpixel_ignore_zero: bool | None = None
    max_cameras: int | None = None
    min_pairs: int = 1
    augment: AugmentConfig | None = None


def ignores_zero(source: Any, override: bool | None = None) -> bool:
    """Whether superpixel id 0 of ``source``'s maps is ignored: ``override`` when given, else
    ``not source.zero_is_segment`` (the rule of the generator that wrote the maps, see
    :mod:`largead.superpixels.sources`). A source object without ``zero_is_segment`` is read SLidR's way: 0 is a
    segment."""
    if override is not None:
        return bool(override)
    return not bool(getattr(source, "zero_is_segment", True))


def slidr_augment(sample: PretrainSample, rng: np.random.Generator, cfg: AugmentConfig) -> PretrainSample:
    """Apply :class:`AugmentConfig` to a sample, keeping pairs, superpixel maps and segment ids consistent."""
    from largead.data import augment as A

    points, mat = A.random_rotate_flip_scale(sample.points, rng, cfg.rotate, cfg.flip_p, cfg.scale_range)
    next_points = sample.next_points
    if next_points is not None:
        next_points = next_points.copy()
        next_points[:, :3] = (next_points[:, :3].astype(np.float64) @ mat.T).astype(next_points.dtype)
    pairs, segments = sample.pairs, sample.segments
    if cfg.drop_cuboid:
        keep, pairs = A.drop_cuboid(points, pairs, len(sample.images), rng, cfg.cuboid_max_fraction,
                                    cfg.cuboid_min_pairs)
        points = points[keep]
        segments = None if segments is None else segments[keep]
    images, maps = list(sample.images), list(sample.superpixels)  # per camera: sizes may differ until the crop
    if cfg.crop_size is not None:
        crop = A.resized_crop(images, pairs, rng, tuple(cfg.crop_size), tuple(cfg.crop_scale),
                              tuple(cfg.crop_ratio), cfg.crop_min_pairs, cfg.crop_min_fraction, maps=maps)
        images, pairs, maps = list(crop.images), crop.pairs, list(crop.maps)
    if cfg.hflip_p > 0:
        images, pairs, maps, _ = A.hflip_image(images, pairs, rng, cfg.hflip_p, maps)
    return dataclasses.replace(sample, points=points, images=list(images), superpixels=list(maps),
                               pairs=pairs, segments=segments, next_points=next_points)


class PretrainDataset(torch.utils.data.Dataset):
    """Pretraining samples over the concatenation of ``datasets`` (readers with cameras).

    ``superpixels``: a superpixel source (``largead.superpixels.get_source(...)``; precomputed sources read PNGs), or
    one per dataset. ``names``: the dataset labels used for ``input_norm`` and ``PretrainBatch.datasets`` (default:
    each reader's registered name; give labels to mix two instances of one reader, e.g. two simulated sensors).
    ``segment_cache``: where segments are stored (``SegmentCache(None)`` computes each time).
    """

    def __init__(self, datasets: Sequence[Any], superpixels: Any, config: PretrainDataConfig | None = None,
                 segment_cache: SegmentCache | None = None, seed: int = 0, names: Sequence[str] | None = None):
        if not datasets:
            raise ValueError("PretrainDataset needs at least one dataset")
        config = config if config is not None else PretrainDataConfig()
        self.datasets = list(datasets)
        self.names = list(names) if names is not None else [getattr(d, "name", f"dataset{i}")
                                                             for i, d in enumerate(self.datasets)]
        if len(self.names) != len(self.datasets) or len(set(self.names)) != len(self.names):
            raise ValueError(f"need one distinct name per dataset, got {self.names} for {len(self.datasets)} datasets")
        sources = list(superpixels) if isinstance(superpixels, (list, tuple)) else [superpixels] * len(self.datasets)
        if len(sources) != len(self.datasets):
            raise ValueError(f"got {len(sources)} superpixel sources for {len(self.datasets)} datasets")
        for d, name in zip(self.datasets, self.names, strict=True):
            if not getattr(d, "has_cameras", True):
                raise ValueError(f"dataset {name!r} has no cameras: image-to-LiDAR pretraining needs calibrated images")
            if config.temporal and not getattr(d, "temporal", True):
                raise ValueError(f"dataset {name!r} is not temporal; set temporal: false for it")
        self.sources = sources
        self.config = config
        self.cache = segment_cache if segment_cache is not None else SegmentCache(None)
        self.seed = int(seed)
        self.epoch = 0
        index: list[tuple[int, int, int | None]] = []
        self.num_without_next = 0
        for di, d in enumerate(self.datasets):
            for i in range(len(d)):
                nxt = d.next_index(i, config.frame_gap) if config.temporal else None
                if config.temporal and nxt is None:
                    self.num_without_next += 1
                    continue
                index.append((di, i, nxt))
        if not index:
            raise ValueError(f"no usable frames in {self.names} (temporal={config.temporal}, "
                             f"frame_gap={config.frame_gap}: every frame lacks a next frame?)")
        self.index = index

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def sizes(self) -> list[int]:
        """Usable frames per dataset; the index is grouped by dataset in order (what ``MultiSourceSampler`` expects)."""
        counts = np.bincount([di for di, _, _ in self.index], minlength=len(self.datasets))
        return [int(c) for c in counts]

    def dataset_of(self, i: int) -> str:
        return self.names[self.index[i][0]]

    def _superpixels(self, source: Any, frame: Frame, where: str) -> list[np.ndarray]:
        try:
            ignore_zero = ignores_zero(source, self.config.superpixel_ignore_zero)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        maps = []
        for cam in frame.cameras:
            ids = np.asarray(source.segment(cam.image, cam))
            if ids.shape != cam.image.shape[:2]:
                raise ValueError(f"{where} camera {cam.name or cam.token}: superpixel map is {ids.shape}, image is "
                                 f"{cam.image.shape[:2]}")
            ids = ids.astype(np.int64)
            if ignore_zero:
                ids = np.where(ids == 0, -1, ids)
            if not (ids >= 0).any():
                raise ValueError(f"{where} camera {cam.name or cam.token}: the superpixel map has no segment")
            maps.append(ids)
        return maps

    def __getitem__(self, i: int) -> PretrainSample:
        di, fi, ni = self.index[i]
        d, name = self.datasets[di], self.names[di]
        with section("data loading"):
            frame = d[fi]
        where = f"{name} frame {frame.token or fi}"
        if not frame.cameras:
            raise ValueError(f"{where}: has no cameras")
        rng = sample_rng(self.seed, self.epoch, i)
        if self.config.max_cameras is not None and len(frame.cameras) > self.config.max_cameras:
            keep = np.sort(rng.choice(len(frame.cameras), self.config.max_cameras, replace=False))
            frame = dataclasses.replace(frame, cameras=[frame.cameras[k] for k in keep])
        with section("point-pixel pairing"):
            pairs = frame_pairs(frame)
        if len(pairs) < self.config.min_pairs:
            raise ValueError(f"{where}: only {len(pairs)} point-pixel pairs (need {self.config.min_pairs}): too few of "
                             "its points project into a camera (check the calibration)")
        with section("data loading"):  # precomputed sources read the maps from disk here
            sp = self._superpixels(self.sources[di], frame, where)
        segments = next_points = next_segments = None
        if self.config.temporal:
            with section("data loading"):
                nxt = d[ni]
            try:
                with section("temporal segments"):  # computed on first use, then read from the segment cache
                    segments, next_segments = self.cache.get(name, frame.token or str(fi), nxt.token or str(ni),
                                                             frame.points, frame.pose, nxt.points, nxt.pose,
                                                             self.config.segments)
            except ValueError as err:
                raise ValueError(f"{where} (next frame {nxt.token or ni}): segments: {err}") from err
            next_points = nxt.points[:, :4].astype(np.float32)
        sample = PretrainSample(dataset=name, token=frame.token or str(fi), index=i,
                                points=frame.points[:, :4].astype(np.float32),
                                images=[c.image for c in frame.cameras], superpixels=sp, pairs=pairs,
                                segments=segments, next_points=next_points, next_segments=next_segments)
        if self.config.augment is not None:
            with section("augmentation"):
                sample = slidr_augment(sample, rng, self.config.augment)
            if len(sample.pairs) < self.config.min_pairs:
                raise ValueError(f"{where}: only {len(sample.pairs)} pairs left after augmentation")
        return sample


def collate_pretrain(samples: Sequence[PretrainSample], grid: VoxelGrid, feature_mode: str = "intensity",
                     input_norm: dict[str, Sequence[float]] | None = None,
                     datasets: Sequence[str] | None = None) -> PretrainBatch:
    """Stack samples into a :class:`PretrainBatch` (see there for the layout).

    Voxelisation is :func:`largead.sparse.voxelize.batch_voxelize` on the encoder's ``grid`` with per-point features
    from :func:`largead.pretrain.multisource.input_features` (``input_norm[dataset]`` applied), i.e. exactly what
    ``LargeADEncoder.voxelize(scans, dataset=...)`` produces. ``datasets`` fixes the dataset index order (default:
    order of first appearance). Images may differ in size (cameras of one rig, no crop): then ``images`` is a list.
    Profiled as one section, ``collate + voxelisation`` (:mod:`largead.profiling`).
    """
    with section("collate + voxelisation"):
        return _collate_pretrain(samples, grid, feature_mode, input_norm, datasets)


def _collate_pretrain(samples: Sequence[PretrainSample], grid: VoxelGrid, feature_mode: str = "intensity",
                      input_norm: dict[str, Sequence[float]] | None = None,
                      datasets: Sequence[str] | None = None) -> PretrainBatch:
    """The body of :func:`collate_pretrain`."""
    if not samples:
        raise ValueError("collate_pretrain needs at least one sample")
    input_norm = input_norm or {}
    names = list(datasets) if datasets is not None else list(dict.fromkeys(s.dataset for s in samples))
    temporal = samples[0].next_points is not None
    if any((s.next_points is not None) != temporal for s in samples):
        raise ValueError("collate_pretrain: mixing samples with and without a next frame")
    scans = [s.points for s in samples] + ([s.next_points for s in samples] if temporal else [])
    scan_names = [s.dataset for s in samples] * (2 if temporal else 1)
    feats = [input_features(p, feature_mode, input_norm, n) for p, n in zip(scans, scan_names, strict=True)]
    voxels = batch_voxelize([torch.as_tensor(p[:, :3]) for p in scans], grid, features=feats)
    try:
        scan_dataset = torch.tensor([names.index(n) for n in scan_names], dtype=torch.int64)
    except ValueError as err:
        raise ValueError(f"collate_pretrain: a sample's dataset is not in {names}") from err

    images = [np.asarray(im) for s in samples for im in s.images]  # (H_c, W_c, 3) per image, in order
    maps = [np.asarray(m) for s in samples for m in s.superpixels]
    for s in samples:
        if len(s.images) != len(s.superpixels):
            raise ValueError(f"{s.dataset} frame {s.token}: {len(s.images)} images but {len(s.superpixels)} maps")
    for k, (im, m) in enumerate(zip(images, maps, strict=True)):
        if im.ndim != 3 or im.shape[2] != 3 or m.shape != im.shape[:2]:
            raise ValueError(f"collate_pretrain: image {k} is {im.shape} with a {m.shape} superpixel map; expected "
                             "(H, W, 3) and (H, W)")
    cams = torch.tensor([len(s.images) for s in samples], dtype=torch.int64)
    cam_off = torch.zeros(len(samples) + 1, dtype=torch.int64)
    cam_off[1:] = torch.cumsum(cams, 0)
    image_scan = torch.repeat_interleave(torch.arange(len(samples)), cams)
    sizes_hw = torch.tensor([im.shape[:2] for im in images], dtype=torch.int64).reshape(-1, 2)
    pixels = sizes_hw[:, 0] * sizes_hw[:, 1]
    pix_off = torch.zeros(len(images), dtype=torch.int64)
    pix_off[1:] = torch.cumsum(pixels, 0)[:-1]

    sp = torch.cat([torch.as_tensor(m, dtype=torch.int64).reshape(-1) for m in maps])  # every pixel, image by image
    image_of_pixel = torch.repeat_interleave(torch.arange(len(images)), pixels)
    sp_off = segment_offsets(maps, allow_ignore=True)[:-1]  # -1: pixels whose superpixel is ignored
    global_sp = torch.where(sp >= 0, sp + sp_off[image_of_pixel], torch.full_like(sp, -1))

    pp = [torch.as_tensor(s.pairs.point) + int(voxels.point_offsets[b]) for b, s in enumerate(samples)]
    pc = [torch.as_tensor(s.pairs.camera) + int(cam_off[b]) for b, s in enumerate(samples)]
    pair_point, pair_cam = torch.cat(pp), torch.cat(pc)
    pair_row = torch.cat([torch.as_tensor(s.pairs.row) for s in samples])
    pair_col = torch.cat([torch.as_tensor(s.pairs.col) for s in samples])
    pair_voxel = voxels.inverse[pair_point]
    bad = (pair_row < 0) | (pair_row >= sizes_hw[pair_cam, 0]) | (pair_col < 0) | (pair_col >= sizes_hw[pair_cam, 1])
    if bool(bad.any()):
        raise ValueError(f"collate_pretrain: {int(bad.sum())} pairs fall outside their image")
    pair_sp = global_sp[pix_off[pair_cam] + pair_row.to(torch.int64) * sizes_hw[pair_cam, 1] + pair_col.to(torch.int64)]

    voxel_segment = None
    if temporal:
        seg_pt = []
        offset = 0
        for s in samples:  # loop over samples (a handful), not points
            if s.segments is None or s.next_segments is None:
                raise ValueError(f"{s.dataset} frame {s.token}: temporal sample without segments")
            k = int(max(s.segments.max(initial=-1), s.next_segments.max(initial=-1))) + 1
            seg_pt.append((s.segments, s.next_segments, offset))
            offset += k
        per_scan = [torch.as_tensor(np.where(a >= 0, a + o, -1)) for a, _, o in seg_pt] + \
                   [torch.as_tensor(np.where(b >= 0, b + o, -1)) for _, b, o in seg_pt]
        voxel_segment = torch.cat(per_scan).to(torch.int64)[voxels.first_index]

    tensors = [torch.as_tensor(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
    one_size = len({im.shape for im in images}) == 1
    img: torch.Tensor | list[torch.Tensor] = torch.stack(tensors) if one_size else [t.contiguous() for t in tensors]
    return PretrainBatch(voxels=voxels, scan_dataset=scan_dataset, datasets=names, images=img,
                         image_scan=image_scan, pair_voxel=pair_voxel, pair_superpixel=pair_sp,
                         pixel_superpixel=global_sp, voxel_segment=voxel_segment, num_scans=len(samples),
                         tokens=[s.token for s in samples], indices=[s.index for s in samples], image_sizes=sizes_hw)


__all__ = [
    "AugmentConfig",
    "PretrainBatch",
    "PretrainDataConfig",
    "PretrainDataset",
    "PretrainSample",
    "collate_pretrain",
    "ignores_zero",
    "slidr_augment",
]
