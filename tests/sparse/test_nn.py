"""Sparse layers against dense oracles (torch conv3d / conv_transpose3d on small grids read at the active sites).

Layout conversion (written out once, here and in ``largead/sparse/nn.py``): ME kernel ``[k^3, C_in, C_out]`` with
index ``ix + k*iy + k^2*iz``; a dense grid is ``[B, C, X, Y, Z]``, so ``conv3d`` needs
``w[o, i, ix, iy, iz] = kernel.reshape(k, k, k, C_in, C_out)[iz, iy, ix, i, o]`` = ``permute(4, 3, 2, 1, 0)`` and
``conv_transpose3d`` needs ``w[i, o, ix, iy, iz]`` = ``permute(3, 4, 2, 1, 0)``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from largead.sparse import BatchNorm, Conv3d, ConvTranspose3d, ReLU, SparseTensor, cat, functional
from largead.sparse.functional import sparse_conv

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["plain", "padded"])
def engine(request, monkeypatch):
    """Both execution paths of the convolution: "plain" (float32/float64) and "padded" (the bucketed layout that
    bfloat16/float16 use on CPU), forced here in float64 so the dense oracles check its layout exactly."""
    if request.param == "padded":
        monkeypatch.setattr(functional, "bucketed", lambda t: True)
    return request.param


def conv3d_weight(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """ME kernel [k^3, Cin, Cout] -> conv3d weight [Cout, Cin, kx, ky, kz]."""
    return kernel.reshape(k, k, k, kernel.shape[1], kernel.shape[2]).permute(4, 3, 2, 1, 0)


def conv_transpose3d_weight(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """ME kernel [k^3, Cin, Cout] -> conv_transpose3d weight [Cin, Cout, kx, ky, kz]."""
    return kernel.reshape(k, k, k, kernel.shape[1], kernel.shape[2]).permute(3, 4, 2, 1, 0)


def random_coords(n: int, extent: int, batch: int, seed: int, lo: int = 0, stride: int = 1,
                  empty_batch: int | None = None) -> torch.Tensor:
    """Unique random (b, x, y, z) sites, spatial in [lo, lo+extent) * stride, optionally one empty batch item."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, batch, (n,), generator=g)
    if empty_batch is not None:
        b[b == empty_batch] = (empty_batch + 1) % batch
    xyz = (torch.randint(0, extent, (n, 3), generator=g) + lo) * stride
    return torch.unique(torch.cat([b[:, None], xyz], 1), dim=0)


def densify(feats: torch.Tensor, coords: torch.Tensor, origin: int, unit: int, size: int, batch: int) -> torch.Tensor:
    """Zero-filled grid [B, C, size, size, size] with feats at (coords - origin) / unit (autograd flows to feats)."""
    idx = (coords[:, 1:].long() - origin) // unit
    assert bool(((idx >= 0) & (idx < size)).all()), "test grid too small"
    grid = feats.new_zeros(batch, size, size, size, feats.shape[1])
    grid = grid.index_put((coords[:, 0].long(), idx[:, 0], idx[:, 1], idx[:, 2]), feats)
    return grid.permute(0, 4, 1, 2, 3)


def read(grid: torch.Tensor, coords: torch.Tensor, origin: int, unit: int) -> torch.Tensor:
    idx = (coords[:, 1:].long() - origin) // unit
    return grid.permute(0, 2, 3, 4, 1)[coords[:, 0].long(), idx[:, 0], idx[:, 1], idx[:, 2]]


