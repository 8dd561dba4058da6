"""MinkUNet: exact SLidR/ME key layout, parameter count, BN settings, and forward against a dense conv3d oracle."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from largead.models.minkunet import (
    MINKUNET_VARIANTS,
    MinkUNet,
    count_parameters,
    get_spec,
    state_dict_shapes,
)
from largead.sparse import SparseTensor

KEYS_FILE = Path(__file__).parent / "data" / "minkunet34_keys.txt"


def reference_shapes() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in KEYS_FILE.read_text().splitlines():
        key, _, shape = line.partition(" ")
        out[key] = tuple(int(v) for v in shape.strip("[]").split(",") if v.strip())
    return out


def test_minkunet34_keys_and_shapes_match_slidr_exactly():
    ref = reference_shapes()
    assert len(ref) == 374
    got = state_dict_shapes(MinkUNet(in_channels=1, out_channels=64, variant="minkunet34"))
    assert list(got) == list(ref)  # same keys, same order
    for key, shape in ref.items():
        assert got[key] == shape, key


def test_minkunet34_parameter_count():
    ref = reference_shapes()
    expected = sum(math.prod(s) for k, s in ref.items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    n = count_parameters(MinkUNet(1, 64, "minkunet34"))
    assert n == expected
    assert round(n / 1e6, 1) == 37.8


def test_batchnorm_init_and_momentum_quirk():
    net = MinkUNet(1, 64, "minkunet18", bn_momentum=0.02)
    named = dict(net.named_modules())
    bns = {n: m for n, m in named.items() if isinstance(m, torch.nn.BatchNorm1d)}
    for name, bn in bns.items():
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)), name
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias)), name
        inside_block = ".norm" in name
        assert bn.momentum == (0.1 if inside_block else 0.02), name
    assert named["block2.0.downsample.1.bn"].momentum == 0.02
    uniform = MinkUNet(1, 64, "minkunet18", bn_momentum=0.02, block_bn_momentum=None)
    assert {m.momentum for m in uniform.modules() if isinstance(m, torch.nn.BatchNorm1d)} == {0.02}


def test_variants_and_unknown_variant():
    assert set(MINKUNET_VARIANTS) == {"minkunet14", "minkunet18", "minkunet34", "minkunet50"}
    with torch.device("meta"):
        n14 = count_parameters(MinkUNet(1, 64, "minkunet14"))
        n18 = count_parameters(MinkUNet(1, 64, "minkunet18"))
        net50 = MinkUNet(1, 20, "minkunet50")
    assert n14 < n18 < 37_849_184
    assert net50.decoder_channels == 96 * 4 and tuple(net50.final.kernel.shape) == (384, 20)
    assert tuple(net50.block1[0].conv1.kernel.shape) == (32, 32)  # bottleneck 1x1
    with pytest.raises(ValueError, match="minkunet14, minkunet18, minkunet34, minkunet50"):
        get_spec("minkunet101")


# ----------------------------------------------------------------------------------------------------------------
# Dense oracle: the same network written with torch.nn.functional.conv3d on a dense grid, masked to active sites.
# ----------------------------------------------------------------------------------------------------------------
def _w3(kernel: torch.Tensor, ks: int) -> torch.Tensor:
    # ME kernel index k = ix + ks*iy + ks^2*iz -> conv3d weight [C_out, C_in, x, y, z]
    return kernel.reshape(ks, ks, ks, kernel.shape[1], kernel.shape[2]).permute(4, 3, 2, 1, 0)


def _bn(x, mask, m):
    bn = m.bn
    shape = (1, -1, 1, 1, 1)
    y = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (y * bn.weight.view(shape) + bn.bias.view(shape)) * mask


def _conv(x, mask, m):
    if m.kernel.ndim == 2:  # 1x1
        return torch.einsum("ncxyz,co->noxyz", x, m.kernel) * mask + (0 if m.bias is None else
                                                                        m.bias.view(1, -1, 1, 1, 1) * mask)
    return F.conv3d(x, _w3(m.kernel, 3), padding=1) * mask


def _down(x, mask, m):
    out_mask = F.max_pool3d(mask, 2, 2)
    return F.conv3d(x, _w3(m.kernel, 2), stride=2) * out_mask, out_mask


def _up(x, fine_mask, m):
    w = m.kernel.reshape(2, 2, 2, m.kernel.shape[1], m.kernel.shape[2]).permute(3, 4, 2, 1, 0)
    return F.conv_transpose3d(x, w, stride=2) * fine_mask


def _block(x, mask, blk):
    if hasattr(blk, "conv3"):
        out = torch.relu(_bn(_conv(x, mask, blk.conv1), mask, blk.norm1))
        out = torch.relu(_bn(_conv(out, mask, blk.conv2), mask, blk.norm2))
        out = _bn(_conv(out, mask, blk.conv3), mask, blk.norm3)
    else:
        out = torch.relu(_bn(_conv(x, mask, blk.conv1), mask, blk.norm1))
        out = _bn(_conv(out, mask, blk.conv2), mask, blk.norm2)
    res = x if blk.downsample is None else _bn(_conv(x, mask, blk.downsample[0]), mask, blk.downsample[1])
    return torch.relu(out + res)


def _stage(x, mask, seq):
    for blk in seq:
        x = _block(x, mask, blk)
    return x


def dense_minkunet(net: MinkUNet, x: torch.Tensor, m0: torch.Tensor) -> torch.Tensor:
    r = torch.relu
    p1 = r(_bn(_conv(x, m0, net.conv0p1s1), m0, net.bn0))
    h, m1 = _down(p1, m0, net.conv1p1s2)
    b1 = _stage(r(_bn(h, m1, net.bn1)), m1, net.block1)
    h, m2 = _down(b1, m1, net.conv2p2s2)
    b2 = _stage(r(_bn(h, m2, net.bn2)), m2, net.block2)
    h, m3 = _down(b2, m2, net.conv3p4s2)
    b3 = _stage(r(_bn(h, m3, net.bn3)), m3, net.block3)
    h, m4 = _down(b3, m3, net.conv4p8s2)
    h = _stage(r(_bn(h, m4, net.bn4)), m4, net.block4)
    h = r(_bn(_up(h, m3, net.convtr4p16s2), m3, net.bntr4))
    h = _stage(torch.cat([h, b3], 1), m3, net.block5)
    h = r(_bn(_up(h, m2, net.convtr5p8s2), m2, net.bntr5))
    h = _stage(torch.cat([h, b2], 1), m2, net.block6)
    h = r(_bn(_up(h, m1, net.convtr6p4s2), m1, net.bntr6))
    h = _stage(torch.cat([h, b1], 1), m1, net.block7)
    h = r(_bn(_up(h, m0, net.convtr7p2s2), m0, net.bntr7))
    h = _stage(torch.cat([h, p1], 1), m0, net.block8)
    return _conv(h, m0, net.final)


def randomize_bn(net: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64) * 0.2)


@pytest.mark.parametrize("variant", ["minkunet14", "minkunet50"])
def test_forward_matches_dense_oracle(variant):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    size, batch, per_batch = 16, 2, 80
    flat = torch.stack([torch.randperm(size**3, generator=gen)[:per_batch] for _ in range(batch)])
    b = torch.arange(batch).repeat_interleave(per_batch)
    idx = flat.reshape(-1)
    coords = torch.stack([b, idx // size**2, (idx // size) % size, idx % size], 1)
    feats = torch.randn(coords.shape[0], 1, generator=gen, dtype=torch.float64)
    net = MinkUNet(1, 7, variant).double().eval()
    randomize_bn(net, gen)
    with torch.no_grad():
        out = net(SparseTensor(feats, coords))
        dec = net.decoder_features(SparseTensor(feats, coords))
        dense = torch.zeros(batch, 1, size, size, size, dtype=torch.float64)
        mask = torch.zeros(batch, 1, size, size, size, dtype=torch.float64)
        dense[coords[:, 0], 0, coords[:, 1], coords[:, 2], coords[:, 3]] = feats[:, 0]
        mask[coords[:, 0], 0, coords[:, 1], coords[:, 2], coords[:, 3]] = 1.0
        expected = dense_minkunet(net, dense, mask)
    expected = expected[coords[:, 0], :, coords[:, 1], coords[:, 2], coords[:, 3]]
    assert out.F.shape == (coords.shape[0], 7)
    assert dec.F.shape == (coords.shape[0], net.decoder_channels)
    assert torch.equal(out.C, coords.to(torch.int32))
    assert expected.abs().max() > 1e-3  # non-trivial output
    torch.testing.assert_close(out.F, expected, rtol=1e-9, atol=1e-9)


def test_forward_train_mode_backward_on_lidar_scan(scan):
    from largead.sparse import VoxelGrid, batch_voxelize

    batch = batch_voxelize([scan[:800], scan[2500:3300]], VoxelGrid())
    net = MinkUNet(1, 64, "minkunet14").train()
    out = net(SparseTensor(batch.feats, batch.coords))
    assert out.F.shape == (batch.coords.shape[0], 64)
    out.F.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.bn0.bn.num_batches_tracked.item() == 1
