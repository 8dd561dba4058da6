"""Lovasz-softmax against the definition of the Lovasz extension, hand values, and CE + Lovasz."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from largead.models.losses import SegmentationLoss, lovasz_grad, lovasz_softmax


def _jaccard_loss(mispredicted: frozenset[int], gt: set[int]) -> float:
    """Delta_J(M) = |M| / |G ∪ M| (0 for the empty set), straight from the definition."""
    if not mispredicted:
        return 0.0
    return len(mispredicted) / len(gt | mispredicted)


def _lovasz_extension_bruteforce(errors: list[float], gt: set[int]) -> float:
    """Lovasz extension of a submodular set function = max over all orderings of the greedy sum (Edmonds)."""
    n = len(errors)
    best = -float("inf")
    for perm in itertools.permutations(range(n)):
        total, prev, chosen = 0.0, 0.0, set()
        for i in perm:
            chosen.add(i)
            cur = _jaccard_loss(frozenset(chosen), gt)
            total += errors[i] * (cur - prev)
            prev = cur
        best = max(best, total)
    return best


def _naive_lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, classes: str, ignore: int = -1) -> float:
    keep = labels != ignore
    probs, labels = probs[keep], labels[keep]
    losses = []
    for c in range(probs.shape[1]):
        gt = {i for i in range(len(labels)) if int(labels[i]) == c}
        if classes == "present" and not gt:
            continue
        errors = [abs(float(int(labels[i]) == c) - float(probs[i, c])) for i in range(len(labels))]
        losses.append(_lovasz_extension_bruteforce(errors, gt))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("classes", ["present", "all"])
def test_matches_bruteforce_lovasz_extension(seed: int, classes: str) -> None:
    g = torch.Generator().manual_seed(seed)
    n, c = 6, 4
    probs = torch.randn(n, c, generator=g, dtype=torch.float64).softmax(1)
    labels = torch.randint(0, c - 1, (n,), generator=g)  # class 3 never present
    labels[seed % n] = -1
    got = float(lovasz_softmax(probs, labels, classes=classes))
    assert got == pytest.approx(_naive_lovasz_softmax(probs, labels, classes), rel=1e-10, abs=1e-12)


def test_hand_values() -> None:
    # Two points, two classes. Point 0 is class 0 with p = (0.8, 0.2); point 1 is class 1 with p = (0.4, 0.6).
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    # class 0: errors (0.2, 0.4) -> order [1, 0]; Delta({1}) = 1/2, Delta({1, 0}) = 2/2 = 1.
    #   loss0 = 0.4 * 0.5 + 0.2 * 0.5 = 0.3. class 1: errors (0.2, 0.4), gt {1}: Delta({1}) = 1/1, Delta({1,0}) = 1.
    #   loss1 = 0.4 * 1 + 0.2 * 0 = 0.4.  mean = 0.35
    assert float(lovasz_softmax(probs, labels)) == pytest.approx(0.35)
    assert float(lovasz_softmax(probs, labels, classes=[1])) == pytest.approx(0.4)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(lovasz_softmax(perfect, labels)) == 0.0


def test_lovasz_grad_hand_values() -> None:
    gt = torch.tensor([[1.0], [0.0], [1.0]])
    # Delta after 1: |M|=1, G∪M = {0, 2} -> 1/2; after 2: 2/3; after 3: 3/3
    assert lovasz_grad(gt)[:, 0].tolist() == pytest.approx([0.5, 2 / 3 - 0.5, 1 - 2 / 3])


def test_gradient_is_the_lovasz_increments() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.1, 0.9], [0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    lovasz_softmax(probs, labels, classes=[0]).backward()
    # class 0 errors: 0.3, 0.9, 0.5 -> order [1, 2, 0]; gt sorted (1, 0, 1); increments from lovasz_grad
    inc = lovasz_grad(torch.tensor([[1.0], [0.0], [1.0]], dtype=torch.float64))[:, 0]
    # d error / d p0 = -1 for class-0 points, +1 for others
    expected = torch.zeros(3, 2, dtype=torch.float64)
    expected[1, 0], expected[2, 0], expected[0, 0] = -inc[0], +inc[1], -inc[2]
    assert torch.allclose(probs.grad, expected)


def test_ignore_everything_and_bad_labels() -> None:
    logits = torch.randn(3, 2, requires_grad=True)
    loss = SegmentationLoss()(logits, torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="labels must lie"):
        lovasz_softmax(logits.softmax(1), torch.tensor([0, 2, 1]))


def test_combined_loss_is_ce_plus_lovasz() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(20, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(-1, 5, (20,), generator=g)
    keep = labels >= 0
    ce = F.cross_entropy(logits[keep], labels[keep])
    lov = _naive_lovasz_softmax(logits.softmax(1)[:6], labels[:6], "present")  # brute force only on 6 points
    loss = SegmentationLoss(ce_weight=1.0, lovasz_weight=0.5)
    assert float(loss(logits, labels)) == pytest.approx(float(ce) + 0.5 * float(lovasz_softmax(logits.softmax(1), labels)))
    assert float(lovasz_softmax(logits.softmax(1)[:6], labels[:6])) == pytest.approx(lov)
