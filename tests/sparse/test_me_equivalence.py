"""Layer-by-layer equivalence with MinkowskiEngine 0.5.4 (same weights, float64, negative coordinates).

Runs where MinkowskiEngine is installed (``make test`` builds it with scripts/install_minkowski.sh); the dense-oracle
tests in test_nn.py cover the same semantics without it.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

from largead.sparse import Conv3d, ConvTranspose3d, SparseTensor


def _import_me():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("MinkowskiEngine")
    except ImportError:
        return None


ME = _import_me()
pytestmark = [
    pytest.mark.minkowski,
    pytest.mark.skipif(ME is None, reason="MinkowskiEngine not installed: run scripts/install_minkowski.sh"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def _coords(seed: int, n: int = 300, extent: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, 2, (n, 1), generator=g)
    xyz = torch.randint(-extent // 2, extent - extent // 2, (n, 3), generator=g)
    xyz[: n // 2] = xyz[n // 2: 2 * (n // 2)]  # the same sites in both batch items, where b differs
    return torch.unique(torch.cat([b, xyz], 1), dim=0).int()


def _by_coords(coords: torch.Tensor, feats: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    order = sorted(range(len(coords)), key=lambda i: tuple(coords[i].tolist()))
    return [tuple(coords[i].tolist()) for i in order], feats[order]


def _assert_same(ours: SparseTensor, theirs) -> None:
    c1, f1 = _by_coords(ours.C, ours.F)
    c2, f2 = _by_coords(theirs.C.int(), theirs.F)
    assert c1 == c2
    torch.testing.assert_close(f1, f2, rtol=1e-10, atol=1e-10)
    assert ours.stride == theirs.tensor_stride[0]


def _me_conv(layer, transposed: bool = False):
    cls = ME.MinkowskiConvolutionTranspose if transposed else ME.MinkowskiConvolution
    m = cls(layer.in_channels, layer.out_channels, kernel_size=layer.kernel_size, stride=layer.stride,
            bias=layer.bias is not None, dimension=3).double()
    m.load_state_dict(layer.state_dict())
    return m


@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (2, 2), (3, 2), (1, 1), (1, 2)])
def test_conv_matches_minkowski(kernel_size: int, stride: int) -> None:
    coords = _coords(0)
    feats = torch.randn(len(coords), 3, dtype=torch.float64)
    ours = Conv3d(3, 4, kernel_size, stride, bias=kernel_size == 1).double()
    theirs = _me_conv(ours)
    y = ours(SparseTensor(feats, coords))
    y_me = theirs(ME.SparseTensor(feats, coordinates=coords))
    _assert_same(y, y_me)


def test_encoder_decoder_chain_and_gradients_match_minkowski() -> None:
    coords = _coords(1)
    feats = torch.randn(len(coords), 2, dtype=torch.float64)
    layers = [Conv3d(2, 3, 3).double(), Conv3d(3, 4, 2, 2).double(), Conv3d(4, 4, 3).double(),
              Conv3d(4, 5, 2, 2).double(), ConvTranspose3d(5, 4, 2, 2).double(), ConvTranspose3d(4, 3, 2, 2).double()]
    me_layers = [_me_conv(m, isinstance(m, ConvTranspose3d)) for m in layers]

    f1 = feats.clone().requires_grad_(True)
    x = SparseTensor(f1, coords)
    for m in layers:
        x = m(x)
    f2 = feats.clone().requires_grad_(True)
    x_me = ME.SparseTensor(f2, coordinates=coords)
    for m in me_layers:
        x_me = m(x_me)
    assert x.coordinate_set is not None and x.stride == 1 and len(x) == len(coords)
    _assert_same(x, x_me)
    g = torch.randn(len(coords), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    # the same upstream gradient per coordinate on both sides
    _, g_sorted = _by_coords(x.C, g)
    order_me = sorted(range(len(x_me.C)), key=lambda i: tuple(x_me.C[i].tolist()))
    g_me = torch.empty_like(g)
    g_me[order_me] = g_sorted
    (x.F * g).sum().backward()
    (x_me.F * g_me).sum().backward()
    torch.testing.assert_close(f1.grad, f2.grad, rtol=1e-10, atol=1e-10)
    for ours, theirs in zip(layers, me_layers):
        torch.testing.assert_close(ours.kernel.grad, theirs.kernel.grad, rtol=1e-10, atol=1e-10)


def test_transposed_without_finer_map_matches_minkowski() -> None:
    coords = _coords(3, n=60, extent=6)
    coords[:, 1:] *= 2
    feats = torch.randn(len(coords), 3, dtype=torch.float64)
    ours = ConvTranspose3d(3, 2, 2, 2).double()
    y = ours(SparseTensor(feats, coords, stride=2))
    y_me = _me_conv(ours, transposed=True)(ME.SparseTensor(feats, coordinates=coords, tensor_stride=2))
    _assert_same(y, y_me)
