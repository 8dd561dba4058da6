"""Official-layout samples (largead.data.export.samples): every sample opens with its reader for every split it
declares, and every frame read back equals the synthetic frame written (points, labels through the dataset's class
map, poses, cameras), up to the format's precision. The nuScenes sample is also checked with nuscenes-devkit in
test_export_nuscenes.py; the layouts themselves are cited in each writer's docstring."""

from __future__ import annotations

import numpy as np
import pytest

from largead.data import IGNORE_INDEX, get_dataset
from largead.data.export import OFFICIAL_SAMPLES, SampleSize
from largead.data.export.kitti import scribble_mask
from largead.data.geometry import invert_rigid
from largead.data.synthetic import benchmark_lut

SIZE = SampleSize()


def _open(sample, split: str, **extra):
    options = {**sample.options, **extra}
    if split.endswith("_labelled"):
        split, options["labelled_only"] = split[: -len("_labelled")], True
    return get_dataset(sample.dataset, sample.root, split, **options)


def test_every_key_is_written(official_samples):
    assert list(official_samples) == list(OFFICIAL_SAMPLES)
    total = sum(p.stat().st_size for s in official_samples.values() for p in s.root.rglob("*") if p.is_file())
    assert total < 40e6  # small enough to build in every test session


@pytest.mark.parametrize("key", list(OFFICIAL_SAMPLES))
def test_every_declared_split_opens_with_its_frames(official_samples, key):
    s = official_samples[key]
    assert s.splits, key
    for split, n in s.splits.items():
        ds = _open(s, split)
        assert len(ds) == n, (key, split)
        for i in (0, len(ds) - 1):
            f = ds[i].validate(f"{key} {split} {i}")
            assert len(f.cameras) == s.cameras
            unlabelled_split = key == "semanticstf" and split == "test"
            assert (f.labels is None) == (unlabelled_split or (key == "waymo" and f.index % 2 == 1)), (key, split, i)
            assert f.dataset == s.dataset


def _by_key(frames, key_of):
    return {key_of(f): f for f in frames}


def _check_points_labels(got, want, target, exact=True):
    if exact:
        np.testing.assert_array_equal(got.points, want.points[:, :4])
    else:
        np.testing.assert_allclose(got.points, want.points[:, :4], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got.labels, benchmark_lut(target)[want.labels])


@pytest.mark.parametrize("key, target", [("semantickitti", "semantickitti"), ("scribblekitti", "semantickitti")])
def test_kitti_round_trip_with_camera(official_samples, key, target):
    s = official_samples[key]
    want = _by_key(s.frames, lambda f: (f.sequence, round(f.timestamp, 6)))
    for split in ("train", "val"):
        ds = _open(s, split)
        for i in range(len(ds)):
            got = ds[i]
            w = want[(got.sequence, round(got.timestamp, 6))]
            assert got.index == w.index
            np.testing.assert_array_equal(got.points, w.points[:, :4])
            dense = benchmark_lut(target)[w.labels]
            if key == "scribblekitti" and split == "train":
                dense = np.where(scribble_mask(w.num_points), dense, IGNORE_INDEX)
            np.testing.assert_array_equal(got.labels, dense)
            np.testing.assert_allclose(got.pose, w.pose, atol=1e-6)
            (cam,), (wcam,) = got.cameras, w.cameras
            assert cam.name == "image_2"
            np.testing.assert_array_equal(cam.image, wcam.image)  # PNG: lossless
            np.testing.assert_allclose(cam.intrinsics, wcam.intrinsics, atol=1e-9)
            np.testing.assert_allclose(cam.lidar_to_camera, wcam.lidar_to_camera, atol=1e-9)
            if i + 1 < len(ds) and ds.sequence_of(i + 1)[0] == got.sequence:
                assert ds.next_index(i) == i + 1  # temporal pairs are available


