"""RANSAC ground plane, joint two-frame HDBSCAN segments, and the on-disk segment cache."""

from __future__ import annotations

import numpy as np
import pytest

from largead.pretrain import temporal
from largead.pretrain.temporal import SegmentCache, SegmentParams, fit_ground_plane, segment_pair


def _scene(rng, n_ground=3000, slope=(0.05, -0.02), height=-1.7):
    """Tilted ground plane + 3 separated boxes + a large vertical wall; returns xyz and per-point object id
    (0 ground, 1..3 boxes, 4 wall)."""
    xy = rng.uniform(-20, 20, size=(n_ground, 2))
    z = slope[0] * xy[:, 0] + slope[1] * xy[:, 1] + height + rng.normal(0, 0.02, n_ground)
    parts, obj = [np.c_[xy, z]], [np.zeros(n_ground, int)]
    for k, centre in enumerate([(5, 5), (-6, 3), (2, -8)], start=1):
        c = np.array([centre[0], centre[1], height + 1.2 + slope[0] * centre[0] + slope[1] * centre[1]])
        parts.append(c + rng.uniform(-0.8, 0.8, size=(300, 3)))
        obj.append(np.full(300, k))
    wall = np.c_[np.full(3500, 15.0) + rng.normal(0, 0.01, 3500), rng.uniform(-20, 20, 3500), rng.uniform(0, 3, 3500)]
    parts.append(wall)
    obj.append(np.full(3500, 4))
    return np.concatenate(parts), np.concatenate(obj)


def test_ransac_finds_planted_plane_not_the_bigger_wall():
    rng = np.random.default_rng(0)
    xyz, obj = _scene(rng)
    plane, inliers = fit_ground_plane(xyz, iterations=256, threshold=0.15, rng=np.random.default_rng(1))
    true_n = np.array([-0.05, 0.02, 1.0]) / np.linalg.norm([-0.05, 0.02, 1.0])
    assert np.degrees(np.arccos(min(1.0, plane[:3] @ true_n))) < 0.5
    assert plane[3] == pytest.approx(1.7 * true_n[2], abs=0.02)  # n . (0, 0, -1.7) + d = 0
    ground = obj == 0
    assert (inliers & ground).sum() / ground.sum() > 0.99 and (inliers & ~ground).sum() == 0


def test_ransac_rejects_vertical_only_points():
    rng = np.random.default_rng(0)
    wall = np.c_[rng.uniform(-1, 1, 500) * 0.01, rng.uniform(-5, 5, 500), rng.uniform(0, 3, 500)]
    with pytest.raises(ValueError, match="within 20.0 deg of horizontal"):
        fit_ground_plane(wall, iterations=64)


def _pair(rng):
    xyz, obj = _scene(rng, n_ground=1500)
    keep = obj != 4
    xyz, obj = xyz[keep], obj[keep]
    # frame t+1: the sensor moved 2 m along x and turned 10 deg; the same objects, resampled
    yaw = np.radians(10)
    pose_n = np.eye(4)
    pose_n[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
    pose_n[:3, 3] = [2.0, 0.0, 0.0]
    xyz2, obj2 = _scene(np.random.default_rng(5), n_ground=1500)
    keep2 = obj2 != 4
    xyz2, obj2 = xyz2[keep2], obj2[keep2]
    local2 = (xyz2 - pose_n[:3, 3]) @ pose_n[:3, :3]  # global -> frame t+1's LiDAR frame
    pts_t = np.c_[xyz, np.ones(len(xyz))].astype(np.float32)
    pts_n = np.c_[local2, np.ones(len(local2))].astype(np.float32)
    return pts_t, obj, pts_n, obj2, pose_n


def test_segment_pair_one_id_per_object_across_frames():
    rng = np.random.default_rng(2)
    pts_t, obj_t, pts_n, obj_n, pose_n = _pair(rng)
    params = SegmentParams(min_cluster_size=30, ground_threshold=0.15)
    seg_t, seg_n = segment_pair(pts_t, np.eye(4), pts_n, pose_n, params)
    assert (seg_t[obj_t == 0] == -1).mean() > 0.99 and (seg_n[obj_n == 0] == -1).mean() > 0.99
    for k in (1, 2, 3):
        ids_t, counts_t = np.unique(seg_t[obj_t == k], return_counts=True)
        ids_n, counts_n = np.unique(seg_n[obj_n == k], return_counts=True)
        main_t, main_n = ids_t[np.argmax(counts_t)], ids_n[np.argmax(counts_n)]
        assert main_t >= 0 and main_t == main_n  # same id in both frames
        assert counts_t.max() / counts_t.sum() > 0.95 and counts_n.max() / counts_n.sum() > 0.95
        assert (seg_t[obj_t != k] == main_t).sum() == 0  # not shared with another object
    assert len(set(np.unique(seg_t[seg_t >= 0])) & set(np.unique(seg_n[seg_n >= 0]))) == 3
    # Clustering in LiDAR coordinates instead (identity poses) splits the moved objects: global frames matter
    wrong_t, wrong_n = segment_pair(pts_t, np.eye(4), pts_n, np.eye(4), params)
    shared = [np.bincount(wrong_t[obj_t == k] + 1).argmax() - 1 == np.bincount(wrong_n[obj_n == k] + 1).argmax() - 1
              for k in (1, 2, 3)]
    assert not all(shared)


def test_segment_cache_computes_once(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    pts_t, _, pts_n, _, pose_n = _pair(rng)
    params = SegmentParams(min_cluster_size=30, downsample=0.1)
    cache = SegmentCache(tmp_path)
    a = cache.get("synthetic", "seq0/000001", "seq0/000002", pts_t, np.eye(4), pts_n, pose_n, params)
    path = cache.path("synthetic", "seq0/000001", "seq0/000002", params)
    assert path.is_file() and path.parent == tmp_path / "synthetic" and cache.misses == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind

    def boom(*args, **kwargs):
        raise AssertionError("segments recomputed instead of read from the cache")

    monkeypatch.setattr(temporal, "segment_pair", boom)
    fresh = SegmentCache(tmp_path)  # e.g. the next epoch or another process
    b = fresh.get("synthetic", "seq0/000001", "seq0/000002", pts_t, np.eye(4), pts_n, pose_n, params)
    assert fresh.hits == 1 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(AssertionError, match="recomputed"):  # other parameters -> other key
        fresh.get("synthetic", "seq0/000001", "seq0/000002", pts_t, np.eye(4), pts_n, pose_n,
                  SegmentParams(min_cluster_size=31, downsample=0.1))
    with pytest.raises(ValueError, match="stale"):
        fresh.get("synthetic", "seq0/000001", "seq0/000002", pts_t[:-1], np.eye(4), pts_n, pose_n, params)
