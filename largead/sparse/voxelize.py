"""Voxelisation: the one place points become sparse voxels, and voxels go back to points.

SLidR's grid (used by LargeAD/Seal checkpoints): cylindrical coordinates ``(rho / 0.1 m, phi / 1 deg, z / 0.1 m)``
floored, with ``phi = atan2(y, x)`` in degrees on ``(-180, 180]``. A Cartesian grid ``(x, y, z) / size`` floored is the
alternative. In each voxel the *first* point (lowest index in the scan) supplies the voxel's features, as
MinkowskiEngine's ``sparse_quantize(return_index=True)`` does in SLidR; every point keeps the index of its voxel
(``inverse``) so per-voxel predictions map back to all points.

All functions are vectorised torch code (no loops over points or voxels) and run on the points' device.

Range: voxel coordinates are int32 in the sparse engine, and strided layers round them to multiples of up to 2^k
and add kernel offsets, so every voxel coordinate must satisfy ``|c| <= MAX_VOXEL_COORD`` (2^30 - 1; e.g. about
1.07e8 m on a 0.1 m axis). A point beyond that, or with a non-finite coordinate, is an error naming its scan and
row, never a silently wrapped integer; drop far points explicitly first (:func:`in_range` gives the mask,
``largead embed --max-range`` drops and counts them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

FEATURE_MODES = ("intensity", "xyz_intensity", "ones")
MAX_VOXEL_COORD = 2**30 - 1


@dataclass(frozen=True)
class VoxelGrid:
    """How points are quantised. ``voxel_size`` is (rho [m], phi [deg], z [m]) when cylindrical, else (x, y, z) [m]."""

    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1)
    cylindrical: bool = True

    def __post_init__(self) -> None:
        vs = tuple(float(v) for v in self.voxel_size)
        if len(vs) != 3 or not all(v > 0 and math.isfinite(v) for v in vs):
            raise ValueError(f"voxel_size must be three positive numbers, got {self.voxel_size!r}")
        object.__setattr__(self, "voxel_size", vs)


@dataclass
class VoxelBatch:
    """A batch of voxelised scans ready for the sparse network.

    ``coords`` (M, 4) int32 ``(batch, i, j, k)``; ``feats`` (M, C) float32; ``inverse`` (N,) int64 voxel of each
    point; ``first_index`` (M,) int64 point that supplied each voxel's features; ``point_offsets`` /
    ``voxel_offsets`` (B + 1,) int64 prefix sums so scan ``b`` owns points ``point_offsets[b]:point_offsets[b+1]``.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    inverse: torch.Tensor
    first_index: torch.Tensor
    point_offsets: torch.Tensor
    voxel_offsets: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.point_offsets.numel() - 1)

    def to(self, device: torch.device | str) -> VoxelBatch:
        return VoxelBatch(*(t.to(device) for t in (self.coords, self.feats, self.inverse, self.first_index,
                                                   self.point_offsets, self.voxel_offsets)))


def _as_tensor(points: np.ndarray | torch.Tensor, what: str = "points") -> torch.Tensor:
    t = torch.as_tensor(points) if not isinstance(points, torch.Tensor) else points
    if t.ndim != 2 or t.shape[1] < 3:
        raise ValueError(f"{what} must be an (N, >=3) array, got shape {tuple(t.shape)}")
    return t


def _scaled(xyz: torch.Tensor, grid: VoxelGrid) -> torch.Tensor:
    """Point coordinates in voxel units (N, 3) float64, before flooring."""
    xyz = xyz[:, :3].to(torch.float64)
    size = torch.tensor(grid.voxel_size, dtype=torch.float64, device=xyz.device)
    if grid.cylindrical:
        rho = torch.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)
        phi = torch.rad2deg(torch.atan2(xyz[:, 1], xyz[:, 0]))
        xyz = torch.stack([rho, phi, xyz[:, 2]], dim=1)
    return xyz / size


def in_range(points: np.ndarray | torch.Tensor, grid: VoxelGrid = VoxelGrid()) -> torch.Tensor:
    """(N,) bool: which points have finite coordinates whose voxel coordinates fit ``|c| <= MAX_VOXEL_COORD``."""
    scaled = _scaled(_as_tensor(points), grid)
    return (torch.isfinite(scaled) & (scaled.abs() < MAX_VOXEL_COORD)).all(1)


