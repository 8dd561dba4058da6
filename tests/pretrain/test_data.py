"""The pretraining sample pipeline: pairs -> voxels, superpixel ids, segments, augmentation, bad input."""

from __future__ import annotations

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
        raw = np.concatenate([np.stack(x.superpixels) for x in samples])[cam, s.pairs.row, s.pairs.col]
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
    # flipped images: every pair still reads the same superpixel id and colour (the cameras share a size here)
    sp0, sp1 = np.stack(s.superpixels), np.stack(out.superpixels)
    im0, im1 = np.stack(s.images), np.stack(out.images)
    assert np.array_equal(sp1[out.pairs.camera, out.pairs.row, out.pairs.col],
                          sp0[s.pairs.camera, s.pairs.row, s.pairs.col])
    assert np.array_equal(im1[out.pairs.camera, out.pairs.row, out.pairs.col],
                          im0[s.pairs.camera, s.pairs.row, s.pairs.col])
    dropped = slidr_augment(s, np.random.default_rng(1), AugmentConfig(rotate=False, flip_p=0.0, crop_size=None,
                                                                       hflip_p=0.0, cuboid_max_fraction=0.9,
                                                                       cuboid_min_pairs=1))
    assert len(dropped.segments) == len(dropped.points) < len(s.points)
    # without rotation the kept points are unchanged rows of the original: their segments must follow them
    keep = np.flatnonzero((s.points[:, None, :3] == dropped.points[None, :, :3]).all(2).any(1))
    assert np.array_equal(dropped.segments, s.segments[keep])


# ---------------------------------------------------------------------------------------------------- bad input


