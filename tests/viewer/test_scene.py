"""What a view holds: arrays and modes for each kind of input, projections that agree with the library's (and with a
hand-written pinhole model), superpoint overlays, legends, and the size options."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from conftest import make_frames

from largead.data.geometry import project_points
from largead.viewer import ViewOptions, build_view, prepare
from largead.viewer.palettes import semantickitti_palette


@pytest.fixture(scope="module")
def nuscenes_like():
    """Two frames of a moving car with six cameras (48 x 80) and 16-class labels."""
    frames = make_frames(("scene",), frames_per_sequence=2, num_points=1500, image_size=(48, 80))
    for f in frames:
        f.dataset = "fixture"
    return frames


@pytest.fixture(scope="module")
def sk_view(sk_scan, encoder_dir):
    src = prepare.source_from_scan(sk_scan, frames=3)
    model = prepare.load_model(encoder_dir)
    return src, build_view(src, model, superpixels="slic")


def test_arrays_and_modes_of_a_labelled_sequence_with_a_model(sk_view):
    src, view = sk_view
    n = sum(f.num_points for f in src.frames)
    a = view.arrays
    assert view.meta["num_points"] == n == 6000
    assert a["positions"].shape == (n, 3) and a["positions"].dtype == np.float32
    assert a["gt"].dtype == np.int16 and a["features"].dtype == np.int8 and a["features"].shape == (n, 16)
    assert a["pca"].shape == (n, 3) and a["superpoints"].dtype == np.int16 and a["segments"].shape == (n,)
    keys = [m["key"] for m in view.meta["modes"]]
    assert keys == ["height", "intensity", "gt", "pca", "similarity", "superpoints", "segments"]
    assert "pred" not in a  # an encoder gives features, not classes
    assert [f["offset"] for f in view.meta["frames"]] == [0, 2000, 4000]
    np.testing.assert_array_equal(a["gt"], np.concatenate([f.labels for f in src.frames]))
    np.testing.assert_array_equal(a["intensity"], np.concatenate([f.points[:, 3] for f in src.frames]))
    assert view.meta["initial"]["mode"] == "pca"


def test_positions_are_in_the_first_frames_lidar_frame(sk_view):
    src, view = sk_view
    pos = view.arrays["positions"].astype(np.float64)
    np.testing.assert_allclose(pos[:2000], src.frames[0].points[:, :3], atol=1e-5)
    f2 = src.frames[2]
    world = f2.points[:, :3].astype(np.float64) @ f2.pose[:3, :3].T + f2.pose[:3, 3]
    back = (world - src.frames[0].pose[:3, 3]) @ src.frames[0].pose[:3, :3]  # inverse of a rigid pose, by hand
    np.testing.assert_allclose(pos[4000:], back, atol=1e-4)


def test_ground_truth_legend_uses_semantickitti_colours(sk_view):
    src, view = sk_view
    gt = next(m for m in view.meta["modes"] if m["key"] == "gt")
    assert gt["names"][0] == "car" and len(gt["legend"]) == 20  # 19 classes + ignore
    assert np.array_equal(np.array(gt["palette"]), semantickitti_palette())
    labels = np.concatenate([f.labels for f in src.frames])
    counts = {e["name"]: e["count"] for e in gt["legend"]}
    assert counts["car"] == int((labels == 0).sum()) and counts["ignore"] == int((labels == -1).sum())
    assert "semantic-kitti.yaml" in gt["palette_source"]


def test_projections_agree_with_the_library_and_a_pinhole_model(nuscenes_like):
    view = build_view(prepare.Source(frames=nuscenes_like), segments=False)
    idx, uv = view.arrays["proj_index"], view.arrays["proj_uv"]
    for f, fm in zip(nuscenes_like, view.meta["frames"], strict=True):
        assert len(fm["cameras"]) == 6
        for cam, cm in zip(f.cameras, fm["cameras"], strict=True):
            a, b = cm["proj"]
            valid, ref = project_points(f.points, cam.lidar_to_camera, cam.intrinsics, cam.height, cam.width)
            local = idx[a:b].astype(np.int64) - fm["offset"]
            assert sorted(local.tolist()) == np.flatnonzero(valid).tolist()
            np.testing.assert_allclose(uv[a:b], ref[local], rtol=1e-6, atol=1e-4)
            # independently: pinhole projection K (R p + t) / z by hand
            p = f.points[local, :3].astype(np.float64)
            c = p @ cam.lidar_to_camera[:3, :3].T + cam.lidar_to_camera[:3, 3]
            assert (c[:, 2] > 1.0).all()
            np.testing.assert_allclose(uv[a:b, 0], cam.intrinsics[0, 0] * c[:, 0] / c[:, 2] + cam.intrinsics[0, 2],
                                       atol=1e-3)
            np.testing.assert_allclose(uv[a:b, 1], cam.intrinsics[1, 1] * c[:, 1] / c[:, 2] + cam.intrinsics[1, 2],
                                       atol=1e-3)
            assert (np.diff(c[:, 2]) <= 1e-9).all()  # far to near, so the page draws near points last
            assert cm["width"] == 80 and cm["height"] == 48 and cm["image"].startswith("data:image/jpeg;base64,")


def test_superpoints_and_their_overlays(sk_view):
    from PIL import Image

    src, view = sk_view
    sp = view.arrays["superpoints"]
    palette = view.arrays["sp_palette"]
    # the points of frame 0 carry the ids of prepare.superpoints over slic maps, frame 1's are offset past frame 0's
    from largead.superpixels import get_source

    slic = get_source("slic")
    ids0, offs0 = prepare.superpoints(src.frames[0], slic.segment_batch([c.image for c in src.frames[0].cameras]),
                                      ignore_zero=False)
    np.testing.assert_array_equal(sp[:2000], ids0)
    ids1, _ = prepare.superpoints(src.frames[1], slic.segment_batch([c.image for c in src.frames[1].cameras]), False)
    np.testing.assert_array_equal(sp[2000:4000], np.where(ids1 >= 0, ids1 + offs0[-1], -1))
    assert palette.shape[0] >= sp.max() + 1 and palette.dtype == np.uint8
    cam = view.meta["frames"][0]["cameras"][0]
    assert cam["overlay"] is not None
    png = Image.open(__import__("io").BytesIO(base64.b64decode(cam["overlay"].split(",", 1)[1])))
    assert png.size == tuple(cam["size"])
    mode = next(m for m in view.meta["modes"] if m["key"] == "superpoints")
    assert mode["kind"] == "ids" and mode["palette_array"] == "sp_palette"


def test_segmentation_model_adds_predictions(sk_scan, segmentation_dir):
    src = prepare.source_from_scan(sk_scan)
    model = prepare.load_model(segmentation_dir)
    key, note = prepare.choose_norm_key(model, src.dataset, None)
    view = build_view(src, model, norm_key=key, norm_note=note)
    pred = next(m for m in view.meta["modes"] if m["key"] == "pred")
    assert pred["names"][18] == "traffic-sign" and sum(e["count"] for e in pred["legend"]) == 2000
    assert view.arrays["pred"].min() >= 0 and view.arrays["features"].shape == (2000, 96)
    info = dict(view.meta["info"])
    assert "accuracy" in info and "decoder features" in info["features"]
    assert [f["label"] for f in view.meta["point_fields"]] == ["class", "predicted"]


def test_points_only_view_and_query(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-20, 20, (500, 3)), rng.uniform(0, 1, 500)].astype(np.float32)
    view = build_view(prepare.source_from_points(pts), query=3)
    assert [m["key"] for m in view.meta["modes"]] == ["height", "intensity"]
    assert set(view.arrays) == {"positions", "intensity"}
    assert view.meta["initial"] == {"mode": "height", "query": 3, "point_size": 2.0}
    assert view.meta["features"] is None and view.meta["frames"][0]["cameras"] == []
    with pytest.raises(IndexError, match="query point 500"):
        build_view(prepare.source_from_points(pts), query=500)


def test_size_options(nuscenes_like, encoder_dir):
    src = prepare.Source(frames=nuscenes_like[:1])
    model = prepare.load_model(encoder_dir)
    small = build_view(src, model, segments=False, options=ViewOptions(max_image_width=32, feature_dtype="int8"))
    big = build_view(src, model, segments=False, options=ViewOptions(max_image_width=None, feature_dtype="float32",
                                                                    image_format="png"))
    half = build_view(src, model, segments=False, options=ViewOptions(feature_dtype="float16"))
    assert small.meta["frames"][0]["cameras"][0]["size"] == [32, 19]
    assert big.meta["frames"][0]["cameras"][0]["size"] == [80, 48]
    large = prepare.Source(frames=make_frames(("s",), 1, num_points=200, image_size=(180, 320)))
    sizes = [build_view(large, segments=False, options=ViewOptions(max_image_width=w)).image_bytes()
             for w in (80, 160, None)]
    assert sizes[0] < sizes[1] < sizes[2]
    nbytes = [v.array_bytes()["features"] for v in (small, half, big)]
    assert nbytes == [1500 * 16, 1500 * 16 * 2, 1500 * 16 * 4]
    assert half.arrays["features"].dtype == np.uint16  # float16 bit patterns, decoded by the page
    np.testing.assert_array_equal(half.arrays["features"].view(np.float16).astype(np.float32),
                                  big.arrays["features"].astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="feature_dtype"):
        ViewOptions(feature_dtype="int4")
    with pytest.raises(ValueError, match="max_image_width"):
        ViewOptions(max_image_width=4)


def test_superpixels_need_cameras():
    pts = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="needs camera images"):
        build_view(prepare.source_from_points(pts), superpixels="slic")
