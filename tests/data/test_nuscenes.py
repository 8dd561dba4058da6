from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import make_nuscenes_fixture

nuscenes = pytest.importorskip("nuscenes", reason="nuscenes-devkit is a test dependency (largead[test])")
from nuscenes.nuscenes import NuScenes, NuScenesExplorer  # noqa: E402

from largead.data import IGNORE_INDEX, get_dataset  # noqa: E402
from largead.data.geometry import project_points  # noqa: E402
from largead.data.labels import NUSCENES_LIDARSEG_CATEGORIES, nuscenes_lidarseg_lut  # noqa: E402
from largead.data.readers.nuscenes import NUSCENES_CAMERAS  # noqa: E402

VERSION = "v1.0-mini"


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuscenes")
    frames = make_nuscenes_fixture(root, scenes=("scene-0061", "scene-0103", "scene-1094"), version=VERSION)
    return root, frames


def test_devkit_opens_fixture_with_expected_counts(fixture):
    root, _ = fixture
    nusc = NuScenes(version=VERSION, dataroot=str(root), verbose=False)
    assert len(nusc.scene) == 3 and len(nusc.sample) == 9
    assert len(nusc.sample_data) == 9 * 7 and len(nusc.lidarseg) == 9
    assert sorted(c["index"] for c in nusc.category) == list(range(32))
    assert nusc.lidarseg_idx2name_mapping[17] == "vehicle.car"
    sample = nusc.sample[0]
    assert set(sample["data"]) == {"LIDAR_TOP", *NUSCENES_CAMERAS}


@pytest.mark.parametrize("split, scenes", [
    ("all", ["scene-0061", "scene-0103", "scene-1094"]),
    ("train", ["scene-0061", "scene-1094"]),
    ("val", ["scene-0103"]),
    ("mini_train", ["scene-0061", "scene-1094"]),
    ("mini_val", ["scene-0103"]),
    ("pretrain", ["scene-0061"]),  # scene-1094 is one of SLidR's 100 held-out scenes
    ("pretrain_val", ["scene-1094"]),
])
def test_splits(fixture, split, scenes):
    root, _ = fixture
    ds = get_dataset("nuscenes", root, split, version=VERSION, cameras=False)
    assert len(ds) == 3 * len(scenes)
    assert [ds.sequence_of(i) for i in range(len(ds))] == [(s, j) for s in scenes for j in range(3)]


def test_frames_round_trip(fixture):
    root, frames = fixture
    ds = get_dataset("nuscenes", root, "all", version=VERSION)
    assert len(ds) == len(frames)
    nusc = ds.nusc
    for i, want in enumerate(frames):
        got = ds[i]
        sd = nusc.get("sample_data", got.token)
        assert sd["channel"] == "LIDAR_TOP" and sd["is_key_frame"]
        assert (got.sequence, got.index) == (want.sequence, want.index)
        np.testing.assert_array_equal(got.points, want.points)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.extra["ring"], want.extra["ring"])
        np.testing.assert_allclose(got.pose, want.pose, atol=1e-9)
        assert abs(got.timestamp - want.timestamp) < 1e-6
        assert [c.name for c in got.cameras] == list(NUSCENES_CAMERAS)
        for gc, wc in zip(got.cameras, want.cameras):
            assert nusc.get("sample_data", gc.token)["channel"] == gc.name
            np.testing.assert_allclose(gc.lidar_to_camera, wc.lidar_to_camera, atol=1e-9)
            np.testing.assert_allclose(gc.intrinsics, wc.intrinsics)
            assert gc.image.shape == wc.image.shape
            assert np.abs(gc.image.astype(int) - wc.image).mean() < 3  # JPEG


def test_labels_against_raw_files(fixture):
    root, _ = fixture
    ds = get_dataset("nuscenes", root, "val", version=VERSION, cameras=False)
    f = ds[0]
    raw = np.fromfile(root / ds.nusc.get("lidarseg", f.token)["filename"], dtype=np.uint8)
    lut = nuscenes_lidarseg_lut()
    for r in np.unique(raw):  # every raw index present maps as the label map says
        name = NUSCENES_LIDARSEG_CATEGORIES[r]
        assert set(f.labels[raw == r].tolist()) == {int(lut[r])}, name
    assert (f.labels == -1).sum() == (raw == 0).sum()  # ignore written as "noise"


def test_next_index(fixture):
    root, _ = fixture
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    assert ds.next_index(0) == 1 and ds.next_index(0, 2) == 2
    assert ds.next_index(2) is None and ds.next_index(1, 2) is None  # scene boundary
    assert ds.next_index(3) == 4
    nxt = ds.next_frame(4)
    sample = ds.nusc.get("sample", ds[4].extra["sample_token"])
    assert ds.nusc.get("sample", sample["next"])["data"]["LIDAR_TOP"] == nxt.token


