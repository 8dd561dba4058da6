"""mIoU, accuracy and the confusion matrix against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from largead.evaluation.metrics import (
    ConfusionMatrix,
    accuracy,
    confusion_matrix,
    frame_partition,
    iou_per_class,
    miou,
    miou_slidr,
    predict,
)


def test_confusion_matrix_hand_counts_with_ignore() -> None:
    target = np.array([0, 0, 1, 1, 1, 2, -1, -1])
    pred = np.array([0, 1, 1, 1, 0, 2, 2, 0])
    cm = confusion_matrix(pred, target, 4)
    expected = torch.tensor([[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm, expected)


def test_iou_and_both_mious_hand_values() -> None:
    # rows = truth, cols = prediction; class 3 absent everywhere (empty union); class 2 predicted but absent.
    cm = torch.tensor([[3, 1, 0, 0], [2, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    # class0: tp 3, fp 2, fn 1 -> 3/6; class1: tp 4, fp 1, fn 3 -> 4/8; class2: tp 0, fp 1, fn 0 -> 0; class3: nan
    iou = iou_per_class(cm)
    assert iou[:3].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert math.isnan(float(iou[3]))
    assert miou(cm) == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert miou_slidr(cm) == pytest.approx((0.5 + 0.5 + 0.0 + 1.0) / 4)
    assert accuracy(cm) == pytest.approx(7 / 11)


def test_perfect_and_empty() -> None:
    cm = confusion_matrix(torch.tensor([1, 1, 0]), torch.tensor([1, 1, 0]), 3)
    assert miou(cm) == 1.0 and miou_slidr(cm) == 1.0 and accuracy(cm) == 1.0
    empty = confusion_matrix(torch.tensor([2]), torch.tensor([-1]), 3)
    assert int(empty.sum()) == 0
    assert math.isnan(miou(empty)) and math.isnan(accuracy(empty)) and miou_slidr(empty) == 1.0


def test_out_of_range_ids_raise() -> None:
    with pytest.raises(ValueError, match="target ids"):
        confusion_matrix(torch.tensor([0]), torch.tensor([5]), 3)
    with pytest.raises(ValueError, match="pred ids"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)
    with pytest.raises(TypeError):
        confusion_matrix(torch.tensor([0.5]), torch.tensor([0]), 3)


def test_predict_excludes_channel() -> None:
    logits = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    assert predict(logits).tolist() == [0, 1]
    assert predict(logits, exclude=[0]).tolist() == [2, 1]


def test_matches_loop_reference_on_random_data() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 5, 500)
    p = rng.integers(0, 5, 500)
    ref = np.zeros((5, 5), dtype=np.int64)
    for a, b in zip(t, p):  # independent oracle: one point at a time
        if a >= 0:
            ref[a, b] += 1
    assert np.array_equal(confusion_matrix(p, t, 5).numpy(), ref)


def test_accumulator_sums_frames_and_reports() -> None:
    acc = ConfusionMatrix(3, class_names=("a", "b", "c"))
    acc.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    acc.update(torch.tensor([1, 2]), torch.tensor([0, -1]))
    out = acc.compute()
    assert out["num_points"] == 3
    assert out["iou_per_class"] == {"a": 0.5, "b": 0.5, "c": None}
    assert out["miou"] == pytest.approx(0.5) and out["miou_slidr"] == pytest.approx(2 / 3)
    other = ConfusionMatrix(3).update(torch.tensor([2]), torch.tensor([2]))
    acc += other
    assert acc.compute()["iou_per_class"]["c"] == 1.0


class _FakeAccelerator:
    """Two 'processes' summed the way accelerate.reduce(sum) does."""

    device = torch.device("cpu")

    def __init__(self, other: torch.Tensor) -> None:
        self.other = other

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        assert reduction == "sum"
        return tensor + self.other


def test_reduce_uses_sum() -> None:
    a = ConfusionMatrix(2).update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    b = ConfusionMatrix(2).update(torch.tensor([1]), torch.tensor([1]))
    a.reduce(_FakeAccelerator(b.matrix))
    assert a.matrix.tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize("n,procs", [(0, 2), (1, 2), (7, 2), (10, 3), (5, 8)])
def test_frame_partition_disjoint_and_complete(n: int, procs: int) -> None:
    parts = [frame_partition(n, procs, r) for r in range(procs)]
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(n))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    with pytest.raises(ValueError):
        frame_partition(n, procs, procs)
