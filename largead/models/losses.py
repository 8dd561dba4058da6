"""Segmentation losses: Lovasz-softmax (Berman, Rannen Triki and Blaschko, CVPR 2018) and CE + Lovasz.

Lovasz-softmax, from the paper's definition. For class ``c`` let ``m_i = |y_i(c) - p_i(c)|`` be the error of point
``i`` (``y`` the one-hot ground truth, ``p`` the softmax probability) and ``Delta_c(M) = |M| / |G_c ∪ M|`` the
Jaccard loss of a set ``M`` of mispredicted points, ``G_c`` the points labelled ``c``. ``Delta_c`` is submodular,
and its Lovasz extension evaluated at ``m`` is

    loss_c(m) = sum_k m_{pi(k)} * (Delta_c({pi(1..k)}) - Delta_c({pi(1..k-1)})),

with ``pi`` sorting the errors in decreasing order. Writing ``g`` for the sorted ground truth, the set of the ``k``
largest errors has ``|G_c ∪ M| = |G_c| + #(non-class points among them)`` and ``|G_c| - |M ∩ G_c|`` class points
outside it, which gives the cumulative-sum form computed below. The loss is linear in ``m`` between ties, and its
gradient with respect to ``m`` is that vector of increments (the paper's Algorithm 1). All classes are sorted at
once (one sort along the point axis of the (N, C) error matrix), so there is no loop over points or classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from largead.data.frame import IGNORE_INDEX

__all__ = ["SegmentationLoss", "lovasz_grad", "lovasz_softmax"]


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Increments of the Jaccard loss along a sorted order (the Lovasz-extension gradient).

    ``gt_sorted`` (N, C) is 1 where the k-th largest error of class c belongs to a point of class c, else 0. Returns
    (N, C): ``Delta(first k) - Delta(first k-1)`` for each k and class, with ``Delta(empty) = 0``.
    """
    gts = gt_sorted.sum(0, keepdim=True)
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)


def lovasz_softmax(
    probs: torch.Tensor,
    labels: torch.Tensor,
    classes: str | Sequence[int] = "present",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Lovasz-softmax loss of class probabilities ``probs`` (N, C) against ``labels`` (N,).

    ``classes``: ``"present"`` averages over the classes that occur in ``labels`` (after removing ignored points),
    ``"all"`` over all C classes (an absent class contributes its largest error), or an explicit list of class ids.
    Points labelled ``ignore_index`` are removed. With no valid point the loss is ``0`` (connected to the graph).
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {tuple(probs.shape)}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must be ({probs.shape[0]},) to match probs, got {tuple(labels.shape)}")
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid].long()
    if labels.numel() == 0:
        return probs.sum() * 0.0
    num_classes = probs.shape[1]
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1} or equal {ignore_index}, "
                         f"got [{int(labels.min())}, {int(labels.max())}]")
    fg = F.one_hot(labels, num_classes).to(probs.dtype)
    errors = (fg - probs).abs()
    errors_sorted, order = errors.sort(dim=0, descending=True)
    with torch.no_grad():
        grad = lovasz_grad(fg.gather(0, order))
    per_class = (errors_sorted * grad).sum(0)
    if isinstance(classes, str):
        if classes == "present":
            return per_class[fg.sum(0) > 0].mean()
        if classes == "all":
            return per_class.mean()
        raise ValueError(f"classes must be 'present', 'all' or a list of class ids, got {classes!r}")
    idx = torch.as_tensor(list(classes), dtype=torch.int64, device=probs.device)
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= num_classes:
        raise ValueError(f"class ids {list(classes)} must be a non-empty subset of 0..{num_classes - 1}")
    return per_class[idx].mean()


class SegmentationLoss(nn.Module):
    """``ce_weight * CrossEntropy + lovasz_weight * Lovasz-softmax`` on logits (N, C) and labels (N,).

    SLidR's downstream loss with both weights 1. Points labelled ``ignore_index`` carry no signal in either term.
    """

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        ce_weight: float = 1.0,
        lovasz_weight: float = 1.0,
        lovasz_classes: str | Sequence[int] = "present",
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.ce_weight = float(ce_weight)
        self.lovasz_weight = float(lovasz_weight)
        self.lovasz_classes = lovasz_classes
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and "
                             f"{tuple(labels.shape)}")
        labels = labels.long()
        if not bool((labels != self.ignore_index).any()):
            return logits.sum() * 0.0
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(
                logits, labels, weight=self.class_weights, ignore_index=self.ignore_index)
        if self.lovasz_weight:
            loss = loss + self.lovasz_weight * lovasz_softmax(
                logits.softmax(dim=1), labels, classes=self.lovasz_classes, ignore_index=self.ignore_index)
        return loss