@pytest.mark.parametrize("key", ["nuscenes", "nuscenes_mini"])
def test_nuscenes_round_trip(official_samples, key):
    s = official_samples[key]
    want = _by_key(s.frames, lambda f: (f.sequence, f.index))
    ds = _open(s, "all")
    assert len(ds) == 3 * SIZE.frames
    for i in range(len(ds)):
        got = ds[i]
        w = want[(got.sequence, got.index * (SIZE.sweeps + 1))]  # keyframes are every (sweeps + 1)-th frame
        assert got.timestamp == pytest.approx(w.timestamp, abs=1e-6)
        _check_points_labels(got, w, "nuscenes")
        np.testing.assert_array_equal(got.extra["ring"], w.extra["ring"])
        np.testing.assert_allclose(got.pose, w.pose, atol=1e-6)
        assert [c.name for c in got.cameras] == [c.name for c in w.cameras]
        for c, wc in zip(got.cameras, w.cameras):
            np.testing.assert_allclose(c.intrinsics, wc.intrinsics, atol=1e-9)
            np.testing.assert_allclose(c.lidar_to_camera, wc.lidar_to_camera, atol=1e-6)
            assert c.image.shape == wc.image.shape == (*SIZE.image(1600, 900), 3)
            assert np.abs(c.image.astype(int) - wc.image).mean() < 4  # JPEG


def test_waymo_round_trip_mixed_camera_sizes(official_samples):
    """Range-image writing keeps every point (the sample's LiDAR has one return per pixel), in the vehicle frame."""
    import pyarrow.parquet as pq
    from scipy.spatial import cKDTree

    s = official_samples["waymo"]
    for split, split_dir in (("train", "training"), ("val", "validation")):
        ds = _open(s, split)
        seg = ds.sequence_of(0)[0]
        cal = pq.read_table(s.root / split_dir / "lidar_calibration" / f"{seg}.parquet").to_pylist()[0]
        ext = np.asarray(cal["[LiDARCalibrationComponent].extrinsic.transform"]).reshape(4, 4)
        want = [f for f in s.frames if f.sequence == f"waymo-{split}"]
        for i in range(len(ds)):
            got, w = ds[i], want[i]
            assert got.timestamp == pytest.approx(w.timestamp, abs=1e-6)
            expected = w.points[:, :3] @ ext[:3, :3].T + ext[:3, 3]
            assert got.num_points == w.num_points
            dist, idx = cKDTree(expected).query(got.points[:, :3])
            assert dist.max() < 1e-3 and len(np.unique(idx)) == w.num_points
            np.testing.assert_allclose(got.points[:, 3], w.points[idx, 3], atol=1e-6)
            if w.labels is None:
                assert got.labels is None
            else:
                np.testing.assert_array_equal(got.labels, benchmark_lut("waymo")[w.labels[idx]])
                np.testing.assert_array_equal(got.instances, w.instances[idx])
            np.testing.assert_allclose(got.pose, w.pose @ invert_rigid(ext), atol=1e-9)
            sizes = {c.name: c.image.shape[:2] for c in got.cameras}
            front = SIZE.image(1920, 1280)  # (64, 96): Waymo's 1920x1280 scaled
            side = (round(front[0] * 886 / 1280), front[1])  # (44, 96): Waymo's side cameras are 1920x886
            assert sizes == {"FRONT": front, "FRONT_LEFT": front, "FRONT_RIGHT": front, "SIDE_LEFT": side,
                             "SIDE_RIGHT": side}
            for c in got.cameras:
                wc = next(x for x in w.cameras if x.name == c.name)
                np.testing.assert_allclose(c.intrinsics, wc.intrinsics, atol=1e-9)
                np.testing.assert_allclose(c.lidar_to_camera, wc.lidar_to_camera @ invert_rigid(ext), atol=1e-9)
                assert np.abs(c.image.astype(int) - wc.image).mean() < 4


# LiDAR-only transfer samples: (key, reader target of benchmark_lut, how to find the written frame of a read frame)
TRANSFER = [
    ("semanticposs", "semanticposs", ("train", "val")),
    ("synlidar", "synlidar", ("all",)),
    ("daps3d", "daps3d", ("train", "val")),
    ("daps3d_daps2", "daps3d", ("val",)),
    ("synth4d", "synth4d", ("train", "val")),
]


