"""SparseTensor construction, replace, and cat (features concatenated on identical coordinates)."""

from __future__ import annotations

import pytest
import torch

from largead.sparse import Conv3d, SparseTensor, cat


def _coords() -> torch.Tensor:
    return torch.tensor([[0, 0, 0, 0], [0, 2, 0, -2], [1, 0, 0, 0], [1, 4, 2, 6]])


def test_fields_and_replace() -> None:
    feats = torch.randn(4, 3)
    x = SparseTensor(feats, _coords(), stride=2)
    assert x.C.dtype == torch.int32 and torch.equal(x.C, _coords().int())
    assert x.F is feats and x.stride == 2 and len(x) == 4
    y = x.replace(torch.zeros(4, 7))
    assert y.cache is x.cache and y.coordinate_set is x.coordinate_set and y.F.shape == (4, 7)


def test_bad_inputs_have_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"feats must be \(4, C\) for 4 coordinates, got \(3, 2\)"):
        SparseTensor(torch.randn(3, 2), _coords())
    with pytest.raises(ValueError, match=r"coords must be an \(M, 4\) integer tensor"):
        SparseTensor(torch.randn(4, 2), _coords()[:, :3])
    with pytest.raises(TypeError, match="int32/int64"):
        SparseTensor(torch.randn(4, 2), _coords().float())
    with pytest.raises(ValueError, match="must be multiples of 4"):
        SparseTensor(torch.randn(4, 2), _coords(), stride=4)
    with pytest.raises(TypeError, match="floating point"):
        SparseTensor(torch.ones(4, 2, dtype=torch.int64), _coords())
    with pytest.raises(ValueError, match="must be unique"):
        Conv3d(2, 2)(SparseTensor(torch.randn(5, 2), torch.cat([_coords(), _coords()[:1]])))
    with pytest.raises(ValueError, match="replace|feats must be"):
        SparseTensor(torch.randn(4, 2), _coords()).replace(torch.randn(5, 2))


def test_cat_concatenates_features() -> None:
    a = SparseTensor(torch.randn(4, 2), _coords())
    b = a.replace(torch.randn(4, 3))
    c = cat(a, b)
    assert torch.equal(c.F, torch.cat([a.F, b.F], 1)) and c.coordinate_set is a.coordinate_set
    # equal coordinates held by a different tensor object are accepted too
    d = SparseTensor(torch.randn(4, 1), _coords().clone())
    assert cat(a, d).F.shape == (4, 3)


def test_cat_rejects_mismatch() -> None:
    a = SparseTensor(torch.randn(4, 2), _coords())
    other = _coords().clone()
    other[3, 1] = 8
    with pytest.raises(ValueError, match="tensor 1 has different coordinates from tensor 0"):
        cat(a, SparseTensor(torch.randn(4, 2), other))
    with pytest.raises(ValueError, match="tensor 0 has stride 1 but tensor 1 has stride 2"):
        cat(a, SparseTensor(torch.randn(4, 2), _coords(), stride=2))
    with pytest.raises(ValueError, match="different coordinates"):
        cat(a, SparseTensor(torch.randn(3, 2), _coords()[:3]))
