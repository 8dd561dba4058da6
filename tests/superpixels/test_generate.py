"""largead.superpixels.generate (scripts/generate_superpixels.py) on the synthetic world, in-process: its main(argv)."""

import json
import re

import numpy as np
import pytest

from largead.superpixels import get_source, load_superpixels, save_superpixels, sources, superpixel_path
from largead.superpixels.sources import SuperpixelSource

SMALL = ["--dataset-option", "num_sequences=1", "--dataset-option", "frames_per_sequence=3",
         "--dataset-option", "num_cameras=2", "--dataset-option", "image_size=[40,64]"]


@pytest.fixture(scope="module")
def script():
    from largead.superpixels import generate

    return generate


@pytest.fixture(scope="module")
def frames():
    from largead.data import get_dataset

    ds = get_dataset("synthetic", num_sequences=1, frames_per_sequence=3, num_cameras=2, image_size=(40, 64))
    return [ds[i] for i in range(2)]


def error_line(err: str) -> str:
    """The one error line on stderr (the rest is tqdm's progress bar); fails if there is not exactly one or if a
    traceback was printed."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def manifest(out, tag):
    return json.loads((out / f"superpixels_{tag}" / "_manifest.json").read_text())


def test_slic_generation_resume_and_overwrite(tmp_path, script, frames):
    argv = ["--source", "slic", "--dataset", "synthetic", "--out", str(tmp_path), "--limit", "2", *SMALL]
    assert script.main(argv) == 0
    slic = get_source("slic")
    for f in frames:
        for cam in f.cameras:
            ids = load_superpixels(superpixel_path(tmp_path, "slic", cam.token), expected_hw=cam.image.shape[:2])
            assert np.array_equal(ids, slic.segment(cam.image))
    m = manifest(tmp_path, "slic")
    assert (m["frames"], m["written"], m["skipped_existing"], m["degenerate"]) == (2, 4, 0, [])
    assert m["params"]["n_segments"] == 150 and m["source"] == "slic" and m["segments_per_image"]["min"] > 1
    assert script.main(argv) == 0
    assert (manifest(tmp_path, "slic")["written"], manifest(tmp_path, "slic")["skipped_existing"]) == (0, 4)
    assert script.main(argv + ["--overwrite"]) == 0
    assert manifest(tmp_path, "slic")["written"] == 4


def test_synthetic_vfm_tag_and_options(tmp_path, script, frames):
    argv = ["--source", "synthetic-vfm", "--option", "granularity=sam", "--option", "seed=5", "--dataset",
            "synthetic", "--out", str(tmp_path), "--limit", "1", *SMALL]
    assert script.main(argv) == 0
    m = manifest(tmp_path, "synthetic-vfm-sam")
    assert m["params"]["granularity"] == "sam" and m["params"]["seed"] == 5 and m["written"] == 2
    cam = frames[0].cameras[0]
    expected = get_source("synthetic-vfm", granularity="sam", seed=5).segment(cam.image, cam)
    assert np.array_equal(load_superpixels(superpixel_path(tmp_path, "synthetic-vfm-sam", cam.token)), expected)


class _Constant(SuperpixelSource):
    """A source that segments nothing: the whole image is one id."""

    name = "test-constant"

    def _segment(self, image, camera):
        return np.zeros(image.shape[:2], np.int32)


def test_degenerate_images_are_flagged(tmp_path, script, frames, capsys, monkeypatch):
    monkeypatch.setitem(sources._SOURCES, "test-constant", _Constant)
    argv = ["--source", "test-constant", "--dataset", "synthetic", "--out", str(tmp_path), "--limit", "1", *SMALL]
    assert script.main(argv) == 0
    tokens = [c.token for c in frames[0].cameras]
    assert manifest(tmp_path, "test-constant")["degenerate"] == tokens
    err = capsys.readouterr().err
    assert all(f"no superpixels in {t}" in err for t in tokens)


def test_bad_arguments(tmp_path, script, capsys):
    assert script.main(["--source", "slik", "--dataset", "synthetic", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'slic'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--source", "slic", "--dataset", "synthetic", "--out", str(tmp_path), "--option", "novalue"])


def test_generated_maps_carry_their_zero_rule(tmp_path, script):
    """The manifest the script writes tells a reader of the maps what id 0 means (synthetic-vfm: void; slic: a
    segment)."""
    for source, options, tag, zero in (("synthetic-vfm", ["--option", "granularity=sam"], "synthetic-vfm-sam", False),
                                       ("slic", [], "slic", True)):
        argv = ["--source", source, *options, "--dataset", "synthetic", "--out", str(tmp_path), "--limit", "1", *SMALL]
        assert script.main(argv) == 0
        assert get_source("precomputed", root=tmp_path, kind=tag).zero_is_segment is zero


# ---------------------------------------------------------------------------------- cameras follow the dataset options
@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    """The synthetic world written in the SemanticKITTI layout (image_2 and calib.txt included), whose reader has
    cameras off by default."""
    from largead.data.synthetic import SyntheticConfig, SyntheticWorld, write_synthetic

    world = SyntheticWorld(SyntheticConfig.kitti_like(seed=4, beams=16, image_size=(24, 60), frames_per_sequence=2))
    root = tmp_path_factory.mktemp("kitti")
    write_synthetic([world.frame(0, i) for i in range(2)], root, "semantickitti")
    return root


def test_kitti_cameras_off_fails_and_on_writes_every_map(tmp_path, script, kitti_root, capsys):
    from largead.data import get_dataset

    argv = ["--source", "slic", "--dataset", "semantickitti", "--root", str(kitti_root), "--out", str(tmp_path),
            "--dataset-option", 'sequences=["00"]']
    assert script.main(argv) == 2
    err = error_line(capsys.readouterr().err)
    assert "cameras off" in err and "--dataset-option cameras=true" in err
    assert not list(tmp_path.rglob("*.png"))

    assert script.main(argv + ["--dataset-option", "cameras=true"]) == 0
    ds = get_dataset("semantickitti", kitti_root, "train", sequences=("00",), cameras=True)
    slic = get_source("slic")
    cams = [c for i in range(len(ds)) for c in ds[i].cameras]
    assert len(cams) == 2
    for cam in cams:  # e.g. superpixels_slic/00/000000.png
        ids = load_superpixels(superpixel_path(tmp_path, "slic", cam.token), expected_hw=cam.image.shape[:2])
        assert np.array_equal(ids, slic.segment(cam.image))
    m = manifest(tmp_path, "slic")
    assert m["written"] == 2 and m["dataset_options"]["cameras"] is True


def test_frame_without_cameras_fails_naming_the_frame(tmp_path, script, capsys):
    argv = ["--source", "slic", "--dataset", "synthetic", "--out", str(tmp_path), "--limit", "1", *SMALL,
            "--dataset-option", "num_cameras=0"]
    assert script.main(argv) == 1
    err = error_line(capsys.readouterr().err)
    assert err.startswith("error: frame 0 (") and "no camera image" in err
    assert not (tmp_path / "superpixels_slic" / "_manifest.json").exists()


class _MissesSecondCamera(SuperpixelSource):
    """A broken source: no map for the second image of a batch."""

    name = "test-misses"

    def _segment(self, image, camera):
        return np.ones(image.shape[:2], np.int32)

    def segment_batch(self, images, cameras=None):
        return [self.segment(images[0])]


class _WrongShape(_MissesSecondCamera):
    name = "test-wrong-shape"

    def segment_batch(self, images, cameras=None):
        return [np.ones((3, 3), np.int32) for _ in images]


@pytest.mark.parametrize("source, what", [(_MissesSecondCamera, "returned no superpixel map"),
                                          (_WrongShape, r"returned a map of shape \(3, 3\)")])
def test_image_without_map_fails_naming_frame_and_camera(tmp_path, script, frames, capsys, monkeypatch, source, what):
    monkeypatch.setitem(sources._SOURCES, source.name, source)
    argv = ["--source", source.name, "--dataset", "synthetic", "--out", str(tmp_path), "--limit", "1", *SMALL]
    assert script.main(argv) == 1
    err = error_line(capsys.readouterr().err)
    cam = frames[0].cameras[1 if source is _MissesSecondCamera else 0]
    assert err.startswith(f"error: frame 0 ({frames[0].token}) camera {cam.name} ({cam.token}): ")
    assert re.search(what, err)
    assert not list(tmp_path.rglob("*.png"))  # nothing of the frame was written


class _Exploding(_MissesSecondCamera):
    name = "test-exploding"

    def segment_batch(self, images, cameras=None):
        raise RuntimeError("model\nexploded")


def test_errors_are_one_line_unless_debug(tmp_path, script, capsys, monkeypatch):
    monkeypatch.setitem(sources._SOURCES, "test-exploding", _Exploding)
    argv = ["--source", "test-exploding", "--dataset", "synthetic", "--out", str(tmp_path), "--limit", "1", *SMALL]
    monkeypatch.delenv("LARGEAD_DEBUG", raising=False)
    assert script.main(argv) == 1
    expected = "error: RuntimeError: model exploded (set LARGEAD_DEBUG=1 for a traceback)"  # newline folded
    assert error_line(capsys.readouterr().err) == expected
    monkeypatch.setenv("LARGEAD_DEBUG", "1")
    with pytest.raises(RuntimeError, match="exploded"):
        script.main(argv)


# -------------------------------------------------------------------------------------- damaged maps are regenerated
def _flip_in_image_data(path):
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0x04
    path.write_bytes(bytes(data))


def test_damaged_maps_are_regenerated(tmp_path, script, frames, capsys):
    argv = ["--source", "slic", "--dataset", "synthetic", "--out", str(tmp_path), "--limit", "2", *SMALL]
    assert script.main(argv) == 0
    cams = [c for f in frames for c in f.cameras]
    paths = [superpixel_path(tmp_path, "slic", c.token) for c in cams]
    good = [p.read_bytes() for p in paths]
    paths[0].write_bytes(good[0][: len(good[0]) // 2])  # killed mid-copy
    paths[1].write_bytes(bytes(len(good[1])))  # zeroed by a power loss
    _flip_in_image_data(paths[2])  # bit rot: only a full check sees it
    save_superpixels(paths[3], np.zeros((5, 5), np.int32))  # a map of another image size
    capsys.readouterr()
    assert script.main(argv) == 0
    err = capsys.readouterr().err
    assert all(f"warning: {paths[k]}: " in err for k in (0, 1, 3)) and str(paths[2]) not in err
    m = manifest(tmp_path, "slic")
    assert (m["written"], m["skipped_existing"]) == (3, 1)
    assert m["regenerated_damaged"] == [cams[k].token for k in (0, 1, 3)] and m["existing_check"].startswith("cheap")
    assert [p.read_bytes() for p in paths[:2]] == good[:2] and paths[3].read_bytes() == good[3]
    assert paths[2].read_bytes() != good[2]

    assert script.main(argv + ["--verify"]) == 0
    assert f"warning: {paths[2]}: superpixel PNG is truncated or damaged" in capsys.readouterr().err
    m = manifest(tmp_path, "slic")
    assert (m["written"], m["skipped_existing"], m["regenerated_damaged"]) == (1, 3, [cams[2].token])
    assert [p.read_bytes() for p in paths] == good


def _run_until_third_map(script, argv, started):
    """Child process (forked: modules already imported): write two maps, half of the third, then hang."""
    import time

    import PIL.Image

    real_save = PIL.Image.Image.save
    count = [0]

    def save(self, fp, *args, **kwargs):
        count[0] += 1
        real_save(self, fp, *args, **kwargs)
        if count[0] == 3:
            with open(fp, "r+b") as fh:
                fh.truncate(20)
            started.set()
            time.sleep(60)

    PIL.Image.Image.save = save
    script.main(argv)


def test_killed_run_leaves_no_partial_map_and_resumes(tmp_path, script, frames, capsys):
    import multiprocessing
    import os
    import signal

    argv = ["--source", "slic", "--dataset", "synthetic", "--out", str(tmp_path), "--limit", "2", *SMALL]
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    proc = ctx.Process(target=_run_until_third_map, args=(script, argv, started))
    proc.start()
    assert started.wait(60), "the generator did not reach its third map"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    folder = tmp_path / "superpixels_slic"
    pngs = sorted(folder.rglob("*.png"))
    temporaries = [p for p in folder.rglob(".*") if ".tmp-" in p.name]
    assert len(pngs) == 2 and len(temporaries) == 1  # two complete maps, the third only as a temporary
    for p in pngs:
        load_superpixels(p)
    capsys.readouterr()
    assert script.main(argv) == 0
    assert f"removed {temporaries[0]}" in capsys.readouterr().err
    m = manifest(tmp_path, "slic")
    assert (m["written"], m["skipped_existing"]) == (2, 2)
    assert sorted(p.name for p in folder.rglob(".*")) == []
    slic = get_source("slic")
    for f in frames:
        for cam in f.cameras:
            assert np.array_equal(load_superpixels(superpixel_path(tmp_path, "slic", cam.token)),
                                  slic.segment(cam.image))


def test_synthetic_vfm_on_an_official_layout_root_says_why_it_cannot(tmp_path, script, official_roots, capsys):
    """synthetic-vfm degrades the synthetic world's ground-truth masks; a reader of an official layout has no masks
    (the maps for such roots come from largead.superpixels.export), so the script stops on the first camera with one
    line saying so, and writes no map."""
    argv = ["--source", "synthetic-vfm", "--dataset", "semantickitti", "--root", str(official_roots["semantickitti"]),
            "--dataset-option", "cameras=true", "--out", str(tmp_path)]
    assert script.main(argv) == 1
    line = error_line(capsys.readouterr().err)
    assert "image_2" in line and "semantic_mask" in line and "only synthetic-world cameras" in line
    assert not list(tmp_path.rglob("*.png"))
