"""scripts/generate_superpixels.py on the synthetic world (run in-process: its main(argv))."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from largead.superpixels import get_source, load_superpixels, sources, superpixel_path
from largead.superpixels.sources import SuperpixelSource

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "generate_superpixels.py"
SMALL = ["--dataset-option", "num_sequences=1", "--dataset-option", "frames_per_sequence=3",
         "--dataset-option", "num_cameras=2", "--dataset-option", "image_size=[40,64]"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("generate_superpixels", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def frames():
    from largead.data import get_dataset

    ds = get_dataset("synthetic", num_sequences=1, frames_per_sequence=3, num_cameras=2, image_size=(40, 64))
    return [ds[i] for i in range(2)]


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
