"""The module trained during pretraining: LiDAR encoder + frozen 2D teacher with its trainable head -> loss terms.

:class:`PretrainModel` wraps a :class:`largead.LargeADEncoder` (3D side, its ``final`` layer is the 3D projection
head) and an image teacher (2D side: frozen backbone + trainable 1x1 head to the same width + upsampling + L2 norm;
``largead.models.image.ImageTeacher`` or the synthetic world's teacher). ``forward(batch)`` returns every loss term
and their weighted sum, so one ``accelerator.prepare``-d module holds all trainable parameters.

Rows used by the segment terms are voxels (each voxel carries the segment of its first point), not points: it is the
resolution the encoder produces and keeps the logits matrices small. ``max_rows`` optionally subsamples them with a
generator seeded by the batch's sample indices (deterministic across processes and resumes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from largead.pretrain.data import PretrainBatch
from largead.pretrain.objectives import (
    LossWeights,
    l_cdp,
    l_p2s,
    l_tmp,
    prototype_nce,
    superpixel_prototypes,
    total_loss,
)


@dataclass
class ObjectiveConfig:
    """Loss weights, temperature and row subsampling of the segment terms (``None`` = use every voxel)."""

    weights: LossWeights = field(default_factory=LossWeights)
    tau: float = 0.07
    max_rows: int | None = None


def _subsample(mask: torch.Tensor, max_rows: int | None, seed: int) -> torch.Tensor:
    """Indices of ``mask``'s true entries, at most ``max_rows`` of them (random, seeded)."""
    idx = torch.nonzero(mask).squeeze(1)
    if max_rows is None or idx.numel() <= max_rows:
        return idx
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(idx.numel(), generator=g)[:max_rows].to(idx.device)
    return idx[pick.sort().values]


class PretrainModel(torch.nn.Module):
    """Encoder + teacher; ``forward(batch) -> {"loss", "vfm", "tmp", "p2s", "cdp"}`` (terms with weight 0 and, for
    non-temporal batches, ``tmp``/``p2s`` are left out)."""

    def __init__(self, encoder: torch.nn.Module, teacher: torch.nn.Module, config: ObjectiveConfig | None = None):
        super().__init__()
        self.encoder = encoder
        self.teacher = teacher
        self.config = config if config is not None else ObjectiveConfig()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher features (C, D, H, W) of uint8 images (C, 3, H, W), at the images' resolution."""
        out = self.teacher(images)
        if out.shape[0] != images.shape[0] or out.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"the teacher returned {tuple(out.shape)} for images {tuple(images.shape)}; expected "
                             "(C, D, H, W) at the images' resolution")
        return out

    def forward(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        cfg, w = self.config, self.config.weights
        vox = self.encoder.forward_batch(batch.voxels).float()  # (M, D)
        img = self.image_features(batch.images).float()  # (C, D, H, W)
        pix = img.permute(0, 2, 3, 1).reshape(-1, img.shape[1])
        pair_feats = vox[batch.pair_voxel]
        terms: dict[str, torch.Tensor] = {}
        if w.vfm or w.cdp:  # pooled once for both terms
            k, q, kept = superpixel_prototypes(pair_feats, batch.pair_superpixel, pix, batch.pixel_superpixel)
        if w.vfm:
            terms["vfm"] = prototype_nce(k, q, cfg.tau)
        if w.cdp:
            hw = img.shape[2] * img.shape[3]
            image_of_pixel = torch.arange(img.shape[0], device=pix.device).repeat_interleave(hw)
            valid = batch.pixel_superpixel >= 0
            image_of_sp = torch.zeros(int(batch.pixel_superpixel.max()) + 1, dtype=torch.int64, device=pix.device)
            image_of_sp[batch.pixel_superpixel[valid]] = image_of_pixel[valid]
            sp_dataset = batch.scan_dataset.to(pix.device)[batch.image_scan.to(pix.device)[image_of_sp[kept]]]
            terms["cdp"] = l_cdp(k, q, sp_dataset, cfg.tau)
        if batch.voxel_segment is not None and (w.tmp or w.p2s):
            scan = batch.voxels.coords[:, 0].to(torch.int64).to(vox.device)
            seg = batch.voxel_segment.to(vox.device)
            seed = sum(batch.indices) + 7919 * len(batch.indices)
            is_t = scan < batch.num_scans
            rows_t = _subsample(is_t & (seg >= 0), cfg.max_rows, seed)
            rows_n = _subsample(~is_t & (seg >= 0), cfg.max_rows, seed + 1)
            if w.tmp:
                terms["tmp"] = l_tmp(vox[rows_t], seg[rows_t], vox[rows_n], seg[rows_n], cfg.tau)
            if w.p2s:
                rows = torch.cat([rows_t, rows_n])
                shift = int(seg.max()) + 1
                seg_scan = torch.where(scan[rows] < batch.num_scans, seg[rows], seg[rows] + shift)  # own ids per scan
                terms["p2s"] = l_p2s(vox[rows], seg_scan, scan[rows], cfg.tau)
        if not terms:
            raise ValueError("every loss weight is 0 (or the batch has no segments for tmp/p2s): nothing to train")
        terms["loss"] = total_loss(terms, w)
        return terms


__all__ = ["ObjectiveConfig", "PretrainModel"]
