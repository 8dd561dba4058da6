"""Voxelisation against hand-computed cylindrical/Cartesian cells (SLidR's grid: rho/0.1 m, phi/1 deg, z/0.1 m)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from largead.sparse import MAX_VOXEL_COORD, VoxelGrid, batch_voxelize, in_range, quantize, unique_rows, voxelize


def test_quantize_cylindrical_by_hand() -> None:
    pts = torch.tensor([
        [1.0, 0.0, 0.05, 7.0],                                    # rho 1.0 -> 10, phi 0 -> 0, z 0.05 -> 0
        [0.0, 2.0, -0.05, 1.0],                                   # rho 2.0 -> 20, phi 90 -> 90, z -0.05 -> -1
        [-1.0, -1e-9, 0.31, 0.0],                                 # phi just below -180 + eps -> floor(-180.x) = -180
        [math.cos(math.radians(-45.5)), math.sin(math.radians(-45.5)), 1.0, 0.0],  # phi -45.5 -> -46 (floor)
    ], dtype=torch.float64)
    q = quantize(pts, VoxelGrid()).tolist()
    assert q[0] == [10, 0, 0] and q[1] == [20, 90, -1]
    assert q[2][0] == 10 and q[2][1] == -180 and q[2][2] == 3
    assert q[3][1] == -46 and q[3][2] == 10


def test_quantize_cartesian_floor_negative() -> None:
    pts = torch.tensor([[-0.01, 0.0, 0.99], [0.49, -0.5, -1.01]])
    assert quantize(pts, VoxelGrid((0.5, 0.5, 0.5), cylindrical=False)).tolist() == [[-1, 0, 1], [0, -1, -3]]


def test_voxelize_first_point_and_inverse() -> None:
    grid = VoxelGrid((1.0, 1.0, 1.0), cylindrical=False)
    pts = np.array([[0.2, 0.2, 0.2, 5.0], [3.5, 0.1, 0.0, 6.0], [0.7, 0.9, 0.1, 7.0], [3.1, 0.5, 0.9, 8.0]],
                   dtype=np.float32)
    coords, first, inverse = voxelize(pts, grid)
    assert coords.tolist() == [[0, 0, 0], [3, 0, 0]]
    assert first.tolist() == [0, 1] and inverse.tolist() == [0, 1, 0, 1]


def test_batch_voxelize_offsets_features_and_duplicates_across_scans() -> None:
    grid = VoxelGrid((1.0, 1.0, 1.0), cylindrical=False)
    a = np.array([[0.5, 0.5, 0.5, 1.0], [0.6, 0.6, 0.6, 2.0], [-0.5, 0.0, 0.0, 3.0]], dtype=np.float32)
    b = np.array([[0.5, 0.5, 0.5, 4.0]], dtype=np.float32)   # same cell as a's first point, other batch item
    batch = batch_voxelize([a, b], grid)
    assert batch.coords.dtype == torch.int32
    assert batch.coords.tolist() == [[0, -1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    assert batch.feats[:, 0].tolist() == [3.0, 1.0, 4.0]          # first point of each voxel supplies the feature
    assert batch.inverse.tolist() == [1, 1, 0, 2]
    assert batch.point_offsets.tolist() == [0, 3, 4] and batch.voxel_offsets.tolist() == [0, 2, 3]
    assert batch.batch_size == 2


def test_unique_rows_fallback_for_huge_extents() -> None:
    keys = torch.tensor([[0, 2**40, 0], [0, -(2**40), 5], [0, 2**40, 0]])
    uniq, inverse, first = unique_rows(keys)
    assert uniq.tolist() == [[0, -(2**40), 5], [0, 2**40, 0]]
    assert inverse.tolist() == [1, 0, 1] and first.tolist() == [1, 0]


def test_bad_points_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(N, >=3\) array, got shape \(4,\)"):
        voxelize(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="voxel_size must be three positive numbers"):
        VoxelGrid((0.1, 0.0, 0.1))


@pytest.mark.parametrize("xyz, grid, where", [
    ((4.3e8, 0.0, 0.0), VoxelGrid(), "scan 1, point 2"),                       # rho / 0.1 m = 4.3e9 > 2^30
    ((1e9, 5.0, 0.0), VoxelGrid(), "scan 1, point 2"),
    ((0.0, 0.0, -2e8), VoxelGrid(), "scan 1, point 2"),                        # z / 0.1 m = -2e9
    ((6e7, 0.0, 0.0), VoxelGrid((0.05, 0.05, 0.05), cylindrical=False), "scan 1, point 2"),   # 1.2e9 cells
    ((0.0, 1e38, 0.0), VoxelGrid((0.05, 0.05, 0.05), cylindrical=False), "scan 1, point 2"),
])
def test_points_beyond_the_grid_range_name_their_row(xyz, grid, where) -> None:
    """Issue 13 item 4: a far point used to wrap around int32 (x = 4.3e8 m landed near 6 m); now it is an error
    naming the scan and the row, and in_range says which points fit."""
    good = np.array([[1.0, 2.0, 0.5, 0.1], [3.0, -1.0, 0.2, 0.2], [5.0, 5.0, 0.0, 0.3]], dtype=np.float32)
    bad = good.copy()
    bad[2, :3] = xyz
    with pytest.raises(ValueError, match=rf"^{where}: \(x, y, z\) = .* lies beyond the voxel grid's range"):
        batch_voxelize([good, bad], grid)
    with pytest.raises(ValueError, match=r"^point 2: "):
        voxelize(bad, grid)
    assert in_range(bad, grid).tolist() == [True, True, False]
    assert in_range(good, grid).all()


def test_range_limit_and_non_finite_points() -> None:
    grid = VoxelGrid((1.0, 1.0, 1.0), cylindrical=False)
    edge = np.array([[MAX_VOXEL_COORD - 0.5, -(MAX_VOXEL_COORD - 0.5), 0.0]], dtype=np.float64)
    coords, _, _ = voxelize(torch.as_tensor(edge), grid)
    assert coords.tolist() == [[MAX_VOXEL_COORD - 1, -MAX_VOXEL_COORD, 0]]  # just inside: kept exactly
    with pytest.raises(ValueError, match=r"^point 0: \(x, y, z\) = \(1\.07374e\+09"):
        voxelize(torch.tensor([[MAX_VOXEL_COORD + 1.0, 0.0, 0.0]], dtype=torch.float64), grid)
    nan = np.array([[0.0, 0.0, 0.0, 1.0], [np.nan, 0.0, 0.0, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match=r"^scan 0, point 1: non-finite coordinates \(nan, 0, 0\)"):
        batch_voxelize([nan], grid)
    assert in_range(nan, grid).tolist() == [True, False]