def floor_sites(coords: torch.Tensor, s_out: int) -> set[tuple[int, ...]]:
    """Independent oracle of ME's strided output coordinates: Python floor division on every site."""
    return {(b, (x // s_out) * s_out, (y // s_out) * s_out, (z // s_out) * s_out) for b, x, y, z in coords.tolist()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_submanifold_matches_dense(device: str, stride: int, engine: str) -> None:
    torch.manual_seed(0)
    coords = random_coords(300, 9, 3, seed=1, lo=-4, stride=stride, empty_batch=1).to(device)
    feats = torch.randn(len(coords), 5, dtype=torch.float64, device=device)
    conv = Conv3d(5, 7, kernel_size=3).double().to(device)
    out = conv(SparseTensor(feats, coords, stride=stride))
    assert torch.equal(out.C, coords.int()) and out.stride == stride
    origin, size = -4 * stride, 9
    dense = F.conv3d(densify(feats, coords, origin, stride, size, 3), conv3d_weight(conv.kernel, 3), padding=1)
    torch.testing.assert_close(out.F, read(dense, coords, origin, stride), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_conv_float32_matches_dense(device: str) -> None:
    coords = random_coords(400, 10, 2, seed=2).to(device)
    feats = torch.randn(len(coords), 8, device=device)
    conv = Conv3d(8, 16, kernel_size=3).to(device)
    out = conv(SparseTensor(feats, coords))
    dense = F.conv3d(densify(feats, coords, 0, 1, 10, 2), conv3d_weight(conv.kernel, 3), padding=1)
    torch.testing.assert_close(out.F, read(dense, coords, 0, 1), rtol=1e-5, atol=1e-5)


def test_strided_all_active_equals_dense_stride2(engine: str) -> None:
    n, batch = 8, 2
    r = torch.arange(-4, 4)
    gx, gy, gz = torch.meshgrid(r, r, r, indexing="ij")
    xyz = torch.stack([gx, gy, gz], -1).reshape(-1, 3)
    coords = torch.cat([torch.cat([torch.full((len(xyz), 1), b), xyz], 1) for b in range(batch)])
    feats = torch.randn(len(coords), 3, dtype=torch.float64)
    conv = Conv3d(3, 4, kernel_size=2, stride=2).double()
    out = conv(SparseTensor(feats, coords))
    assert out.stride == 2 and len(out) == batch * (n // 2) ** 3
    dense = F.conv3d(densify(feats, coords, -4, 1, n, batch), conv3d_weight(conv.kernel, 2), stride=2)
    # every output site of the dense stride-2 conv is present, and values agree
    assert dense.shape[2:] == (n // 2,) * 3
    torch.testing.assert_close(out.F, read(dense, out.C, -4, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_strided_sparse_matches_dense_at_me_sites(device: str, kernel_size: int, engine: str) -> None:
    coords = random_coords(250, 10, 3, seed=3, lo=-5, empty_batch=0).to(device)
    feats = torch.randn(len(coords), 4, dtype=torch.float64, device=device)
    conv = Conv3d(4, 6, kernel_size=kernel_size, stride=2).double().to(device)
    x = SparseTensor(feats, coords)
    out = conv(x)
    assert out.stride == 2
    sites = floor_sites(coords.cpu(), 2)
    assert {tuple(c) for c in out.C.tolist()} == sites and len(out) == len(sites)
    pad = 1 if kernel_size == 3 else 0
    dense = F.conv3d(densify(feats, coords, -6, 1, 12, 3), conv3d_weight(conv.kernel, kernel_size),
                     stride=2, padding=pad)
    # conv3d output j sits at -6 + 2 j (kernel 2: reads -6+2j+{0,1}; kernel 3 with pad 1: -6+2j+{-1,0,1})
    torch.testing.assert_close(out.F, read(dense, out.C, -6, 2), rtol=1e-10, atol=1e-10)


def test_pointwise_strided_reads_only_the_cell_origin(engine: str) -> None:
    """ME: a volume-1 kernel with stride 2 pairs each output site q with the input at exactly q (if present)."""
    coords = random_coords(200, 8, 2, seed=12, lo=-4)
    feats = torch.randn(len(coords), 3, dtype=torch.float64)
    conv = Conv3d(3, 2, kernel_size=1, stride=2).double()
    out = conv(SparseTensor(feats, coords))
    assert {tuple(c) for c in out.C.tolist()} == floor_sites(coords, 2)
    dense = F.conv3d(densify(feats, coords, -4, 1, 8, 2), conv3d_weight(conv.kernel, 1), stride=2)
    torch.testing.assert_close(out.F, read(dense, out.C, -4, 2), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out.F)
    (out.F * g).sum().backward()
    ref_w = conv.kernel.detach().clone().requires_grad_(True)
    ref = read(F.conv3d(densify(feats, coords, -4, 1, 8, 2), conv3d_weight(ref_w, 1), stride=2), out.C, -4, 2)
    (ref * g).sum().backward()
    torch.testing.assert_close(conv.kernel.grad, ref_w.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_transposed_outputs_on_cached_fine_sites(device: str, engine: str) -> None:
    coords = random_coords(250, 10, 2, seed=4, lo=-5).to(device)
    feats = torch.randn(len(coords), 3, dtype=torch.float64, device=device)
    x = SparseTensor(feats, coords)
    down = Conv3d(3, 5, kernel_size=2, stride=2).double().to(device)(x)
    up_conv = ConvTranspose3d(5, 4, kernel_size=2, stride=2).double().to(device)
    up = up_conv(down)
    assert up.stride == 1 and up.coordinate_set is x.coordinate_set and torch.equal(up.C, x.C)
    dense = F.conv_transpose3d(densify(down.F, down.C, -6, 2, 6, 2), conv_transpose3d_weight(up_conv.kernel, 2),
                               stride=2)
    torch.testing.assert_close(up.F, read(dense, coords, -6, 1), rtol=1e-10, atol=1e-10)


def test_transposed_without_fine_map_expands_like_me(engine: str) -> None:
    coarse = random_coords(40, 5, 2, seed=5, lo=-3, stride=2)
    feats = torch.randn(len(coarse), 3, dtype=torch.float64)
    conv = ConvTranspose3d(3, 2, kernel_size=2, stride=2).double()
    up = conv(SparseTensor(feats, coarse, stride=2))
    expected = {(b, x + dx, y + dy, z + dz) for b, x, y, z in coarse.tolist()
                for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)}
    assert {tuple(c) for c in up.C.tolist()} == expected and len(up) == len(expected)
    dense = F.conv_transpose3d(densify(feats, coarse, -6, 2, 5, 2), conv_transpose3d_weight(conv.kernel, 2), stride=2)
    torch.testing.assert_close(up.F, read(dense, up.C, -6, 1), rtol=1e-10, atol=1e-10)


def test_pointwise_with_bias_me_layout(engine: str) -> None:
    coords = random_coords(50, 6, 2, seed=6)
    feats = torch.randn(len(coords), 4, dtype=torch.float64)
    conv = Conv3d(4, 3, kernel_size=1, bias=True).double()
    assert conv.kernel.shape == (4, 3) and conv.bias.shape == (1, 3)
    assert set(conv.state_dict()) == {"kernel", "bias"}
    out = conv(SparseTensor(feats, coords))
    dense = F.conv3d(densify(feats, coords, 0, 1, 6, 2), conv.kernel.t()[:, :, None, None, None],
                     bias=conv.bias[0])
    torch.testing.assert_close(out.F, read(dense, coords, 0, 1), rtol=1e-12, atol=1e-12)


def test_parameter_shapes_follow_me() -> None:
    assert Conv3d(1, 32, 3).kernel.shape == (27, 1, 32)
    assert Conv3d(32, 32, 2, 2).kernel.shape == (8, 32, 32)
    assert ConvTranspose3d(256, 256, 2, 2).kernel.shape == (8, 256, 256)
    assert Conv3d(32, 64, 1).kernel.shape == (32, 64)
    assert Conv3d(32, 64, 1, stride=2).kernel.shape == (1, 32, 64)
    assert Conv3d(3, 4).bias is None and "bias" not in Conv3d(3, 4).state_dict()


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_dense_float64(device: str, engine: str) -> None:
    coords = random_coords(200, 8, 2, seed=7, lo=-4, empty_batch=1).to(device)
    feats = torch.randn(len(coords), 3, dtype=torch.float64, device=device, requires_grad=True)
    c1 = Conv3d(3, 4, 3).double().to(device)
    c2 = Conv3d(4, 5, 2, 2).double().to(device)
    c3 = ConvTranspose3d(5, 4, 2, 2).double().to(device)
    x = SparseTensor(feats, coords)
    h1 = c1(x)
    h3 = c3(c2(h1))
    out = cat(h3, h1)
    g = torch.randn_like(out.F)
    grads = torch.autograd.grad((out.F * g).sum(), [feats, c1.kernel, c2.kernel, c3.kernel])

    fd = feats.detach().clone().requires_grad_(True)
    w1, w2, w3 = (c.kernel.detach().clone().requires_grad_(True) for c in (c1, c2, c3))
    d1 = F.conv3d(densify(fd, coords, -4, 1, 8, 2), conv3d_weight(w1, 3), padding=1)
    mask = densify(torch.ones(len(coords), 1, dtype=torch.float64, device=device), coords, -4, 1, 8, 2)
    d1 = d1 * mask  # submanifold: only active sites exist
    d2 = F.conv3d(d1, conv3d_weight(w2, 2), stride=2)
    d3 = F.conv_transpose3d(d2, conv_transpose3d_weight(w3, 2), stride=2)
    ref = torch.cat([read(d3, coords, -4, 1), read(d1, coords, -4, 1)], 1)
    torch.testing.assert_close(out.F, ref, rtol=1e-10, atol=1e-10)
    ref_grads = torch.autograd.grad((ref * g).sum(), [fd, w1, w2, w3])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_gradcheck_submanifold_and_strided(engine: str) -> None:
    coords = random_coords(30, 4, 2, seed=8)
    feats = torch.randn(len(coords), 2, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(27, 2, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(8, 3, 2, dtype=torch.float64, requires_grad=True)
    x = SparseTensor(feats, coords)
    cache, cs1 = x.cache, x.coordinate_set
    cs2 = cache.strided(cs1, 2)
    sub_map = cache.kernel_map(cs1, cs1, 3, transposed=False)
    down_map = cache.kernel_map(cs1, cs2, 2, transposed=False)

    def fn(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return sparse_conv(sparse_conv(f, a, sub_map), b, down_map)

    assert torch.autograd.gradcheck(fn, (feats, w1, w2))


def test_batchnorm_matches_batchnorm1d_and_keys() -> None:
    torch.manual_seed(0)
    coords = random_coords(60, 6, 2, seed=9)
    feats = torch.randn(len(coords), 5) * 3 + 1
    bn = BatchNorm(5, momentum=0.05)
    ref = torch.nn.BatchNorm1d(5, momentum=0.05)
    assert list(bn.state_dict()) == [f"bn.{k}" for k in ref.state_dict()]
    with torch.no_grad():
        bn.bn.weight.uniform_(0.5, 2)
        bn.bn.bias.uniform_(-1, 1)
    ref.load_state_dict({k[3:]: v for k, v in bn.state_dict().items()})
    x = SparseTensor(feats, coords)
    torch.testing.assert_close(bn(x).F, ref(feats))
    torch.testing.assert_close(bn.bn.running_mean, ref.running_mean)
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(x).F, ref(feats))


def test_relu_is_not_in_place() -> None:
    coords = random_coords(20, 4, 1, seed=10)
    feats = torch.randn(len(coords), 3)
    before = feats.clone()
    y = ReLU()(SparseTensor(feats, coords))
    assert torch.equal(feats, before)
    torch.testing.assert_close(y.F, before.clamp(min=0))
    assert y.coordinate_set is not None and torch.equal(y.C, coords.int())


def test_layer_rejects_wrong_channels() -> None:
    x = SparseTensor(torch.randn(5, 3), torch.tensor([[0, i, 0, 0] for i in range(5)]))
    with pytest.raises(ValueError, match=r"Conv3d expects 4 input channels, got features of shape \(5, 3\)"):
        Conv3d(4, 2)(x)
    with pytest.raises(ValueError, match="BatchNorm expects 2 input channels"):
        BatchNorm(2)(x)


def test_outputs_do_not_alias_reused_workspace() -> None:
    """Results must survive later convolutions, which reuse the CPU scratch buffers."""
    coords = random_coords(300, 8, 2, seed=13)
    x = SparseTensor(torch.randn(len(coords), 4), coords)
    sub, down, up = Conv3d(4, 4, 3), Conv3d(4, 4, 2, 2), ConvTranspose3d(4, 4, 2, 2)
    outs = [sub(x), down(x)]
    outs.append(up(outs[1]))
    saved = [o.F.clone() for o in outs]
    for _ in range(2):
        sub(x), up(down(x)), Conv3d(4, 9, 3)(x)
    for o, s in zip(outs, saved):
        assert torch.equal(o.F, s)


def test_empty_tensor_runs_forward_and_backward(engine: str) -> None:
    feats = torch.zeros(0, 3, requires_grad=True)
    x = SparseTensor(feats, torch.zeros(0, 4, dtype=torch.int32))
    y = Conv3d(3, 4)(x)
    d = Conv3d(4, 5, 2, 2)(y)
    out = cat(ConvTranspose3d(5, 4)(d), y)
    assert out.F.shape == (0, 8) and d.F.shape == (0, 5) and d.stride == 2
    out.F.sum().backward()
    assert feats.grad.shape == (0, 3)


def test_autocast_bfloat16_matches_float32() -> None:
    """Mixed precision (accelerate's bf16): convolutions run in the autocast dtype, gradients reach float32 weights."""
    torch.manual_seed(0)
    coords = random_coords(300, 10, 2, seed=5)
    feats = torch.randn(len(coords), 8)
    conv, down = Conv3d(8, 16, 3), Conv3d(16, 16, 2, stride=2)
    x = SparseTensor(feats, coords)
    ref = down(conv(x)).F
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = down(conv(SparseTensor(feats, coords))).F
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)
    out.float().sum().backward()
    assert conv.kernel.grad is not None and conv.kernel.grad.dtype == torch.float32
