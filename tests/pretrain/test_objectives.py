"""Objectives against hand-computed values and naive per-row loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from largead.pretrain.objectives import (
    LossWeights,
    cdp_pairs,
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


def naive_p2s(f, seg, scan, tau, anchors=None):
    """Per-row loop: own segment's mean without the row itself (leave-one-out), other segments of the scan whole;
    rows of single-row segments have no positive and are skipped."""
    losses = []
    for i in range(len(f)) if anchors is None else anchors:
        if seg[i] < 0 or int((seg == seg[i]).sum()) < 2:
            continue
        segs = sorted({int(x) for x in seg[(scan == scan[i]) & (seg >= 0)]})
        cols = []
        for x in segs:
            members = (seg == x) & (torch.arange(len(f)) != i) if x == int(seg[i]) else seg == x
            cols.append(f[members].mean(0))
        logits = f[i] @ torch.stack(cols).t() / tau
        losses.append(-logits.log_softmax(0)[segs.index(int(seg[i]))])
    return torch.stack(losses).mean()


def test_l_p2s_hand_and_naive():
    # one scan; segment 0 = two rows (1,0), segment 1 = one row (0,1). Anchors: the two rows of segment 0 (segment 1
    # has no other member, so no positive). Positive = the other row (1,0): logit 1; negative (0,1): 0 (tau 1).
    f, s, sc = t([1, 0], [1, 0], [0, 1]), ids(0, 0, 1), ids(0, 0, 0)
    assert l_p2s(f, s, sc, tau=1.0).item() == pytest.approx(math.log(1 + 1 / math.e))
    g = torch.Generator().manual_seed(2)
    f = F.normalize(torch.randn(70, 5, generator=g, dtype=torch.float64), dim=1)
    scan = (torch.arange(70) >= 30).long()
    seg = torch.where(scan == 0, torch.randint(0, 4, (70,), generator=g), torch.randint(4, 10, (70,), generator=g))
    seg[::7] = -1
    seg[5] = 11  # a single-row segment: a negative for the others, never an anchor
    assert l_p2s(f, seg, scan).item() == pytest.approx(naive_p2s(f, seg, scan, 0.07).item(), rel=1e-10)
    with pytest.raises(ValueError, match="spans several scans"):
        l_p2s(f[:2], ids(0, 0), ids(0, 1))


def test_l_p2s_positive_never_contains_the_anchor():
    """The old form averaged segments over a subsample of rows that included the anchor: a small segment kept one
    sampled row, its mean was the anchor itself and the positive logit 1/tau whatever the network did. Now the means
    come from every row and the positive leaves the anchor out."""
    tau = 0.1
    # scan of 6 rows; segment 0 = rows 0-2, segment 1 = rows 3-5. Row 0 is orthogonal to its segment mates.
    f = t([1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1])
    seg, scan = ids(0, 0, 0, 1, 1, 1), ids(0, 0, 0, 0, 0, 0)
    # the old form on a subsample {row 0, row 3}: segment means over the subsample = the rows themselves
    sub = torch.tensor([0, 3])
    old_means = f[sub]  # one sampled row per segment
    old_logits = f[sub] @ old_means.t() / tau
    assert old_logits[0, 0].item() == pytest.approx(1 / tau)  # trivial: the anchor against itself
    # the new form: row 0's positive is the mean of rows 1-2, (0, 1, 0): logit 0; negative segment 1 (0, 0, 1): 0
    rows = {0: math.log(2)}  # anchor 0: logits [0, 0] -> log 2
    # anchors 1, 2: positive = mean of the other two of segment 0 = (.5, .5, 0) -> .5/tau; negative 0
    rows[1] = rows[2] = math.log(1 + math.exp(-0.5 / tau))
    # anchors 3-5: positive (0, 0, 1) -> 1/tau; negative mean of segment 0 = (1/3, 2/3, 0) -> 0
    rows[3] = rows[4] = rows[5] = math.log(1 + math.exp(-1 / tau))
    assert l_p2s(f, seg, scan, tau=tau).item() == pytest.approx(sum(rows.values()) / 6, rel=1e-12)
    # subsampling anchors does not change the means: with one anchor drawn among rows 3-5 only (segment 0 made
    # ineligible by cutting it to one row), every draw gives the same value, from means over every row
    seg1 = ids(0, -1, -1, 1, 1, 1)
    for seed in range(3):
        got = l_p2s(f, seg1, scan, tau=tau, max_anchors=1, generator=torch.Generator().manual_seed(seed))
        # anchor in segment 1: positive (0,0,1) -> 1/tau; negative: segment 0 = row 0 alone (1,0,0) -> 0
        assert got.item() == pytest.approx(math.log(1 + math.exp(-1 / tau)), rel=1e-12)
    # the gradient reaches the anchor's segment mates (the positive is theirs), not a constant
    fr = f.clone().requires_grad_(True)
    l_p2s(fr, seg, scan, tau=tau).backward()
    assert fr.grad[1:3].abs().sum() > 0


def test_l_tmp_means_from_every_voxel_anchors_subsampled():
    # frame t: one anchor per segment; frame t+1: segment 0 = three voxels of which one disagrees
    ft, st = t([1, 0], [0, 1]), ids(0, 1)
    fn, sn = t([1, 0], [1, 0], [0, 1], [0, 1]), ids(0, 0, 0, 1)
    # m^{t+1}_0 = (2/3, 1/3) over all three voxels, m^{t+1}_1 = (0, 1); m^t = [(1, 0), (0, 1)]
    m_n = torch.tensor([[2 / 3, 1 / 3], [0.0, 1.0]], dtype=torch.float64)
    fwd = F.cross_entropy(ft @ m_n.t(), torch.tensor([0, 1]))
    bwd = F.cross_entropy(fn @ torch.eye(2, dtype=torch.float64).t(), sn)
    assert l_tmp(ft, st, fn, sn, tau=1.0).item() == pytest.approx(0.5 * (fwd + bwd).item(), rel=1e-12)
    # max_anchors=2 subsamples anchors of t+1 only (t has 2): the means stay over all four voxels of t+1
    g = torch.Generator().manual_seed(0)
    sub = l_tmp(ft, st, fn, sn, tau=1.0, max_anchors=2, generator=g).item()
    per_row = F.cross_entropy(fn @ torch.eye(2, dtype=torch.float64).t(), sn, reduction="none")
    options = {0.5 * (fwd.item() + per_row[list(pair)].mean().item()) for pair in
               [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]}
    assert any(sub == pytest.approx(o, rel=1e-12) for o in options)


def brute_force_pairs(g, ds, threshold, mutual):
    """Per-superpoint loop oracle of cdp_pairs (centred cosine, per other dataset nearest neighbour)."""
    x = F.normalize(g - g.mean(0), dim=1)
    sim = x @ x.t()
    pairs = set()
    for i in range(len(g)):
        for d in sorted(set(ds.tolist()) - {int(ds[i])}):
            cand = [j for j in range(len(g)) if int(ds[j]) == d]
            j = max(cand, key=lambda c: float(sim[i, c]))
            back = max((a for a in range(len(g)) if int(ds[a]) == int(ds[i])), key=lambda a: float(sim[j, a]))
            if float(sim[i, j]) >= threshold and (not mutual or back == i):
                pairs.add((i, j))
    return pairs, sim


@pytest.mark.parametrize("mutual", [True, False])
def test_cdp_pairs_above_threshold_and_mutual(mutual):
    g = torch.randn(60, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ds = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(5))
    for threshold in (-1.0, 0.2, 0.4):
        a, p, sim = cdp_pairs(g, ds, threshold, mutual)
        got = set(zip(a.tolist(), p.tolist()))
        want, ref = brute_force_pairs(g, ds, threshold, mutual)
        assert got == want
        assert all(float(ref[i, j]) >= threshold for i, j in got)  # positives above the threshold only
        assert all(int(ds[i]) != int(ds[j]) for i, j in got)
    loose, _, _ = cdp_pairs(g, ds, -1.0, mutual)
    tight, _, _ = cdp_pairs(g, ds, 0.4, mutual)
    assert len(tight) < len(loose)  # the threshold removes pairs here


def test_l_cdp_hand_computed_negatives_and_single_dataset_zero():
    # frozen features g (centre=False to keep the arithmetic by hand): superpoint 0 (dataset 0) is most like 1
    # (dataset 1, cos .8) and like 2 (dataset 2, cos .8, as similar as the positive) and unlike 3 (dataset 1, cos 0)
    g = t([1, 0, 0], [0.8, 0.6, 0], [0.8, 0, 0.6], [0, 1, 0])
    ds = ids(0, 1, 2, 1)
    a, p, sim = cdp_pairs(g, ds, threshold=0.7, mutual=True, center=False)
    assert set(zip(a.tolist(), p.tolist())) == {(0, 1), (1, 0), (0, 2), (2, 0)}
    k = t([1, 0], [0, 1], [1, 0], [0, 1])
    loss, anchor, positive = l_cdp(k, g, ds, tau=1.0, threshold=0.7, center=False, return_pairs=True)
    rows = {}
    for i, j in zip(anchor.tolist(), positive.tolist()):
        # candidates: other datasets than i's, minus those with sim >= sim(i, j) (the positive kept)
        cand = [c for c in range(4) if int(ds[c]) != int(ds[i]) and (c == j or float(sim[i, c]) < float(sim[i, j]))]
        logits = torch.stack([k[i] @ k[c] for c in cand])
        rows[(i, j)] = -logits.log_softmax(0)[cand.index(j)].item()
    # row (0, 1): candidate 2 has sim .8 = sim(0, 1) and is dropped; candidates {1, 3}: k0.k1 = 0, k0.k3 = 0 -> log 2
    assert rows[(0, 1)] == pytest.approx(math.log(2))
    assert loss.item() == pytest.approx(sum(rows.values()) / len(rows), rel=1e-12)
    # the head's 2D prototypes play no part: only k and the frozen g enter
    kk = k.clone().requires_grad_(True)
    zero = l_cdp(kk, g, ids(0, 0, 0, 0))
    zero.backward()
    assert zero.item() == 0.0 and kk.grad is not None
    none = l_cdp(k, g, ds, threshold=0.99, center=False)  # no pair passes: zero, not a forced pair
    assert none.item() == 0.0


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
