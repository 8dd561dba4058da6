"""SemanticKITTI-format family readers: layouts, splits, options, label maps value by value, bad input."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import assert_one_line_error, make_semantickitti_fixture, random_scan, yaw_transform

from largead.data import IGNORE_INDEX, get_dataset, list_datasets
from largead.data.labels import apply_lut, build_lut
from largead.data.labels_extra import (
    DAPS3D_LEARNING_MAP,
    RELLIS3D_LEARNING_MAP,
    SEMANTICPOSS_LEARNING_MAP,
    SEMANTICSTF_LEARNING_MAP,
    SYNLIDAR_TO_SEMANTICKITTI_COSMIX,
    SYNLIDAR_TO_SEMANTICKITTI_POINTDR,
    SYNLIDAR_TO_SEMANTICPOSS,
    SYNTH4D_LEARNING_MAP,
)
from largead.data.readers import kitti_family as kf
from largead.data.readers._kitti_io import atomic_write_bytes, write_bin, write_calib, write_label, write_poses

RNG = np.random.default_rng(0)
# fixtures hold a few sequences of each split; the warning itself is asserted in test_missing_sequences_warn
pytestmark = pytest.mark.filterwarnings("ignore:.*missing and skipped:UserWarning")


def _names(cls_names, mapping, raws):
    """Class name (or None for ignore) of each raw id under ``mapping``."""
    lut = apply_lut(build_lut(mapping, 65536), np.asarray(raws))
    return [None if v == IGNORE_INDEX else cls_names[v] for v in lut]


def test_all_family_names_registered():
    names = set(list_datasets())
    assert {"scribblekitti", "rellis3d", "semanticposs", "semanticstf", "synlidar", "daps3d", "synth4d",
            "semantickitti_c", "waymo"} <= names


# ------------------------------------------------------------------------------------------- label maps, value by value
def test_rellis3d_map():
    raws = [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 17, 18, 19, 23, 27, 31, 33, 34]
    expect = [None, None, "grass", "tree", "pole", "water", None, "vehicle", None, None, None, "log", "person",
              "fence", "bush", "concrete", "barrier", "puddle", "mud", "rubble"]
    assert _names(kf.Rellis3dDataset.class_names, RELLIS3D_LEARNING_MAP, raws) == expect
    assert len(kf.Rellis3dDataset.class_names) == 14


def test_semanticposs_map():
    raws = [0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]
    expect = [None, None, "person", "person", "rider", "car", "trunk", "plants", "traffic-sign", "traffic-sign",
              "traffic-sign", "pole", "trashcan", "building", "cone/stone", "fence", None, None, None, "bike",
              "ground"]
    assert _names(kf.SemanticPossDataset.class_names, SEMANTICPOSS_LEARNING_MAP, raws) == expect
    assert len(kf.SemanticPossDataset.class_names) == 13  # CENet's 14 includes its ignore class 0


def test_semanticstf_map():
    kitti = ["car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
             "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
             "traffic-sign"]
    assert _names(kf.SemanticStfDataset.class_names, SEMANTICSTF_LEARNING_MAP, range(21)) == [None] + kitti + [None]


def test_synlidar_maps():
    raws = list(range(33))
    common = {0: None, 1: "car", 3: "truck", 4: "other-vehicle", 5: "bicycle", 6: "motorcycle", 7: "other-vehicle",
              8: "road", 9: "sidewalk", 10: "parking", 11: "other-ground", 12: "person", 13: "person", 14: "person",
              16: "bicyclist", 17: "motorcyclist", 18: "building", 19: None, 20: "vegetation", 21: "trunk",
              22: "terrain", 23: "traffic-sign", 24: "pole", 25: None, 26: "fence", 27: None, 28: None, 29: None,
              30: None, 31: None, 32: None}
    cosmix = [{**common, 2: None, 15: None}[r] for r in raws]
    pointdr = [{**common, 2: "truck", 15: "person"}[r] for r in raws]
    names = kf.SynLidarDataset.class_names
    assert _names(names, SYNLIDAR_TO_SEMANTICKITTI_COSMIX, raws) == cosmix
    assert _names(names, SYNLIDAR_TO_SEMANTICKITTI_POINTDR, raws) == pointdr
    poss = {12: "person", 13: "person", 14: "person", 15: "person", 16: "rider", 17: "rider", 1: "car", 21: "trunk",
            20: "plants", 23: "traffic-sign", 24: "pole", 27: "trashcan", 18: "building", 25: "cone/stone",
            26: "fence", 5: "bike", 8: "ground"}
    assert _names(kf.SemanticPossDataset.class_names, SYNLIDAR_TO_SEMANTICPOSS, raws) == [poss.get(r) for r in raws]


def test_daps3d_map():
    groups = {"vehicle": [10, 11, 13, 15, 16, 18, 20, 252, 256, 257, 258, 259], "human": [30, 31, 32, 253, 254, 255],
              "surface": [40, 44, 48, 49, 60, 72], "obstacle": [50, 51, 70, 71, 80, 81], None: [0, 1, 52, 99]}
    for name, raws in groups.items():
        assert _names(kf.Daps3dDataset.class_names, DAPS3D_LEARNING_MAP, raws) == [name] * len(raws)


def test_synth4d_map():
    expect = [None, "manmade", "manmade", None, "pedestrian", "manmade", "road", "road", "sidewalk", "vegetation",
              "vehicle", "manmade", "manmade", None, None, "manmade", "manmade", "manmade", None, None, None, None,
              "terrain"]
    assert _names(kf.Synth4dDataset.class_names, SYNTH4D_LEARNING_MAP, range(23)) == expect


# ------------------------------------------------------------------------------------------------------ ScribbleKITTI
@pytest.fixture(scope="module")
def scribble_root(tmp_path_factory):
    """C's SemanticKITTI fixture (sequences 00 and 08) plus scribbles for 00: raw car (10) on every 3rd point, else 0."""
    root = tmp_path_factory.mktemp("scribblekitti")
    frames = make_semantickitti_fixture(root, sequences=("00", "08"), frames_per_sequence=3, num_points=60)
    for k in range(3):
        sem = np.where(np.arange(60) % 3 == 0, 10, 0)
        write_label(os.path.join(root, "sequences", "00", "scribbles", f"{k:06d}.label"), sem, np.full(60, k))
    return str(root), frames


