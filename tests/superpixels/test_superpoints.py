from types import SimpleNamespace

import numpy as np
import pytest
import torch

from largead.superpixels.superpoints import (
    pixel_segment_ids,
    pool_by_segment,
    pool_voxels_by_segment,
    segment_offsets,
    superpoint_ids,
)


def naive_pool(feats, seg):
    """Reference: a Python loop over segment ids."""
    out, counts, ids = [], [], []
    for s in sorted(set(seg.tolist())):
        rows = [i for i in range(len(seg)) if seg[i] == s]
        out.append(feats[rows].sum(0) / len(rows))
        counts.append(len(rows))
        ids.append(s)
    return torch.stack(out), torch.tensor(counts), torch.tensor(ids)


def random_maps(rng, sizes, max_id):
    return [rng.integers(0, max_id, size=s).astype(np.int32) for s in sizes]


def test_pool_by_segment_matches_loop_and_drops_empty():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 7, generator=g, dtype=torch.float64)
    seg = torch.randint(0, 60, (500,), generator=g) * 2  # odd ids never used -> empty, dropped
    pooled, counts, kept = pool_by_segment(feats, seg, num_segments=130)
    ref, rc, rid = naive_pool(feats, seg)
    assert torch.equal(kept, rid) and torch.equal(counts, rc)
    assert torch.allclose(pooled, ref, atol=1e-12)
    assert (kept % 2 == 0).all()


def test_pool_by_segment_gradient_and_errors():
    feats = torch.randn(6, 3, requires_grad=True)
    seg = torch.tensor([0, 0, 2, 2, 2, 5])
    pooled, counts, kept = pool_by_segment(feats, seg)
    pooled.sum().backward()
    expected = torch.tensor([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1.0])[:, None].expand(6, 3)
    assert torch.allclose(feats.grad, expected)
    assert kept.tolist() == [0, 2, 5] and counts.tolist() == [2, 3, 1]
    with pytest.raises(ValueError, match="num_segments"):
        pool_by_segment(feats.detach(), seg, num_segments=5)
    with pytest.raises(ValueError, match="negative"):
        pool_by_segment(feats.detach(), torch.tensor([0, -1, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"\(6,\)"):
        pool_by_segment(feats.detach(), seg[:5])


def test_offsets_cumulative_and_fixed_stride():
    maps = [np.array([[0, 3]]), np.array([[1, 1], [0, 9]]), np.array([[2]])]
    assert segment_offsets(maps).tolist() == [0, 4, 14, 17]
    assert segment_offsets(maps, stride=10).tolist() == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="collide"):
        segment_offsets(maps, stride=9)


def test_superpoint_ids_match_loop_reference_on_different_sizes():
    rng = np.random.default_rng(1)
    sizes = [(9, 13), (5, 7), (11, 4)]
    maps = random_maps(rng, sizes, 300)  # ids beyond 255 and beyond SLidR's 150
    p = 400
    cam = rng.integers(0, 3, p)
    row = np.array([rng.integers(0, sizes[c][0]) for c in cam])
    col = np.array([rng.integers(0, sizes[c][1]) for c in cam])
    pairs = SimpleNamespace(point=np.arange(p), camera=cam, row=row, col=col)
    got = superpoint_ids(pairs, maps)
    offset, ref_off = 0, []
    for m in maps:
        ref_off.append(offset)
        offset += int(m.max()) + 1
    ref = [maps[c][r, k] + ref_off[c] for c, r, k in zip(cam, row, col)]
    assert got.tolist() == ref
    # superpoints from different images never share an id
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(got[torch.as_tensor(cam == a)].tolist()) & set(got[torch.as_tensor(cam == b)].tolist())
    # tuple form and stacked tensors give the same answer
    same = [m[:5, :4] for m in maps]
    sel = (row < 5) & (col < 4)
    a = superpoint_ids((cam[sel], row[sel], col[sel]), same)
    b = superpoint_ids((cam[sel], row[sel], col[sel]), torch.as_tensor(np.stack(same)))
    assert torch.equal(a, b)


def test_superpoint_ids_out_of_range_is_named():
    maps = [np.zeros((4, 5), np.int32)]
    with pytest.raises(IndexError, match="pair 1: camera 0, row 4"):
        superpoint_ids((np.array([0, 0]), np.array([0, 4]), np.array([0, 0])), maps)
    with pytest.raises(IndexError, match="camera 3"):
        superpoint_ids((np.array([3]), np.array([0]), np.array([0])), maps)


def test_pixel_segment_ids_align_with_superpoint_ids():
    rng = np.random.default_rng(2)
    maps = np.stack(random_maps(rng, [(6, 8)] * 3, 20))
    pix = pixel_segment_ids(maps)
    cam, row, col = np.meshgrid(np.arange(3), np.arange(6), np.arange(8), indexing="ij")
    sp = superpoint_ids((cam.ravel(), row.ravel(), col.ravel()), maps)
    assert torch.equal(pix, sp)  # same row-major (C, H, W) flattening and the same offsets
    # pooling 2D features per segment: the (C, H, W, D) flattening of image features lines up
    feats = torch.randn(3, 4, 6, 8, dtype=torch.float64)
    pooled, _, kept = pool_by_segment(feats.permute(0, 2, 3, 1).reshape(-1, 4), pix)
    ref, _, rid = naive_pool(feats.permute(0, 2, 3, 1).reshape(-1, 4), pix)
    assert torch.equal(kept, rid) and torch.allclose(pooled, ref)


def test_voxel_pooling_through_inverse():
    g = torch.Generator().manual_seed(3)
    n_points, n_vox, p = 200, 40, 150
    inverse = torch.randint(0, n_vox, (n_points,), generator=g)
    voxel_feats = torch.randn(n_vox, 5, generator=g, dtype=torch.float64)
    pair_point = torch.randint(0, n_points, (p,), generator=g)
    seg = torch.randint(0, 12, (p,), generator=g)
    pooled, counts, kept = pool_voxels_by_segment(voxel_feats, inverse, pair_point, seg)
    # reference: loop over pairs, one voxel feature per pair (SLidR)
    rows = torch.stack([voxel_feats[inverse[pair_point[i]]] for i in range(p)])
    ref, rc, rid = naive_pool(rows, seg)
    assert torch.equal(kept, rid) and torch.equal(counts, rc) and torch.allclose(pooled, ref)
    # unique_voxels: each (voxel, segment) counted once
    pooled_u, _, kept_u = pool_voxels_by_segment(voxel_feats, inverse, pair_point, seg, unique_voxels=True)
    uniq = {}
    for i in range(p):
        uniq.setdefault(int(seg[i]), set()).add(int(inverse[pair_point[i]]))
    assert kept_u.tolist() == sorted(uniq)
    for s, row in zip(kept_u.tolist(), pooled_u):
        vox = sorted(uniq[s])
        assert torch.allclose(row, voxel_feats[vox].mean(0))
    with pytest.raises(IndexError, match="pair_point"):
        pool_voxels_by_segment(voxel_feats, inverse, torch.tensor([n_points]), torch.tensor([0]))


def test_segment_offsets_with_ignored_pixels():
    a = torch.tensor([[-1, 0], [2, 2]])
    b = torch.full((2, 2), -1)  # nothing kept: takes no id
    c = torch.tensor([[1, -1], [0, 0]])
    assert segment_offsets([a, b, c], allow_ignore=True).tolist() == [0, 3, 3, 5]
    with pytest.raises(ValueError, match="negative ids"):
        segment_offsets([a])
    with pytest.raises(ValueError, match="only -1"):
        segment_offsets([torch.tensor([[-2, 0]])], allow_ignore=True)
