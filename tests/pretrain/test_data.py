"""The pretraining sample pipeline: pairs -> voxels, superpixel ids, segments, augmentation, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from largead.data.frame import CameraView, Frame
from largead.pretrain.data import AugmentConfig, PretrainDataConfig, PretrainDataset, collate_pretrain, slidr_augment
from largead.pretrain.temporal import SegmentCache, SegmentParams
from largead.sparse.voxelize import VoxelGrid, quantize

TINY = {"seed": 0, "num_sequences": 1, "frames_per_sequence": 3, "beams": 4, "num_cameras": 2, "image_size": (24, 40),
        "azimuth_resolution": 4.0, "max_range": 25.0}
GRID = VoxelGrid((0.1, 1.0, 0.1), True)


@pytest.fixture(scope="module")
def synthetic():
    from largead.data import get_dataset
    from largead.superpixels import get_source

    return get_dataset("synthetic", **TINY), get_source("synthetic-vfm")


def _dataset(synthetic, tmp_path, **kw):
    ds, src = synthetic
    cfg = PretrainDataConfig(segments=SegmentParams(min_cluster_size=5), superpixel_ignore_zero=True, **kw)
    return PretrainDataset([ds], src, cfg, SegmentCache(tmp_path / "seg"), seed=0)


def test_collate_pairs_superpixels_segments(synthetic, tmp_path):
    pd = _dataset(synthetic, tmp_path)
    assert len(pd) == 2 and pd.num_without_next == 1  # the last frame has no t+1
    samples = [pd[0], pd[1]]
    b = collate_pretrain(samples, GRID, "intensity", {}, ["synthetic"])
    assert b.num_scans == 2 and b.voxels.batch_size == 4 and b.images.dtype == torch.uint8
    assert b.images.shape == (4, 3, 24, 40) and b.image_scan.tolist() == [0, 0, 1, 1]
    # pairs land on the voxel containing their point (independent: quantise the point itself)
    for k, s in enumerate(samples):
        sel = slice(sum(len(x.pairs) for x in samples[:k]), sum(len(x.pairs) for x in samples[: k + 1]))
        vox = b.voxels.coords[b.pair_voxel[sel]].long()
        assert (vox[:, 0] == k).all()
        assert torch.equal(vox[:, 1:], quantize(torch.as_tensor(s.points[s.pairs.point]), GRID))
        # pair superpixel = the map value at its pixel, offset by the ids of the images before
        cam = s.pairs.camera + 2 * k
        raw = np.concatenate([x.superpixels for x in samples])[cam, s.pairs.row, s.pairs.col]
        flat = b.pixel_superpixel.view(4, 24, 40)[torch.as_tensor(cam), torch.as_tensor(s.pairs.row),
                                                  torch.as_tensor(s.pairs.col)]
        assert torch.equal(b.pair_superpixel[sel], flat)
        assert torch.equal(b.pair_superpixel[sel] >= 0, torch.as_tensor(raw >= 0))
    ids_per_image = [set(b.pixel_superpixel.view(4, -1)[c].unique().tolist()) - {-1} for c in range(4)]
    assert all(not (ids_per_image[i] & ids_per_image[j]) for i in range(4) for j in range(i + 1, 4))
    # voxel segments: the first point's segment, shared between a scan and its next frame, distinct between samples
    seg = b.voxel_segment
    scan = b.voxels.coords[:, 0].long()
    first_t = samples[0].segments[b.voxels.first_index[scan == 0].numpy()]
    assert torch.equal(seg[scan == 0], torch.as_tensor(first_t))
    shared = set(seg[scan == 0].tolist()) & set(seg[scan == 2].tolist()) - {-1}
    assert shared
    ids_sample0 = set(seg[(scan == 0) | (scan == 2)].tolist()) - {-1}
    ids_sample1 = set(seg[(scan == 1) | (scan == 3)].tolist()) - {-1}
    assert ids_sample0 and ids_sample1 and not ids_sample0 & ids_sample1


def test_segments_cached_across_datasets_and_epochs(synthetic, tmp_path):
    a = _dataset(synthetic, tmp_path)
    first = a[0]
    assert a.cache.misses == 1
    b = _dataset(synthetic, tmp_path)
    b.set_epoch(3)
    again = b[0]
    assert b.cache.hits == 1 and b.cache.misses == 0 and np.array_equal(first.segments, again.segments)


def test_sample_rng_depends_on_epoch_not_instance(synthetic, tmp_path):
    aug = AugmentConfig(crop_size=None, cuboid_min_pairs=1)
    a, b = _dataset(synthetic, tmp_path, augment=aug), _dataset(synthetic, tmp_path, augment=aug)
    assert np.array_equal(a[1].points, b[1].points)
    b.set_epoch(1)
    assert not np.array_equal(a[1].points, b[1].points)


def test_augment_keeps_pairs_segments_and_next_frame_consistent(synthetic, tmp_path):
    s = _dataset(synthetic, tmp_path)[0]
    rng = np.random.default_rng(0)
    out = slidr_augment(s, rng, AugmentConfig(drop_cuboid=False, crop_size=None, hflip_p=1.0))
    assert np.array_equal(out.segments, s.segments)
    # the same rigid motion on both frames: distances between a point of t and a point of t+1 are kept
    d0 = np.linalg.norm(s.points[:20, None, :3] - s.next_points[None, :20, :3], axis=2)
    d1 = np.linalg.norm(out.points[:20, None, :3] - out.next_points[None, :20, :3], axis=2)
    assert np.allclose(d0, d1, atol=1e-4)
    # flipped images: every pair still reads the same superpixel id and colour
    assert np.array_equal(out.superpixels[out.pairs.camera, out.pairs.row, out.pairs.col],
                          s.superpixels[s.pairs.camera, s.pairs.row, s.pairs.col])
    assert np.array_equal(out.images[out.pairs.camera, out.pairs.row, out.pairs.col],
                          s.images[s.pairs.camera, s.pairs.row, s.pairs.col])
    dropped = slidr_augment(s, np.random.default_rng(1), AugmentConfig(rotate=False, flip_p=0.0, crop_size=None,
                                                                       hflip_p=0.0, cuboid_max_fraction=0.9,
                                                                       cuboid_min_pairs=1))
    assert len(dropped.segments) == len(dropped.points) < len(s.points)
    # without rotation the kept points are unchanged rows of the original: their segments must follow them
    keep = np.flatnonzero((s.points[:, None, :3] == dropped.points[None, :, :3]).all(2).any(1))
    assert np.array_equal(dropped.segments, s.segments[keep])


# ---------------------------------------------------------------------------------------------------- bad input


class _Stub:
    """A one-frame dataset with a hand-built camera (lidar x forward -> camera z)."""

    name, has_cameras, temporal = "stub", True, False

    def __init__(self, behind: bool = False):
        rng = np.random.default_rng(0)
        pts = np.c_[rng.uniform(5, 15, 200), rng.uniform(-3, 3, 200), rng.uniform(-1, 1, 200), rng.uniform(0, 1, 200)]
        l2c = np.eye(4)
        l2c[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
        if behind:
            l2c[:3, :3] = l2c[:3, :3] @ np.diag([-1.0, -1.0, 1.0])  # turned 180 deg about z: every point behind
        cam = CameraView(image=np.full((24, 40, 3), 100, np.uint8), intrinsics=np.array([[20, 0, 20], [0, 20, 12],
                                                                                         [0, 0, 1.0]]),
                         lidar_to_camera=l2c, name="CAM", token="stub-cam")
        self.f = Frame(points=pts.astype(np.float32), cameras=[cam], token="stub-0", dataset="stub")

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.f

    def next_index(self, i, n=1):
        return None


class _Src:
    def __init__(self, ids):
        self.ids = ids

    def segment(self, image, camera=None):
        return self.ids


def _stub_ds(stub, ids, **kw):
    return PretrainDataset([stub], _Src(ids), PretrainDataConfig(temporal=False, **kw))


def test_stub_frame_works():
    ids = np.repeat(np.arange(4), 10)[None].repeat(24, 0)
    s = _stub_ds(_Stub(), ids)[0]
    assert len(s.pairs) > 50 and s.segments is None


def test_no_pairs_is_an_error():
    with pytest.raises(ValueError, match="stub frame stub-0: only 0 point-pixel pairs.*project into a camera"):
        _stub_ds(_Stub(behind=True), np.zeros((24, 40), int))[0]


def test_superpixel_size_mismatch_and_empty_map():
    with pytest.raises(ValueError, match=r"camera CAM: superpixel map is \(10, 10\), image is \(24, 40\)"):
        _stub_ds(_Stub(), np.zeros((10, 10), int))[0]
    with pytest.raises(ValueError, match="camera CAM: the superpixel map has no segment"):
        _stub_ds(_Stub(), np.zeros((24, 40), int), superpixel_ignore_zero=True)[0]


def test_precomputed_png_of_wrong_size_names_the_file(tmp_path):
    from largead.superpixels import get_source, save_superpixels, superpixel_path

    path = superpixel_path(tmp_path, "seem", "stub-cam")
    save_superpixels(path, np.zeros((10, 10), np.int32))
    with pytest.raises(ValueError, match="stub-cam.png"):
        PretrainDataset([_Stub()], get_source("seem", root=tmp_path), PretrainDataConfig(temporal=False))[0]


def test_collate_rejects_mixed_image_sizes():
    stub = _Stub()
    a = _stub_ds(stub, np.zeros((24, 40), int))[0]
    b = dataclasses.replace(a, images=a.images[:, :20], superpixels=a.superpixels[:, :20])
    with pytest.raises(ValueError, match="images of different sizes"):
        collate_pretrain([a, b], GRID)


def test_non_camera_or_non_temporal_dataset_refused():
    stub = _Stub()
    with pytest.raises(ValueError, match="'stub' is not temporal"):
        PretrainDataset([stub], _Src(None), PretrainDataConfig(temporal=True))
    stub.has_cameras = False
    with pytest.raises(ValueError, match="'stub' has no cameras"):
        PretrainDataset([stub], _Src(None), PretrainDataConfig(temporal=False))