def test_scribblekitti_scribbles_for_train_dense_for_val(scribble_root):
    root, frames = scribble_root
    train = get_dataset("scribblekitti", root, "train")
    val = get_dataset("scribblekitti", root, "val", cameras=True)
    assert len(train) == 3 and len(val) == 3
    f = train[1]
    np.testing.assert_array_equal(f.labels, np.where(np.arange(60) % 3 == 0, 0, IGNORE_INDEX))
    np.testing.assert_array_equal(f.instances, np.full(60, 1))
    g = val[2]  # dense labels of sequence 08, as written by the SemanticKITTI fixture
    np.testing.assert_array_equal(g.labels, frames[5].labels)
    assert g.dataset == "scribblekitti" and len(g.cameras) == 1 and g.cameras[0].name == "image_2"
    dense = get_dataset("scribblekitti", root, "train", dense_train_labels=True)[1]
    np.testing.assert_array_equal(dense.labels, frames[1].labels)
    np.testing.assert_allclose(f.pose, frames[1].pose, atol=1e-6)
    assert f.token == "00/000001" and f.sequence == "00" and f.index == 1
    assert train.next_index(0) == 1 and train.next_index(2) is None and train.next_frame(0, 2).index == 2
    f.validate("scribblekitti")
    assert train.label_path(1) == Path(root) / "sequences" / "00" / "scribbles" / "000001.label"
    assert val.label_path(0) == Path(root) / "sequences" / "08" / "labels" / "000000.label"


def test_scribblekitti_missing_or_short_scribble_file(scribble_root, tmp_path):
    root, _ = scribble_root
    import shutil

    copy = tmp_path / "sk"
    shutil.copytree(root, copy)
    os.remove(copy / "sequences" / "00" / "scribbles" / "000001.label")
    write_label(str(copy / "sequences" / "00" / "scribbles" / "000000.label"), np.zeros(7))
    ds = get_dataset("scribblekitti", str(copy), "train")
    with pytest.raises(FileNotFoundError, match=r"scribbles.000001\.label"):
        ds[1]
    with pytest.raises(ValueError, match=r"000000\.label.*7 labels.*60 points"):
        ds[0]


def test_truncated_scan(tmp_path):
    root = str(tmp_path)
    for k in range(2):
        write_bin(os.path.join(root, "sequences", "02", "velodyne", f"{k:06d}.bin"), random_scan(RNG, 5))
        write_label(os.path.join(root, "sequences", "02", "labels", f"{k:06d}.label"), np.full(5, 7))
    ds = get_dataset("semanticposs", root, "val")
    path = os.path.join(root, "sequences", "02", "velodyne", "000001.bin")
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 3)
    with pytest.raises(ValueError, match=r"000001\.bin.*truncated"):
        ds[1]
    assert (ds[0].labels == 2).all()  # raw 7 car


