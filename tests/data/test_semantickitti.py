from __future__ import annotations

import shutil

import numpy as np
import pytest
from fixtures import assert_one_line_error, make_semantickitti_fixture

from largead.data import get_dataset
from largead.data.frame import IGNORE_INDEX
from largead.data.geometry import frame_pairs
from largead.data.labels import SEMANTICKITTI_LEARNING_MAP
from largead.data.readers._kitti_io import (
    present_sequences,
    read_bin,
    read_calib,
    read_label,
    read_poses,
    read_times,
    write_label,
)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("semkitti")
    frames = make_semantickitti_fixture(root, sequences=("00", "08", "11"))
    return root, frames


def test_split_counts_and_order(fixture):
    root, _ = fixture
    with pytest.warns(UserWarning, match="sequences 01, 02"):
        train = get_dataset("semantickitti", root, "train")
    assert len(train) == 3 and "09" in train.missing_sequences
    assert [train.sequence_of(i) for i in range(3)] == [("00", 0), ("00", 1), ("00", 2)]
    assert len(get_dataset("semantickitti", root, "val")) == 3
    with pytest.warns(UserWarning):
        test = get_dataset("semantickitti", root, "test")
    assert len(test) == 3 and test[0].labels is None
    assert get_dataset("semantickitti", root, "val").next_index(1) == 2
    assert get_dataset("semantickitti", root, "val").next_index(2) is None


def test_frames_round_trip(fixture):
    root, frames = fixture
    ds = get_dataset("semantickitti", root, "val", cameras=True)
    for j in range(3):
        got, want = ds[j], frames[3 + j]
        assert got.token == f"08/{j:06d}" and got.sequence == "08" and got.index == j
        np.testing.assert_array_equal(got.points, want.points)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.instances, want.instances)
        np.testing.assert_allclose(got.pose, want.pose, atol=1e-9)
        assert got.timestamp == want.timestamp
        (cam,) = got.cameras
        np.testing.assert_array_equal(cam.image, want.cameras[0].image)  # PNG: lossless
        np.testing.assert_allclose(cam.lidar_to_camera, want.cameras[0].lidar_to_camera, atol=1e-12)
        np.testing.assert_allclose(cam.intrinsics, want.cameras[0].intrinsics, atol=1e-12)


def test_labels_follow_learning_map_from_raw_file(fixture):
    root, _ = fixture
    ds = get_dataset("semantickitti", root, "val")
    f = ds[0]
    raw = np.fromfile(root / "sequences/08/labels/000000.label", dtype=np.uint32)
    sem, inst = raw & 0xFFFF, raw >> 16
    assert len(np.unique(sem)) > 10
    for r in np.unique(sem):
        assert set(f.labels[sem == r].tolist()) == {SEMANTICKITTI_LEARNING_MAP.get(int(r), IGNORE_INDEX)}
    np.testing.assert_array_equal(f.instances, inst)


def test_poses_from_camera_poses(fixture):
    root, _ = fixture
    ds = get_dataset("semantickitti", root, "val")
    cam_poses = read_poses(root / "sequences/08/poses.txt")
    tr = np.vstack([read_calib(root / "sequences/08/calib.txt")["Tr"], [0, 0, 0, 1]])
    p = np.array([1.0, -2.0, 0.5, 1.0])
    for j in range(3):
        # a LiDAR point through Tr, the camera pose, and back into the LiDAR axes
        np.testing.assert_allclose(ds[j].pose @ p, np.linalg.inv(tr) @ cam_poses[j] @ tr @ p, atol=1e-9)


def test_projection_against_p2_tr(fixture):
    root, _ = fixture
    ds = get_dataset("semantickitti", root, "val", cameras=True)
    f = ds[1]
    calib = read_calib(root / "sequences/08/calib.txt")
    ph = np.concatenate([f.points[:, :3].astype(float), np.ones((f.num_points, 1))], 1)
    proj = (calib["P2"] @ np.vstack([calib["Tr"], [0, 0, 0, 1]]) @ ph.T).T  # independent: P2 @ Tr
    depth = proj[:, 2]
    u, v = proj[:, 0] / depth, proj[:, 1] / depth
    h, w = f.cameras[0].height, f.cameras[0].width
    keep = (depth > 1) & (u > 0) & (u < w - 1) & (v > 0) & (v < h - 1)
    pairs = frame_pairs(f)
    np.testing.assert_array_equal(pairs.point, np.flatnonzero(keep))
    np.testing.assert_array_equal(pairs.col, np.rint(u[keep]).astype(int))
    np.testing.assert_array_equal(pairs.row, np.rint(v[keep]).astype(int))
    assert len(pairs) > 20


