"""RANSAC ground plane, joint two-frame HDBSCAN segments, and the on-disk segment cache."""

from __future__ import annotations

import os
import warnings

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
    with (pytest.warns(temporal.SegmentCacheWarning, match="other points"),  # same tokens, other points: recomputed
          pytest.raises(AssertionError, match="recomputed")):
        fresh.get("synthetic", "seq0/000001", "seq0/000002", pts_t[:-1], np.eye(4), pts_n, pose_n, params)


def _fake_segments(points_t, pose_t, points_n, pose_n, params):
    """Cheap stand-in for segment_pair (the cache's checks do not depend on how ids are computed)."""
    calls.append(len(points_t))
    return np.arange(len(points_t)) % 7 - 1, np.arange(len(points_n)) % 5 - 1


calls: list[int] = []


def _damage(path, how):
    """Real faults on a cache file: truncation, one flipped byte, zeroes (power loss), edited ids, an old file."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":
        path.write_bytes(bytes(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "wrong ids":  # a valid file whose ids were swapped: the silent loss error
        with np.load(path) as z:
            items = dict(z)
        items["seg_t"] = items["seg_t"][::-1].copy()
        np.savez_compressed(path, **items)
    elif how == "old format":  # largead <= 0.1 stored the ids alone
        with np.load(path) as z:
            np.savez_compressed(path, seg_t=z["seg_t"], seg_n=z["seg_n"])
    elif how == "other points":  # the same tokens now name other sweeps (same point counts)
        with np.load(path) as z:
            items = dict(z)
        checksum = temporal._ids_checksum("0" * 32, items["seg_t"], items["seg_n"])
        items["verify"] = np.array(f"v{temporal.SEGMENT_CACHE_VERSION} {'0' * 32} {checksum}")
        np.savez_compressed(path, **items)


REASONS = {"truncated": "unreadable", "zeroed": "unreadable", "empty": "unreadable",
           "wrong ids": "checksum", "old format": "older largead", "other points": "other points"}


@pytest.mark.parametrize("how", list(REASONS))
def test_segment_cache_detects_damaged_files_and_recomputes(tmp_path, monkeypatch, how):
    monkeypatch.setattr(temporal, "segment_pair", _fake_segments)
    calls.clear()
    rng = np.random.default_rng(4)
    pts_t, pts_n = rng.normal(size=(50, 4)).astype(np.float32), rng.normal(size=(40, 4)).astype(np.float32)
    pose_n = np.eye(4)
    pose_n[0, 3] = 1.5
    cache = SegmentCache(tmp_path)
    expected = cache.get("ds", "a", "b", pts_t, np.eye(4), pts_n, pose_n)
    path = cache.path("ds", "a", "b", SegmentParams())
    assert calls == [50] and np.array_equal(SegmentCache(tmp_path).get("ds", "a", "b", pts_t, np.eye(4), pts_n,
                                                                        pose_n)[0], expected[0])
    _damage(path, how)
    reread = SegmentCache(tmp_path)
    with pytest.warns(temporal.SegmentCacheWarning, match=rf"{path.name}.*{REASONS[how]}.*recomputing"):
        got = reread.get("ds", "a", "b", pts_t, np.eye(4), pts_n, pose_n)
    assert calls == [50, 50] and reread.recomputed == 1 and reread.hits == 0
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    again = SegmentCache(tmp_path)  # the file was rewritten: a verified hit now
    got = again.get("ds", "a", "b", pts_t, np.eye(4), pts_n, pose_n)
    assert again.hits == 1 and calls == [50, 50] and np.array_equal(got[0], expected[0])
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_segment_cache_fingerprint_covers_points_poses_and_parameters():
    rng = np.random.default_rng(0)
    pts_t, pts_n = rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(20, 4)).astype(np.float32)
    base = temporal.segment_fingerprint(pts_t, np.eye(4), pts_n, np.eye(4), SegmentParams())
    moved = pts_t.copy()
    moved[3, 1] += 0.01
    shifted = np.eye(4)
    shifted[2, 3] = 0.5
    others = [temporal.segment_fingerprint(moved, np.eye(4), pts_n, np.eye(4), SegmentParams()),
              temporal.segment_fingerprint(pts_t, shifted, pts_n, np.eye(4), SegmentParams()),
              temporal.segment_fingerprint(pts_t, np.eye(4), pts_n, shifted, SegmentParams()),
              temporal.segment_fingerprint(pts_t, np.eye(4), pts_n, np.eye(4), SegmentParams(seed=1)),
              temporal.segment_fingerprint(pts_n, np.eye(4), pts_t, np.eye(4), SegmentParams())]
    assert len({base, *others}) == 6
    intensity = pts_t.copy()
    intensity[:, 3] = 9.0  # segments depend on xyz only
    assert temporal.segment_fingerprint(intensity, np.eye(4), pts_n.astype(np.float64), np.eye(4),
                                        SegmentParams()) == base


def test_segment_cache_removes_temporaries_of_dead_writers(tmp_path):
    import subprocess
    import sys

    from largead import fileio

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(dead.stdout)
    folder = tmp_path / "synthetic"
    folder.mkdir()
    stale = folder / f".a__b-x.npz.tmp-{fileio._HOST}-{pid}-q1w2e3r4.npz"
    live = folder / f".c__d-x.npz.tmp-{fileio._HOST}-{os.getpid()}-q1w2e3r4.npz"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    SegmentCache(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [live.name]


def test_segment_cache_flipped_bytes_never_read_silently(tmp_path, monkeypatch):
    """A flipped byte anywhere in a cache file is either harmless (e.g. a zip timestamp) or detected (zip CRC,
    fingerprint, checksum) and recomputed: the ids returned are always the right ones."""
    monkeypatch.setattr(temporal, "segment_pair", _fake_segments)
    rng = np.random.default_rng(5)
    pts_t, pts_n = rng.normal(size=(300, 4)).astype(np.float32), rng.normal(size=(200, 4)).astype(np.float32)
    cache = SegmentCache(tmp_path)
    expected = cache.get("ds", "a", "b", pts_t, np.eye(4), pts_n, np.eye(4))
    path = cache.path("ds", "a", "b", SegmentParams())
    data = path.read_bytes()
    detected = 0
    offsets = range(0, len(data), 7)
    for offset in offsets:
        damaged = bytearray(data)
        damaged[offset] ^= 0x20
        path.write_bytes(bytes(damaged))
        reader = SegmentCache(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", temporal.SegmentCacheWarning)
            got = reader.get("ds", "a", "b", pts_t, np.eye(4), pts_n, np.eye(4))
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]), offset
        detected += reader.recomputed
    assert detected > len(offsets) // 2  # most bytes matter
