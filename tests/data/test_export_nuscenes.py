"""The nuScenes writer checked with the authors' own tool: nuscenes-devkit opens the official-layout sample, its
official splits put the scenes where the sample promises, its multi-sweep loader follows the sweeps through the
``prev`` chain and puts them in the keyframe's LiDAR frame, and its lidarseg loader reads the label files."""

from __future__ import annotations

import numpy as np
import pytest

nuscenes = pytest.importorskip("nuscenes", reason="nuscenes-devkit is a test dependency (largead[test])")
from nuscenes.nuscenes import NuScenes  # noqa: E402
from nuscenes.utils.data_classes import LidarPointCloud  # noqa: E402
from nuscenes.utils.data_io import load_bin_file  # noqa: E402
from nuscenes.utils.splits import create_splits_scenes  # noqa: E402

from largead.data import get_dataset  # noqa: E402
from largead.data.export import SampleSize, write_nuscenes  # noqa: E402
from largead.data.labels import NUSCENES_LIDARSEG_CATEGORIES  # noqa: E402
from largead.data.readers.nuscenes import NUSCENES_CAMERAS, SLIDR_HELDOUT_SCENES  # noqa: E402
from largead.data.synthetic import export_lut  # noqa: E402

SIZE = SampleSize()


@pytest.fixture(scope="module")
def devkit(official_samples):
    s = official_samples["nuscenes"]
    return s, NuScenes(version="v1.0-trainval", dataroot=str(s.root), verbose=False)


def test_official_splits_place_the_scenes(devkit, official_samples):
    _, nusc = devkit
    splits = create_splits_scenes(verbose=False)
    names = [sc["name"] for sc in nusc.scene]
    assert names == ["scene-0061", "scene-1094", "scene-0103"]
    assert [n in splits["train"] for n in names] == [True, True, False]
    assert [n in splits["val"] for n in names] == [False, False, True]
    assert [n in splits["mini_train"] for n in names] == [True, True, False]
    assert [n in splits["mini_val"] for n in names] == [False, False, True]
    assert [n in SLIDR_HELDOUT_SCENES for n in names] == [False, True, False]  # pretrain vs pretrain_val
    mini = official_samples["nuscenes_mini"]
    assert [sc["name"] for sc in NuScenes(version="v1.0-mini", dataroot=str(mini.root), verbose=False).scene] == names


def test_keyframes_sweeps_and_lidarseg_as_the_devkit_sees_them(devkit):
    s, nusc = devkit
    k, sw = SIZE.frames, SIZE.sweeps
    lidar = [sd for sd in nusc.sample_data if sd["channel"] == "LIDAR_TOP"]
    keys = [sd for sd in lidar if sd["is_key_frame"]]
    sweeps = [sd for sd in lidar if not sd["is_key_frame"]]
    assert len(nusc.sample) == len(keys) == 3 * k and len(sweeps) == 3 * (k - 1) * sw
    assert all(sd["filename"].startswith("samples/LIDAR_TOP/") for sd in keys)
    assert all(sd["filename"].startswith("sweeps/LIDAR_TOP/") for sd in sweeps)
    cams = [sd for sd in nusc.sample_data if sd["channel"] in NUSCENES_CAMERAS]
    assert len(cams) == 6 * len(lidar)
    assert {sd["filename"].split("/")[0] for sd in cams if not sd["is_key_frame"]} == {"sweeps"}
    # lidarseg: one record per keyframe, the category order the add-on defines
    assert len(nusc.lidarseg) == len(keys)
    assert nusc.lidarseg_idx2name_mapping == dict(enumerate(NUSCENES_LIDARSEG_CATEGORIES))
    # prev/next chain every channel through sweeps: keyframe -> sweep(s) -> next keyframe
    for channel in ("LIDAR_TOP", "CAM_FRONT"):
        sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
        sd = nusc.get("sample_data", sample["data"][channel])
        hops = 0
        while True:
            sd = nusc.get("sample_data", sd["next"])
            hops += 1
            if sd["is_key_frame"]:
                break
            assert nusc.get("sample", sd["sample_token"])["scene_token"] == sample["scene_token"]
        assert hops == sw + 1 and sd["token"] == nusc.get("sample", sample["next"])["data"][channel]


def test_multisweep_loader_follows_the_sweeps(devkit):
    """The devkit stacks a keyframe with the sweeps before it, each moved into the keyframe's LiDAR frame through
    the ego poses: that equals ``inv(pose_key) @ pose_j`` of the frames written."""
    s, nusc = devkit
    sw = SIZE.sweeps
    scene = [f for f in s.frames if f.sequence == "scene-0061"]
    sample = nusc.get("sample", nusc.get("sample", nusc.scene[0]["first_sample_token"])["next"])
    pc, times = LidarPointCloud.from_file_multisweep(nusc, sample, "LIDAR_TOP", "LIDAR_TOP", nsweeps=sw + 2)
    key = scene[sw + 1]
    start = 0
    for j in range(sw + 1, -1, -1):  # the keyframe first, then back in time
        f = scene[j]
        xyz = f.points[:, :3].astype(np.float64)
        far = ~((np.abs(xyz[:, 0]) < 1.0) & (np.abs(xyz[:, 1]) < 1.0))  # the devkit's remove_close(1.0)
        moved = (np.linalg.inv(key.pose) @ f.pose)
        want = xyz[far] @ moved[:3, :3].T + moved[:3, 3]
        got = pc.points[:3, start: start + int(far.sum())].T
        np.testing.assert_allclose(got, want, atol=2e-4)
        np.testing.assert_allclose(times[0, start: start + int(far.sum())], key.timestamp - f.timestamp, atol=1e-6)
        start += int(far.sum())
    assert start == pc.points.shape[1]


def test_lidarseg_files_through_the_devkit_loader(devkit):
    s, nusc = devkit
    lut = export_lut("nuscenes")
    by_time = {round(f.timestamp, 6): f for f in s.frames}
    for rec in nusc.lidarseg:
        sd = nusc.get("sample_data", rec["sample_data_token"])
        labels = load_bin_file(str(s.root / rec["filename"]), type="lidarseg")
        f = by_time[round(sd["timestamp"] * 1e-6, 6)]
        np.testing.assert_array_equal(labels, lut[f.labels + 1])


def test_root_without_lidarseg_addon(tmp_path, official_samples):
    """The base download (no lidarseg add-on): the devkit loads it; our reader refuses the labelled splits, naming
    the missing table, and reads the pretraining split without labels."""
    frames = [f for f in official_samples["nuscenes"].frames if f.sequence == "scene-0061"]
    write_nuscenes(frames, tmp_path, version="v1.0-trainval", lidarseg=False, keyframe_every=SIZE.sweeps + 1)
    nusc = NuScenes(version="v1.0-trainval", dataroot=str(tmp_path), verbose=False)
    assert not hasattr(nusc, "lidarseg") and "index" not in nusc.category[0]
    assert not (tmp_path / "lidarseg").exists()
    with pytest.raises(FileNotFoundError, match=r"v1.0-trainval/lidarseg.json: not found; split 'train' needs the "
                                                r"nuScenes-lidarseg add-on .* pass labels=False"):
        get_dataset("nuscenes", tmp_path, "train", cameras=False)
    ds = get_dataset("nuscenes", tmp_path, "pretrain", cameras=False)
    assert len(ds) == SIZE.frames and ds[0].labels is None
    assert get_dataset("nuscenes", tmp_path, "train", cameras=False, labels=False)[0].labels is None
