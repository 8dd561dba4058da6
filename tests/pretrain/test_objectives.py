"""Objectives against hand-computed values and naive per-row loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from largead.pretrain.objectives import (
    LossWeights,
    l_cdp,
    l_p2s,
    l_tmp,
    l_vfm,
    prototype_nce,
    segment_mean,
    superpixel_prototypes,
    total_loss,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def ids(*v):
    return torch.tensor(v, dtype=torch.int64)


def test_segment_mean_ignores_minus_one_and_empty():
    means, counts = segment_mean(t([1, 0], [0, 1], [5, 5], [0, 1]), ids(0, 0, -1, 2), 4)
    assert counts.tolist() == [2, 0, 1, 0]
    assert torch.allclose(means, t([0.5, 0.5], [0, 0], [0, 1], [0, 0]))


def test_l_vfm_hand_computed():
    # k0 = mean((1,0),(0,1)) = (.5,.5) (not re-normalised), k1 = (0,1); q0 = (1,0), q1 = mean((0,1),(1,0)) = (.5,.5)
    # superpixel 2 has pixels but no point: dropped. tau = 0.5 -> logits [[1, 1], [0, 1]]
    pts, pid = t([1, 0], [0, 1], [0, 1]), ids(0, 0, 1)
    pix, xid = t([1, 0], [1, 0], [0, 1], [1, 0], [0, -1]), ids(0, 0, 1, 1, 2)
    expected = (math.log(2) + math.log(1 + math.e) - 1) / 2
    assert l_vfm(pts, pid, pix, xid, tau=0.5).item() == pytest.approx(expected, rel=1e-12)


def test_l_vfm_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    pts = F.normalize(torch.randn(40, 8, generator=g, dtype=torch.float64), dim=1)
    pix = F.normalize(torch.randn(90, 8, generator=g, dtype=torch.float64), dim=1)
    pid = torch.randint(0, 12, (40,), generator=g)
    xid = torch.randint(0, 12, (90,), generator=g)
    ks, qs = [], []
    for s in range(12):
        if (pid == s).any() and (xid == s).any():
            ks.append(pts[pid == s].mean(0))
            qs.append(pix[xid == s].mean(0))
    k, q = torch.stack(ks), torch.stack(qs)
    logits = k @ q.t() / 0.07
    naive = -torch.stack([logits[i].log_softmax(0)[i] for i in range(len(ks))]).mean()
    assert l_vfm(pts, pid, pix, xid).item() == pytest.approx(naive.item(), rel=1e-10)


def test_prototype_nce_on_pooled_prototypes_is_l_vfm():
    # the same hand-computed case as test_l_vfm_hand_computed, pooled once by the caller
    pts, pid = t([1, 0], [0, 1], [0, 1]), ids(0, 0, 1)
    pix, xid = t([1, 0], [1, 0], [0, 1], [1, 0], [0, -1]), ids(0, 0, 1, 1, 2)
    k, q, kept = superpixel_prototypes(pts, pid, pix, xid)
    assert kept.tolist() == [0, 1]
    expected = (math.log(2) + math.log(1 + math.e) - 1) / 2
    assert prototype_nce(k, q, tau=0.5).item() == pytest.approx(expected, rel=1e-12)
    # a single kept superpixel: zero loss that still reaches the inputs (gradient 0, not None)
    pts1 = t([1, 0]).requires_grad_()
    k1, q1, _ = superpixel_prototypes(pts1, ids(0), t([0, 1]), ids(0))
    loss = prototype_nce(k1, q1)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pts1.grad, torch.zeros(1, 2, dtype=torch.float64))


def test_l_tmp_hand_computed():
    # frame t: a=(1,0) seg0, b=(0,1) seg1, ground point -1; frame t+1: d=(0,1) seg0, e=(1,0) seg1, f seg2 only in t+1
    ft, st = t([1, 0], [0, 1], [1, 0]), ids(0, 1, -1)
    fn, sn = t([0, 1], [1, 0], [1, 0]), ids(0, 1, 2)
    # m^{t+1} = [(0,1), (1,0)]: a scores [0, 1] for target 0 -> log(1 + e); same for every row, both directions
    assert l_tmp(ft, st, fn, sn, tau=1.0).item() == pytest.approx(math.log(1 + math.e), rel=1e-12)
    # swap frame t+1's features: every row now agrees with its segment -> log(1 + e^-1)
    assert l_tmp(ft, st, t([1, 0], [0, 1], [1, 0]), sn, tau=1.0).item() == pytest.approx(math.log(1 + 1 / math.e))


def test_l_tmp_matches_naive_loop():
    g = torch.Generator().manual_seed(1)
    ft = F.normalize(torch.randn(50, 4, generator=g, dtype=torch.float64), dim=1)
    fn = F.normalize(torch.randn(60, 4, generator=g, dtype=torch.float64), dim=1)
    st = torch.randint(-1, 7, (50,), generator=g)
    sn = torch.randint(-1, 9, (60,), generator=g)
    both = [s for s in range(9) if (st == s).any() and (sn == s).any()]
    mt = torch.stack([ft[st == s].mean(0) for s in both])
    mn = torch.stack([fn[sn == s].mean(0) for s in both])

    def direction(f, seg, m):
        losses = [-(f[i] @ m.t() / 0.1).log_softmax(0)[both.index(int(seg[i]))] for i in range(len(f)) if int(seg[i]) in both]
        return torch.stack(losses).mean()

    naive = 0.5 * (direction(ft, st, mn) + direction(fn, sn, mt))
    assert l_tmp(ft, st, fn, sn, tau=0.1).item() == pytest.approx(naive.item(), rel=1e-10)


def test_l_p2s_hand_and_naive():
    # one scan, two segments: means (1,0) and (0,1); rows agree with their segments -> log(1 + e^-1) each (tau 1)
    f, s, sc = t([1, 0], [1, 0], [0, 1]), ids(0, 0, 1), ids(0, 0, 0)
    assert l_p2s(f, s, sc, tau=1.0).item() == pytest.approx(math.log(1 + 1 / math.e))
    g = torch.Generator().manual_seed(2)
    f = F.normalize(torch.randn(70, 5, generator=g, dtype=torch.float64), dim=1)
    scan = (torch.arange(70) >= 30).long()
    seg = torch.where(scan == 0, torch.randint(0, 4, (70,), generator=g), torch.randint(4, 10, (70,), generator=g))
    seg[::7] = -1
    losses = []
    for i in range(70):
        if seg[i] < 0:
            continue
        segs = [x for x in range(10) if ((seg == x) & (scan == scan[i])).any()]
        m = torch.stack([f[seg == x].mean(0) for x in segs])
        losses.append(-(f[i] @ m.t() / 0.07).log_softmax(0)[segs.index(int(seg[i]))])
    assert l_p2s(f, seg, scan).item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-10)
    with pytest.raises(ValueError, match="spans several scans"):
        l_p2s(f[:2], ids(0, 0), ids(0, 1))


def test_l_cdp_hand_computed_and_single_dataset_zero():
    k = t([1, 0], [1, 0], [0, 1])
    q = t([1, 0], [0.8, 0.6], [0, 1])
    ds = ids(0, 1, 1)
    # targets: 0 -> 1 (q0.q1 = .8 > 0), 1 -> 0, 2 -> 0; rows 1, 2 have a single candidate (CE 0);
    # row 0: logits over {1: 1, 2: 0}, target 1 -> log(1 + e^-1)
    assert l_cdp(k, q, ds, tau=1.0).item() == pytest.approx(math.log(1 + 1 / math.e) / 3, rel=1e-12)
    kk = k.clone().requires_grad_(True)
    zero = l_cdp(kk, q, ids(0, 0, 0))
    zero.backward()
    assert zero.item() == 0.0 and kk.grad is not None


def test_total_loss_weights():
    terms = {"vfm": torch.tensor(1.0), "tmp": torch.tensor(2.0), "p2s": torch.tensor(3.0), "cdp": torch.tensor(4.0)}
    assert total_loss(terms, LossWeights()).item() == 10.0
    assert total_loss(terms, LossWeights(vfm=0.5, tmp=0, p2s=2, cdp=0.25)).item() == 0.5 + 6 + 1
    with pytest.raises(KeyError, match="unknown loss term"):
        total_loss({"foo": torch.tensor(1.0)}, LossWeights())


def test_gradients_flow_to_both_sides():
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(20, 4, generator=g, requires_grad=True)
    pix = torch.randn(30, 4, generator=g, requires_grad=True)
    l_vfm(F.normalize(pts, dim=1), torch.randint(0, 5, (20,), generator=g), F.normalize(pix, dim=1),
          torch.randint(0, 5, (30,), generator=g)).backward()
    assert pts.grad.abs().sum() > 0 and pix.grad.abs().sum() > 0