def test_projection_matches_devkit(fixture):
    root, _ = fixture
    ds = get_dataset("nuscenes", root, "all", version=VERSION)
    explorer = NuScenesExplorer(ds.nusc)
    checked = 0
    for i in (0, 4):
        f = ds[i]
        for cam in f.cameras:
            dk_points, _, im = explorer.map_pointcloud_to_image(f.token, cam.token, min_dist=1.0)
            valid, uv = project_points(f.points, cam.lidar_to_camera, cam.intrinsics, cam.height, cam.width)
            # the devkit keeps 1 < u, v (a 1-pixel aesthetic margin); SLidR's rule is 0 < u, v
            ours = valid & (uv[:, 0] > 1) & (uv[:, 1] > 1)
            assert im.size == (cam.width, cam.height)
            assert ours.sum() == dk_points.shape[1] > 0
            np.testing.assert_allclose(uv[ours], dk_points[:2].T, atol=1e-4)
            checked += 1
    assert checked == 12


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture()
def small(tmp_path):
    frames = make_nuscenes_fixture(tmp_path, scenes=("scene-0061",), frames_per_scene=1, num_points=50)
    ds = get_dataset("nuscenes", tmp_path, "all", version=VERSION, cameras=False)
    sd = ds.nusc.get("sample_data", ds.lidar_token(0))
    return tmp_path, frames, sd


def test_missing_point_file(small):
    root, _, sd = small
    (root / sd["filename"]).unlink()
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    with pytest.raises(FileNotFoundError, match=r"LIDAR_TOP.*\.pcd\.bin: point file not found"):
        ds[0]


def test_truncated_point_file(small):
    root, _, sd = small
    path = root / sd["filename"]
    path.write_bytes(path.read_bytes()[:-3])
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    with pytest.raises(ValueError, match=r"\.pcd\.bin: truncated.*20-byte record"):
        ds[0]


def test_non_finite_points(small):
    root, _, sd = small
    path = root / sd["filename"]
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    pts[7, 1] = np.nan
    path.write_bytes(pts.tobytes())
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    with pytest.raises(ValueError, match=r"\.pcd\.bin: 1 of 50 points have non-finite values \(first at row 7\)"):
        ds[0]


def test_label_count_mismatch(small):
    root, _, sd = small
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    path = root / ds.nusc.get("lidarseg", sd["token"])["filename"]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"_lidarseg\.bin: has 49 labels but the point cloud has 50 points"):
        ds[0]


def test_label_index_outside_lidarseg(small):
    root, _, sd = small
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    path = root / ds.lidarseg_filename(0)
    raw = np.fromfile(path, np.uint8)
    raw[[3, 9]] = [41, 32]  # 41 is accepted only where the caller allows it (nuScenes-C's added fog points)
    raw.tofile(path)
    with pytest.raises(ValueError, match=r"_lidarseg\.bin: label index 41 is not a nuScenes-lidarseg category"):
        ds[0]
    with pytest.raises(ValueError, match=r"label index 32 is neither .* nor an added-point id \[41\]"):
        ds.read_lidar(0, added_label_ids=(41,))
    raw[9] = 31  # vehicle.ego -> ignore
    raw.tofile(path)
    *_, labels = ds.read_lidar(0, added_label_ids=(41,))
    assert labels[3] == labels[9] == IGNORE_INDEX
    np.testing.assert_array_equal(np.delete(labels, [3, 9]), nuscenes_lidarseg_lut()[np.delete(raw, [3, 9])])


def test_singular_intrinsics(small):
    root, _, _ = small
    table = root / VERSION / "calibrated_sensor.json"
    recs = json.loads(table.read_text())
    for r in recs:
        if r["camera_intrinsic"]:
            r["camera_intrinsic"] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    table.write_text(json.dumps(recs))
    ds = get_dataset("nuscenes", root, "all", version=VERSION)
    with pytest.raises(ValueError, match=r"calibrated_sensor\.json: record .* camera_intrinsic.*singular"):
        ds[0]


def test_degenerate_rotation(small):
    root, _, _ = small
    table = root / VERSION / "ego_pose.json"
    recs = json.loads(table.read_text())
    recs[0]["rotation"] = [0.0, 0.0, 0.0, 0.0]
    table.write_text(json.dumps(recs))
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    with pytest.raises(ValueError, match=r"ego_pose\.json: record .* degenerate rotation"):
        ds[0]


def test_missing_tables(tmp_path):
    with pytest.raises(FileNotFoundError, match="v1.0-trainval.*not found"):
        get_dataset("nuscenes", tmp_path, "train")


def test_table_only_accessors(fixture):
    root, frames = fixture
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    assert ds.lidar_token(4) == ds[4].token
    np.testing.assert_allclose(ds.lidar_pose(4), frames[4].pose, atol=1e-9)
    records = json.loads((root / VERSION / "lidarseg.json").read_text())
    lidarseg = {r["sample_data_token"]: r["filename"] for r in records}
    token = ds.lidar_token(4)
    assert ds.lidarseg_filename(4) == lidarseg[token] == f"lidarseg/{VERSION}/{token}_lidarseg.bin"
    views = ds.camera_views(4)
    assert [v.name for v in views] == list(NUSCENES_CAMERAS)
    np.testing.assert_allclose(views[2].lidar_to_camera, frames[4].cameras[2].lidar_to_camera, atol=1e-9)


def test_missing_lidarseg_record(small):
    root, _, sd = small
    table = root / VERSION / "lidarseg.json"
    record = json.loads(table.read_text())[0]
    table.write_text(json.dumps([{**record, "token": "x", "sample_data_token": "x"}]))  # the frame's record is gone
    ds = get_dataset("nuscenes", root, "all", version=VERSION, cameras=False)
    with pytest.raises(KeyError, match=f"lidarseg.json: no record for LIDAR_TOP sample_data {sd['token']}"):
        ds[0]