class _Stub:
    """A one-frame dataset with hand-built cameras (lidar x forward -> camera z); ``sizes`` gives each camera's
    (H, W) (the first is the front camera, the others look at the same points through a shifted principal point)."""

    name, has_cameras, temporal = "stub", True, False

    def __init__(self, behind: bool = False, sizes=((24, 40),)):
        rng = np.random.default_rng(0)
        pts = np.c_[rng.uniform(5, 15, 200), rng.uniform(-3, 3, 200), rng.uniform(-1, 1, 200), rng.uniform(0, 1, 200)]
        l2c = np.eye(4)
        l2c[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
        if behind:
            l2c[:3, :3] = l2c[:3, :3] @ np.diag([-1.0, -1.0, 1.0])  # turned 180 deg about z: every point behind
        cams = []
        for c, (h, w) in enumerate(sizes):
            image = np.zeros((h, w, 3), np.uint8)
            image[..., 0] = np.arange(w)[None] * 5 % 256  # column ramp: tells pixels apart
            image[..., 1] = np.arange(h)[:, None] * 7 % 256
            image[..., 2] = 40 * c
            cams.append(CameraView(image=image, intrinsics=np.array([[20, 0, w / 2], [0, 20, h / 2], [0, 0, 1.0]]),
                                   lidar_to_camera=l2c, name=f"CAM{c}" if c else "CAM",
                                   token=f"stub-cam{c}" if c else "stub-cam"))
        self.f = Frame(points=pts.astype(np.float32), cameras=cams, token="stub-0", dataset="stub")

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
        if callable(self.ids):
            return self.ids(image)
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


def _grid_ids(image):
    """Superpixels of any size: 8 x 8 pixel blocks, numbered row-major."""
    h, w = image.shape[:2]
    return (np.arange(h)[:, None] // 8) * ((w + 7) // 8) + np.arange(w)[None] // 8


def test_mixed_camera_sizes_without_crop_collate_and_teacher():
    """Waymo-like rig: a 48 x 64 front camera and a 32 x 64 side camera in one frame, no crop."""
    from largead.models.image import ImageTeacher
    from largead.pretrain.model import ObjectiveConfig, PretrainModel
    from largead.pretrain.objectives import LossWeights

    stub = _Stub(sizes=((48, 64), (32, 64)))
    ds = PretrainDataset([stub], _Src(_grid_ids), PretrainDataConfig(temporal=False))
    s = ds[0]
    assert [im.shape for im in s.images] == [(48, 64, 3), (32, 64, 3)] and [m.shape for m in s.superpixels] == \
        [(48, 64), (32, 64)]
    b = collate_pretrain([s, s], GRID)
    assert isinstance(b.images, list) and [tuple(t.shape) for t in b.images] == [(3, 48, 64), (3, 32, 64)] * 2
    assert b.image_sizes.tolist() == [[48, 64], [32, 64]] * 2
    # every pixel's global id: the image's map offset by the ids of the images before it
    sizes = [48 * 64, 32 * 64] * 2
    maps = [_grid_ids(np.zeros((h, w))) for h, w in [(48, 64), (32, 64)] * 2]
    offsets = np.cumsum([0] + [int(m.max()) + 1 for m in maps])[:-1]
    want = np.concatenate([(m + o).ravel() for m, o in zip(maps, offsets)])
    assert b.pixel_superpixel.shape == (sum(sizes),) and np.array_equal(b.pixel_superpixel.numpy(), want)
    # each pair reads the id at its pixel
    n = len(s.pairs)
    for k in range(2):
        cam = s.pairs.camera + 2 * k
        ref = np.array([maps[c][r, q] + offsets[c] for c, r, q in zip(cam, s.pairs.row, s.pairs.col)])
        assert np.array_equal(b.pair_superpixel[k * n:(k + 1) * n].numpy(), ref)
    assert set(s.pairs.camera.tolist()) == {0, 1}  # both cameras see points
    img = [np.asarray(t.permute(1, 2, 0)) for t in b.images]
    assert all(np.array_equal(img[c][r, q], s.images[c][r, q]) for c, r, q in
               zip(s.pairs.camera[:50], s.pairs.row[:50], s.pairs.col[:50]))
    # the model runs the teacher per size: features of each image equal the teacher run on that image alone
    teacher = ImageTeacher(torch.nn.Conv2d(3, 4, 2, stride=2), out_dim=8, feature_dim=4, stride=2)
    model = PretrainModel(torch.nn.Module(), teacher, ObjectiveConfig(weights=LossWeights(1, 0, 0, 0)))
    pix, _ = model.image_features(b.images)
    alone = torch.cat([teacher(t[None])[0].permute(1, 2, 0).reshape(-1, 8) for t in b.images])
    assert torch.allclose(pix, alone, atol=1e-6)


def test_mixed_camera_sizes_with_crop_become_one_size():
    stub = _Stub(sizes=((48, 64), (32, 64)))
    aug = AugmentConfig(rotate=False, flip_p=0.0, drop_cuboid=False, crop_size=(16, 28), crop_min_pairs=1,
                        hflip_p=0.5)
    s = PretrainDataset([stub], _Src(_grid_ids), PretrainDataConfig(temporal=False, augment=aug))[0]
    assert [im.shape for im in s.images] == [(16, 28, 3)] * 2
    b = collate_pretrain([s], GRID)
    assert isinstance(b.images, torch.Tensor) and b.images.shape == (2, 3, 16, 28)
    flat = b.pixel_superpixel.view(2, 16, 28)
    assert torch.equal(b.pair_superpixel, flat[torch.as_tensor(s.pairs.camera), torch.as_tensor(s.pairs.row),
                                               torch.as_tensor(s.pairs.col)])


@pytest.mark.parametrize("kind,zero_kept", [("seem", False), ("sam", True), ("slic", True)])
def test_pipeline_asks_the_source_what_id_zero_means(tmp_path, kind, zero_kept):
    """SEEM's panoptic maps: 0 is void (ignored, -1); Seal's SAM maps and SLIC: 0 is a segment (kept). A config
    override (superpixel_ignore_zero) wins over the source."""
    from PIL import Image

    from largead.superpixels import get_source, superpixel_path

    ids = np.zeros((24, 40), np.uint8)  # written as the official scripts do: uint8 PNG via PIL
    ids[:, 20:] = 1
    ids[:8, :8] = 2
    path = superpixel_path(tmp_path, kind, "stub-cam")
    path.parent.mkdir(parents=True)
    Image.fromarray(ids).save(path)
    src = get_source(kind, root=tmp_path) if kind == "seem" else get_source("precomputed", root=tmp_path, kind=kind)
    sample = PretrainDataset([_Stub()], src, PretrainDataConfig(temporal=False))[0]
    want = ids.astype(np.int64) if zero_kept else np.where(ids == 0, -1, ids.astype(np.int64))
    assert np.array_equal(sample.superpixels[0], want)
    flipped = PretrainDataset([_Stub()], src, PretrainDataConfig(temporal=False, superpixel_ignore_zero=zero_kept))[0]
    assert np.array_equal(flipped.superpixels[0] >= 0, ~(want >= 0) | (ids > 0))


def test_non_camera_or_non_temporal_dataset_refused():
    stub = _Stub()
    with pytest.raises(ValueError, match="'stub' is not temporal"):
        PretrainDataset([stub], _Src(None), PretrainDataConfig(temporal=True))
    stub.has_cameras = False
    with pytest.raises(ValueError, match="'stub' has no cameras"):
        PretrainDataset([stub], _Src(None), PretrainDataConfig(temporal=False))
