"""nuScenes-C reader over the original tables: corrupted points/labels, added-point ids, poses, cameras, errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("nuscenes", reason="nuscenes-devkit is a test dependency (largead[test])")
from fixtures import assert_one_line_error, make_nuscenes_fixture  # noqa: E402

from largead.data import IGNORE_INDEX, get_dataset, list_datasets  # noqa: E402
from largead.data.labels import nuscenes_lidarseg_lut  # noqa: E402

VERSION = "v1.0-mini"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Original fixture (scene-0103 = mini_val) plus a Robo3D-style fog/heavy copy: every 3rd point dropped and
    three added points labelled 41, 42, 43."""
    orig = tmp_path_factory.mktemp("nuscenes")
    make_nuscenes_fixture(orig, scenes=("scene-0103",), frames_per_scene=2, num_points=300, version=VERSION)
    croot = tmp_path_factory.mktemp("nuscenes_c")
    ds = get_dataset("nuscenes", orig, "mini_val", version=VERSION, cameras=False)
    expected = []
    for i in range(len(ds)):
        sd = ds.nusc.get("sample_data", ds.lidar_token(i))
        seg = ds.lidarseg_filename(i)
        pts = np.fromfile(orig / sd["filename"], np.float32).reshape(-1, 5)
        raw = np.fromfile(orig / seg, np.uint8)
        keep = np.arange(len(pts)) % 3 != 0
        added = np.array([[1, 2, 0.5, 10, 3], [3, 1, 0.2, 5, 7], [0.5, 0.5, 0.1, 1, 9]], np.float32)
        new_pts = np.concatenate([pts[keep], added])
        new_raw = np.concatenate([raw[keep], np.array([41, 42, 43], np.uint8)])
        d = croot / "fog" / "heavy"
        os.makedirs((d / sd["filename"]).parent, exist_ok=True)
        os.makedirs((d / seg).parent, exist_ok=True)
        new_pts.tofile(d / sd["filename"])
        new_raw.tofile(d / seg)
        expected.append((new_pts, np.concatenate([nuscenes_lidarseg_lut()[raw[keep]], [IGNORE_INDEX] * 3])))
    return orig, croot, expected


def _open(roots, **kw):
    orig, croot, _ = roots
    return get_dataset("nuscenes_c", croot, "mini_val", corruption="fog", severity="heavy", nuscenes_root=orig,
                       version=VERSION, **kw)


def test_registered():
    assert {"nuscenes_c", "nuscenes"} <= set(list_datasets())


def test_corrupted_points_and_labels(roots):
    orig, _, expected = roots
    ds = _open(roots)
    clean = get_dataset("nuscenes", orig, "mini_val", version=VERSION, cameras=False)
    assert len(ds) == len(clean) == 2
    for i, (pts, labels) in enumerate(expected):
        f, g = ds[i], clean[i]
        np.testing.assert_array_equal(f.points, pts[:, :4])
        np.testing.assert_array_equal(f.extra["ring"], pts[:, 4].astype(np.int64))
        np.testing.assert_array_equal(f.labels, labels)
        assert (f.labels[-3:] == IGNORE_INDEX).all()
        np.testing.assert_allclose(f.pose, g.pose)
        assert (f.token, f.sequence, f.index, f.timestamp) == (g.token, g.sequence, g.index, g.timestamp)
        assert f.extra["corruption"] == "fog" and f.extra["severity"] == "heavy" and f.cameras == []
    assert ds.next_index(0) == 1 and ds.next_index(1) is None


def test_cameras_come_from_the_original(roots):
    orig, _, _ = roots
    f = _open(roots, cameras=True)[0]
    g = get_dataset("nuscenes", orig, "mini_val", version=VERSION)[0]
    assert [c.token for c in f.cameras] == [c.token for c in g.cameras] and len(f.cameras) == 6
    np.testing.assert_array_equal(f.cameras[0].image, g.cameras[0].image)
    np.testing.assert_allclose(f.cameras[2].lidar_to_camera, g.cameras[2].lidar_to_camera)


