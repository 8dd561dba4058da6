"""Data preparation of the viewer: scan files, frames of a SemanticKITTI tree, quantisation bounds, PCA colours,
superpoints, segments, legends, the choice of input normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_frames

from largead.data.frame import IGNORE_INDEX, CameraView, Frame
from largead.data.geometry import frame_pairs
from largead.data.readers.semantickitti import SemanticKITTIDataset
from largead.pretrain.temporal import SegmentParams, segment_pair
from largead.viewer import prepare


# ------------------------------------------------------------------------------------------------------ scans
def test_load_scan_formats(tmp_path):
    rng = np.random.default_rng(0)
    pts5 = rng.normal(size=(50, 5)).astype(np.float32)
    pts5.tofile(tmp_path / "a.pcd.bin")  # nuScenes: x, y, z, intensity, ring
    np.testing.assert_array_equal(prepare.load_scan(tmp_path / "a.pcd.bin"), pts5[:, :4])
    pts5[:40].reshape(-1).tofile(tmp_path / "b.bin")  # 200 float32 read as KITTI records of 4
    np.testing.assert_array_equal(prepare.load_scan(tmp_path / "b.bin"), pts5[:40].reshape(-1, 4))
    np.save(tmp_path / "c.npy", pts5.astype(np.float64))
    got = prepare.load_scan(tmp_path / "c.npy")
    assert got.dtype == np.float32 and got.shape == (50, 4)


@pytest.mark.parametrize("name, content, message", [
    ("x.bin", np.zeros(6, np.float32), "not a multiple"),
    ("x.npy", np.zeros((5, 3), np.float32), "(N, >= 4)"),
    ("x.npy", np.full((5, 4), np.nan, np.float32), "non-finite"),
    ("x.npy", np.zeros((0, 4), np.float32), "no points"),
    ("x.ply", np.zeros(4, np.float32), "unsupported scan format"),
])
def test_load_scan_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, content)
    else:
        content.tofile(path)
    with pytest.raises(ValueError, match="x\\.") as err:
        prepare.load_scan(path)
    assert message in str(err.value) and str(path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        prepare.load_scan(tmp_path / "missing.bin")


def test_semantickitti_layout_scan_is_opened_through_the_reader(sk_tree, sk_scan):
    root, frames = sk_tree
    src = prepare.source_from_scan(sk_scan, frames=3)
    ds = SemanticKITTIDataset(root, split="val", cameras=True)
    assert src.dataset == "semantickitti" and src.class_names == ds.class_names
    assert [f.token for f in src.frames] == ["08/000000", "08/000001", "08/000002"]
    for got, expected in zip(src.frames, (ds[0], ds[1], ds[2]), strict=True):
        np.testing.assert_array_equal(got.points, expected.points)
        np.testing.assert_array_equal(got.labels, expected.labels)
        np.testing.assert_allclose(got.pose, expected.pose)
        assert [c.name for c in got.cameras] == ["image_2"]
    # a bare .bin elsewhere is points only, and cannot give a sequence
    bare = sk_scan.parent.parent.parent.parent.parent / "bare.bin"
    frames[0].points.tofile(bare)
    src = prepare.source_from_scan(bare)
    assert src.dataset is None and src.frames[0].labels is None and not src.frames[0].cameras
    with pytest.raises(ValueError, match="needs a sequence"):
        prepare.source_from_scan(bare, frames=2)


def test_sequence_indices_stop_at_the_end_of_the_sequence(sk_tree):
    ds = SemanticKITTIDataset(sk_tree[0], split="val")
    assert prepare.sequence_indices(ds, 0, 3) == ([0, 1, 2], [])
    idx, notes = prepare.sequence_indices(ds, 1, 5)
    assert idx == [1, 2] and "2 of the 5" in notes[0]
    with pytest.raises(IndexError, match="out of range"):
        prepare.sequence_indices(ds, 7, 1)


def test_view_transforms_put_frames_in_the_first_lidar_frame():
    frames = make_frames(("s",), frames_per_sequence=3, num_points=10)
    ts = prepare.view_transforms(frames)
    np.testing.assert_allclose(ts[0], np.eye(4), atol=1e-12)
    # a point of frame 2 in global coordinates, expressed in frame 0's LiDAR frame, by hand
    p = np.append(frames[2].points[0, :3].astype(np.float64), 1.0)
    world = frames[2].pose @ p
    expected = np.linalg.solve(frames[0].pose, world)
    np.testing.assert_allclose(ts[2] @ p, expected, atol=1e-9)


# ------------------------------------------------------------------------------------------------ quantisation
def test_int8_quantisation_error_bounds():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(4000, 64)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)  # like an L2-normalised encoder output
    f[7] = 0.0  # a zero row stays zero
    f[8] *= 1e3  # scale does not matter
    q, scale = prepare.quantize_features(f, "int8")
    assert q.dtype == np.int8 and q.shape == f.shape and scale.shape == (4000,)
    assert np.abs(q).max() == 127 and not q[7].any()
    rec = prepare.dequantize_features(q, scale)
    assert (np.abs(rec - f) <= scale[:, None] / 2 * (1 + 1e-5) + 1e-12).all()  # half a step per component
    # cosine error: each vector's direction moves by at most arcsin(||e|| / ||f||), ||e|| <= sqrt(D) step / 2
    norms = np.linalg.norm(f, axis=1)
    ok = norms > 0
    r = np.where(ok, np.sqrt(64) * scale / 2 / np.where(ok, norms, 1), 0)
    for query in (0, 8, 123):
        exact = prepare.cosine_to(f, query)
        approx = prepare.cosine_to(q, query)  # what the page computes: the scale is not stored
        bound = np.arcsin(np.minimum(r, 1)) + np.arcsin(min(r[query], 1))
        assert (np.abs(approx - exact)[ok] <= bound[ok] + 1e-6).all()
        assert np.abs(approx - exact)[ok].max() < 0.03  # in practice: well under the bound
        assert approx[query] == pytest.approx(1.0, abs=1e-12)


def test_float16_and_float32_storage():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(100, 8)).astype(np.float32)
    h, scale = prepare.quantize_features(f, "float16")
    assert h.dtype == np.float16 and scale is None
    assert (np.abs(h.astype(np.float32) - f) <= np.abs(f) * 2.0 ** -11 + 2.0 ** -24).all()
    full, _ = prepare.quantize_features(f, "float32")
    np.testing.assert_array_equal(full, f)
    with pytest.raises(ValueError, match="float16's range"):
        prepare.quantize_features(f * 1e5, "float16")
    with pytest.raises(ValueError, match="feature_dtype"):
        prepare.quantize_features(f, "int4")
    with pytest.raises(ValueError, match="non-finite"):
        prepare.quantize_features(np.full((2, 2), np.inf), "int8")


def test_pca_colours_follow_the_principal_components():
    """Oracle: scikit-learn's PCA. Each colour channel must order the points as its component does (up to sign,
    and apart from the clipped 2 % tails)."""
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    basis = rng.normal(size=(3, 32))
    coeff = rng.normal(size=(3000, 3)) * np.array([6.0, 3.0, 1.5])  # three clearly separated variances
    f = coeff @ basis + 0.05 * rng.normal(size=(3000, 32))
    rgb = prepare.pca_rgb(f)
    assert rgb.dtype == np.uint8 and rgb.shape == (3000, 3)
    comps = PCA(n_components=3).fit_transform(f)
    for c in range(3):
        inner = (comps[:, c] > np.percentile(comps[:, c], 3)) & (comps[:, c] < np.percentile(comps[:, c], 97))
        rho = spearmanr(rgb[inner, c], comps[inner, c]).statistic
        assert abs(rho) > 0.99, (c, rho)
    assert rgb.min() == 0 and rgb.max() == 255


def test_robust_range():
    assert prepare.robust_range(np.arange(101.0)) == pytest.approx((1.0, 99.0))
    lo, hi = prepare.robust_range(np.full(10, 3.0))
    assert lo < 3.0 < hi


# ---------------------------------------------------------------------------------------------- superpoints
def _camera_frame():
    """Points on a wall 10 m in front of a 40 x 60 camera, one point per known pixel, plus one behind it."""
    k = np.array([[30.0, 0, 29.5], [0, 30.0, 19.5], [0, 0, 1]])
    l2c = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)  # x fwd -> z
    cols = np.array([5.0, 15.0, 25.0, 35.0, 45.0, 55.0])
    rows = np.array([10.0, 10.0, 30.0, 30.0, 20.0, 20.0])
    z = 10.0
    cam_x, cam_y = (cols - 29.5) * z / 30.0, (rows - 19.5) * z / 30.0
    pts = np.stack([np.full(6, z), -cam_x, -cam_y, np.zeros(6)], 1)
    pts = np.vstack([pts, [-10.0, 0, 0, 0]]).astype(np.float32)  # behind the camera: never paired
    cams = [CameraView(image=np.zeros((40, 60, 3), np.uint8), intrinsics=k, lidar_to_camera=l2c, name=n)
            for n in ("a", "b")]
    return Frame(points=pts, cameras=cams), rows.astype(int), cols.astype(int)


def test_superpoints_take_the_id_of_the_pixel_they_project_to():
    frame, rows, cols = _camera_frame()
    map_a = np.tile(np.arange(60) // 10, (40, 1)).astype(np.int32)  # id = column // 10 (0..5)
    map_b = np.full((40, 60), 3, np.int32)
    ids, offsets = prepare.superpoints(frame, [map_a, map_b], ignore_zero=False)
    np.testing.assert_array_equal(offsets, [0, 6, 10])
    # every point is seen by both cameras: the first camera's superpixel wins
    np.testing.assert_array_equal(ids[:6], cols // 10)
    assert ids[6] == -1
    # id 0 = "no mask": such pairs are dropped, so point 0 falls back to camera b's superpixel (3 + offset 6)
    ids0, _ = prepare.superpoints(frame, [map_a, map_b], ignore_zero=True)
    assert ids0[0] == 9 and (ids0[1:6] == cols[1:] // 10).all()
    pairs = frame_pairs(frame)
    assert set(pairs.point.tolist()) == set(range(6))


def test_sequence_segments_of_two_frames_equal_segment_pair():
    rng = np.random.default_rng(3)

    def scene(shift):
        ground = np.c_[rng.uniform(-20, 20, (1500, 2)), rng.normal(-1.7, 0.02, 1500)]
        boxes = [np.c_[rng.normal(cx, 0.4, (200, 2)), rng.uniform(-1, 1, 200)] for cx in (5.0, -8.0, 12.0)]
        pts = np.vstack([ground, *boxes]) - [shift, 0, 0]
        return np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32)

    pose_b = np.eye(4)
    pose_b[0, 3] = 1.0
    frames = [Frame(points=scene(0.0)), Frame(points=scene(1.0), pose=pose_b)]
    params = SegmentParams(min_cluster_size=20)
    got = prepare.sequence_segments(frames, params)
    ref = segment_pair(frames[0].points, frames[0].pose, frames[1].points, frames[1].pose, params)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)
    assert (got[0][:1500] == -1).mean() > 0.95  # the ground is removed
    assert len(np.unique(got[0][got[0] >= 0])) >= 3


def test_compact_ids():
    ids, k = prepare.compact_ids(np.array([7, -1, 3, 7, 100]))
    np.testing.assert_array_equal(ids, [1, -1, 0, 1, 2])
    assert k == 3 and ids.dtype == np.int32


# -------------------------------------------------------------------------------------------------- legends
def test_legend_counts_names_and_ignore():
    names = ("car", "road", "pole")
    palette = np.array([[255, 0, 0], [0, 255, 0], [1, 2, 3]], np.uint8)
    labels = np.array([0, 0, 1, IGNORE_INDEX, 7])
    out = prepare.legend(labels, names, palette)
    assert [e["name"] for e in out] == ["car", "road", "pole", "ignore"]
    assert [e["count"] for e in out] == [2, 1, 0, 2]  # id 7 is outside the classes: ignored
    assert out[0]["color"] == "#ff0000" and out[2]["color"] == "#010203" and out[3]["id"] == -1
    assert prepare.legend(np.array([0, 1]), names, palette)[-1]["name"] == "pole"  # no ignore entry when none


# -------------------------------------------------------------------------------------------------- models
def test_load_model_kinds(encoder_dir, segmentation_dir):
    enc = prepare.load_model(encoder_dir)
    assert enc.segmentation is None and "16-d" in enc.feature_description
    seg = prepare.load_model(segmentation_dir)
    assert seg.segmentation is not None and len(seg.class_names) == 19 and seg.class_names[0] == "car"
    assert seg.trained_on == "semantickitti" and seg.norm_key == "semantickitti"
    assert "decoder features (96-d" in seg.feature_description


def test_run_model_predictions_match_the_segmentation_model(segmentation_dir, sk_tree):
    from largead.models.heads import SegmentationModel

    model = prepare.load_model(segmentation_dir)
    frames = sk_tree[1][:2]
    feats, preds = prepare.run_model(model, frames, None)
    reference = SegmentationModel.from_pretrained(segmentation_dir).eval()
    for f, feat, pred in zip(frames, feats, preds, strict=True):
        batch = reference.encoder.voxelize([torch.from_numpy(f.points)])
        with torch.no_grad():
            logits = reference.point_logits(batch)
        np.testing.assert_array_equal(pred, logits.argmax(1).numpy())
        assert feat.shape == (f.num_points, 96)
        # the classifier applied to the features gives the logits: they are its input
        head = reference.head
        np.testing.assert_allclose(feat @ head.kernel.detach().numpy() + head.bias.detach().numpy(), logits.numpy(),
                                   rtol=1e-4, atol=1e-4)


def test_choose_norm_key():
    from largead import LargeADConfig, LargeADEncoder

    enc = LargeADEncoder(LargeADConfig(backbone="minkunet14", input_norm={"nuscenes": (20.0, 10.0),
                                                                        "semantickitti": (0.3, 0.1)}))
    m = prepare.LoadedModel(name="m", encoder=enc)
    assert prepare.choose_norm_key(m, "semantickitti", None)[0] == "semantickitti"
    key, why = prepare.choose_norm_key(m, None, None)
    assert key is None and "none was chosen" in why
    assert prepare.choose_norm_key(m, None, "nuscenes")[0] == "nuscenes"
    with pytest.raises(KeyError, match="waymo"):
        prepare.choose_norm_key(m, None, "waymo")
    tuned = prepare.LoadedModel(name="t", encoder=enc, norm_key="nuscenes", trained_on="nuscenes")
    assert prepare.choose_norm_key(tuned, None, None)[0] == "nuscenes"
    assert prepare.choose_norm_key(tuned, "semantickitti", None)[0] == "semantickitti"
    plain = prepare.LoadedModel(name="p", encoder=LargeADEncoder(LargeADConfig(backbone="minkunet14")))
    assert prepare.choose_norm_key(plain, "semantickitti", None) == (None, "raw intensity (the model stores no "
                                                                          "input normalisation)")


def test_encode_image_shrinks_and_keeps_aspect():
    img = np.zeros((90, 160, 3), np.uint8)
    img[:, 80:] = 255
    url, size = prepare.encode_image(img, 64, "png")
    assert url.startswith("data:image/png;base64,") and size == (64, 36)
    url, size = prepare.encode_image(img, 640, "jpeg", 90)
    assert url.startswith("data:image/jpeg;base64,") and size == (160, 90)  # never enlarged
    with pytest.raises(ValueError, match="image_format"):
        prepare.encode_image(img, 64, "gif")
