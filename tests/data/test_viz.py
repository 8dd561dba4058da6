from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from fixtures import make_frames, make_semantickitti_fixture
from PIL import Image

matplotlib.use("Agg")

from largead.data.frame import IGNORE_INDEX  # noqa: E402
from largead.data.geometry import project_points  # noqa: E402
from largead.viz import (  # noqa: E402
    IGNORE_COLOR,
    colorize_labels,
    colorize_values,
    feature_colors,
    label_colors,
    render_frame,
    save_figure,
)

REPO = Path(__file__).resolve().parents[2]


def test_label_colours_distinct_and_ignore_grey():
    cols = label_colors(16)
    assert cols.shape == (16, 3) and len({tuple(c) for c in cols}) == 16
    out = colorize_labels(np.array([0, 3, IGNORE_INDEX, 99]), 16)
    np.testing.assert_allclose(out[0], cols[0])
    np.testing.assert_allclose(out[1], cols[3])
    np.testing.assert_allclose(out[2], IGNORE_COLOR)
    np.testing.assert_allclose(out[3], IGNORE_COLOR)
    assert label_colors(30).shape == (30, 3)


def test_value_and_feature_colours():
    v = colorize_values(np.array([0.0, 5.0, 10.0]), vmin=0, vmax=10)
    assert v.shape == (3, 3) and not np.allclose(v[0], v[2])
    f = feature_colors(np.random.default_rng(0).normal(size=(500, 8)))
    assert f.shape == (500, 3) and f.min() >= 0 and f.max() <= 1


def test_render_frame_draws_every_projected_point(tmp_path):
    frame = make_frames(("scene-0061",), 1, 2000)[0]
    fig = render_frame(frame, class_names=[f"class{i}" for i in range(16)])
    axes = fig.get_axes()
    assert len(axes) == 1 + 6 + 1  # BEV, six cameras, colour bar
    # nuScenes grid order: the front-left camera is drawn first
    assert axes[1].get_title().startswith("CAM_FRONT_LEFT")
    cam = next(c for c in frame.cameras if c.name == "CAM_FRONT_LEFT")
    valid, uv = project_points(frame.points, cam.lidar_to_camera, cam.intrinsics, cam.height, cam.width)
    drawn = axes[1].collections[0].get_offsets()
    assert len(drawn) == valid.sum() > 0
    np.testing.assert_allclose(np.sort(drawn[:, 0]), np.sort(uv[valid, 0]))
    assert len(axes[0].collections[0].get_offsets()) == frame.num_points  # BEV shows all points
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert "ignore" in legend and "class0" in legend
    out = save_figure(fig, tmp_path / "f.png", dpi=50)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_render_unlabelled_frame_without_cameras():
    frame = make_frames(("a",), 1, 100, camera_yaws_deg=(), camera_names=())[0]
    frame.labels = None
    fig = render_frame(frame)
    assert len(fig.get_axes()) == 1
    assert "intensity" in fig.get_axes()[0].get_title()


def test_script_renders_semantickitti(tmp_path, monkeypatch):
    make_semantickitti_fixture(tmp_path / "kitti", sequences=("08",), frames_per_sequence=1, num_points=500)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import visualize_frame

    out = tmp_path / "frame.png"
    visualize_frame.main(["--dataset", "semantickitti", "--root", str(tmp_path / "kitti"), "--split", "val",
                          "--cameras", "--out", str(out), "--dpi", "40"])
    assert out.is_file() and out.stat().st_size > 1000
    sys.modules.pop("visualize_frame", None)
    with pytest.raises(SystemExit):
        visualize_frame.parse_args([])  # --dataset is required


def test_render_with_feature_colours():
    frame = make_frames(("a",), 1, 300, camera_yaws_deg=(0.0,), camera_names=("cam",))[0]
    cols = feature_colors(np.random.default_rng(1).normal(size=(300, 16)))
    fig = render_frame(frame, point_colors=cols, bev_title="features (PCA)")
    bev = fig.get_axes()[0]
    assert bev.get_title() == "features (PCA)"
    drawn = bev.collections[0].get_facecolors()[:, :3]
    np.testing.assert_allclose(np.sort(drawn, axis=0), np.sort(cols, axis=0), atol=1e-6)
    with pytest.raises(ValueError, match=r"point_colors must be \(300, 3\)"):
        render_frame(frame, point_colors=cols[:10])


def test_similarity_to_query_is_cosine():
    from largead.viz import similarity_to_query

    f = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    np.testing.assert_allclose(similarity_to_query(f, 0), [1.0, 0.0, np.sqrt(0.5), -1.0], atol=1e-12)


def test_feature_and_similarity_pngs(tmp_path):
    from largead.viz import save_feature_bev, save_similarity_figure

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-20, 20, (500, 2)), rng.uniform(-2, 1, (500, 1)), rng.uniform(0, 1, (500, 1))], 1)
    feats = rng.normal(size=(500, 8))
    a = save_feature_bev(pts, feats, tmp_path / "bev.png")
    b = save_similarity_figure(pts, [("random", feats), ("xyz", pts[:, :3])], query=7, path=tmp_path / "sim.png",
                               labels=rng.integers(-1, 3, 500), class_names=("a", "b", "c"))
    for p in (a, b):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_find_query_point_picks_the_largest_object_centre() -> None:
    from largead.viz import find_query_point

    # class 2 has two objects: instance 7 (3 points) and instance 9 (5 points, median x = 12.5 at index 6).
    labels = np.array([0, 2, 2, 2, 2, 2, 2, 2, 2, 1])
    instances = np.array([0, 7, 7, 7, 9, 9, 9, 9, 9, 0])
    points = np.zeros((10, 4), np.float32)
    points[:, 0] = [0, 1, 2, 3, 20, 10, 12.5, 13, 11, 5]
    points[:, 1] = [0, 0, 0, 0, 0, 0, 0.1, 0, 0, 0]
    assert find_query_point(labels, instances, points, class_id=2, min_points=2) == 6
    assert find_query_point(labels, instances, points, class_id=2, min_points=6) is None  # no object that big
    assert find_query_point(labels, instances, points, class_id=3) is None  # class absent
