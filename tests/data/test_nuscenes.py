from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures import assert_one_line_error, make_nuscenes_fixture

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


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_nuscenes")
    make_nuscenes_fixture(root, scenes=("scene-0061",), frames_per_scene=1, num_points=50)
    return root


@pytest.fixture()
def small(small_source, tmp_path):
    """A fresh copy of a 1-scene, 1-keyframe v1.0-mini dataset (50 points, 6 cameras, lidarseg) to break."""
    shutil.copytree(small_source, tmp_path, dirs_exist_ok=True)
    return tmp_path


def _table(root, name):
    return json.loads((root / VERSION / f"{name}.json").read_text())


def _put(root, name, records):
    (root / VERSION / f"{name}.json").write_text(json.dumps(records))


def _lidar_sd(root):
    return next(r for r in _table(root, "sample_data") if r["filename"].startswith("samples/LIDAR_TOP"))


def _label_path(root):
    return root / _table(root, "lidarseg")[0]["filename"]


def _edit_points(root, fn):
    path = root / _lidar_sd(root)["filename"]
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    fn(pts)
    path.write_bytes(pts.tobytes())


def _edit_labels(root, fn):
    path = _label_path(root)
    raw = np.fromfile(path, np.uint8)
    fn(raw)
    path.write_bytes(raw.tobytes())


def _swap_categories(root):
    cats = _table(root, "category")
    cats[9]["index"], cats[10]["index"] = 10, 9
    _put(root, "category", cats)


def _singular_intrinsics(root):
    recs = _table(root, "calibrated_sensor")
    for r in recs:
        if r["camera_intrinsic"]:
            r["camera_intrinsic"] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    _put(root, "calibrated_sensor", recs)


def _degenerate_rotation(root):
    recs = _table(root, "ego_pose")
    recs[0]["rotation"] = [0.0, 0.0, 0.0, 0.0]
    _put(root, "ego_pose", recs)


def _dangling_calibration(root):
    recs = _table(root, "sample_data")
    recs[0]["calibrated_sensor_token"] = "f" * 32
    _put(root, "sample_data", recs)


def _drop_lidarseg_record(root):
    record = _table(root, "lidarseg")[0]
    _put(root, "lidarseg", [{**record, "token": "x", "sample_data_token": "x"}])


def _open(root, split="all", **options):
    return get_dataset("nuscenes", root, split, **{"version": VERSION, "cameras": False, **options})


def _set_label(i, value):
    def fn(raw):
        raw[i] = value
    return fn


# (case, how to break the copy, how to read it, exception, message): one-line errors naming the file or record
BAD_INPUT = [
    ("wrong root", lambda r: None, lambda r: get_dataset("nuscenes", r / "nowhere", "train"),
     FileNotFoundError, r"nowhere/v1\.0-trainval: nuScenes tables for version 'v1\.0-trainval' not found"),
    ("unknown split", lambda r: None, lambda r: _open(r, "training"),
     ValueError, r"'nuscenes' has no split 'training'; available: train, val, test"),
    ("missing table", lambda r: (r / VERSION / "sample_data.json").unlink(), lambda r: _open(r),
     FileNotFoundError, r"v1\.0-mini/sample_data\.json: nuScenes table not found"),
    ("malformed table", lambda r: (r / VERSION / "scene.json").write_text('[{"token": '), lambda r: _open(r),
     ValueError, r"v1\.0-mini/scene\.json: not valid JSON"),
    ("dangling reference", _dangling_calibration, lambda r: _open(r),
     ValueError, r"v1\.0-mini: inconsistent nuScenes tables \(a record refers to a missing one: KeyError"),
    ("missing map image", lambda r: shutil.rmtree(r / "maps"), lambda r: _open(r),
     ValueError, r"v1\.0-mini: nuscenes-devkit refused the tables: map mask .*maps/[0-9a-f]{32}\.png does not exist"),
    ("lidarseg folder missing", lambda r: shutil.rmtree(r / "lidarseg"), lambda r: _open(r),
     FileNotFoundError, r"lidarseg/v1\.0-mini: nuScenes-lidarseg label folder not found"),
    ("extra label file", lambda r: (r / "lidarseg" / VERSION / "extra_lidarseg.bin").write_bytes(b"\0"),
     lambda r: _open(r), ValueError,
     r"v1\.0-mini: nuscenes-devkit refused the tables: Error: there are 2 label files but 1 lidarseg records"),
    ("category order", _swap_categories, lambda r: _open(r),
     ValueError, r"v1\.0-mini/category\.json: lidarseg index 9 is 'movable_object\.debris' in the dataset but "
                 r"'movable_object\.barrier' in largead's class map"),
    ("old category.json", lambda r: _put(r, "category", [{k: v for k, v in c.items() if k != "index"}
                                                        for c in _table(r, "category")]),
     lambda r: _open(r), ValueError, r"refused the tables: Please use the category\.json that comes with "
                                     r"nuScenes-lidarseg"),
    ("no lidarseg for a labelled split", lambda r: (r / VERSION / "lidarseg.json").unlink(),
     lambda r: _open(r, "mini_train"), FileNotFoundError,
     r"v1\.0-mini/lidarseg\.json: not found; split 'mini_train' needs the nuScenes-lidarseg add-on"),
    ("bad labels option", lambda r: None, lambda r: _open(r, labels="yes"),
     ValueError, r"nuscenes: labels must be True, False or None"),
    ("unknown camera", lambda r: None, lambda r: _open(r, camera_names=("CAM_TOP",)),
     ValueError, r"nuscenes: unknown camera channels \['CAM_TOP'\]"),
    ("missing point file", lambda r: (r / _lidar_sd(r)["filename"]).unlink(), lambda r: _open(r)[0],
     FileNotFoundError, r"samples/LIDAR_TOP/.*\.pcd\.bin: point file not found"),
    ("truncated point file", lambda r: (r / _lidar_sd(r)["filename"]).write_bytes(
        (r / _lidar_sd(r)["filename"]).read_bytes()[:-3]), lambda r: _open(r)[0],
     ValueError, r"\.pcd\.bin: truncated or malformed point file: 997 bytes is not a multiple of the 20-byte record"),
    ("non-finite point", lambda r: _edit_points(r, lambda p: p.__setitem__((7, 1), np.nan)), lambda r: _open(r)[0],
     ValueError, r"\.pcd\.bin: 1 of 50 points have non-finite values \(first at row 7\)"),
    ("label count", lambda r: _label_path(r).write_bytes(_label_path(r).read_bytes()[:-1]), lambda r: _open(r)[0],
     ValueError, r"_lidarseg\.bin: has 49 labels but the point cloud has 50 points"),
    ("label index", lambda r: _edit_labels(r, _set_label(3, 41)), lambda r: _open(r)[0],
     ValueError, r"_lidarseg\.bin: label index 41 is not a nuScenes-lidarseg category \(0\.\.31\)"),
    ("missing lidarseg record", _drop_lidarseg_record, lambda r: _open(r)[0],
     KeyError, r"lidarseg\.json: no record for LIDAR_TOP sample_data [0-9a-f]{32} \(.*\.pcd\.bin\)"),
    ("singular intrinsics", _singular_intrinsics, lambda r: _open(r, cameras=True)[0],
     ValueError, r"calibrated_sensor\.json: record [0-9a-f]{32} \(CAM_FRONT\) camera_intrinsic: .*singular"),
    ("degenerate rotation", _degenerate_rotation, lambda r: _open(r)[0],
     ValueError, r"ego_pose\.json: record [0-9a-f]{32} has a degenerate rotation"),
    ("missing image", lambda r: next((r / "samples" / "CAM_BACK").iterdir()).unlink(),
     lambda r: _open(r, cameras=True)[0], FileNotFoundError, r"samples/CAM_BACK/.*\.jpg: camera image file not found"),
]


