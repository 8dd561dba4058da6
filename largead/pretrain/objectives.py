"""Pretraining objectives of LargeAD: ``L = w_vfm L_vfm + w_tmp L_tmp + w_p2s L_p2s + w_cdp L_cdp``.

All terms are InfoNCE losses on pooled (segment-averaged) features, computed with scatter/index_add (no loops over
points or segments). Conventions shared by every function:

- Segment ids are int64, ``>= 0`` for a segment and ``-1`` for "no segment" (ignored). Ids are *global* in a batch
  (the caller offsets them per image / per scan) so one scatter pools the whole batch.
- Averages are ``sum / count`` over the members of a segment and are **not re-normalised** to unit length
  afterwards (as SLidR and SuperFlow do: a segment whose members disagree gets a shorter mean and therefore smaller
  logits). Inputs are expected to be L2-normalised per row (the encoder and the 2D head normalise).
- ``tau`` is the InfoNCE temperature (0.07 in SLidR/SuperFlow).

What is taken from the sources and what is this project's design (the LargeAD paper's equations could not be read):

- :func:`l_vfm` follows SLidR exactly (k from paired 3D features, q from *all* pixels of each superpixel, empty
  superpixels dropped, cross-entropy of ``k q^T / tau`` against the diagonal).
- :func:`l_tmp` (our form): segments span frames t and t+n (clustered jointly in global coordinates); every point
  (row) of frame t is classified, by ``f_i . m^{t+n}_s / tau`` over the segments ``s`` present in both frames, to its own
  segment's mean feature in frame t+n, and symmetrically t+n -> t; the two directions are averaged. This is the
  "points of a segment pulled toward the mean segment feature of the adjacent frame" of the paper's summary, made
  contrastive (SuperFlow style) so it cannot collapse.
- :func:`l_p2s` (our form): InfoNCE of each point against the mean features of the segments *of its own scan*
  (its own segment positive), so features aggregate within segments and separate between segments.
- :func:`l_cdp` (our form): cross-dataset superpoint contrast. For each superpoint of dataset A, its positive is the
  superpoint of another dataset whose 2D (teacher-space) prototype is most similar; the loss is InfoNCE of 3D
  prototypes over all superpoints of other datasets. The 2D teacher is sensor-agnostic, so this pulls the 3D
  features of semantically alike regions seen by different LiDARs together (cross-sensor consistency). Zero when a
  batch holds a single dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from largead.superpixels.superpoints import segment_mean  # re-exported: one pooling for 2D and 3D


@dataclass
class LossWeights:
    """Weights of the four terms (the paper sums them unweighted: all 1)."""

    vfm: float = 1.0
    tmp: float = 1.0
    p2s: float = 1.0
    cdp: float = 1.0


def _check_ids(feats: torch.Tensor, ids: torch.Tensor, what: str) -> None:
    if feats.ndim != 2 or ids.ndim != 1 or feats.shape[0] != ids.shape[0]:
        raise ValueError(f"{what}: features must be (N, D) and ids (N,), got {tuple(feats.shape)} and {tuple(ids.shape)}")


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Cross-entropy of ``a b^T / tau`` against the diagonal (row ``i`` of ``a`` matches row ``i`` of ``b``)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"info_nce needs two (S, D) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = a @ b.t() / tau
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero loss that still depends on the inputs (keeps DDP's gradient graph identical on every process)."""
    return sum((t.sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))


