from __future__ import annotations

import numpy as np
import pytest
from fixtures import make_semantickitti_fixture

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


@pytest.fixture()
def small(tmp_path):
    make_semantickitti_fixture(tmp_path, sequences=("08",), frames_per_sequence=2, num_points=40)
    return tmp_path / "sequences" / "08"


def test_missing_label_file(small):
    (small / "labels/000001.label").unlink()
    ds = get_dataset("semantickitti", small.parent.parent, "val")
    ds[0]
    with pytest.raises(FileNotFoundError, match=r"08/labels/000001\.label: label file not found"):
        ds[1]


def test_truncated_bin(small):
    path = small / "velodyne/000000.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"000000\.bin: truncated.*not a multiple of the 16-byte record"):
        get_dataset("semantickitti", small.parent.parent, "val")[0]


def test_truncated_label(small):
    path = small / "labels/000000.label"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"000000\.label: truncated.*multiple of 4"):
        get_dataset("semantickitti", small.parent.parent, "val")[0]


def test_label_point_count_mismatch(small):
    write_label(small / "labels/000000.label", np.zeros(39, dtype=np.int64))
    with pytest.raises(ValueError, match=r"000000\.label: has 39 labels but the point cloud has 40 points"):
        get_dataset("semantickitti", small.parent.parent, "val")[0]


def test_non_finite_points(small):
    path = small / "velodyne/000001.bin"
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    pts[3, 0] = np.inf
    path.write_bytes(pts.tobytes())
    with pytest.raises(ValueError, match=r"000001\.bin: 1 of 40 points have non-finite values"):
        get_dataset("semantickitti", small.parent.parent, "val")[1]


def test_non_rigid_tr(small):
    calib = small / "calib.txt"
    lines = calib.read_text().splitlines()
    lines = [("Tr: 2 0 0 0 0 1 0 0 0 0 1 0" if ln.startswith("Tr:") else ln) for ln in lines]
    calib.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"08/calib\.txt: Tr: rotation block is not a proper rotation"):
        get_dataset("semantickitti", small.parent.parent, "val")


def test_singular_p2(small):
    calib = small / "calib.txt"
    lines = [("P2: 0 0 0 0 0 0 0 0 0 0 0 0" if ln.startswith("P2:") else ln) for ln in calib.read_text().splitlines()]
    calib.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"08/calib\.txt: P2 is singular"):
        get_dataset("semantickitti", small.parent.parent, "val", cameras=True)


def test_missing_or_corrupt_image(small):
    ds = get_dataset("semantickitti", small.parent.parent, "val", cameras=True)
    assert ds[0].cameras[0].image.shape[2] == 3
    (small / "image_2/000000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"image_2/000000\.png: not a decodable image"):
        ds[0]
    (small / "image_2/000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image_2/000001\.png: camera image file not found"):
        ds[1]


def test_poses_count_and_format(small):
    poses = small / "poses.txt"
    text = poses.read_text().splitlines()
    poses.write_text(text[0] + "\n")
    with pytest.raises(ValueError, match=r"poses\.txt: has 1 entries but velodyne/ has 2 scans"):
        get_dataset("semantickitti", small.parent.parent, "val")
    poses.write_text(text[0] + "\n" + "1 0 0\n")
    with pytest.raises(ValueError, match=r"poses\.txt: line 2: expected 12 values"):
        read_poses(poses)
    poses.write_text("1 0 0 0 0 1 0 0 0 0 1 x\n")
    with pytest.raises(ValueError, match=r"poses\.txt: line 1: cannot parse"):
        read_poses(poses)


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
