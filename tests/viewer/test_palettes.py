"""Class palettes against their sources (nuscenes-devkit's colormap value by value; semantic-kitti.yaml spot checks),
id palettes, colour ramps."""

from __future__ import annotations

import numpy as np
import pytest

from largead.data.labels import NUSCENES_CLASSES, SEMANTICKITTI_CLASSES
from largead.data.synthetic import SYNTHETIC_CLASSES
from largead.viewer import palettes


def test_nuscenes_palette_is_the_devkits():
    color_map = pytest.importorskip("nuscenes.utils.color_map", reason="nuscenes-devkit is in largead[test]")
    devkit = color_map.get_colormap()
    assert palettes.NUSCENES_COLORMAP_RGB == {k: tuple(v) for k, v in devkit.items()}
    pal = palettes.nuscenes_palette()
    assert pal.shape == (16, 3)
    assert tuple(pal[NUSCENES_CLASSES.index("car")]) == devkit["vehicle.car"] == (255, 158, 0)
    assert tuple(pal[NUSCENES_CLASSES.index("driveable_surface")]) == devkit["flat.driveable_surface"]
    assert tuple(pal[NUSCENES_CLASSES.index("bus")]) == devkit["vehicle.bus.rigid"]


def test_semantickitti_palette_converts_bgr_to_rgb():
    pal = palettes.semantickitti_palette()
    assert pal.shape == (19, 3) and pal.dtype == np.uint8
    # semantic-kitti.yaml color_map (BGR): car 10 [245, 150, 100], road 40 [255, 0, 255], vegetation 70 [0, 175, 0],
    # traffic-sign 81 [0, 0, 255] (red), person 30 [30, 30, 255]
    assert tuple(pal[SEMANTICKITTI_CLASSES.index("car")]) == (100, 150, 245)
    assert tuple(pal[SEMANTICKITTI_CLASSES.index("road")]) == (255, 0, 255)
    assert tuple(pal[SEMANTICKITTI_CLASSES.index("vegetation")]) == (0, 175, 0)
    assert tuple(pal[SEMANTICKITTI_CLASSES.index("traffic-sign")]) == (255, 0, 0)
    assert tuple(pal[SEMANTICKITTI_CLASSES.index("person")]) == (255, 30, 30)
    assert len({tuple(c) for c in pal}) == 19


def test_class_palette_choice():
    pal, src = palettes.class_palette(SEMANTICKITTI_CLASSES)
    assert "semantic-kitti" in src and np.array_equal(pal, palettes.semantickitti_palette())
    pal, src = palettes.class_palette(NUSCENES_CLASSES)
    assert "nuscenes" in src.lower() and np.array_equal(pal, palettes.nuscenes_palette())
    pal, src = palettes.class_palette(SYNTHETIC_CLASSES)
    assert tuple(pal[SYNTHETIC_CLASSES.index("car")]) == (100, 150, 245) and len({tuple(c) for c in pal}) == 12
    from largead.viz import label_colors

    pal, src = palettes.class_palette(("a", "b", "c"))
    assert "fixed palette" in src and np.array_equal(pal, np.rint(label_colors(3) * 255).astype(np.uint8))
    own = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    pal, src = palettes.class_palette(("a", "b", "c"), own)
    assert src == "the dataset reader's class_colors" and pal.tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        palettes.class_palette(("a", "b", "c"), own[:2])


def test_id_palette_is_deterministic_and_distinct_for_neighbours():
    a = palettes.id_palette(500)
    assert a.shape == (500, 3) and np.array_equal(a, palettes.id_palette(500))
    diff = np.abs(a[1:].astype(int) - a[:-1].astype(int)).sum(1)
    assert diff.min() > 60  # consecutive ids (often neighbouring superpixels) never look alike
    assert len({tuple(c) for c in a}) > 450


def test_ramps_are_matplotlibs():
    from matplotlib import colormaps

    r = palettes.ramp("viridis")
    assert r.shape == (256, 3)
    np.testing.assert_array_equal(r[-1], np.rint(np.array(colormaps["viridis"](1.0)[:3]) * 255))
    np.testing.assert_array_equal(r[0], np.rint(np.array(colormaps["viridis"](0.0)[:3]) * 255))
    with pytest.raises(KeyError):
        palettes.ramp("no-such-map")


def test_ignore_colour_is_the_static_figures():
    from largead.viz import IGNORE_COLOR

    assert palettes.IGNORE_RGB == tuple(round(255 * c) for c in IGNORE_COLOR)