def superpixel_prototypes(point_feats: torch.Tensor, point_superpixel: torch.Tensor, pixel_feats: torch.Tensor,
                          pixel_superpixel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3D and 2D superpixel prototypes ``(k (S, D), q (S, D), kept_ids (S,))``: mean paired 3D feature and mean 2D
    feature of every superpixel that has at least one paired point and one pixel (others dropped). See :func:`l_vfm`.
    """
    _check_ids(point_feats, point_superpixel, "superpixel prototypes (points)")
    _check_ids(pixel_feats, pixel_superpixel, "superpixel prototypes (pixels)")
    s = int(max(point_superpixel.max().item() if point_superpixel.numel() else -1,
                pixel_superpixel.max().item() if pixel_superpixel.numel() else -1)) + 1
    k, nk = segment_mean(point_feats, point_superpixel, s)
    q, nq = segment_mean(pixel_feats, pixel_superpixel, s)
    kept = torch.nonzero((nk > 0) & (nq > 0)).squeeze(1)
    return k[kept], q[kept].to(k.dtype), kept


def l_vfm(point_feats: torch.Tensor, point_superpixel: torch.Tensor, pixel_feats: torch.Tensor,
          pixel_superpixel: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Superpixel-to-superpoint InfoNCE (SLidR).

    ``point_feats`` (P, D): 3D feature of each point-pixel pair (the voxel feature of the paired point);
    ``point_superpixel`` (P,): global superpixel id of the pair's pixel. ``pixel_feats`` (Q, D) and
    ``pixel_superpixel`` (Q,): 2D features and ids of the pixels to average (SLidR: all pixels of all images, so a
    superpixel's q is the mean over its whole area). k = mean 3D feature, q = mean 2D feature per superpixel;
    superpixels with no paired point (or no pixel) are dropped; loss = CE(k q^T / tau, diagonal).
    """
    k, q, _ = superpixel_prototypes(point_feats, point_superpixel, pixel_feats, pixel_superpixel)
    return prototype_nce(k, q, tau)


def prototype_nce(k: torch.Tensor, q: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """:func:`l_vfm` from prototypes already pooled by :func:`superpixel_prototypes` (so a caller that also needs
    them, e.g. for :func:`l_cdp`, pools once): ``info_nce(k, q, tau)``, or a zero loss with a graph when fewer than
    two superpixels are kept."""
    if k.shape[0] < 2:
        return _zero(k, q)
    return info_nce(k, q, tau)


def _point_to_segment_ce(feats: torch.Tensor, ids: torch.Tensor, means: torch.Tensor, valid_seg: torch.Tensor,
                         group_of_point: torch.Tensor | None, group_of_seg: torch.Tensor | None,
                         tau: float) -> torch.Tensor:
    """Mean CE of ``feats . means^T / tau`` (columns restricted to ``valid_seg`` and, if given, to the point's group)
    against each row's own segment; rows whose segment is not valid are skipped."""
    cols = torch.nonzero(valid_seg).squeeze(1)
    col_of_seg = torch.full((valid_seg.numel(),), -1, dtype=torch.int64, device=feats.device)
    col_of_seg[cols] = torch.arange(cols.numel(), device=feats.device)
    rows = (ids >= 0) & (col_of_seg[ids.clamp(min=0)] >= 0)
    if int(rows.sum()) == 0 or cols.numel() < 2:
        return _zero(feats, means)
    logits = feats[rows] @ means[cols].t() / tau
    if group_of_point is not None:
        other = group_of_point[rows].unsqueeze(1) != group_of_seg[cols].unsqueeze(0)
        logits = logits.masked_fill(other, float("-inf"))
    return F.cross_entropy(logits, col_of_seg[ids[rows]])


def l_tmp(feats_t: torch.Tensor, seg_t: torch.Tensor, feats_n: torch.Tensor, seg_n: torch.Tensor,
          tau: float = 0.07) -> torch.Tensor:
    """Superpoint temporal consistency between frame t and frame t+n (our InfoNCE form, see the module docstring).

    ``feats_t`` (P_t, D), ``seg_t`` (P_t,): features and segment ids of frame t's points (or voxels);
    ``feats_n``, ``seg_n``: the same for frame t+n. Ids are shared: segment ``s`` is one object seen in both frames
    (global ids across the batch, ``-1`` = ground / noise). Only segments present in both frames count.
    Loss = 0.5 * [CE over rows of t of ``f_i m^{n}^T / tau`` + CE over rows of t+n of ``f_j m^{t}^T / tau``].
    """
    _check_ids(feats_t, seg_t, "l_tmp frame t")
    _check_ids(feats_n, seg_n, "l_tmp frame t+n")
    s = int(max(seg_t.max().item() if seg_t.numel() else -1, seg_n.max().item() if seg_n.numel() else -1)) + 1
    if s < 2:
        return _zero(feats_t, feats_n)
    m_t, c_t = segment_mean(feats_t, seg_t, s)
    m_n, c_n = segment_mean(feats_n, seg_n, s)
    both = (c_t > 0) & (c_n > 0)
    forward = _point_to_segment_ce(feats_t, seg_t, m_n, both, None, None, tau)
    backward = _point_to_segment_ce(feats_n, seg_n, m_t, both, None, None, tau)
    return 0.5 * (forward + backward)


def l_p2s(feats: torch.Tensor, seg: torch.Tensor, scan: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Point-to-segment aggregation (our form): each row's feature against the mean features of the segments of its
    own scan, own segment positive (InfoNCE; segments of other scans are not negatives).

    ``feats`` (P, D); ``seg`` (P,) global segment ids (``-1`` ignored); ``scan`` (P,) scan index of each row. A
    segment must belong to one scan (ids offset per scan); this is checked.
    """
    _check_ids(feats, seg, "l_p2s")
    if scan.shape != seg.shape:
        raise ValueError(f"l_p2s: scan has shape {tuple(scan.shape)}, expected {tuple(seg.shape)}")
    s = int(seg.max().item()) + 1 if seg.numel() else 0
    if s < 1:
        return _zero(feats)
    means, counts = segment_mean(feats, seg, s)
    keep = seg >= 0
    lo = torch.full((s,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=feats.device)
    hi = torch.full((s,), -1, dtype=torch.int64, device=feats.device)
    lo.scatter_reduce_(0, seg[keep], scan[keep].to(torch.int64), reduce="amin")
    hi.scatter_reduce_(0, seg[keep], scan[keep].to(torch.int64), reduce="amax")
    present = counts > 0
    if bool((lo[present] != hi[present]).any()):
        raise ValueError("l_p2s: a segment id spans several scans; offset segment ids per scan")
    return _point_to_segment_ce(feats, seg, means, present, scan.to(torch.int64), hi, tau)


def l_cdp(k: torch.Tensor, q: torch.Tensor, dataset: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Cross-dataset superpoint contrast (our design, see the module docstring).

    ``k`` (S, D): 3D superpoint prototypes (mean 3D feature per superpixel, as in :func:`l_vfm`); ``q`` (S, D): the
    matching 2D prototypes; ``dataset`` (S,) int64 dataset index of each superpoint. For superpoint ``i`` the positive
    is ``j* = argmax_{j: dataset_j != dataset_i} q_i . q_j`` (teacher space, no gradient); the loss is the mean CE of
    ``k_i . k_j^T / tau`` over superpoints ``j`` of other datasets against ``j*``. Returns 0 (with a graph) when fewer
    than two datasets are present.
    """
    if k.shape != q.shape or k.ndim != 2 or dataset.shape != (k.shape[0],):
        raise ValueError(f"l_cdp: k, q must be (S, D) and dataset (S,), got {tuple(k.shape)}, {tuple(q.shape)}, "
                         f"{tuple(dataset.shape)}")
    if dataset.numel() == 0 or int(torch.unique(dataset).numel()) < 2:
        return _zero(k, q)
    same = dataset.unsqueeze(1) == dataset.unsqueeze(0)
    with torch.no_grad():
        target = (q @ q.t()).masked_fill(same, float("-inf")).argmax(1)
    logits = (k @ k.t() / tau).masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, target)


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """``sum_name weights.name * terms[name]`` over the terms given (names: vfm, tmp, p2s, cdp)."""
    unknown = set(terms) - {"vfm", "tmp", "p2s", "cdp"}
    if unknown:
        raise KeyError(f"unknown loss term(s) {sorted(unknown)}; expected vfm, tmp, p2s, cdp")
    return sum((getattr(weights, name) * value for name, value in terms.items()),
               torch.zeros((), device=next(iter(terms.values())).device))


__all__ = ["LossWeights", "info_nce", "l_cdp", "l_p2s", "l_tmp", "l_vfm", "prototype_nce", "segment_mean",
           "superpixel_prototypes", "total_loss"]
