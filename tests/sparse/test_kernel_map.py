"""Kernel offsets, coordinate lookup, kernel maps against naive Python oracles, and cache reuse."""

from __future__ import annotations

import pytest
import torch

from largead.sparse import (
    Conv3d,
    ConvTranspose3d,
    KernelMapCache,
    SparseTensor,
    kernel_offsets,
)
from largead.sparse.kernel_map import CoordinateSet, build_conv_map, strided_coords


def test_kernel_offsets_me_order() -> None:
    o3 = kernel_offsets(3).tolist()
    assert len(o3) == 27
    assert o3[0] == [-1, -1, -1] and o3[1] == [0, -1, -1] and o3[3] == [-1, 0, -1] and o3[9] == [-1, -1, 0]
    assert o3[13] == [0, 0, 0] and o3[26] == [1, 1, 1]
    assert o3[2 + 3 * 0 + 9 * 1] == [1, -1, 0]  # ix + 3 iy + 9 iz with offset = index - 1
    o2 = kernel_offsets(2).tolist()
    assert o2 == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]]
    assert kernel_offsets(1).tolist() == [[0, 0, 0]]


def _coords(seed: int, n: int = 120, extent: int = 6, stride: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.cat([torch.randint(0, 2, (n, 1), generator=g),
                   (torch.randint(0, extent, (n, 3), generator=g) - extent // 2) * stride], 1)
    return torch.unique(c, dim=0).int()


def naive_pairs(in_coords: torch.Tensor, out_coords: torch.Tensor, offsets: list[list[int]], unit: int,
                transposed: bool) -> list[set[tuple[int, int]]]:
    """ME's definition with Python dicts: conv reads in at out + off*unit; transposed writes out at in + off*unit."""
    where_in = {tuple(c): i for i, c in enumerate(in_coords.tolist())}
    where_out = {tuple(c): i for i, c in enumerate(out_coords.tolist())}
    pairs = []
    for off in offsets:
        s = set()
        if transposed:
            for i, (b, x, y, z) in enumerate(in_coords.tolist()):
                o = where_out.get((b, x + off[0] * unit, y + off[1] * unit, z + off[2] * unit))
                if o is not None:
                    s.add((i, o))
        else:
            for o, (b, x, y, z) in enumerate(out_coords.tolist()):
                i = where_in.get((b, x + off[0] * unit, y + off[1] * unit, z + off[2] * unit))
                if i is not None:
                    s.add((i, o))
        pairs.append(s)
    return pairs


def map_pairs(km) -> list[set[tuple[int, int]]]:
    out = []
    for k in range(km.kernel_volume):
        if k == km.identity:
            out.append({(r, r) for r in range(km.n_in)})
        else:
            s, e = km.ptr[k], km.ptr[k + 1]
            out.append(set(zip(km.in_idx[s:e].tolist(), km.out_idx[s:e].tolist())))
    return out


@pytest.mark.parametrize("stride, n, extent, seed", [(1, 120, 6, 0), (2, 120, 6, 0), (4, 400, 5, 1), (1, 300, 30, 2),
                                                     (1, 2000, 8, 3)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_submanifold_map_equals_naive(stride: int, n: int, extent: int, seed: int, shuffle: bool) -> None:
    """Sparse and dense (every neighbour present) sets, negative coordinates, two batch items, sites on the box's
    faces, rows in sorted order (the index skips its sort) or shuffled: the column search (one sorted search per
    (dx, dy), adjacent keys for dz) must find ME's pairs."""
    coords = _coords(seed, n=n, extent=extent, stride=stride)
    if shuffle:
        coords = coords[torch.randperm(len(coords), generator=torch.Generator().manual_seed(seed))]
    cs = CoordinateSet(coords, stride)
    assert torch.equal(cs.index.keys[cs.index.perm], cs.index.sorted_keys)
    assert bool((cs.index.sorted_keys[1:] > cs.index.sorted_keys[:-1]).all())
    km = build_conv_map(cs, cs, 3)
    assert km.identity == 13 and km.n_in == km.n_out == len(cs)
    assert map_pairs(km) == naive_pairs(cs.coords, cs.coords, kernel_offsets(3).tolist(), stride, False)
    assert km.pair_counts() == [len(p) for p in map_pairs(km)]


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_strided_and_transposed_maps_equal_naive(kernel_size: int) -> None:
    cache = KernelMapCache()
    fine = cache.register(CoordinateSet(_coords(1), 1))
    coarse = cache.strided(fine, 2)
    offs = kernel_offsets(kernel_size).tolist()
    down = cache.kernel_map(fine, coarse, kernel_size, transposed=False)
    assert map_pairs(down) == naive_pairs(fine.coords, coarse.coords, offs, 1, False)
    up = cache.kernel_map(coarse, fine, kernel_size, transposed=True)
    assert map_pairs(up) == naive_pairs(coarse.coords, fine.coords, offs, 1, True)
    if kernel_size == 2:  # kernel = stride: every fine site lies in exactly one coarse cell, once
        assert sum(map(len, map_pairs(down))) == len(fine)


def test_strided_coords_floor_negative() -> None:
    c = torch.tensor([[0, -1, -2, -3], [0, 0, 1, 2], [1, -1, -1, -1], [0, -2, -1, -4], [0, 3, 3, 3]])
    cs = CoordinateSet(c.int(), 1)
    coords, inverse = strided_coords(cs, 2)
    got = {tuple(r) for r in coords.tolist()}
    assert got == {(0, -2, -2, -4), (0, 0, 0, 2), (1, -2, -2, -2), (0, 2, 2, 2)}
    assert [tuple(r) for r in coords[inverse].tolist()] == [(0, -2, -2, -4), (0, 0, 0, 2), (1, -2, -2, -2),
                                                            (0, -2, -2, -4), (0, 2, 2, 2)]
    cs2 = CoordinateSet(coords, 2)
    assert {tuple(r) for r in strided_coords(cs2, 2)[0].tolist()} == {(0, -4, -4, -4), (0, 0, 0, 0), (1, -4, -4, -4)}


def test_lookup_negative_and_absent() -> None:
    c = torch.tensor([[0, -5, 3, 0], [1, -5, 3, 0], [0, 7, -2, 1]]).int()
    cs = CoordinateSet(c, 1)
    q = torch.tensor([[1, -5, 3, 0], [0, 7, -2, 1], [0, 7, -2, 2], [2, 0, 0, 0], [0, 100, 3, 0], [0, -5, 3, 0]])
    assert cs.lookup(q).tolist() == [1, 2, -1, -1, -1, 0]


def test_duplicate_coordinates_rejected() -> None:
    c = torch.tensor([[0, 1, 2, 3], [0, 4, 5, 6], [0, 1, 2, 3]]).int()
    with pytest.raises(ValueError, match=r"unique; \(batch, x, y, z\) = \[0, 1, 2, 3\]"):
        CoordinateSet(c, 1).lookup(c.long())


def test_cache_builds_each_map_once() -> None:
    x = SparseTensor(torch.randn(len(_coords(2)), 4), _coords(2))
    convs = [Conv3d(4, 4, 3), Conv3d(4, 4, 3)]
    down, down2 = Conv3d(4, 4, 2, 2), Conv3d(4, 4, 2, 2)
    up = ConvTranspose3d(4, 4, 2, 2)
    a = convs[1](convs[0](x))
    assert x.cache.builds == 1 and len(x.cache) == 1
    km = x.cache.kernel_map(x.coordinate_set, x.coordinate_set, 3, transposed=False)
    assert x.cache.kernel_map(x.coordinate_set, x.coordinate_set, 3, transposed=False) is km
    d = down(a)
    d2 = down2(x)
    assert d.coordinate_set is d2.coordinate_set and x.cache.builds == 2
    assert x.cache.coordinates(2) is d.coordinate_set
    u = up(d)  # the transposed map is the swapped down map: no new build
    assert u.coordinate_set is x.coordinate_set and x.cache.builds == 2
    up_map = x.cache.kernel_map(d.coordinate_set, x.coordinate_set, 2, transposed=True)
    assert up_map is x.cache.kernel_map(d.coordinate_set, x.coordinate_set, 2, transposed=True)
    up(d2)
    assert x.cache.builds == 2 and len(x.cache) == 3
    # a fresh tensor starts a fresh cache
    y = SparseTensor(x.F, x.C)
    assert y.cache is not x.cache
    Conv3d(4, 4, 3)(y)
    assert y.cache.builds == 1


def test_tensor_reuses_registered_coordinates() -> None:
    x = SparseTensor(torch.randn(len(_coords(3)), 2), _coords(3))
    same = SparseTensor(torch.randn(len(x), 5), x.C, cache=x.cache)
    assert same.coordinate_set is x.coordinate_set


@pytest.mark.parametrize("kernel_size, transposed", [(3, False), (2, False), (2, True)])
def test_padded_layout_batches(kernel_size: int, transposed: bool) -> None:
    """The bucketed layout of reduced-precision products: offsets in batches of equal padded size, each offset's
    rows in place (``gather_index`` holds its input rows, then padding with row 0), kernel order as batched, and the
    reductions sum exactly the real rows (checked by summing one-hot products)."""
    from largead.sparse.functional import _bucket_ceil

    cache = KernelMapCache()
    fine = cache.register(CoordinateSet(_coords(5, n=3000, extent=24), 1))
    if kernel_size == 3:
        km = cache.kernel_map(fine, fine, 3, transposed=False)
    else:
        coarse = cache.strided(fine, 2)
        km = cache.kernel_map(coarse, fine, 2, True) if transposed else cache.kernel_map(fine, coarse, 2, False)
    layout = km.padded(_bucket_ceil)
    counts = [km.ptr[k + 1] - km.ptr[k] for k in range(km.kernel_volume)]
    assert sorted(g[0] for g in layout.groups) == [k for k in range(km.kernel_volume) if counts[k]]
    assert layout.kernel_order.tolist() == [g[0] for g in layout.groups]
    assert len(layout.batches) < len(layout.groups)  # some offsets share a product
    row = 0
    for start, stop, p, base in layout.batches:
        assert base == row and p == _bucket_ceil(p)
        for j, (k, m, gp, gbase) in enumerate(layout.groups[start:stop]):
            assert gp == p >= m == counts[k] and gbase == base + j * p
            rows = layout.gather_index[gbase:gbase + p]
            assert torch.equal(rows[:m], km.in_idx[km.ptr[k]:km.ptr[k + 1]])
            assert not rows[m:].any()
            out_rows = layout.grad_gather_index()[gbase:gbase + p]
            assert torch.equal(out_rows[:m], km.out_idx[km.ptr[k]:km.ptr[k + 1]]) and not out_rows[m:].any()
        real = torch.cat([torch.arange(j * p, j * p + m) for j, (_, m, _, _) in enumerate(layout.groups[start:stop])])
        pad = layout.padding_rows(layout.batches.index((start, stop, p, base)))
        assert sorted(real.tolist() + pad.tolist()) == list(range((stop - start) * p))
        row += (stop - start) * p
    assert row == (layout.identity_base if km.identity is not None else layout.total)
    # real product rows carry 1, padding rows 1000: each output must sum exactly its pairs (and identity)
    import torch.nn.functional as F

    prods = torch.full((layout.total, 1), 1000.0, dtype=torch.float64)
    prods[layout.position, 0] = 1
    if layout.identity_base is not None:
        prods[layout.identity_base:, 0] = 1
    red = layout.to_out()
    got = prods[red.perm] if red.perm is not None else F.embedding_bag(red.order, prods, red.offsets, mode="sum")
    expect = torch.bincount(km.out_idx, minlength=km.n_out).double() + (1 if km.identity is not None else 0)
    assert torch.equal(got[:, 0], expect)


def test_layout_prefers_a_previous_order_only_when_it_costs_little():
    """A convolution's kernels are permuted to its layout's offset order and kept; the next scan's layout reuses
    that order when it costs at most 3% more padded rows (and one batch more), else orders by pair count."""
    from largead.sparse.functional import _bucket_ceil
    from largead.sparse.kernel_map import _layout_plan

    counts = [0] * 27
    for k, m in zip(range(27), [900, 880, 870, 2000, 1990, 1985, 400, 390, 380] * 3, strict=True):
        counts[k] = m if k != 13 else 0
    order, (batches, rows) = _layout_plan(counts, _bucket_ceil)
    assert [counts[k] for k in order] == sorted((c for c in counts if c), reverse=True)
    swapped = list(order)
    swapped[0], swapped[1] = swapped[1], swapped[0]  # two offsets of equal bucket: free to swap
    assert _layout_plan(counts, _bucket_ceil, tuple(swapped))[0] == swapped
    reverse = tuple(order[::-1])  # smallest first: every offset starts its own batch
    assert _layout_plan(counts, _bucket_ceil, reverse)[0] == order
    assert _layout_plan(counts, _bucket_ceil, (1, 2, 3))[0] == order  # not the same offsets: ignored
