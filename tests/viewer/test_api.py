"""largead.viewer.view end to end (in-process): inputs of every kind, atomic writing, the size of a realistic frame."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_frames

from largead.viewer import prepare_view, view
from largead.viewer.html import read_page


def test_view_of_a_semantickitti_scan_with_a_segmentation_model(sk_scan, segmentation_dir, tmp_path):
    out = view(sk_scan, tmp_path / "sub" / "v.html", model=segmentation_dir, query=5, feature_dtype="float16")
    meta, arrays = read_page(out)
    assert [m["key"] for m in meta["modes"]] == ["height", "intensity", "gt", "pca", "pred", "similarity"]
    assert meta["initial"] == {"mode": "similarity", "query": 5, "point_size": 2.0}
    assert arrays["features"].dtype == np.uint16 and meta["features"]["dtype"] == "float16"
    assert dict(meta["info"])["model input"].startswith("intensity normalised as in fine-tuning")
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temporary file left beside it


def test_view_of_frames_arrays_and_datasets(tmp_path):
    frames = make_frames(("s",), frames_per_sequence=2, num_points=300, image_size=(24, 40))
    data = prepare_view(frames, segments=False, cameras=False)
    assert data.meta["num_points"] == 600 and all(not f["cameras"] for f in data.meta["frames"])
    assert all(len(f.cameras) == 6 for f in frames)  # the caller's frames are left alone
    data = prepare_view(frames[0], class_names=[f"c{i}" for i in range(16)], segments=False)
    gt = next(m for m in data.meta["modes"] if m["key"] == "gt")
    assert gt["names"][3] == "c3" and "fixed palette" in gt["palette_source"]
    data = prepare_view(np.zeros((10, 4), np.float32) + [1, 2, 3, 0])
    assert data.meta["frames"][0]["count"] == 10
    data = prepare_view(dataset="synthetic", split="val", index=1, frames=2, segments=False,
                        dataset_options={"num_sequences": 1, "frames_per_sequence": 3, "beams": 4,
                                         "num_cameras": 2, "image_size": [24, 40], "azimuth_resolution": 4.0})
    assert len(data.meta["frames"]) == 2 and len(data.meta["frames"][1]["cameras"]) == 2
    gt = next(m for m in data.meta["modes"] if m["key"] == "gt")
    assert "SemanticKITTI colours" in gt["palette_source"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, "nothing to show"),
    ({"scan": "x.bin", "dataset": "synthetic"}, ValueError, "not both"),
    ({"dataset": "synthetic", "frames": 0}, ValueError, "frames must be >= 1"),
    ({"dataset": "no-such-set"}, KeyError, "unknown dataset"),
    ({"scan": np.zeros((5, 4), np.float32), "frames": 2}, ValueError, "needs a sequence"),
    ({"scan": np.zeros((5, 4), np.float32), "feature_dtype": "int2"}, ValueError, "feature_dtype"),
])
def test_bad_arguments(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        view(out=tmp_path / "v.html", **kwargs)
    assert not (tmp_path / "v.html").exists()


def test_size_of_a_30k_point_frame_with_64d_features_and_six_cameras():
    """The issue's size budget: 30k points, 64-d features (int8), six 1600 x 900 cameras shrunk to 480 px: < 15 MB.
    The features are given (unit vectors, like an encoder's output) so that no model has to run here."""
    from largead.viewer.html import render_html

    frames = make_frames(("s",), frames_per_sequence=1, num_points=30000, image_size=(900, 1600))
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(30000, 64)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    data = prepare_view(frames[0], features=feats)
    assert data.arrays["features"].shape == (30000, 64) and data.arrays["features"].dtype == np.int8
    assert len(data.meta["frames"][0]["cameras"]) == 6
    assert data.meta["frames"][0]["cameras"][0]["size"] == [480, 270]
    size = len(render_html(data).encode("utf-8"))
    assert size < 15e6, size


def test_given_features_are_checked():
    frames = make_frames(("s",), frames_per_sequence=2, num_points=50, image_size=(24, 40))
    data = prepare_view(frames, features=[np.ones((50, 3)), np.zeros((50, 3))], segments=False)
    assert data.arrays["features"].shape == (100, 3) and data.meta["features"]["description"] == "given features (3-d)"
    with pytest.raises(ValueError, match="features must be \\(100, D\\)"):
        prepare_view(frames, features=np.ones((99, 3)), segments=False)
    with pytest.raises(ValueError, match="frame 1 must be \\(50, 3\\)"):
        prepare_view(frames, features=[np.ones((50, 3)), np.ones((50, 4))], segments=False)