def test_label_dir_option(fixture, tmp_path):
    """``label_dir`` reads another label folder next to ``velodyne/`` (ScribbleKITTI's hook), mapped the same way."""
    root, frames = fixture
    import shutil

    shutil.copytree(root / "sequences" / "08", tmp_path / "sequences" / "08")
    sem = np.where(np.arange(frames[3].num_points) % 2 == 0, 40, 0)  # raw road (40) on even points, else unlabeled
    write_label(tmp_path / "sequences/08/pseudo/000000.label", sem, np.full(len(sem), 5))
    ds = get_dataset("semantickitti", tmp_path, "val", label_dir="pseudo")
    assert ds.label_path(0) == tmp_path / "sequences/08/pseudo/000000.label"
    f = ds[0]
    road = SEMANTICKITTI_LEARNING_MAP[40]
    np.testing.assert_array_equal(f.labels, np.where(np.arange(len(sem)) % 2 == 0, road, IGNORE_INDEX))
    np.testing.assert_array_equal(f.instances, np.full(len(sem), 5))
    np.testing.assert_array_equal(f.points, frames[3].points)  # scans unchanged
    with pytest.raises(FileNotFoundError, match=r"08/pseudo/000001\.label: label file not found"):
        ds[1]
    assert get_dataset("semantickitti", tmp_path, "val").label_path(1) == tmp_path / "sequences/08/labels/000001.label"


def test_present_sequences(tmp_path):
    for s in ("00", "02"):
        (tmp_path / s / "velodyne").mkdir(parents=True)
    (tmp_path / "03").mkdir()  # a sequence folder without scans
    with pytest.warns(UserWarning, match=r"^mine: .*: sequences 01, 03 of split 'train' are missing and skipped$"):
        assert present_sequences(tmp_path, ["00", "01", "02", "03"], "train", "velodyne", who="mine") == (
            ["00", "02"], ["01", "03"])
    with pytest.warns(UserWarning, match=r"sequences 01 of split 'val'"):
        assert present_sequences(tmp_path, ["03", "01"], "val") == (["03"], ["01"])
    with pytest.raises(FileNotFoundError, match=r"none of the val sequences 01, 03 has a velodyne/ folder"):
        present_sequences(tmp_path, ["01", "03"], "val", "velodyne", required=True)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_semkitti")
    make_semantickitti_fixture(root, sequences=("08",), frames_per_sequence=2, num_points=40)
    return root


@pytest.fixture()
def small(small_source, tmp_path):
    """A fresh copy (sequence 08, 2 scans of 40 points, every file) for a test to break."""
    shutil.copytree(small_source, tmp_path, dirs_exist_ok=True)
    return tmp_path / "sequences" / "08"


def _replace_line(path, key, line):
    path.write_text("\n".join(line if ln.startswith(key) else ln for ln in path.read_text().splitlines()) + "\n")


def _rewrite(path, fn):
    path.write_bytes(fn(path.read_bytes()))


def _inf_point(path):
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    pts[3, 0] = np.inf
    path.write_bytes(pts.tobytes())


def _open(small, split="val", **options):
    return get_dataset("semantickitti", small.parent.parent, split, **options)


