"""Semantic-segmentation metrics: confusion matrix, per-class IoU, two mIoU conventions, accuracy.

Conventions (shared with :mod:`largead.data.frame`): labels are training ids ``0 .. C-1`` and
:data:`~largead.data.frame.IGNORE_INDEX` (-1) marks points that are not evaluated. Such points are removed before
counting, so neither their prediction nor their label reaches the matrix. The confusion matrix has rows = ground
truth, columns = prediction.

Two mean-IoU conventions are reported, named so they cannot be confused:

- :func:`miou` — the standard mean over classes with a non-empty union (a class neither present in the ground truth
  nor predicted is ``nan`` and excluded from the mean).
- :func:`miou_slidr` — SLidR's convention: a class with an empty union counts as IoU 1.0. On a full validation set
  every class is present, so the two agree; on small subsets ``miou_slidr`` is higher.

SLidR's heads have one output per training id *including* the ignore class 0, and the ignore channel is forced out
of the argmax. Heads in this package have exactly ``C`` outputs (no ignore channel), so a plain argmax is correct;
:func:`predict` still accepts ``exclude`` channels for logits laid out SLidR's way.

Distributed evaluation: :class:`ConfusionMatrix` holds an integer count matrix; summing the matrices of disjoint
frame sets gives exactly the matrix of their union. :func:`frame_partition` splits frames between processes without
padding or duplication (a padded ``DataLoader`` would count some frames twice), and :meth:`ConfusionMatrix.reduce`
sums the per-process matrices with Accelerate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from largead.data.frame import IGNORE_INDEX

__all__ = [
    "ConfusionMatrix",
    "accuracy",
    "confusion_matrix",
    "frame_partition",
    "iou_per_class",
    "miou",
    "miou_slidr",
    "predict",
]


def _as_long(x: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer class ids, got dtype {t.dtype}")
    return t.reshape(-1).to(torch.int64)


def predict(logits: torch.Tensor, exclude: Sequence[int] = ()) -> torch.Tensor:
    """Arg-max class of each row of ``logits`` (N, C), never choosing a channel listed in ``exclude``.

    ``exclude`` is for SLidR-style heads whose channel 0 is the ignore class; the heads of this package need none.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if len(exclude):
        idx = torch.as_tensor(list(exclude), dtype=torch.int64, device=logits.device)
        if int(idx.min()) < 0 or int(idx.max()) >= logits.shape[1]:
            raise ValueError(f"exclude {list(exclude)} out of range for {logits.shape[1]} channels")
        if idx.numel() >= logits.shape[1]:
            raise ValueError("exclude removes every channel")
        logits = logits.clone()
        logits[:, idx] = -torch.inf
    return logits.argmax(dim=1)


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """(C, C) int64 counts, ``[true, predicted]``, of per-point predictions ``pred`` (N,) against ``target`` (N,).

    Points whose target equals ``ignore_index`` are dropped. Any other target or prediction outside ``0 .. C-1``
    raises ``ValueError`` (an out-of-range id is a bug upstream, not something to count silently).
    """
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    p = _as_long(pred, "pred")
    t = _as_long(target, "target").to(p.device)
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.numel()} entries but target has {t.numel()}")
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    if t.numel():
        for name, v in (("target", t), ("pred", p)):
            lo, hi = int(v.min()), int(v.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(
                    f"{name} ids must lie in 0..{num_classes - 1} (ignore index {ignore_index} excepted), "
                    f"got values in [{lo}, {hi}]"
                )
    flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).cpu()


def _check_cm(cm: torch.Tensor | np.ndarray) -> torch.Tensor:
    c = torch.as_tensor(cm)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {tuple(c.shape)}")
    return c.to(torch.float64)


def iou_per_class(cm: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(C,) float64 IoU = TP / (TP + FP + FN) per class; ``nan`` where the union is empty."""
    c = _check_cm(cm)
    tp = torch.diagonal(c)
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def miou(cm: torch.Tensor | np.ndarray) -> float:
    """Standard mean IoU: mean over classes with a non-empty union (``nan`` if there is none)."""
    iou = iou_per_class(cm)
    valid = ~torch.isnan(iou)
    return float(iou[valid].mean()) if bool(valid.any()) else float("nan")


def miou_slidr(cm: torch.Tensor | np.ndarray) -> float:
    """SLidR's mean IoU: a class with an empty union counts as IoU 1.0, then the plain mean over all C classes."""
    return float(torch.nan_to_num(iou_per_class(cm), nan=1.0).mean())


def accuracy(cm: torch.Tensor | np.ndarray) -> float:
    """Overall point accuracy ``trace / total`` (``nan`` if no point was counted)."""
    c = _check_cm(cm)
    total = float(c.sum())
    return float(torch.diagonal(c).sum()) / total if total > 0 else float("nan")


def frame_partition(num_frames: int, num_processes: int, process_index: int) -> np.ndarray:
    """Frame indices evaluated by ``process_index`` of ``num_processes``: contiguous, disjoint, covering all frames.

    Unlike a distributed sampler, nothing is padded or repeated, so summed confusion matrices are exact. A process
    may get no frame when there are fewer frames than processes.
    """
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"process_index {process_index} out of range for {num_processes} processes")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    bounds = np.linspace(0, num_frames, num_processes + 1).round().astype(np.int64)
    return np.arange(bounds[process_index], bounds[process_index + 1], dtype=np.int64)


class ConfusionMatrix:
    """Running confusion matrix over many frames (and, after :meth:`reduce`, over processes).

    >>> cm = ConfusionMatrix(3, class_names=("a", "b", "c"))
    >>> cm.update(pred, target)          # per-point ids, any number of times  # doctest: +SKIP
    >>> cm.reduce(accelerator)           # sum over processes (no-op on one)   # doctest: +SKIP
    >>> cm.compute()["miou"]             # doctest: +SKIP
    """

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] | None = None
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> ConfusionMatrix:
        """Add per-point predictions ``pred`` (N,) against ``target`` (N,)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError("can only add a ConfusionMatrix with the same number of classes")
        self.matrix += other.matrix
        return self

    def reduce(self, accelerator: Any) -> ConfusionMatrix:
        """Sum the matrices of all processes in place (``accelerator.reduce``); every process gets the total."""
        device = getattr(accelerator, "device", "cpu")
        total = accelerator.reduce(self.matrix.to(device), reduction="sum")
        self.matrix = total.to("cpu", torch.int64)
        return self

    def compute(self) -> dict[str, Any]:
        """All metrics as plain Python values (fractions in ``[0, 1]``, not percent).

        Keys: ``iou_per_class`` ({name: IoU or None if empty union}), ``miou``, ``miou_slidr``, ``accuracy``,
        ``num_points`` (points counted), ``confusion_matrix`` (nested lists).
        """
        iou = iou_per_class(self.matrix)
        return {
            "iou_per_class": {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.class_names, iou.tolist())},
            "miou": miou(self.matrix),
            "miou_slidr": miou_slidr(self.matrix),
            "accuracy": accuracy(self.matrix),
            "num_points": int(self.matrix.sum()),
            "confusion_matrix": self.matrix.tolist(),
        }
