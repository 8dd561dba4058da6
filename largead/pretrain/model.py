"""The module trained during pretraining: LiDAR encoder + frozen 2D teacher with its trainable head -> loss terms.

:class:`PretrainModel` wraps a :class:`largead.LargeADEncoder` (3D side, its ``final`` layer is the 3D projection
head) and an image teacher (2D side: frozen backbone + trainable 1x1 head to the same width + upsampling + L2 norm;
``largead.models.image.ImageTeacher`` or the synthetic world's teacher). ``forward(batch, progress=...)`` returns
every loss term and their weighted sum, so one ``accelerator.prepare``-d module holds all trainable parameters.

Rows used by the segment terms are voxels (each voxel carries the segment of its first point), not points: it is the
resolution the encoder produces and keeps the logits matrices small. Segment means use every voxel; ``max_rows``
caps the *anchors* per frame side, drawn with a generator seeded by the batch's sample indices (deterministic across
processes and resumes).

Training progress: ``L_cdp`` starts after ``objective.cdp.warmup`` of the schedule, so the model must know where
training is: pass ``progress = step / total_steps`` to ``forward`` (works through DDP / ``accelerator.prepare``), or
call :meth:`PretrainModel.set_progress` before the step. A batch that needs it without either raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from largead.pretrain.data import PretrainBatch
from largead.pretrain.objectives import (
    CdpConfig,
    LossWeights,
    _zero,
    l_cdp,
    l_p2s,
    l_tmp,
    prototype_nce,
    superpixel_prototypes,
    total_loss,
)
from largead.profiling import section


@dataclass
class ObjectiveConfig:
    """Loss weights, temperature, anchor subsampling of the segment terms (``max_rows``: at most this many anchor
    voxels per frame for ``L_tmp`` (frame t and frame t+n each) and ``2 * max_rows`` for ``L_p2s`` (both frames
    together); ``None`` = every voxel; segment means always use every voxel) and the cross-dataset term's pair
    selection and warm-up (:class:`largead.pretrain.objectives.CdpConfig`)."""

    weights: LossWeights = field(default_factory=LossWeights)
    tau: float = 0.07
    max_rows: int | None = None
    cdp: CdpConfig = field(default_factory=CdpConfig)


FROZEN_TEACHER = "teacher.backbone."
"""State-dict prefix of the frozen 2D backbone, which :class:`PretrainModel` leaves out of its state dict."""


class PretrainModel(torch.nn.Module):
    """Encoder + teacher; ``forward(batch, progress=None) -> {"loss", "vfm", "tmp", "p2s", "cdp"}`` (terms with
    weight 0 and, for non-temporal batches, ``tmp``/``p2s`` are left out; ``cdp`` is 0 before its warm-up ends and in
    single-dataset batches). ``last_stats`` holds diagnostics of the last call (``cdp_pairs``: positive pairs used)
    and ``last_cdp_pairs`` the pairs themselves (global superpixel ids of anchor and positive).

    The state dict (what training checkpoints hold) has the encoder and the teacher's trainable head but not the frozen
    teacher backbone (``teacher.backbone.*``): it never changes and is rebuilt from its source (weights file, Hub id,
    or the seeded random init) when a run resumes, so a ViT-L teacher does not add 1.2 GB to every checkpoint.
    Loading accepts a state dict with or without it (older checkpoints carry it; it is then loaded).
    """

    def __init__(self, encoder: torch.nn.Module, teacher: torch.nn.Module, config: ObjectiveConfig | None = None):
        super().__init__()
        self.encoder = encoder
        self.teacher = teacher
        self.config = config if config is not None else ObjectiveConfig()
        self.progress: float | None = None
        self.last_stats: dict[str, float] = {}
        self.last_cdp_pairs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.register_load_state_dict_post_hook(_frozen_teacher_is_not_missing)

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):  # type: ignore[override]
        """The module's state dict without the frozen teacher backbone (see the class docstring). Called for this
        module also when it is wrapped (DDP, ``accelerator.prepare``), with the wrapper's ``prefix``."""
        out = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in out if k.startswith(prefix + FROZEN_TEACHER)]:
            del out[key]
        return out

    def set_progress(self, step: int, total_steps: int) -> None:
        """Training progress ``step / total_steps`` (optimiser steps done / the schedule's length), used by the
        ``L_cdp`` warm-up when ``forward`` gets no ``progress``."""
        if total_steps < 1 or step < 0:
            raise ValueError(f"set_progress needs 0 <= step and total_steps >= 1, got {step}, {total_steps}")
        self.progress = step / total_steps

    def frozen_keys(self) -> set[str]:
        """State-dict keys of the frozen teacher backbone (relative to this module)."""
        backbone = getattr(self.teacher, "backbone", None)
        return set() if backbone is None else {FROZEN_TEACHER + k for k in backbone.state_dict()}

    # -- 2D side --------------------------------------------------------------------------------------------------

    def image_features(self, images: torch.Tensor | list[torch.Tensor], return_frozen: bool = False
                       ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None]:
        """Teacher features of every pixel: ``(pix (sum_c H_c*W_c, D), frozen)``, images in order, row-major.

        ``images``: (C, 3, H, W) uint8 or a list of (3, H_c, W_c) (cameras of different sizes); the teacher runs once
        per distinct size. With ``return_frozen``, ``frozen`` lists per image ``(map (C_f, h, w), row_cell (H,),
        col_cell (W,))`` of the frozen backbone (``ImageTeacher.forward(return_frozen=True)``, ``cell_index``).
        """
        if isinstance(images, torch.Tensor):  # one size: one teacher call on the stacked images
            n = images.shape[0]
            groups = {tuple(images.shape[-2:]): list(range(n))}
        else:
            n = len(images)
            groups = {}
            for c, im in enumerate(images):  # a handful of cameras, grouped by size
                groups.setdefault(tuple(im.shape[-2:]), []).append(c)
        if n == 0:
            raise ValueError("no images in the batch")
        per_image: list[torch.Tensor | None] = [None] * n
        frozen: list = [None] * n
        for (h, w), idx in groups.items():
            batch = images if isinstance(images, torch.Tensor) else torch.stack([images[c] for c in idx])
            if return_frozen:
                if not hasattr(self.teacher, "cell_index"):
                    raise TypeError(f"L_cdp needs the teacher's frozen backbone features: {type(self.teacher).__name__}"
                                    " must support forward(images, return_frozen=True) and cell_index(h, w) "
                                    "(largead.models.image.ImageTeacher does)")
                out, fmap = self.teacher(batch, return_frozen=True)
                rows, cols = self.teacher.cell_index(h, w)
            else:
                out = self.teacher(batch)
            if out.shape[0] != len(idx) or out.shape[-2:] != (h, w):
                raise ValueError(f"the teacher returned {tuple(out.shape)} for images {tuple(batch.shape)}; expected "
                                 "(C, D, H, W) at the images' resolution")
            for k, c in enumerate(idx):
                per_image[c] = out[k].permute(1, 2, 0).reshape(h * w, out.shape[1])
                if return_frozen:
                    frozen[c] = (fmap[k], rows.to(fmap.device), cols.to(fmap.device))
        return torch.cat(per_image), (frozen if return_frozen else None)

    @staticmethod
    def frozen_prototypes(frozen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                          pixel_superpixel: torch.Tensor, num: int) -> torch.Tensor:
        """Mean frozen backbone feature of each superpixel id ``0..num-1`` (zeros for absent ids): every pixel takes
        the feature of the backbone cell it lies in, and a superpixel averages its pixels (computed from the counts of
        (superpixel, cell) pairs, never at pixel resolution)."""
        cells, feats, offset = [], [], 0
        for fmap, rows, cols in frozen:  # per image (a handful)
            c, h, w = fmap.shape
            cells.append((rows.unsqueeze(1) * w + cols.unsqueeze(0)).reshape(-1) + offset)
            feats.append(fmap.reshape(c, h * w).t())
            offset += h * w
        cell = torch.cat(cells)
        table = torch.cat(feats).to(torch.float32)
        keep = pixel_superpixel >= 0
        sp, cell = pixel_superpixel[keep], cell[keep]
        pair, count = torch.unique(sp * table.shape[0] + cell, return_counts=True)  # (superpixel, cell) pairs
        sp_u, cell_u = pair // table.shape[0], pair % table.shape[0]
        weighted = table[cell_u] * count.unsqueeze(1).to(table.dtype)
        sums = table.new_zeros(num, table.shape[1]).index_add_(0, sp_u, weighted)
        n = torch.bincount(sp, minlength=num).clamp(min=1).to(sums.dtype)
        return sums / n.unsqueeze(1)

    # -- the loss ---------------------------------------------------------------------------------------------------

    def forward(self, batch: PretrainBatch, progress: float | None = None) -> dict[str, torch.Tensor]:
        cfg, w = self.config, self.config.weights
        progress = self.progress if progress is None else float(progress)
        with section("3D forward"):
            vox = self.encoder.forward_batch(batch.voxels).float()  # (M, D)
        n_datasets = int(torch.unique(batch.scan_dataset).numel())
        cdp_on = bool(w.cdp) and n_datasets > 1
        if cdp_on and cfg.cdp.warmup > 0:
            if progress is None:
                raise ValueError(f"L_cdp starts after a warm-up (objective.cdp.warmup={cfg.cdp.warmup}) but the model "
                                 "does not know the training progress: call model(batch, progress=step / "
                                 "total_steps) or model.set_progress(step, total_steps) first")
            cdp_on = progress >= cfg.cdp.warmup
        with section("teacher forward"):
            pix, frozen = self.image_features(batch.images, return_frozen=cdp_on)
            pix = pix.float()
        # the networks may run under autocast (train.mixed_precision); pooling and the losses always run in fp32
        with torch.autocast(vox.device.type, enabled=False):
            return self._terms(batch, vox, pix, frozen, cdp_on)

    def _terms(self, batch: PretrainBatch, vox: torch.Tensor, pix: torch.Tensor, frozen: list | None,
               cdp_on: bool) -> dict[str, torch.Tensor]:
        """Superpixel pooling and every loss term from the fp32 voxel and pixel features."""
        cfg, w = self.config, self.config.weights
        terms: dict[str, torch.Tensor] = {}
        self.last_stats = {}
        if w.vfm or w.cdp:  # pooled once for both terms
            with section("superpixel pooling"):
                pair_feats = vox[batch.pair_voxel]
                k, q, kept = superpixel_prototypes(pair_feats, batch.pair_superpixel, pix, batch.pixel_superpixel)
        if w.vfm:
            with section("losses"):
                terms["vfm"] = prototype_nce(k, q, cfg.tau)
        if w.cdp:
            if cdp_on:
                with section("superpixel pooling"):
                    num = int(batch.pixel_superpixel.max()) + 1
                    g = self.frozen_prototypes(frozen, batch.pixel_superpixel.to(pix.device), num)[kept]
                    sizes = batch.image_sizes.to(pix.device)
                    image_of_pixel = torch.repeat_interleave(torch.arange(sizes.shape[0], device=pix.device),
                                                             sizes[:, 0] * sizes[:, 1])
                    valid = batch.pixel_superpixel >= 0
                    image_of_sp = torch.zeros(num, dtype=torch.int64, device=pix.device)
                    image_of_sp[batch.pixel_superpixel[valid]] = image_of_pixel[valid]
                    sp_dataset = batch.scan_dataset.to(pix.device)[batch.image_scan.to(pix.device)[image_of_sp[kept]]]
                c = cfg.cdp
                with section("losses"):
                    terms["cdp"], anchor, positive = l_cdp(k, g, sp_dataset, cfg.tau, c.threshold, c.mutual,
                                                           c.negative_margin, c.center, return_pairs=True)
                self.last_stats["cdp_pairs"] = float(anchor.numel())
                self.last_cdp_pairs = (kept[anchor], kept[positive])  # global superpixel ids
            else:
                terms["cdp"] = _zero(k)
                self.last_stats["cdp_pairs"] = 0.0
                self.last_cdp_pairs = None
        if batch.voxel_segment is not None and (w.tmp or w.p2s):
            with section("losses"):
                terms.update(self._segment_terms(batch, vox))
        if not terms:
            raise ValueError("every loss weight is 0 (or the batch has no segments for tmp/p2s): nothing to train")
        with section("losses"):
            terms["loss"] = total_loss(terms, w)
        return terms

    def _segment_terms(self, batch: PretrainBatch, vox: torch.Tensor) -> dict[str, torch.Tensor]:
        """The temporal terms ``tmp`` / ``p2s`` (those with a weight) on the voxels of frames t and t + n."""
        cfg, w = self.config, self.config.weights
        terms: dict[str, torch.Tensor] = {}
        scan = batch.voxels.coords[:, 0].to(torch.int64).to(vox.device)
        seg = batch.voxel_segment.to(vox.device)
        gen = torch.Generator().manual_seed(sum(batch.indices) + 7919 * len(batch.indices))
        is_t = scan < batch.num_scans
        if w.tmp:
            terms["tmp"] = l_tmp(vox[is_t], seg[is_t], vox[~is_t], seg[~is_t], cfg.tau, cfg.max_rows, gen)
        if w.p2s:
            shift = int(seg.max()) + 1
            seg_scan = torch.where(is_t | (seg < 0), seg, seg + shift)  # own ids per scan (t and t+n apart)
            cap = None if cfg.max_rows is None else 2 * cfg.max_rows
            terms["p2s"] = l_p2s(vox, seg_scan, scan, cfg.tau, cap, gen)
        return terms


__all__ = ["ObjectiveConfig", "PretrainModel"]


def _frozen_teacher_is_not_missing(module: PretrainModel, incompatible: Any) -> None:
    """``load_state_dict`` post-hook: the frozen teacher backbone's keys are not missing from a checkpoint (they are
    left out on purpose). Keys are matched whatever wrapper prefix (``module.``) precedes this module's."""
    frozen = module.frozen_keys()
    incompatible.missing_keys[:] = [
        k for k in incompatible.missing_keys
        if not (FROZEN_TEACHER in k and FROZEN_TEACHER + k.rsplit(FROZEN_TEACHER, 1)[1] in frozen
                and (k.startswith(FROZEN_TEACHER) or ("." + FROZEN_TEACHER) in k))]