def test_cameras_need_no_original_sweep(roots, tmp_path):
    """Cameras come from the tables and images only: the original point files may be absent."""
    import shutil

    orig, croot, expected = roots
    copy = tmp_path / "nuscenes"
    shutil.copytree(orig, copy, ignore=shutil.ignore_patterns("LIDAR_TOP"))
    assert not (copy / "samples" / "LIDAR_TOP").exists()
    f = get_dataset("nuscenes_c", croot, "mini_val", corruption="fog", severity="heavy", nuscenes_root=copy,
                    version=VERSION, cameras=True)[1]
    np.testing.assert_array_equal(f.points, expected[1][0][:, :4])
    g = get_dataset("nuscenes", orig, "mini_val", version=VERSION)[1]
    assert [c.name for c in f.cameras] == [c.name for c in g.cameras] and len(f.cameras) == 6
    np.testing.assert_allclose(f.pose, g.pose)


def _copy_c(official_samples, tmp_path):
    shutil.copytree(official_samples["nuscenes_c"].root, tmp_path / "c")
    return tmp_path / "c"


def _open_c(official_samples, croot, split="val", **options):
    return get_dataset("nuscenes_c", croot, split, **{**official_samples["nuscenes_c"].options, **options})


def _first_label_file(croot, official_samples):
    ds = _open_c(official_samples, croot)
    return croot / "fog" / "light" / ds.base.lidarseg_filename(0), ds


def _set_raw(official_samples, croot, value):
    path, _ = _first_label_file(croot, official_samples)
    raw = np.fromfile(path, np.uint8)
    raw[0] = value
    raw.tofile(path)


def _point_file(croot, official_samples):
    ds = _open_c(official_samples, croot)
    return croot / "fog" / "light" / ds.base.nusc.get("sample_data", ds.base.lidar_token(0))["filename"]


# (case, how to break the copy of the nuScenes-C sample, how to read it, exception, message)
BAD_INPUT = [
    ("missing variant", lambda c, s: shutil.rmtree(c / "snow" / "light"),
     lambda c, s: _open_c(s, c, corruption="snow", severity="light"), FileNotFoundError,
     r"snow/light: nuScenes-C folder for snow/light not found"),
    ("unknown corruption", lambda c, s: None, lambda c, s: _open_c(s, c, corruption="rain"), ValueError,
     r"nuscenes_c: corruption must be one of \('fog', .*\), got 'rain'"),
    ("unknown severity", lambda c, s: None, lambda c, s: _open_c(s, c, severity="extreme"), ValueError,
     r"nuscenes_c: severity must be one of \('light', 'moderate', 'heavy'\), got 'extreme'"),
    ("no original dataroot", lambda c, s: None, lambda c, s: get_dataset("nuscenes_c", c, "val"), ValueError,
     r"nuscenes_c: nuscenes_root \(the original nuScenes dataroot with its tables\) is required"),
    ("unknown split", lambda c, s: None, lambda c, s: _open_c(s, c, "train"), ValueError,
     r"'nuscenes_c' has no split 'train'; available: val, mini_val, all"),
    ("wrong original dataroot", lambda c, s: None, lambda c, s: _open_c(s, c, nuscenes_root=str(c)),
     FileNotFoundError, r"c/v1\.0-trainval: nuScenes tables for version 'v1\.0-trainval' not found"),
    ("truncated point file", lambda c, s: _point_file(c, s).write_bytes(_point_file(c, s).read_bytes()[:-7]),
     lambda c, s: _open_c(s, c)[0], ValueError, r"fog/light/samples/LIDAR_TOP/.*\.pcd\.bin: truncated"),
    ("missing point file", lambda c, s: _point_file(c, s).unlink(), lambda c, s: _open_c(s, c)[0],
     FileNotFoundError, r"fog/light/samples/LIDAR_TOP/.*\.pcd\.bin: point file not found"),
    ("label count", lambda c, s: (lambda p: p.write_bytes(p.read_bytes()[:-1]))(_first_label_file(c, s)[0]),
     lambda c, s: _open_c(s, c)[0], ValueError, r"fog/light/lidarseg/v1\.0-trainval/.*_lidarseg\.bin: has \d+ labels "
                                                r"but the point cloud has \d+ points"),
    ("unknown label id", lambda c, s: _set_raw(s, c, 50), lambda c, s: _open_c(s, c)[0], ValueError,
     r"_lidarseg\.bin: label index 50 is neither a nuScenes-lidarseg category \(0\.\.31\) nor an added-point id "
     r"\[41, 42, 43\]"),
]


@pytest.mark.parametrize("case, breaks, reads, exc, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(official_samples, tmp_path, case, breaks, reads, exc, message):
    croot = _copy_c(official_samples, tmp_path)
    breaks(croot, official_samples)
    assert_one_line_error(lambda: reads(croot, official_samples), exc, message)
