"""Pretraining objectives of LargeAD: ``L = w_vfm L_vfm + w_tmp L_tmp + w_p2s L_p2s + w_cdp L_cdp``.

All terms are InfoNCE losses on pooled (segment-averaged) features, computed with scatter/index_add (no loops over
points, segments or pairs). Conventions shared by every function:

- Segment ids are int64, ``>= 0`` for a segment and ``-1`` for "no segment" (ignored). Ids are *global* in a batch
  (the caller offsets them per image / per scan) so one scatter pools the whole batch.
- Averages are ``sum / count`` over the members of a segment and are **not re-normalised** to unit length
  afterwards (as SLidR and SuperFlow do: a segment whose members disagree gets a shorter mean and therefore smaller
  logits). Inputs are expected to be L2-normalised per row (the encoder and the 2D head normalise).
- ``tau`` is the InfoNCE temperature (0.07 in SLidR/SuperFlow).
- Rows (voxels) of the point-to-segment terms are *anchors*; segment means always come from **every** row of the
  segment (an O(N) scatter), and only the anchors are subsampled (``max_anchors``, seeded). Subsampling before
  averaging would leave a small segment with one sampled row whose mean is the anchor itself: a positive logit of
  ``1/tau`` whatever the network does.

What is taken from the sources and what is this project's design (the LargeAD paper's equations could not be read):

- :func:`l_vfm` follows SLidR exactly (k from paired 3D features, q from *all* pixels of each superpixel, empty
  superpixels dropped, cross-entropy of ``k q^T / tau`` against the diagonal).
- :func:`l_tmp` (our form): segments span frames t and t+n (clustered jointly in global coordinates); an anchor of
  frame t is classified, by ``f_i . m^{t+n}_s / tau`` over the segments ``s`` present in both frames, to its own
  segment's mean feature in frame t+n (the mean of every voxel of ``s`` in t+n), and symmetrically t+n -> t; the two
  directions are averaged. The anchor never belongs to the other frame's mean, so no leave-one-out is needed. This is
  the "points of a segment pulled toward the mean segment feature of the adjacent frame" of the paper's summary, made
  contrastive (SuperFlow style) so it cannot collapse.
- :func:`l_p2s` (our form): InfoNCE of each anchor against the mean features of the segments *of its own scan*. Its
  own segment's mean is taken **leave-one-out** (``(sum_s - f_i) / (n_s - 1)``), so the positive never contains the
  anchor; anchors of single-voxel segments have no positive and are not used (such segments remain negatives for
  other anchors). Leave-one-out rather than only dropping segments of fewer than two voxels: with the anchor inside
  its mean, a segment of ``n`` voxels keeps a constant ``1/(n tau)`` of self-similarity in its positive logit (half
  of it for ``n = 2``); leave-one-out removes it for every ``n`` at the same O(N) cost.
- :func:`l_cdp` (our form): cross-dataset superpoint contrast, documented there. Positives are chosen from the
  *frozen* teacher backbone's features (cosine, above a threshold, mutual nearest neighbours across datasets), never
  from the trainable head; negatives as similar to the anchor as its positive are dropped; the term starts after a
  warm-up fraction of the schedule (:class:`CdpConfig`, applied by :class:`largead.pretrain.model.PretrainModel`).
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


@dataclass
class CdpConfig:
    """How :func:`l_cdp` picks its pairs and when it starts (our choices; the paper's are unknown).

    ``threshold``: a positive needs a cosine similarity of at least this between the (centred) frozen teacher
    prototypes; ``mutual``: and must be a mutual nearest neighbour (each the other's most similar superpoint in the
    other's dataset); ``negative_margin``: negatives of an anchor whose similarity to it is at least
    ``sim(anchor, positive) - negative_margin`` are dropped (0: those as similar as the positive);
    ``center``: subtract the batch's mean prototype before the cosine (backbone features after a ReLU are all
    non-negative, so raw cosines are all high and a threshold on them separates nothing); ``warmup``: fraction of the
    schedule (``progress = step / total_steps``) during which the term is 0.
    """

    threshold: float = 0.5
    mutual: bool = True
    negative_margin: float = 0.0
    center: bool = True
    warmup: float = 0.1


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
    them pools once): ``info_nce(k, q, tau)``, or a zero loss with a graph when fewer than two superpixels are kept."""
    if k.shape[0] < 2:
        return _zero(k, q)
    return info_nce(k, q, tau)


def _sample(mask: torch.Tensor, max_anchors: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """Indices of ``mask``'s true entries, at most ``max_anchors`` of them (uniform without replacement, drawn with
    ``generator`` on the CPU so the draw is the same on every device), in ascending order."""
    idx = torch.nonzero(mask).squeeze(1)
    if max_anchors is None or idx.numel() <= max_anchors:
        return idx
    pick = torch.randperm(idx.numel(), generator=generator)[:max_anchors].to(idx.device)
    return idx[pick.sort().values]


def _anchor_ce(f: torch.Tensor, own: torch.Tensor, means: torch.Tensor, cols: torch.Tensor,
               own_logit: torch.Tensor | None, allowed: torch.Tensor | None, tau: float) -> torch.Tensor:
    """Mean CE of anchors ``f`` (A, D) against ``means[cols]`` (their own segment ``own`` (A,) is the target). The own
    column's logit is replaced by ``own_logit`` (A,) when given (leave-one-out); ``allowed`` (A, len(cols)) masks
    columns out (``False`` -> -inf)."""
    col_of_seg = torch.full((means.shape[0],), -1, dtype=torch.int64, device=f.device)
    col_of_seg[cols] = torch.arange(cols.numel(), device=f.device)
    target = col_of_seg[own]
    logits = f @ means[cols].t() / tau
    if own_logit is not None:
        logits = logits.scatter(1, target.unsqueeze(1), own_logit.unsqueeze(1))
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return F.cross_entropy(logits, target)


def l_tmp(feats_t: torch.Tensor, seg_t: torch.Tensor, feats_n: torch.Tensor, seg_n: torch.Tensor,
          tau: float = 0.07, max_anchors: int | None = None,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Superpoint temporal consistency between frame t and frame t+n (our InfoNCE form, see the module docstring).

    ``feats_t`` (P_t, D), ``seg_t`` (P_t,): features and segment ids of **every** voxel of frame t;
    ``feats_n``, ``seg_n``: the same for frame t+n. Ids are shared: segment ``s`` is one object seen in both frames
    (global ids across the batch, ``-1`` = ground / noise). Only segments present in both frames count; their means
    ``m^t``, ``m^{t+n}`` are taken over every voxel. Anchors are the voxels of such segments, at most
    ``max_anchors`` per frame (drawn with ``generator``). Loss = 0.5 * [CE over anchors of t of
    ``f_i m^{t+n}^T / tau`` + CE over anchors of t+n of ``f_j m^{t}^T / tau``].
    """
    _check_ids(feats_t, seg_t, "l_tmp frame t")
    _check_ids(feats_n, seg_n, "l_tmp frame t+n")
    s = int(max(seg_t.max().item() if seg_t.numel() else -1, seg_n.max().item() if seg_n.numel() else -1)) + 1
    if s < 2:
        return _zero(feats_t, feats_n)
    m_t, c_t = segment_mean(feats_t, seg_t, s)
    m_n, c_n = segment_mean(feats_n, seg_n, s)
    both = (c_t > 0) & (c_n > 0)
    cols = torch.nonzero(both).squeeze(1)
    if cols.numel() < 2:
        return _zero(feats_t, feats_n)
    rows_t = _sample((seg_t >= 0) & both[seg_t.clamp(min=0)], max_anchors, generator)
    rows_n = _sample((seg_n >= 0) & both[seg_n.clamp(min=0)], max_anchors, generator)
    forward = _anchor_ce(feats_t[rows_t], seg_t[rows_t], m_n, cols, None, None, tau)
    backward = _anchor_ce(feats_n[rows_n], seg_n[rows_n], m_t, cols, None, None, tau)
    return 0.5 * (forward + backward)


def l_p2s(feats: torch.Tensor, seg: torch.Tensor, scan: torch.Tensor, tau: float = 0.07,
          max_anchors: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Point-to-segment aggregation (our form): each anchor's feature against the mean features of the segments of
    its own scan, own segment positive with a leave-one-out mean (InfoNCE; segments of other scans are not negatives).

    ``feats`` (P, D) of **every** voxel; ``seg`` (P,) global segment ids (``-1`` ignored); ``scan`` (P,) scan index
    of each row. A segment must belong to one scan (ids offset per scan); this is checked. Segment means use every
    row; anchors are rows whose segment has at least two rows, at most ``max_anchors`` of them (drawn with
    ``generator``). The positive logit of anchor ``i`` in segment ``s`` is ``f_i . (sum_s - f_i) / (n_s - 1) / tau``.
    """
    _check_ids(feats, seg, "l_p2s")
    if scan.shape != seg.shape:
        raise ValueError(f"l_p2s: scan has shape {tuple(scan.shape)}, expected {tuple(seg.shape)}")
    s = int(seg.max().item()) + 1 if seg.numel() else 0
    if s < 1:
        return _zero(feats)
    scan = scan.to(torch.int64)
    means, counts = segment_mean(feats, seg, s)
    keep = seg >= 0
    lo = torch.full((s,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=feats.device)
    hi = torch.full((s,), -1, dtype=torch.int64, device=feats.device)
    lo.scatter_reduce_(0, seg[keep], scan[keep], reduce="amin")
    hi.scatter_reduce_(0, seg[keep], scan[keep], reduce="amax")
    present = counts > 0
    if bool((lo[present] != hi[present]).any()):
        raise ValueError("l_p2s: a segment id spans several scans; offset segment ids per scan")
    cols = torch.nonzero(present).squeeze(1)
    rows = _sample(keep & (counts[seg.clamp(min=0)] >= 2), max_anchors, generator)
    if rows.numel() == 0 or cols.numel() < 2:
        return _zero(feats)
    f, own = feats[rows], seg[rows]
    n = counts[own].to(feats.dtype)
    sums = means[own] * n.unsqueeze(1)
    loo = (f * (sums - f)).sum(1) / (n - 1) / tau
    allowed = scan[rows].unsqueeze(1) == hi[cols].unsqueeze(0)
    return _anchor_ce(f, own, means, cols, loo, allowed, tau)


def cdp_pairs(g: torch.Tensor, dataset: torch.Tensor, threshold: float = 0.5, mutual: bool = True,
              center: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive pairs of :func:`l_cdp` from frozen teacher prototypes; no gradient.

    ``g`` (S, C): frozen backbone feature of each superpoint (pooled over its superpixel); ``dataset`` (S,) int64.
    Similarity = cosine of ``g`` (centred by its mean over the S superpoints when ``center``). For every superpoint
    ``i`` and every *other* dataset ``d``, ``j = argmax_{dataset_j = d} sim(i, j)`` is a candidate; it is kept when
    ``sim(i, j) >= threshold`` and, with ``mutual``, ``i`` is also ``j``'s most similar superpoint of ``i``'s dataset.
    Returns ``(anchor (R,), positive (R,), sim (S, S))``; a kept pair appears in both directions.
    """
    if g.ndim != 2 or dataset.shape != (g.shape[0],):
        raise ValueError(f"cdp_pairs: g must be (S, C) and dataset (S,), got {tuple(g.shape)}, {tuple(dataset.shape)}")
    with torch.no_grad():
        x = g.detach().to(torch.float32)
        if center:
            x = x - x.mean(0, keepdim=True)
        x = F.normalize(x, dim=1)
        sim = x @ x.t()
        names, slot = torch.unique(dataset, return_inverse=True)  # slot[i]: index of i's dataset in names
        # best[d, i]: superpoint of dataset names[d] most similar to i (a loop over datasets, 2-3, not superpoints)
        best = torch.stack([sim.masked_fill((slot != d).unsqueeze(0), float("-inf")).argmax(1)
                            for d in range(names.numel())])
        cand_i = torch.arange(g.shape[0], device=g.device).repeat(names.numel())
        cand_d = torch.arange(names.numel(), device=g.device).repeat_interleave(g.shape[0])
        other = slot[cand_i] != cand_d
        i, d = cand_i[other], cand_d[other]
        j = best[d, i]
        ok = sim[i, j] >= threshold
        if mutual:
            ok &= best[slot[i], j] == i
        return i[ok], j[ok], sim


def l_cdp(k: torch.Tensor, g: torch.Tensor, dataset: torch.Tensor, tau: float = 0.07, threshold: float = 0.5,
          mutual: bool = True, negative_margin: float = 0.0, center: bool = True,
          return_pairs: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-dataset superpoint contrast (our design): 3D superpoints of different LiDARs that the frozen 2D teacher
    sees as the same thing are pulled together.

    ``k`` (S, D): 3D superpoint prototypes (mean 3D feature per superpixel, as in :func:`l_vfm`, trainable);
    ``g`` (S, C): the frozen teacher backbone's feature of the same superpoints (pooled over each superpixel, before
    the trainable head, so training cannot change which pairs are positive); ``dataset`` (S,) int64. Pairs
    ``(i, j)`` come from :func:`cdp_pairs` (cosine of centred ``g`` at least ``threshold``, mutual nearest neighbours
    across datasets). For each pair the loss is the CE of ``k_i . k_c / tau`` over candidates ``c`` = superpoints of
    other datasets than ``i``'s, target ``j``, where candidates ``c != j`` with ``sim(i, c) >= sim(i, j) -
    negative_margin`` are dropped (as similar as the positive: not negatives). Mean over pairs; 0 (with a graph) when
    fewer than two datasets are present or no pair passes. ``return_pairs`` also returns ``(anchor, positive)``.
    """
    if k.ndim != 2 or g.ndim != 2 or k.shape[0] != g.shape[0] or dataset.shape != (k.shape[0],):
        raise ValueError(f"l_cdp: k (S, D), g (S, C) and dataset (S,) must agree, got {tuple(k.shape)}, "
                         f"{tuple(g.shape)}, {tuple(dataset.shape)}")
    empty = torch.zeros(0, dtype=torch.int64, device=k.device)
    if dataset.numel() == 0 or int(torch.unique(dataset).numel()) < 2:
        return (_zero(k), empty, empty) if return_pairs else _zero(k)
    anchor, positive, sim = cdp_pairs(g, dataset, threshold, mutual, center)
    if anchor.numel() == 0:
        return (_zero(k), anchor, positive) if return_pairs else _zero(k)
    with torch.no_grad():
        s_pos = sim[anchor, positive]
        other = dataset.unsqueeze(0) != dataset[anchor].unsqueeze(1)  # (R, S) candidates
        near = sim[anchor] >= (s_pos - negative_margin).unsqueeze(1)
        near.scatter_(1, positive.unsqueeze(1), False)
        allowed = other & ~near
    logits = (k[anchor] @ k.t() / tau).masked_fill(~allowed, float("-inf"))
    loss = F.cross_entropy(logits, positive)
    return (loss, anchor, positive) if return_pairs else loss


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """``sum_name weights.name * terms[name]`` over the terms given (names: vfm, tmp, p2s, cdp)."""
    unknown = set(terms) - {"vfm", "tmp", "p2s", "cdp"}
    if unknown:
        raise KeyError(f"unknown loss term(s) {sorted(unknown)}; expected vfm, tmp, p2s, cdp")
    return sum((getattr(weights, name) * value for name, value in terms.items()),
               torch.zeros((), device=next(iter(terms.values())).device))


__all__ = ["CdpConfig", "LossWeights", "cdp_pairs", "info_nce", "l_cdp", "l_p2s", "l_tmp", "l_vfm", "prototype_nce",
           "segment_mean", "superpixel_prototypes", "total_loss"]