@pytest.mark.parametrize("key, target, splits", TRANSFER)
def test_transfer_round_trip(official_samples, key, target, splits):
    s = official_samples[key]
    want = _by_key(s.frames, lambda f: (f.sequence, f.index))
    seen = 0
    for split in splits:
        ds = _open(s, split)
        for i in range(len(ds)):
            got = ds[i]
            _check_points_labels(got, want[(got.sequence, got.index)], target)
            seen += 1
    assert seen == len(s.frames)


def test_semanticstf_round_trip(official_samples):
    s = official_samples["semanticstf"]
    for split, seq in (("train", "2019-01-01_stf"), ("val", "2019-01-02_stf"), ("test", "2019-01-03_stf")):
        ds = _open(s, split)
        want = [f for f in s.frames if f.sequence == seq]
        for i in range(len(ds)):
            got, w = ds[i], want[i]
            np.testing.assert_allclose(got.points, w.points[:, :4], rtol=1e-6, atol=1e-7)  # 0-255 stored, /255 read
            np.testing.assert_array_equal(got.extra["channel"], w.extra["ring"])
            if split == "test":
                assert got.labels is None  # published without labels
            else:
                np.testing.assert_array_equal(got.labels, benchmark_lut("semanticstf")[w.labels])
    weathers = [get_dataset("semanticstf", s.root, "val", weather=w) for w in ("dense_fog", "light_fog")]
    assert [len(d) for d in weathers] == [1, 1]  # val frames cycle through the weathers


def test_rellis3d_organised_round_trip(official_samples):
    """RELLIS-3D clouds are organised (beams x columns rows, all-zero rows for missing returns); the reader drops
    the empty rows, so the points come back in grid order: compare as sorted sets, labels following."""
    s = official_samples["rellis3d"]
    want = _by_key(s.frames, lambda f: (f.sequence, f.index))
    lut = benchmark_lut("rellis3d")
    for split in ("train", "val", "test"):
        ds = _open(s, split)
        raw = get_dataset("rellis3d", s.root, split, drop_empty=False)
        for i in range(len(ds)):
            got, w = ds[i], want[ds.sequence_of(i)]
            assert raw[i].num_points == SIZE.beams * SIZE.columns > got.num_points == w.num_points
            og, ow = np.lexsort(got.points[:, :3].T), np.lexsort(w.points[:, :3].T)
            np.testing.assert_array_equal(got.points[og], w.points[ow, :4])
            np.testing.assert_array_equal(got.labels[og], lut[w.labels[ow]])


@pytest.mark.parametrize("key, added", [("semantickitti_c", {"fog": 21, "snow": 22}),
                                        ("nuscenes_c", {"fog": 41, "snow": 42})])
def test_corrupted_sets_have_every_variant_and_robo3d_added_ids(official_samples, key, added):
    from largead.data.labels_extra import CORRUPTIONS, SEVERITIES

    s = official_samples[key]
    n = s.splits["val"]
    assert sorted(p.name for p in s.root.iterdir()) == sorted(CORRUPTIONS)
    for c in CORRUPTIONS:
        assert sorted(p.name for p in (s.root / c).iterdir()) == sorted(SEVERITIES)
    source = official_samples[s.dataset.removesuffix("_c")]
    clean = get_dataset(source.dataset, source.root, "val", cameras=False)
    for corruption, raw_id in added.items():
        ds = _open(s, "val", corruption=corruption, severity="heavy")
        assert len(ds) == n
        f = ds[0]
        assert f.num_points != clean[0].num_points or not np.array_equal(f.points, clean[0].points)
        label_file = (s.root / corruption / "heavy" / ds.base.lidarseg_filename(0) if key == "nuscenes_c"
                      else ds.scans[0].labels)
        raw = np.fromfile(label_file, np.uint8 if key == "nuscenes_c" else np.uint32) & 0xFFFF
        assert (raw == raw_id).any()  # points added by fog / snow carry Robo3D's id ...
        assert (f.labels[raw == raw_id] == IGNORE_INDEX).all()  # ... and are ignored by the reader