def quantize(xyz: torch.Tensor, grid: VoxelGrid, row_label: Callable[[int], str] | None = None) -> torch.Tensor:
    """Integer voxel coordinates (N, 3) int64 of points ``xyz`` (N, >=3) on ``grid`` (floored).

    Raises ValueError naming the first point (``row_label(row)``, default ``"point {row}"``) whose coordinates are
    not finite or whose voxel coordinate would exceed ``MAX_VOXEL_COORD`` in magnitude.
    """
    scaled = _scaled(xyz, grid)
    ok = torch.isfinite(scaled) & (scaled.abs() < MAX_VOXEL_COORD)
    if not bool(ok.all()):
        row = int(torch.nonzero(~ok.all(1))[0])
        where = row_label(row) if row_label is not None else f"point {row}"
        coords = ", ".join(f"{float(v):.6g}" for v in xyz[row, :3].tolist())
        if not bool(torch.isfinite(xyz[row, :3]).all()):
            raise ValueError(f"{where}: non-finite coordinates ({coords})")
        kind = "cylindrical (rho, phi, z)" if grid.cylindrical else "Cartesian"
        raise ValueError(f"{where}: (x, y, z) = ({coords}) m lies beyond the voxel grid's range: on the {kind} grid "
                         f"of voxel size {grid.voxel_size} its voxel coordinates "
                         f"({', '.join(f'{float(v):.4g}' for v in scaled[row].tolist())}) exceed "
                         f"+-{MAX_VOXEL_COORD} (int32 with room for strides); drop far points first "
                         "(largead.sparse.in_range, or largead embed --max-range)")
    return torch.floor(scaled).to(torch.int64)


