"""Bucketed product shapes (reduced precision on CPU): bucket sizes, windowed products, and that a whole network
asks oneDNN for only a few distinct shapes (the dense-oracle checks of the padded path are in test_nn.py)."""

from __future__ import annotations

import torch

from largead.models.minkunet import MinkUNet
from largead.sparse import SparseTensor, functional
from largead.sparse.functional import _bucket_ceil, _bucket_floor, bucketed, bucketed_mm, bucketed_tn, pointwise
from largead.sparse.inference import fused_inference


def is_bucket(m: int) -> bool:
    """``q * 2^e`` with ``q`` in 8..15 (or 16 itself), written out independently of the implementation."""
    return any(m == q * 2**e for e in range(0, 40) for q in range(8, 16))


def test_bucket_sizes():
    sizes = set()
    for m in range(16, 5000):
        lo, hi = _bucket_floor(m), _bucket_ceil(m)
        assert is_bucket(lo) and is_bucket(hi) and lo <= m <= hi
        assert hi <= m * 1.125 + 1e-9 and lo * 1.125 >= m  # at most 12.5% padding
        assert (lo == m) == (hi == m) == is_bucket(m)
        sizes.add(hi)
    assert len(sizes) <= 8 * 9  # 8 per octave over 16 .. 5000
    assert _bucket_ceil(1) == _bucket_ceil(16) == 16 and _bucket_ceil(17) == 18


def test_bucketed_only_for_reduced_precision_on_cpu():
    assert bucketed(torch.zeros(1, dtype=torch.bfloat16)) and bucketed(torch.zeros(1, dtype=torch.float16))
    assert not bucketed(torch.zeros(1)) and not bucketed(torch.zeros(1, dtype=torch.float64))


def test_windowed_products_equal_plain_ones(monkeypatch):
    monkeypatch.setattr(functional, "bucketed", lambda t: True)
    g = torch.Generator().manual_seed(0)
    for m in (5, 16, 17, 100, 1000, 1031):
        a = torch.randn(m, 7, dtype=torch.float64, generator=g)
        b = torch.randn(7, 3, dtype=torch.float64, generator=g)
        c = torch.randn(m, 3, dtype=torch.float64, generator=g)
        bias = torch.randn(1, 3, dtype=torch.float64, generator=g)
        out = torch.full((m, 3), float("nan"), dtype=torch.float64)
        torch.testing.assert_close(bucketed_mm(a, b, out), a @ b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bucketed_mm(a, b, torch.empty(m, 3, dtype=torch.float64), bias), a @ b + bias,
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bucketed_tn(a, c, torch.empty(7, 3, dtype=torch.float64)), a.t() @ c,
                                   rtol=1e-12, atol=1e-12)
        w = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
        x = a.clone().requires_grad_(True)
        y = pointwise(x, w)
        y.backward(c)
        torch.testing.assert_close(y, a @ w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad, c @ w.t(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(w.grad, a.t() @ c, rtol=1e-12, atol=1e-12)


def test_network_uses_few_product_shapes(monkeypatch):
    """Every bfloat16 product of a MinkUNet forward (eval, fused) and of forward+backward (autocast) has a bucket
    row count and bucket reduction length, so scans of any size reuse oneDNN's cached kernels."""
    shapes = []
    real_mm, real_addmm, real_bmm = torch.mm, torch.addmm, torch.bmm
    batched = []

    def spy_bmm(a, b, **kw):
        if a.dtype == torch.bfloat16:
            batched.append(a.shape[0])
            for i in range(a.shape[0]):
                shapes.append((tuple(a.shape[1:]), tuple(b.shape[1:]), a[i].is_contiguous()))
        return real_bmm(a, b, **kw)

    def spy_mm(a, b, **kw):
        if a.dtype == torch.bfloat16:
            shapes.append((tuple(a.shape), tuple(b.shape), a.is_contiguous()))
        return real_mm(a, b, **kw)

    def spy_addmm(bias, a, b, **kw):
        if a.dtype == torch.bfloat16:
            shapes.append((tuple(a.shape), tuple(b.shape), a.is_contiguous()))
        return real_addmm(bias, a, b, **kw)

    torch.manual_seed(0)
    net = MinkUNet(1, 8, "minkunet14")
    g = torch.Generator().manual_seed(1)
    monkeypatch.setattr(torch, "mm", spy_mm)
    monkeypatch.setattr(torch, "addmm", spy_addmm)
    monkeypatch.setattr(torch, "bmm", spy_bmm)
    for n in (900, 1300):
        coords = torch.unique(torch.randint(-20, 20, (n, 4), generator=g).clamp_(min=0) * torch.tensor([0, 1, 1, 1])
                              + torch.randint(0, 12, (n, 4), generator=g), dim=0).int()
        feats = torch.rand(len(coords), 1)
        with torch.no_grad(), fused_inference(net.eval(), torch.bfloat16, net.conv_bn_pairs(), True):
            net(SparseTensor(feats, coords))
        net.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(SparseTensor(feats, coords))
        out.F.float().sum().backward()
    assert len(shapes) > 100
    assert batched and max(batched) > 1  # kernel offsets with similar pair counts share one batched product
    transposed = 0
    for (m, k), _, contiguous in shapes:
        if contiguous:  # rows of pairs / voxels times a kernel slice
            assert m < 16 or is_bucket(m), (m, k)
        else:  # a kernel gradient rows.T @ grads: the reduction length is the row count
            transposed += 1
            assert k < 16 or is_bucket(k), (m, k)
    assert transposed > 20
