"""Superpixels to superpoints: give every paired LiDAR point the id of the superpixel it projects into, and pool
features per segment. All vectorised (gather, ``index_add_``, ``bincount``, ``unique``); no loop over segments.

Ids are made global over a batch of images by offsetting each image's ids, as SLidR does. SLidR adds a fixed
offset of ``superpixel_size`` (150 for SLIC) per image, which silently collides as soon as an image has an id of 150
or more (SAM maps do). By default the offset of image ``c`` here is the number of ids used by the images before it
(``sum_{j<c} (max id_j + 1)``); pass ``stride`` to get SLidR's fixed offsets (checked, never silently colliding).

A pair is ``(point, camera, row, col)`` (see ``largead.data.geometry.frame_pairs``): ``camera`` indexes the list of
superpixel maps given here, so for a batch of frames the caller concatenates every frame's maps and shifts each
frame's camera indices by the number of cameras before it (and point indices by the number of points before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

SuperpixelMaps = torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]


def _maps(superpixels: SuperpixelMaps, allow_ignore: bool = False) -> list[torch.Tensor]:
    if isinstance(superpixels, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(superpixels)
        if t.ndim != 3:
            raise ValueError(f"stacked superpixel maps must be (C, H, W), got shape {tuple(t.shape)}")
        maps = list(t.unbind(0))
    else:
        maps = [torch.as_tensor(m) for m in superpixels]
    if not maps:
        raise ValueError("need at least one superpixel map")
    for c, m in enumerate(maps):
        if m.ndim != 2:
            raise ValueError(f"superpixel map {c} must be (H, W), got shape {tuple(m.shape)}")
        if m.dtype.is_floating_point or m.dtype == torch.bool:
            raise ValueError(f"superpixel map {c} must hold integer ids, got dtype {m.dtype}")
        if m.numel() and int(m.min()) < (-1 if allow_ignore else 0):
            raise ValueError(f"superpixel map {c} has negative ids (min {int(m.min())})"
                             + ("; only -1 (ignored pixel) is allowed" if allow_ignore else ""))
    return maps


def segment_offsets(superpixels: SuperpixelMaps, stride: int | None = None, allow_ignore: bool = False) -> torch.Tensor:
    """Offsets (C + 1,) int64 added to the ids of each of the C maps; ``offsets[-1]`` is the total number of ids.

    Default: ``offsets[c] = sum_{j<c} (max id of map j + 1)``. With ``stride`` (SLidR): ``offsets[c] = c * stride``,
    after checking every id is below ``stride``. ``allow_ignore``: ``-1`` marks ignored pixels (they take no id; a
    map of only ``-1`` takes none).
    """
    maps = _maps(superpixels, allow_ignore)
    maxes = torch.stack([m.max().to(torch.int64) if m.numel() else torch.tensor(-1) for m in maps]).cpu()
    if stride is not None:
        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        bad = torch.nonzero(maxes >= stride).flatten()
        if bad.numel():
            c = int(bad[0])
            raise ValueError(f"superpixel map {c} has id {int(maxes[c])} >= stride {stride}: ids of images would collide")
        sizes = torch.full_like(maxes, stride)
    else:
        sizes = maxes + 1
    offsets = torch.zeros(len(maps) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(sizes, 0)
    return offsets


def _pair_arrays(pairs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if all(hasattr(pairs, k) for k in ("camera", "row", "col")):
        cam, row, col = pairs.camera, pairs.row, pairs.col
    else:
        cam, row, col = pairs
    cam, row, col = (torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).to(torch.int64)
                     for a in (cam, row, col))
    if not (cam.ndim == row.ndim == col.ndim == 1 and cam.shape == row.shape == col.shape):
        raise ValueError(f"pair camera/row/col must be 1-D of equal length, got {tuple(cam.shape)}, "
                         f"{tuple(row.shape)}, {tuple(col.shape)}")
    return cam, row, col


def superpoint_ids(pairs: Any, superpixels: SuperpixelMaps, stride: int | None = None) -> torch.Tensor:
    """Global superpoint id (P,) int64 of each pair: the id of pixel ``(row, col)`` of map ``camera`` plus that map's
    offset (:func:`segment_offsets`).

    ``pairs`` is an object with ``camera``, ``row``, ``col`` (e.g. ``Pairs`` from ``largead.data.geometry``) or a tuple
    ``(camera, row, col)`` of (P,) integer arrays; ``superpixels`` a (C, H, W) stack or a list of (H_c, W_c) maps (sizes
    may differ). Raises ``IndexError`` naming the first pair that falls outside its map.
    """
    maps = _maps(superpixels)
    cam, row, col = _pair_arrays(pairs)
    device = maps[0].device
    cam, row, col = cam.to(device), row.to(device), col.to(device)
    offsets = segment_offsets(maps, stride).to(device)
    hw = torch.tensor([list(m.shape) for m in maps], dtype=torch.int64, device=device)
    if cam.numel():
        ok = (cam >= 0) & (cam < len(maps))
        safe = cam.clamp(0, len(maps) - 1)
        ok &= (row >= 0) & (row < hw[safe, 0]) & (col >= 0) & (col < hw[safe, 1])
        if not bool(ok.all()):
            i = int(torch.nonzero(~ok)[0])
            c = int(cam[i])
            shape = tuple(hw[c].tolist()) if 0 <= c < len(maps) else None
            raise IndexError(f"pair {i}: camera {c}, row {int(row[i])}, col {int(col[i])} is outside the superpixel "
                             f"maps ({len(maps)} maps; this one {'does not exist' if shape is None else f'is {shape}'})")
    flat = torch.cat([m.reshape(-1).to(torch.int64) for m in maps])
    base = torch.zeros(len(maps), dtype=torch.int64, device=device)
    base[1:] = torch.cumsum(hw[:, 0] * hw[:, 1], 0)[:-1]
    return flat[base[cam] + row * hw[cam, 1] + col] + offsets[cam]


def pixel_segment_ids(superpixels: SuperpixelMaps, stride: int | None = None) -> torch.Tensor:
    """Global segment id of every pixel, maps flattened row-major and concatenated: (sum_c H_c W_c,) int64.

    Same offsets as :func:`superpoint_ids`, so pooled 2D and 3D features of one segment share an id. For a stacked
    (C, H, W) batch this lines up with ``image_feats.permute(0, 2, 3, 1).reshape(-1, D)``.
    """
    maps = _maps(superpixels)
    offsets = segment_offsets(maps, stride).to(maps[0].device)
    sizes = torch.tensor([m.numel() for m in maps], device=maps[0].device)
    flat = torch.cat([m.reshape(-1).to(torch.int64) for m in maps])
    return flat + torch.repeat_interleave(offsets[:-1], sizes)


def segment_mean(
    feats: torch.Tensor, ids: torch.Tensor, num_segments: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature per segment: ``(means (S, D), counts (S,))`` with ``S = num_segments or ids.max() + 1``.

    Rows with id ``-1`` are ignored; empty segments get a zero mean and count 0 (divide by ``count`` clamped to 1, so
    no ``1e-6`` bias). Not re-normalised.
    """
    if feats.ndim != 2 or ids.ndim != 1 or feats.shape[0] != ids.shape[0]:
        raise ValueError(f"segment_mean: features must be (N, D) and ids (N,), got {tuple(feats.shape)} and "
                         f"{tuple(ids.shape)}")
    ids = ids.to(torch.int64)
    if num_segments is None:
        num_segments = int(ids.max().item()) + 1 if ids.numel() else 0
    keep = ids >= 0
    f, i = feats[keep], ids[keep]
    if i.numel() and int(i.max()) >= num_segments:
        raise ValueError(f"segment id {int(i.max())} >= num_segments {num_segments}")
    sums = feats.new_zeros(num_segments, feats.shape[1]).index_add_(0, i, f)
    counts = torch.bincount(i, minlength=num_segments)
    return sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype), counts