def unique_rows(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique rows of an (N, D) int64 tensor, sorted lexicographically.

    Returns ``(unique (M, D), inverse (N,), first (M,))`` where ``first`` is the lowest row index of each unique row.
    Rows are packed into one int64 key when their extents allow (the usual case), else ``torch.unique(dim=0)``.
    """
    n = keys.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=keys.device)
        return keys[:0], empty, empty
    lo = keys.min(0).values
    ext = keys.max(0).values - lo + 1
    bits = torch.ceil(torch.log2(ext.to(torch.float64) + 1)).to(torch.int64)
    if int(bits.sum()) <= 62:
        shifted = keys - lo
        packed = torch.zeros(n, dtype=torch.int64, device=keys.device)
        for d in range(keys.shape[1]):  # loop over the (<= 4) axes, not over points
            packed = packed * int(ext[d]) + shifted[:, d]
        uniq, inverse = torch.unique(packed, sorted=True, return_inverse=True)
    else:
        uniq, inverse = torch.unique(keys, dim=0, sorted=True, return_inverse=True)
    first = torch.full((uniq.shape[0],), n, dtype=torch.int64, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=keys.device), reduce="amin")
    return keys[first], inverse, first


def point_features(points: torch.Tensor, mode: str = "intensity") -> torch.Tensor:
    """Per-point input features: ``intensity`` (1 channel), ``xyz_intensity`` (4), or ``ones`` (1)."""
    if mode == "intensity":
        if points.shape[1] < 4:
            raise ValueError(f"feature mode 'intensity' needs (N, 4) points, got shape {tuple(points.shape)}")
        return points[:, 3:4].to(torch.float32)
    if mode == "xyz_intensity":
        if points.shape[1] < 4:
            raise ValueError(f"feature mode 'xyz_intensity' needs (N, 4) points, got shape {tuple(points.shape)}")
        return points[:, :4].to(torch.float32)
    if mode == "ones":
        return torch.ones(points.shape[0], 1, dtype=torch.float32, device=points.device)
    raise ValueError(f"unknown feature mode {mode!r}; expected one of {FEATURE_MODES}")


def input_features(points: np.ndarray | torch.Tensor, mode: str,
                   input_norm: Mapping[str, Sequence[float]] | None = None, dataset: str | None = None) -> torch.Tensor:
    """Per-point input features of ``mode`` (:func:`point_features`) with the intensity normalised per dataset:
    ``(i - mean) / std`` for ``input_norm[dataset] = (mean, std)`` (LargeAD's per-dataset normalisation). The one
    implementation used by the encoder (``embed`` / ``voxelize``) and by the pretraining batches.

    ``dataset=None`` or an empty ``input_norm``: raw intensity. A ``dataset`` missing from a non-empty
    ``input_norm`` is a ``KeyError`` saying what to do (mixing normalised and raw scans silently would corrupt both).
    ``mode="ones"`` has no intensity, so nothing is normalised.
    """
    pts = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points)
    feats = point_features(pts, mode)
    if mode == "ones" or dataset is None or not input_norm:
        return feats
    if dataset not in input_norm:
        known = sorted(input_norm)
        raise KeyError(f"no input statistics for dataset {dataset!r}: the encoder was pretrained with per-dataset "
                       f"intensity normalisation on {known}. For another dataset, fine-tune it there "
                       "(training/finetune.py estimates and stores the statistics), add them "
                       f"(encoder.config.input_norm[{dataset!r}] = (mean, std), e.g. from "
                       f"largead.pretrain.multisource.dataset_intensity_stats), or pass one of dataset={known} whose "
                       "intensity has the same scale")
    stats = input_norm[dataset]
    if len(stats) != 2 or not float(stats[1]) > 0:
        raise ValueError(f"input_norm[{dataset!r}] must be (mean, std > 0), got {list(stats)}")
    feats = feats.clone()
    feats[:, -1] = (feats[:, -1] - float(stats[0])) / float(stats[1])
    return feats


def feature_channels(mode: str) -> int:
    """Number of input channels that :func:`point_features` produces for ``mode``."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"unknown feature mode {mode!r}; expected one of {FEATURE_MODES}")
    return 4 if mode == "xyz_intensity" else 1


def voxelize(points: np.ndarray | torch.Tensor, grid: VoxelGrid = VoxelGrid()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxelise one scan: ``(coords (M, 3) int64, first_index (M,), inverse (N,))``."""
    pts = _as_tensor(points)
    coords, inverse, first = unique_rows(quantize(pts, grid))
    return coords, first, inverse


def batch_voxelize(
    scans: Sequence[np.ndarray | torch.Tensor],
    grid: VoxelGrid = VoxelGrid(),
    feature_mode: str = "intensity",
    features: Sequence[torch.Tensor] | None = None,
) -> VoxelBatch:
    """Voxelise several scans into one :class:`VoxelBatch` (batch index in ``coords[:, 0]``).

    ``features`` optionally gives per-point input features for each scan (already normalised); otherwise they are
    taken from the points with ``feature_mode``.
    """
    if len(scans) == 0:
        raise ValueError("batch_voxelize needs at least one scan")
    tensors = [_as_tensor(s, f"scan {b}") for b, s in enumerate(scans)]
    device = tensors[0].device
    counts = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    point_offsets = torch.zeros(len(tensors) + 1, dtype=torch.int64)
    point_offsets[1:] = torch.cumsum(counts, 0)
    allpts = torch.cat([t.to(device=device, dtype=torch.float32) for t in tensors], 0)
    batch = torch.repeat_interleave(torch.arange(len(tensors), device=device), counts.to(device))
    starts = point_offsets.tolist()

    def row_label(row: int) -> str:
        b = int(np.searchsorted(starts, row, side="right")) - 1
        return f"scan {b}, point {row - starts[b]}"

    keys = torch.cat([batch[:, None], quantize(allpts, grid, row_label)], dim=1)
    coords, inverse, first = unique_rows(keys)
    if features is None:
        pf = point_features(allpts, feature_mode)
    else:
        if len(features) != len(tensors):
            raise ValueError(f"got {len(features)} feature arrays for {len(tensors)} scans")
        pf = torch.cat([torch.as_tensor(f, dtype=torch.float32).to(device) for f in features], 0)
        if pf.shape[0] != allpts.shape[0]:
            raise ValueError(f"features have {pf.shape[0]} rows for {allpts.shape[0]} points")
    voxel_counts = torch.bincount(coords[:, 0], minlength=len(tensors)).cpu()
    voxel_offsets = torch.zeros(len(tensors) + 1, dtype=torch.int64)
    voxel_offsets[1:] = torch.cumsum(voxel_counts, 0)
    return VoxelBatch(
        coords=coords.to(torch.int32),
        feats=pf[first].contiguous(),
        inverse=inverse,
        first_index=first,
        point_offsets=point_offsets,
        voxel_offsets=voxel_offsets,
    )