# (case, how to break the copy, how to read it, exception, message): every error is one line naming the file or key
BAD_INPUT = [
    ("truncated scan", lambda d: _rewrite(d / "velodyne/000000.bin", lambda b: b[:-2]), lambda d: _open(d)[0],
     ValueError, r"08/velodyne/000000\.bin: truncated or malformed point file: 638 bytes is not a multiple of the "
                 r"16-byte record \(4 x float32\)"),
    ("non-finite point", lambda d: _inf_point(d / "velodyne/000001.bin"), lambda d: _open(d)[1],
     ValueError, r"000001\.bin: 1 of 40 points have non-finite values \(first at row 3\)"),
    ("truncated label", lambda d: _rewrite(d / "labels/000000.label", lambda b: b[:-1]), lambda d: _open(d)[0],
     ValueError, r"000000\.label: truncated or malformed label file: 159 bytes is not a multiple of 4"),
    ("label count", lambda d: write_label(d / "labels/000000.label", np.zeros(39, np.int64)), lambda d: _open(d)[0],
     ValueError, r"000000\.label: has 39 labels but the point cloud has 40 points"),
    ("missing label file", lambda d: (d / "labels/000001.label").unlink(), lambda d: _open(d)[1],
     FileNotFoundError, r"08/labels/000001\.label: label file not found"),
    ("missing label folder", lambda d: shutil.rmtree(d / "labels"), lambda d: _open(d),
     FileNotFoundError, r"08/labels: label folder not found \(split 'val' is labelled"),
    ("unknown split", lambda d: None, lambda d: _open(d, "validation"),
     ValueError, r"'semantickitti' has no split 'validation'; available: train, val, test"),
    ("wrong root", lambda d: None, lambda d: get_dataset("semantickitti", d, "val"),
     FileNotFoundError, r"08/sequences: SemanticKITTI sequences folder not found"),
    ("no sequence of the split", lambda d: None, lambda d: _open(d, sequences=("05",)),
     FileNotFoundError, r"none of the val sequences 05 has a velodyne/ folder"),
    ("non-rigid Tr", lambda d: _replace_line(d / "calib.txt", "Tr:", "Tr: 2 0 0 0 0 1 0 0 0 0 1 0"),
     lambda d: _open(d), ValueError, r"08/calib\.txt: Tr: rotation block is not a proper rotation"),
    ("malformed calib", lambda d: _replace_line(d / "calib.txt", "P2:", "P2: 1 0 x"), lambda d: _open(d, cameras=True),
     ValueError, r"08/calib\.txt: line 3: cannot parse numbers"),
    ("calib without Tr", lambda d: _replace_line(d / "calib.txt", "Tr:", ""), lambda d: _open(d, poses=True),
     ValueError, r"08/calib\.txt: no 'Tr' \(velodyne to camera 0\) entry"),
    ("calib without P2", lambda d: _replace_line(d / "calib.txt", "P2:", ""), lambda d: _open(d, cameras=True),
     ValueError, r"08/calib\.txt: no 'P2' entry \(needed for cameras=True\)"),
    ("singular P2", lambda d: _replace_line(d / "calib.txt", "P2:", "P2: 0 0 0 0 0 0 0 0 0 0 0 0"),
     lambda d: _open(d, cameras=True), ValueError, r"08/calib\.txt: P2 is singular"),
    ("no calib with cameras", lambda d: (d / "calib.txt").unlink(), lambda d: _open(d, cameras=True),
     FileNotFoundError, r"08/calib\.txt: calibration file not found; needed for cameras=True \(P2, Tr\)"),
    ("no calib with poses", lambda d: (d / "calib.txt").unlink(), lambda d: _open(d, poses=True),
     FileNotFoundError, r"08/calib\.txt: calibration file not found; needed for poses=True"),
    ("no poses with poses", lambda d: (d / "poses.txt").unlink(), lambda d: _open(d, poses=True),
     FileNotFoundError, r"08/poses\.txt: poses file not found; needed for poses=True \(temporal use\)"),
    ("pose count", lambda d: (d / "poses.txt").write_text((d / "poses.txt").read_text().splitlines()[0] + "\n"),
     lambda d: _open(d), ValueError, r"08/poses\.txt: has 1 entries but velodyne/ has 2 scans"),
    ("malformed pose", lambda d: (d / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 x\n1 0 0\n"),
     lambda d: _open(d), ValueError, r"08/poses\.txt: line 1: cannot parse numbers"),
    ("short pose line", lambda d: (d / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0\n"),
     lambda d: _open(d), ValueError, r"08/poses\.txt: line 2: expected 12 values \(a 3x4 pose\), got 3"),
    ("time count", lambda d: (d / "times.txt").write_text("0.0\n"), lambda d: _open(d),
     ValueError, r"08/times\.txt: has 1 entries but velodyne/ has 2 scans"),
    ("corrupt image", lambda d: (d / "image_2/000000.png").write_bytes(b"not a png"),
     lambda d: _open(d, cameras=True)[0], ValueError, r"image_2/000000\.png: not a decodable image"),
    ("missing image", lambda d: (d / "image_2/000001.png").unlink(), lambda d: _open(d, cameras=True)[1],
     FileNotFoundError, r"image_2/000001\.png: camera image file not found"),
    ("bad poses option", lambda d: None, lambda d: _open(d, poses="yes"),
     ValueError, r"semantickitti: poses must be True, False or None"),
]


@pytest.mark.parametrize("case, breaks, reads, exc, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(small, case, breaks, reads, exc, message):
    breaks(small)
    assert_one_line_error(lambda: reads(small), exc, message)


def test_api_layout_without_calib_and_times(small):
    """semantic-kitti-api's layout (velodyne/, labels/, poses.txt): LiDAR-only reading works; the poses need Tr, so
    temporal pairs are refused naming the missing calib.txt."""
    (small / "calib.txt").unlink()
    (small / "times.txt").unlink()
    ds = _open(small)
    f = ds[1]
    assert f.labels is not None and f.timestamp == 0.0 and np.array_equal(f.pose, np.eye(4))
    assert not ds.has_poses
    assert_one_line_error(lambda: ds.next_index(0), ValueError,
                          r"semantickitti: sequence 08 has no LiDAR poses \(.*08/calib\.txt not found")
    ds = _open(small, poses=False)
    assert_one_line_error(lambda: ds.next_index(0), ValueError, r"sequence 08 has no LiDAR poses \(poses=False\)")


def test_no_poses_file_reads_lidar_and_refuses_temporal_pairs(small):
    (small / "poses.txt").unlink()
    ds = _open(small, cameras=True)
    assert len(ds[0].cameras) == 1
    assert_one_line_error(lambda: ds.next_index(0), ValueError, r"08/poses\.txt not found\); temporal pairs need")


def test_missing_split(tmp_path):
    (tmp_path / "sequences").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the val sequences 08"):
        get_dataset("semantickitti", tmp_path, "val")


def test_kitti_io_helpers(tmp_path):
    p = tmp_path / "x.bin"
    np.arange(10, dtype=np.float32).tofile(p)
    np.testing.assert_array_equal(read_bin(p, columns=5), np.arange(10, dtype=np.float32).reshape(2, 5))
    with pytest.raises(ValueError, match="x.bin: truncated.*40 bytes.*16-byte record"):
        read_bin(p, columns=4, dtype=np.float32)  # 40 bytes is not a multiple of 16
    write_label(tmp_path / "a.label", np.array([10, 40, 65535]), np.array([0, 7, 65535]))
    sem, inst = read_label(tmp_path / "a.label", 3)
    assert sem.tolist() == [10, 40, 65535] and inst.tolist() == [0, 7, 65535]
    with pytest.raises(ValueError, match="b.label: semantic ids must be in"):
        write_label(tmp_path / "b.label", np.array([70000]))
    (tmp_path / "times.txt").write_text("0.0\n0.1\n")
    assert read_times(tmp_path / "times.txt").tolist() == [0.0, 0.1]
    (tmp_path / "calib.txt").write_text("P0: 1 0 0\n")
    assert read_calib(tmp_path / "calib.txt")["P0"].tolist() == [1.0, 0.0, 0.0]
    (tmp_path / "calib.txt").write_text("P0 1 0 0\n")
    with pytest.raises(ValueError, match="calib.txt: line 1: expected 'KEY: values'"):
        read_calib(tmp_path / "calib.txt")


def test_lidar_only_use_never_reads_calib(small):
    """Without cameras and poses, calib.txt is not read at all: a damaged one does not stop LiDAR-only reading."""
    (small / "poses.txt").unlink()
    (small / "calib.txt").write_text("garbage\n")
    f = _open(small)[0]
    assert f.labels is not None and f.cameras == []
    assert_one_line_error(lambda: _open(small, cameras=True), ValueError,
                          r"08/calib\.txt: line 1: expected .KEY: values.")