def pool_by_segment(
    feats: torch.Tensor, seg: torch.Tensor, num_segments: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean of ``feats`` (P, D) over the rows of each segment ``seg`` (P,) int; empty segments are dropped.

    Returns ``(pooled (S, D), counts (S,) int64, kept_ids (S,) int64)`` with ``kept_ids`` ascending: row ``s`` of
    ``pooled`` is the exact mean (no epsilon, no re-normalisation) of the ``counts[s]`` rows whose segment is
    ``kept_ids[s]``. ``num_segments`` (default ``max(seg) + 1``) bounds the ids. Differentiable in ``feats``.
    """
    if feats.ndim != 2:
        raise ValueError(f"feats must be (P, D), got shape {tuple(feats.shape)}")
    seg = torch.as_tensor(seg, device=feats.device)
    if seg.ndim != 1 or seg.shape[0] != feats.shape[0]:
        raise ValueError(f"seg must be ({feats.shape[0]},) to match feats, got shape {tuple(seg.shape)}")
    if seg.dtype.is_floating_point or seg.dtype == torch.bool:
        raise ValueError(f"seg must hold integer segment ids, got dtype {seg.dtype}")
    seg = seg.to(torch.int64)
    if seg.numel() and int(seg.min()) < 0:
        raise ValueError(f"seg has negative ids (min {int(seg.min())})")
    top = int(seg.max()) + 1 if seg.numel() else 0
    if num_segments is None:
        num_segments = top
    elif top > num_segments:
        raise ValueError(f"seg has id {top - 1} but num_segments is {num_segments}")
    means, counts = segment_mean(feats, seg, num_segments)
    kept = torch.nonzero(counts > 0).flatten()
    return means[kept], counts[kept], kept


def pool_voxels_by_segment(
    voxel_feats: torch.Tensor,
    inverse: torch.Tensor,
    pair_point: torch.Tensor,
    seg: torch.Tensor,
    num_segments: int | None = None,
    unique_voxels: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pool per-voxel features ``voxel_feats`` (M, D) per superpoint, pairs reaching voxels through ``inverse``.

    ``inverse`` (N,) is the voxel of every point (``VoxelBatch.inverse``), ``pair_point`` (P,) the point of each pair
    and ``seg`` (P,) its superpoint id. As in SLidR (pairing points mapped through the inverse indices), a voxel is
    counted once per pair that reaches it; ``unique_voxels=True`` counts each (voxel, segment) once instead.
    Returns :func:`pool_by_segment`'s ``(pooled, counts, kept_ids)``.
    """
    inverse = torch.as_tensor(inverse, device=voxel_feats.device).to(torch.int64)
    pair_point = torch.as_tensor(pair_point, device=voxel_feats.device).to(torch.int64)
    seg = torch.as_tensor(seg, device=voxel_feats.device).to(torch.int64)
    if pair_point.shape != seg.shape or pair_point.ndim != 1:
        raise ValueError(f"pair_point {tuple(pair_point.shape)} and seg {tuple(seg.shape)} must be equal-length 1-D")
    if pair_point.numel() and (int(pair_point.min()) < 0 or int(pair_point.max()) >= inverse.numel()):
        raise IndexError(f"pair_point indexes points outside [0, {inverse.numel()}) (range "
                         f"{int(pair_point.min())}..{int(pair_point.max())})")
    voxel = inverse[pair_point]
    if voxel.numel() and int(voxel.max()) >= voxel_feats.shape[0]:
        raise IndexError(f"inverse points at voxel {int(voxel.max())} but voxel_feats has {voxel_feats.shape[0]} rows")
    if unique_voxels and voxel.numel():
        pairs = torch.unique(torch.stack([seg, voxel], 1), dim=0)
        seg, voxel = pairs[:, 0], pairs[:, 1]
    return pool_by_segment(voxel_feats[voxel], seg, num_segments)
