from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import make_frames

from largead.data import get_dataset
from largead.data.export import write_nuscenes, write_semantickitti


def all_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_nuscenes_keeps_given_tokens_and_handles_unlabelled(tmp_path):
    frames = make_frames(("scene-0061",), 2, 30, seed=1)
    for j, f in enumerate(frames):
        f.token = f"{j:032x}"
        f.labels = None
        for c, cam in enumerate(f.cameras):
            cam.token = f"{100 + 10 * j + c:032x}"
    write_nuscenes(frames, tmp_path, version="v1.0-mini")
    assert not (tmp_path / "v1.0-mini/lidarseg.json").exists()
    ds = get_dataset("nuscenes", tmp_path, "all", version="v1.0-mini")
    got = ds[1]
    assert got.token == frames[1].token and got.labels is None
    assert [c.token for c in got.cameras] == [c.token for c in frames[1].cameras]
    assert not [p for p in all_files(tmp_path) if p.name.startswith(".")]  # no temp files left behind


def test_nuscenes_shares_identical_calibrations(tmp_path):
    write_nuscenes(make_frames(("scene-0061", "scene-0103"), 3, 20), tmp_path, version="v1.0-mini")
    calib = json.loads((tmp_path / "v1.0-mini/calibrated_sensor.json").read_text())
    assert len(calib) == 7  # one LiDAR + six cameras, shared by all 6 frames
    ego = json.loads((tmp_path / "v1.0-mini/ego_pose.json").read_text())
    assert len(ego) == 6 * 7


def test_invalid_frame_writes_nothing(tmp_path):
    frames = make_frames(("scene-0061", "scene-0103"), 2, 20)
    frames[-1].points[3, 2] = np.nan
    with pytest.raises(ValueError, match="scene 'scene-0103' frame 1: 1 of 20 points have non-finite"):
        write_nuscenes(frames, tmp_path / "n")
    with pytest.raises(ValueError, match="sequence 'scene-0103' frame 1: 1 of 20 points have non-finite"):
        write_semantickitti(frames, tmp_path / "k")
    assert all_files(tmp_path) == []


def test_label_out_of_range(tmp_path):
    frames = make_frames(("scene-0061",), 1, 20)
    frames[0].labels[0] = 16
    with pytest.raises(ValueError, match=r"frame 0: labels must be in \[-1, 15\]"):
        write_nuscenes(frames, tmp_path)
    frames[0].labels[0] = 19
    with pytest.raises(ValueError, match=r"frame 0: labels must be in \[-1, 18\]"):
        write_semantickitti(frames, tmp_path)
    assert all_files(tmp_path) == []


def test_semantickitti_needs_constant_calibration(tmp_path):
    frames = make_frames(("a",), 2, 20, camera_yaws_deg=(0.0,), camera_names=("image_2",))
    frames[1].cameras[0].lidar_to_camera = frames[1].cameras[0].lidar_to_camera.copy()
    frames[1].cameras[0].lidar_to_camera[0, 3] += 0.1
    with pytest.raises(ValueError, match="sequence 'a' frame 1: camera 0 calibration differs"):
        write_semantickitti(frames, tmp_path)


def test_semantickitti_names_and_no_cameras(tmp_path):
    frames = make_frames(("town", "city"), 2, 20, num_classes=19, camera_yaws_deg=(), camera_names=(),
                         intensity_scale=1.0)
    names = write_semantickitti(frames, tmp_path)
    assert names == {"town": "00", "city": "01"}
    ds = get_dataset("semantickitti", tmp_path, "train", sequences=("00", "01"))
    assert len(ds) == 4
    got = ds[2]
    assert got.sequence == "01" and got.cameras == []
    np.testing.assert_array_equal(got.points, frames[2].points)
    np.testing.assert_allclose(got.pose, frames[2].pose, atol=1e-12)


def test_duplicate_indices(tmp_path):
    frames = make_frames(("a",), 2, 10)
    frames[1].index = 0
    with pytest.raises(ValueError, match="sequence 'a': frames have duplicate indices"):
        write_nuscenes(frames, tmp_path)


def test_refuses_to_write_over_an_existing_dataset(tmp_path):
    frames = make_frames(("scene-0061",), 1, 10)
    write_nuscenes(frames, tmp_path / "n")
    with pytest.raises(FileExistsError, match=r"v1.0-mini: already exists; write into a fresh root \(a nuScenes"):
        write_nuscenes(frames, tmp_path / "n")
    write_semantickitti(frames, tmp_path / "k")
    with pytest.raises(FileExistsError, match="sequences/00: already exists"):
        write_semantickitti(frames, tmp_path / "k")


def _family_writers():
    from largead.data import export as ex
    from largead.data.synthetic import export_lut

    return {
        "rellis3d": lambda fs, r: ex.write_rellis3d(fs, r, inverse_lut=export_lut("rellis3d")),
        "semanticposs": lambda fs, r: ex.write_semanticposs(fs, r, inverse_lut=export_lut("semanticposs")),
        "semanticstf": lambda fs, r: ex.write_semanticstf(fs, r, inverse_lut=export_lut("semanticstf")),
        "synlidar": lambda fs, r: ex.write_synlidar(fs, r, inverse_lut=export_lut("synlidar")),
        "daps3d": lambda fs, r: ex.write_daps3d(fs, r, inverse_lut=export_lut("daps3d")),
        "synth4d": lambda fs, r: ex.write_synth4d(fs, r, inverse_lut=export_lut("synth4d")),
        "scribblekitti": lambda fs, r: ex.write_scribblekitti(fs, r, inverse_lut=export_lut("semantickitti")),
    }


@pytest.mark.parametrize("name", sorted(_family_writers()))
def test_family_writers_validate_first_and_never_overwrite(official_samples, tmp_path, name):
    import dataclasses

    write = _family_writers()[name]
    frames = [f for f in official_samples["synlidar"].frames if f.sequence in ("00", "01")]
    bad = list(frames)
    bad[-1] = dataclasses.replace(bad[-1], labels=np.full(bad[-1].num_points, 12))  # synthetic ids stop at 11
    with pytest.raises(ValueError, match=r"sequence '01' frame 1: labels must be in \[-1, 11\]"):
        write(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # validated before the first byte
    write(frames, tmp_path / "ok")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "ok").rglob("*"))
    with pytest.raises(FileExistsError, match=r"already exists; write into a fresh root"):
        write(frames, tmp_path / "ok")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "ok").rglob("*")) == before
    assert not [p for p in (tmp_path / "ok").rglob(".*")]  # no temporary files left behind