def test_kitti_camera_poses_become_lidar_poses(tmp_path):
    root = str(tmp_path)
    tr = np.array([[0.0, -1, 0, 0.1], [0, 0, -1, -0.2], [1, 0, 0, 0.3], [0, 0, 0, 1]])
    cam_poses = [yaw_transform(0.2 * k, (k, 2.0 * k, 0)) for k in range(2)]
    for k in range(2):
        write_bin(os.path.join(root, "sequences", "02", "velodyne", f"{k:06d}.bin"), random_scan(RNG, 5))
        write_label(os.path.join(root, "sequences", "02", "labels", f"{k:06d}.label"), np.full(5, 7))
    write_poses(os.path.join(root, "sequences", "02", "poses.txt"), cam_poses)
    p = np.array([[700.0, 0, 600, 0], [0, 700.0, 180, 0], [0, 0, 1, 0]])
    write_calib(os.path.join(root, "sequences", "02", "calib.txt"), {"P0": p, "P2": p, "Tr": tr[:3]})
    f = get_dataset("semanticposs", root, "val")[1]
    # hand check: a LiDAR point p maps to world as Tr^-1 P Tr p
    p = np.array([1.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(f.pose @ p, np.linalg.inv(tr) @ (cam_poses[1] @ (tr @ p)), atol=1e-6)
    write_poses(os.path.join(root, "sequences", "02", "poses.txt"), cam_poses[:1])
    with pytest.raises(ValueError, match=r"poses\.txt: has 1 poses"):
        get_dataset("semanticposs", root, "val")


# ---------------------------------------------------------------------------------------------------------- RELLIS-3D
def _rellis(root):
    lines = []
    for seq, frames in (("00000", [0, 1]), ("00001", [0])):
        for k in frames:
            pts = random_scan(RNG, 6)
            pts[2, :] = 0.0  # an empty organised row
            write_bin(os.path.join(root, seq, "os1_cloud_node_kitti_bin", f"{k:06d}.bin"), pts)
            write_label(os.path.join(root, seq, "os1_cloud_node_semantickitti_label_id", f"{k:06d}.label"),
                        np.array([3, 1, 0, 17, 34, 7]))
            lines.append(f"{seq}/os1_cloud_node_kitti_bin/{k:06d}.bin "
                         f"{seq}/os1_cloud_node_semantickitti_label_id/{k:06d}.label")
        write_poses(os.path.join(root, seq, "poses.txt"), [yaw_transform(0.0, (k, 0, 0)) for k in range(2)])
    with open(os.path.join(root, "pt_train.lst"), "w") as fh:
        fh.write("\n".join(lines[:2]) + "\n")
    with open(os.path.join(root, "pt_val.lst"), "w") as fh:
        fh.write(lines[2] + "\n")


def test_rellis3d(tmp_path):
    root = str(tmp_path)
    _rellis(root)
    train = get_dataset("rellis3d", root, "train")
    assert len(train) == 2 and len(get_dataset("rellis3d", root, "val")) == 1
    f = train[1]
    assert f.num_points == 5  # the all-zero row is dropped, labels follow
    names = [None if v < 0 else train.class_names[v] for v in f.labels]
    assert names == ["grass", None, "person", "rubble", None]
    np.testing.assert_allclose(f.pose[:3, 3], [1, 0, 0])
    assert get_dataset("rellis3d", root, "train", drop_empty=False)[0].num_points == 6
    assert train.next_index(0) == 1


def test_rellis3d_bad_split_line(tmp_path):
    root = str(tmp_path)
    _rellis(root)
    with open(os.path.join(root, "pt_test.lst"), "w") as fh:
        fh.write("00000/os1_cloud_node_kitti_bin/000000.bin\n")
    with pytest.raises(ValueError, match=r"pt_test\.lst: line 1"):
        get_dataset("rellis3d", root, "test")


# ------------------------------------------------------------------------------------------------------- SemanticPOSS
def test_semanticposs_val_sequence_option(tmp_path):
    root = str(tmp_path)
    for seq in ("00", "01", "02", "03", "04", "05"):
        write_bin(os.path.join(root, "sequences", seq, "velodyne", "000000.bin"), random_scan(RNG, 4))
        write_label(os.path.join(root, "sequences", seq, "labels", "000000.label"), np.array([4, 22, 1, 12]))
    cenet = get_dataset("semanticposs", root, "val")
    cosmix = get_dataset("semanticposs", root, "val", val_sequence="03")
    assert [f.sequence for f in cenet] == ["02"] and [f.sequence for f in cosmix] == ["03"]
    assert [f.sequence for f in get_dataset("semanticposs", root, "train")] == ["00", "01", "03", "04", "05"]
    np.testing.assert_array_equal(cenet[0].labels, [0, 12, IGNORE_INDEX, 5])
    with pytest.raises(ValueError, match="val_sequence"):
        get_dataset("semanticposs", root, "val", val_sequence="04")


def test_missing_sequences_warn(tmp_path):
    root = str(tmp_path)
    write_bin(os.path.join(root, "sequences", "00", "velodyne", "000000.bin"), random_scan(RNG, 4))
    write_label(os.path.join(root, "sequences", "00", "labels", "000000.label"), np.full(4, 7))
    with pytest.warns(UserWarning, match=r"sequences 01, 03, 04, 05 of split 'train' are missing and skipped"):
        assert len(get_dataset("semanticposs", root, "train")) == 1
    with pytest.raises(FileNotFoundError, match="no scans found"), pytest.warns(UserWarning, match="02"):
        get_dataset("semanticposs", root, "val")


# -------------------------------------------------------------------------------------------------------- SemanticSTF
def test_semanticstf(tmp_path):
    root = str(tmp_path)
    stems = ["2018-02-03_1", "2018-02-04_2", "2018-02-05_3"]
    for k, stem in enumerate(stems):
        pts = np.array([[1, 2, 3, 255, 7], [4, 5, 6, 51, 8], [0, 0, 1, 0, 9]], np.float32) + k
        write_bin(os.path.join(root, "val", "velodyne", stem + ".bin"), pts)
        os.makedirs(os.path.join(root, "val", "labels"), exist_ok=True)
        np.array([1, 20, 19], np.int32).tofile(os.path.join(root, "val", "labels", stem + ".label"))
    with open(os.path.join(root, "val", "val.txt"), "w") as fh:
        fh.write(f"{stems[0]},snow\n{stems[1]},dense_fog\n{stems[2]},snow\n")
    ds = get_dataset("semanticstf", root, "val")
    assert len(ds) == 3
    f = ds[0]
    np.testing.assert_allclose(f.points[:, 3], [1.0, 0.2, 0.0])
    np.testing.assert_array_equal(f.extra["channel"], [7, 8, 9])
    np.testing.assert_array_equal(f.labels, [0, IGNORE_INDEX, 18])
    snow = get_dataset("semanticstf", root, "val", weather="snow")
    assert [fr.token.split("/")[1] for fr in snow] == [stems[0], stems[2]]
    with pytest.raises(ValueError, match="weather must be one of"):
        get_dataset("semanticstf", root, "val", weather="hail")
    # 4-column file: the 5-column record check names the file
    write_bin(os.path.join(root, "val", "velodyne", stems[1] + ".bin"), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=stems[1] + r"\.bin.*20-byte record"):
        ds[1]


# ----------------------------------------------------------------------------------------------------------- SynLiDAR
def test_synlidar_options_and_split(tmp_path):
    root = str(tmp_path)
    for seq in ("00", "01"):
        write_bin(os.path.join(root, seq, "velodyne", "000000.bin"), random_scan(RNG, 3))
        write_label(os.path.join(root, seq, "labels", "000000.label"), np.array([2, 15, 1]))
    cos = get_dataset("synlidar", root, "train")
    pdr = get_dataset("synlidar", root, "train", mapping="pointdr")
    assert [f.sequence for f in cos] == ["01"] and [f.sequence for f in get_dataset("synlidar", root, "val")] == ["00"]
    assert len(get_dataset("synlidar", root, "all")) == 2
    np.testing.assert_array_equal(cos[0].labels, [IGNORE_INDEX, IGNORE_INDEX, 0])
    np.testing.assert_array_equal(pdr[0].labels, [3, 5, 0])
    poss = get_dataset("synlidar", root, "train", target="semanticposs")
    assert poss.num_classes == 13 and poss[0].labels.tolist() == [IGNORE_INDEX, 0, 2]
    with pytest.raises(ValueError, match="mapping"):
        get_dataset("synlidar", root, "train", mapping="other")


# ------------------------------------------------------------------------------------------------------------ DAPS-3D
def test_daps3d_variants_and_npy(tmp_path):
    root = str(tmp_path)
    for seq in ("00", "08"):
        write_bin(os.path.join(root, "data", seq, "clouds", "000000.bin"), random_scan(RNG, 4))
        write_label(os.path.join(root, "data", seq, "labels", "000000.label"), np.array([252, 30, 48, 99]),
                    np.array([3, 0, 0, 0]))  # int32 in DAPS-3D: the same bytes as uint32 for these ids
    d1 = get_dataset("daps3d", root, "train")
    assert [f.sequence for f in d1] == ["00"]
    f = d1[0]
    np.testing.assert_array_equal(f.labels, [0, 1, 2, IGNORE_INDEX])
    np.testing.assert_array_equal(f.instances, [3, 0, 0, 0])
    root2 = str(tmp_path / "daps2")
    os.makedirs(os.path.join(root2, "data", "38-18_7_72_90", "clouds"))
    np.save(os.path.join(root2, "data", "38-18_7_72_90", "clouds", "000000.npy"), random_scan(RNG, 4))
    write_label(os.path.join(root2, "data", "38-18_7_72_90", "labels", "000000.label"), np.array([80, 81, 0, 10]))
    d2 = get_dataset("daps3d", root2, "val", variant="daps-2")
    assert len(d2) == 1 and d2[0].labels.tolist() == [3, 3, IGNORE_INDEX, 0]
    with pytest.raises(ValueError, match="evaluation set"):
        get_dataset("daps3d", root2, "train", variant="daps-2")


# ------------------------------------------------------------------------------------------------------------ Synth4D
def test_synth4d(tmp_path):
    root = str(tmp_path)
    # GIPSO's split files are plain pickles of {town: [frame ids]} (gipso-sfouda utils/dataset.py load_obj)
    splits = os.path.join(root, "splits", "kitti_synth")
    atomic_write_bytes(os.path.join(splits, "training_split.pkl"), pickle.dumps({"Town03": [12, 3]}))
    atomic_write_bytes(os.path.join(splits, "validation_split.pkl"), pickle.dumps({"Town06": [5]}))
    for town, fid in (("Town03", 3), ("Town03", 12), ("Town06", 5)):
        base = os.path.join(root, "kitti_synth", town)
        os.makedirs(os.path.join(base, "velodyne"), exist_ok=True)
        os.makedirs(os.path.join(base, "labels"), exist_ok=True)
        np.save(os.path.join(base, "velodyne", f"{fid}.npy"), random_scan(RNG, 4).astype(np.float64))
        np.save(os.path.join(base, "labels", f"{fid}.npy"), np.array([[10], [7], [13], [fid]], np.uint32))
    ds = get_dataset("synth4d", root, "train")
    assert [f.index for f in ds] == [3, 12]
    f = ds[1]
    assert f.points.dtype == np.float32 and f.sequence == "Town03"
    np.testing.assert_array_equal(f.labels, [0, 2, IGNORE_INDEX, 5])  # 12 trafficsign -> manmade
    assert len(get_dataset("synth4d", root, "val")) == 1
    np.save(os.path.join(root, "kitti_synth", "Town06", "labels", "5.npy"), np.zeros(3, np.uint32))
    with pytest.raises(ValueError, match=r"5\.npy.*\(3,\).*4 points"):
        get_dataset("synth4d", root, "val")[0]


# ---------------------------------------------------------------------------------------------------- SemanticKITTI-C
def test_semantickitti_c(tmp_path):
    root = str(tmp_path)
    d = os.path.join(root, "fog", "heavy")
    write_bin(os.path.join(d, "velodyne", "000000.bin"), random_scan(RNG, 5))
    write_label(os.path.join(d, "labels", "000000.label"), np.array([10, 21, 22, 23, 40]))
    ds = get_dataset("semantickitti_c", root, "val", corruption="fog", severity="heavy")
    f = ds[0]
    np.testing.assert_array_equal(f.labels, [0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 8])
    assert f.sequence == "08" and f.extra == {"corruption": "fog", "severity": "heavy"}
    with pytest.raises(FileNotFoundError, match=r"snow.light.velodyne"):
        get_dataset("semantickitti_c", root, "val", corruption="snow", severity="light")
    with pytest.raises(ValueError, match="corruption must be one of"):
        get_dataset("semantickitti_c", root, "val", corruption="rain")


# ---------------------------------------------------------------------------------------------------- bad input
# One table per reader: each case copies the reader's official-layout sample (largead.data.export.samples), breaks
# it, reads it, and requires a one-line error naming the file, key or option and what was expected.


def _copy(official_samples, key, tmp_path):
    shutil.copytree(official_samples[key].root, tmp_path / key)
    return tmp_path / key


def _truncate(path, n=3):
    path.write_bytes(path.read_bytes()[:-n])


def _short_label(path, dtype=np.uint32):
    np.fromfile(path, dtype)[:-1].tofile(path)


def _open(key, root, split, **options):
    return get_dataset(key, str(root), split, **options)


def _rellis_lines(root, text):
    (root / "pt_train.lst").write_text(text)


RELLIS = "00000/os1_cloud_node_kitti_bin/000000.bin"
BAD_INPUT = {
    "scribblekitti": [
        ("missing scribbles", lambda r: shutil.rmtree(r / "sequences/00/scribbles"),
         lambda r: _open("scribblekitti", r, "train"), FileNotFoundError,
         r"sequences/00/scribbles: label folder not found \(split 'train' is labelled"),
        ("short scribble file", lambda r: _short_label(r / "sequences/00/scribbles/000001.label"),
         lambda r: _open("scribblekitti", r, "train")[1], ValueError,
         r"scribbles/000001\.label: has \d+ labels but the point cloud has \d+ points"),
        ("no test split", lambda r: None, lambda r: _open("scribblekitti", r, "test"), ValueError,
         r"'scribblekitti' has no split 'test'; available: train, val"),
        ("wrong root", lambda r: None, lambda r: _open("scribblekitti", r / "sequences/00", "val"), FileNotFoundError,
         r"00/sequences: SemanticKITTI sequences folder not found"),
    ],
    "rellis3d": [
        ("missing split file", lambda r: (r / "pt_val.lst").unlink(), lambda r: _open("rellis3d", r, "val"),
         FileNotFoundError, r"pt_val\.lst: RELLIS-3D split file not found"),
        ("split line", lambda r: _rellis_lines(r, f"{RELLIS}\n"), lambda r: _open("rellis3d", r, "train"),
         ValueError, r"pt_train\.lst: line 1: expected '<scan path> <label path>', got '00000/os1_cloud_node"),
        ("scan name", lambda r: _rellis_lines(r, "00000/x/scan.bin 00000/y/scan.label\n"),
         lambda r: _open("rellis3d", r, "train"), ValueError,
         r"pt_train\.lst: line 1: scan file name '00000/x/scan\.bin' is not a frame number"),
        ("listed scan missing", lambda r: (r / RELLIS).unlink(), lambda r: _open("rellis3d", r, "train")[0],
         FileNotFoundError, r"os1_cloud_node_kitti_bin/000000\.bin: point file not found"),
        ("truncated scan", lambda r: _truncate(r / RELLIS), lambda r: _open("rellis3d", r, "train")[0], ValueError,
         r"000000\.bin: truncated or malformed point file: \d+ bytes is not a multiple of the 16-byte record"),
        ("label count", lambda r: _short_label(r / "00000/os1_cloud_node_semantickitti_label_id/000001.label"),
         lambda r: _open("rellis3d", r, "train")[1], ValueError,
         r"000001\.label: has 2879 labels but the point cloud has 2880 points"),
        ("malformed poses", lambda r: (r / "00000/poses.txt").write_text("1 0 0 0\n"),
         lambda r: _open("rellis3d", r, "train"), ValueError, r"00000/poses\.txt: line 1: expected 12 values"),
        ("wrong root", lambda r: None, lambda r: _open("rellis3d", r / "nowhere", "train"), FileNotFoundError,
         r"nowhere: rellis3d root folder not found"),
    ],
    "semanticposs": [
        ("truncated scan", lambda r: _truncate(r / "sequences/02/velodyne/000001.bin"),
         lambda r: _open("semanticposs", r, "val")[1], ValueError, r"02/velodyne/000001\.bin: truncated"),
        ("label count", lambda r: _short_label(r / "sequences/02/labels/000000.label"),
         lambda r: _open("semanticposs", r, "val")[0], ValueError, r"02/labels/000000\.label: has \d+ labels"),
        ("missing label", lambda r: (r / "sequences/03/labels/000001.label").unlink(),
         lambda r: _open("semanticposs", r, "val", val_sequence="03"), FileNotFoundError,
         r"03/labels/000001\.label: label file of scan .*03/velodyne/000001\.bin not found"),
        ("val sequence option", lambda r: None, lambda r: _open("semanticposs", r, "val", val_sequence="05"),
         ValueError, r"semanticposs: val_sequence must be '02' \(CENet\) or '03' \(CoSMix\), got '05'"),
        ("unknown split", lambda r: None, lambda r: _open("semanticposs", r, "training"), ValueError,
         r"'semanticposs' has no split 'training'"),
    ],
    "semanticstf": [
        ("4-column scan", lambda r: next((r / "val/velodyne").iterdir()).write_bytes(np.zeros((3, 4), np.float32)
                                                                                    .tobytes()),
         lambda r: _open("semanticstf", r, "val")[0], ValueError,
         r"val/velodyne/2019-01-02_stf_00000\.bin: truncated or malformed point file: 48 bytes is not a multiple "
         r"of the 20-byte record \(5 x float32\)"),
        ("missing val labels", lambda r: shutil.rmtree(r / "val/labels"), lambda r: _open("semanticstf", r, "val"),
         FileNotFoundError, r"val/labels/2019-01-02_stf_00000\.label: label file of scan .* not found"),
        ("label count", lambda r: _short_label(next((r / "train/labels").iterdir()), np.int32),
         lambda r: _open("semanticstf", r, "train")[0], ValueError, r"train/labels/.*\.label: has \d+ labels"),
        ("weather list line", lambda r: (r / "val/val.txt").write_text("2019-01-02_stf_00000 snow\n"),
         lambda r: _open("semanticstf", r, "val", weather="snow"), ValueError,
         r"val/val\.txt: line 1: expected '<file stem>,<weather>', got '2019-01-02_stf_00000 snow'"),
        ("no weather list", lambda r: (r / "val/val.txt").unlink(),
         lambda r: _open("semanticstf", r, "val", weather="snow"), FileNotFoundError,
         r"val/val\.txt: SemanticSTF weather list not found"),
        ("weather on train", lambda r: None, lambda r: _open("semanticstf", r, "train", weather="snow"), ValueError,
         r"semanticstf: weather subsets exist for the val split only, got split 'train'"),
        ("unknown weather", lambda r: None, lambda r: _open("semanticstf", r, "val", weather="hail"), ValueError,
         r"semanticstf: weather must be one of \('dense_fog', 'light_fog', 'snow', 'rain'\), got 'hail'"),
    ],
    "synlidar": [
        ("wrong root", lambda r: None, lambda r: _open("synlidar", r / "nowhere", "all"), FileNotFoundError,
         r"nowhere: synlidar root folder not found"),
        ("missing label", lambda r: (r / "sequences/04/labels/000000.label").unlink(),
         lambda r: _open("synlidar", r, "val"), FileNotFoundError, r"sequences/04/labels/000000\.label: label file"),
        ("truncated scan", lambda r: _truncate(r / "sequences/00/velodyne/000000.bin"),
         lambda r: _open("synlidar", r, "val")[0], ValueError, r"sequences/00/velodyne/000000\.bin: truncated"),
        ("missing split file", lambda r: None, lambda r: _open("synlidar", r, "train", split_file=str(r / "s.json")),
         FileNotFoundError, r"s\.json: SynLiDAR split file not found"),
        ("split file not JSON", lambda r: (r / "s.json").write_text("train: 00"),
         lambda r: _open("synlidar", r, "train", split_file=str(r / "s.json")), ValueError, r"s\.json: not valid JSON"),
        ("split file without the split", lambda r: (r / "s.json").write_text('{"train": {"00": [0]}}'),
         lambda r: _open("synlidar", r, "val", split_file=str(r / "s.json")), ValueError,
         r"s\.json: expected .* with an entry for split 'val'"),
        ("split file frame missing", lambda r: (r / "s.json").write_text('{"train": {"01": [0, 7]}}'),
         lambda r: _open("synlidar", r, "train", split_file=str(r / "s.json")), FileNotFoundError,
         r"sequences/01/velodyne/000007\.bin: listed in .*s\.json \(train\) but not found"),
        ("mapping option", lambda r: None, lambda r: _open("synlidar", r, "all", mapping="other"), ValueError,
         r"synlidar: mapping must be 'cosmix' or 'pointdr', got 'other'"),
    ],
    "daps3d": [
        ("missing data folder", lambda r: shutil.rmtree(r / "daps-1/data"),
         lambda r: _open("daps3d", r / "daps-1", "val"), FileNotFoundError, r"daps-1/data: DAPS-3D data folder not found"),
        ("missing label", lambda r: (r / "daps-1/data/08/labels/000001.label").unlink(),
         lambda r: _open("daps3d", r / "daps-1", "val"), FileNotFoundError,
         r"08/labels/000001\.label: label file of scan .*08/clouds/000001\.bin not found \(nor \.npy\)"),
        ("npy label length", lambda r: np.save(next((r / "daps-2/data/38-18_7_72_90/labels").iterdir()),
                                               np.zeros(5, np.int32)),
         lambda r: _open("daps3d", r / "daps-2", "val", variant="daps-2")[0], ValueError,
         r"38-18_7_72_90_1600000000000000\.npy: expected \(\d+,\) integer labels to match the point cloud, got "
         r"int32 \(5,\)"),
        ("corrupt npy cloud", lambda r: next((r / "daps-2/data/38-18_7_72_90/clouds").iterdir()).write_bytes(b"x"),
         lambda r: _open("daps3d", r / "daps-2", "val", variant="daps-2")[0], ValueError,
         r"clouds/38-18_7_72_90_1600000000000000\.npy: not a readable \.npy array \(truncated or corrupt\)"),
        ("DAPS-2 train", lambda r: None, lambda r: _open("daps3d", r / "daps-2", "train", variant="daps-2"),
         ValueError, r"daps3d: DAPS-2 is an evaluation set; use split='val'"),
        ("variant option", lambda r: None, lambda r: _open("daps3d", r / "daps-1", "val", variant="daps-3"),
         ValueError, r"daps3d: variant must be 'daps-1' or 'daps-2', got 'daps-3'"),
    ],
    "synth4d": [
        ("missing split pickle", lambda r: (r / "splits/kitti_synth/validation_split.pkl").unlink(),
         lambda r: _open("synth4d", r, "val"), FileNotFoundError,
         r"splits/kitti_synth/validation_split\.pkl: Synth4D split file not found"),
        ("corrupt split pickle", lambda r: (r / "splits/kitti_synth/training_split.pkl").write_bytes(b"\x80\x04x"),
         lambda r: _open("synth4d", r, "train"), ValueError,
         r"training_split\.pkl: not a readable split pickle \(truncated or corrupt\)"),
        ("split pickle not a dict", lambda r: (r / "splits/kitti_synth/training_split.pkl").write_bytes(
            pickle.dumps([1, 2])), lambda r: _open("synth4d", r, "train"), ValueError,
         r"training_split\.pkl: expected a dict town -> frame ids, got list"),
        ("missing scan", lambda r: (r / "kitti_synth/Town03/velodyne/1.npy").unlink(),
         lambda r: _open("synth4d", r, "train")[1], FileNotFoundError, r"Town03/velodyne/1\.npy: point file not found"),
        ("label length", lambda r: np.save(r / "kitti_synth/Town06/labels/0.npy", np.zeros(3, np.int32)),
         lambda r: _open("synth4d", r, "val")[0], ValueError,
         r"Town06/labels/0\.npy: has labels of shape \(3,\) but the point cloud has \d+ points"),
        ("sensor option", lambda r: None, lambda r: _open("synth4d", r, "train", sensor="hdl64"), ValueError,
         r"synth4d: sensor must be 'kitti_synth' or 'nuscenes_synth', got 'hdl64'"),
    ],
    "semantickitti_c": [
        ("missing variant", lambda r: shutil.rmtree(r / "snow/light"),
         lambda r: _open("semantickitti_c", r, "val", corruption="snow", severity="light"), FileNotFoundError,
         r"snow/light/velodyne: sequence 08 scan folder not found"),
        ("unknown corruption", lambda r: None, lambda r: _open("semantickitti_c", r, "val", corruption="rain"),
         ValueError, r"semantickitti_c: corruption must be one of \('fog', .*\), got 'rain'"),
        ("unknown severity", lambda r: None, lambda r: _open("semantickitti_c", r, "val", severity="extreme"),
         ValueError, r"semantickitti_c: severity must be one of \('light', 'moderate', 'heavy'\), got 'extreme'"),
        ("truncated scan", lambda r: _truncate(r / "fog/light/velodyne/000001.bin"),
         lambda r: _open("semantickitti_c", r, "val")[1], ValueError, r"fog/light/velodyne/000001\.bin: truncated"),
        ("label count", lambda r: _short_label(r / "fog/light/labels/000000.label"),
         lambda r: _open("semantickitti_c", r, "val")[0], ValueError, r"fog/light/labels/000000\.label: has \d+"),
        ("missing label", lambda r: (r / "fog/light/labels/000002.label").unlink(),
         lambda r: _open("semantickitti_c", r, "val"), FileNotFoundError, r"fog/light/labels/000002\.label: label"),
    ],
}
CASES = [(reader, *case) for reader, cases in BAD_INPUT.items() for case in cases]


@pytest.mark.parametrize("reader, case, breaks, reads, exc, message", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input(official_samples, tmp_path, reader, case, breaks, reads, exc, message):
    if reader == "daps3d":  # both variants: <copy>/daps-1 and <copy>/daps-2
        root = tmp_path / "daps3d"
        shutil.copytree(official_samples["daps3d"].root.parent, root)
    else:
        root = _copy(official_samples, reader, tmp_path)
    breaks(root)
    assert_one_line_error(lambda: reads(root), exc, message)


def test_every_family_reader_has_a_bad_input_table():
    assert set(BAD_INPUT) == {"scribblekitti", "rellis3d", "semanticposs", "semanticstf", "synlidar", "daps3d",
                              "synth4d", "semantickitti_c"}


def test_synlidar_layouts_and_cosmix_style_split_file(official_samples, tmp_path):
    """The download's flat layout and the GIPSO / PointDR / CoSMix ``sequences/`` layout read the same scans; a split
    file selects frames within sequences (CoSMix's kind of split)."""
    from largead.data.export import write_synlidar
    from largead.data.synthetic import export_lut

    sample = official_samples["synlidar"]
    write_synlidar(sample.frames, tmp_path / "flat", layout="flat", inverse_lut=export_lut("synlidar"))
    flat, nested = get_dataset("synlidar", tmp_path / "flat", "all"), get_dataset("synlidar", sample.root, "all")
    also = get_dataset("synlidar", sample.root / "sequences", "all")  # a root ending in sequences/ works too
    assert len(flat) == len(nested) == len(also) == 26
    np.testing.assert_array_equal(flat[5].points, nested[5].points)
    np.testing.assert_array_equal(flat[5].labels, also[5].labels)
    (tmp_path / "split.json").write_text('{"train": {"00": [1], "05": [0, 1]}, "validation": {"12": [0]}}')
    train = get_dataset("synlidar", sample.root, "train", split_file=str(tmp_path / "split.json"))
    assert [train.sequence_of(i) for i in range(len(train))] == [("00", 1), ("05", 0), ("05", 1)]
    val = get_dataset("synlidar", sample.root, "val", split_file=str(tmp_path / "split.json"))
    assert [val.sequence_of(i) for i in range(len(val))] == [("12", 0)]


def test_semanticstf_test_split_without_labels_and_daps2_npy(official_samples):
    stf = get_dataset("semanticstf", official_samples["semanticstf"].root, "test")
    assert not (official_samples["semanticstf"].root / "test" / "labels").exists()
    assert len(stf) == 2 and stf[0].labels is None and stf[1].points.shape[1] == 4
    daps2 = get_dataset("daps3d", official_samples["daps3d_daps2"].root, "val", variant="daps-2")
    names = sorted(p.name for p in (official_samples["daps3d_daps2"].root / "data" / "38-18_7_72_90" / "labels")
                   .iterdir())
    assert names[0].endswith(".npy") and not names[0][:-4].isdigit()  # .npy labels, non-numeric stems
    assert [daps2.sequence_of(i) for i in range(2)] == [("38-18_7_72_90", 0), ("38-18_7_72_90", 1)]
    f = daps2[1]
    assert f.token == f"38-18_7_72_90/{names[1][:-4]}" and f.labels is not None and (f.labels >= 0).all()
