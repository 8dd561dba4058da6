"""SemanticKITTI-format family readers: layouts, splits, options, label maps value by value, bad input."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_semantickitti_fixture, random_scan, yaw_transform

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