@pytest.mark.parametrize("case, breaks, reads, exc, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(small, case, breaks, reads, exc, message):
    breaks(small)
    assert_one_line_error(lambda: reads(small), exc, message)


def test_added_label_ids_only_where_allowed(small):
    ds = _open(small)
    path = small / ds.lidarseg_filename(0)
    raw = np.fromfile(path, np.uint8)
    raw[[3, 9]] = [41, 32]  # 41 is accepted only where the caller allows it (nuScenes-C's added fog points)
    raw.tofile(path)
    with pytest.raises(ValueError, match=r"label index 32 is neither .* nor an added-point id \[41\]"):
        ds.read_lidar(0, added_label_ids=(41,))
    raw[9] = 31  # vehicle.ego -> ignore
    raw.tofile(path)
    *_, labels = ds.read_lidar(0, added_label_ids=(41,))
    assert labels[3] == labels[9] == IGNORE_INDEX
    np.testing.assert_array_equal(np.delete(labels, [3, 9]), nuscenes_lidarseg_lut()[np.delete(raw, [3, 9])])


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




# valeoai/SLidR pretrain/dataloader_nuscenes.py CUSTOM_SPLIT (the 100 training scenes held out of pretraining for
# parameter search, its "verifying" phase; "parametrizing" = train minus these), transcribed by hand as numbers.
SLIDR_CUSTOM_SPLIT = (
    8, 9, 19, 29, 32, 42, 45, 49, 52, 54, 56, 66, 67, 73, 131, 152, 166, 168, 183, 190, 194, 208, 210, 211, 241, 243,
    248, 259, 260, 261, 287, 292, 297, 305, 306, 350, 352, 358, 361, 365, 368, 377, 388, 391, 395, 413, 427, 428, 438,
    444, 452, 453, 459, 463, 464, 475, 513, 533, 544, 575, 587, 589, 642, 652, 658, 669, 678, 687, 701, 703, 706, 710,
    715, 726, 735, 740, 758, 786, 790, 804, 806, 847, 856, 868, 882, 897, 899, 976, 996, 1012, 1015, 1016, 1018, 1020,
    1024, 1044, 1058, 1094, 1098, 1107,
)


def test_pretrain_split_is_slidrs():
    from nuscenes.utils.splits import create_splits_scenes

    from largead.data.readers.nuscenes import SLIDR_HELDOUT_SCENES, split_scenes

    assert SLIDR_HELDOUT_SCENES == tuple(f"scene-{n:04d}" for n in SLIDR_CUSTOM_SPLIT)
    train = set(create_splits_scenes(verbose=False)["train"])
    assert len(SLIDR_HELDOUT_SCENES) == 100 and set(SLIDR_HELDOUT_SCENES) <= train
    assert split_scenes("pretrain") == train - set(SLIDR_HELDOUT_SCENES) and len(split_scenes("pretrain")) == 600
    assert split_scenes("pretrain_val") == set(SLIDR_HELDOUT_SCENES)
