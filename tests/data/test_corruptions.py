"""Robo3D-style corruptions: each family's defining property, determinism, label bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from largead.data import IGNORE_INDEX, Frame
from largead.data.corruptions import (
    CROSSTALK_FRACTION,
    FOG_BETA,
    INCOMPLETE_ECHO_DROP,
    MOTION_BLUR_SIGMA,
    WET_WATER_HEIGHT_MM,
    corrupt,
    estimate_beams,
)
from largead.data.labels_extra import CORRUPTIONS, SEVERITIES, WAYMO_CLASSES

B = 32
VEHICLE = [WAYMO_CLASSES.index(c) for c in ("car", "truck", "bus", "other_vehicle")]
GROUND = [WAYMO_CLASSES.index(c) for c in ("curb", "road", "lane_marker", "other_ground", "walkable", "sidewalk")]


def _scan(seed: int = 0, with_ring: bool = True) -> Frame:
    """A 32-beam scan, beams uniform in elevation from -30 to 10 degrees, 240 azimuth steps, ranges 2-60 m."""
    rng = np.random.default_rng(seed)
    ring, col = np.meshgrid(np.arange(B), np.arange(240), indexing="ij")
    ring, col = ring.ravel(), col.ravel()
    elev = np.radians(-30 + 40 * (ring + 0.5) / B)
    az = 2 * np.pi * col / 240
    r = rng.uniform(2, 60, len(ring))
    pts = np.stack([r * np.cos(elev) * np.cos(az), r * np.cos(elev) * np.sin(az), r * np.sin(elev),
                    rng.uniform(0, 1, len(ring))], axis=1).astype(np.float32)
    labels = rng.integers(-1, len(WAYMO_CLASSES), len(ring))
    extra = {"ring": ring} if with_ring else {}
    extra["laser"] = np.ones(len(ring), np.int8)
    return Frame(points=pts, labels=labels, instances=np.arange(len(ring)), dataset="waymo", token="t", extra=extra)


def _rows(a: np.ndarray) -> set:
    return {tuple(x) for x in np.asarray(a).tolist()}


def test_every_family_and_severity_runs_deterministically():
    f = _scan()
    for c in CORRUPTIONS:
        for s in SEVERITIES:
            a, b = corrupt(f, c, s, seed=3), corrupt(f, c, s, seed=3)
            np.testing.assert_array_equal(a.points, b.points)
            np.testing.assert_array_equal(a.labels, b.labels)
            assert len(a.labels) == len(a.points) == len(a.instances) == len(a.extra["laser"])
            assert a.extra["corruption"] == c and a.extra["severity"] == s
            a.validate(f"{c}/{s}")
        if c != "cross_sensor":  # cross_sensor is deterministic by design
            assert not np.array_equal(corrupt(f, c, "heavy", seed=1).points, corrupt(f, c, "heavy", seed=2).points)
    assert f.points.shape == (B * 240, 4)  # input untouched


def test_estimate_beams_recovers_uniform_rings():
    f = _scan()
    np.testing.assert_array_equal(estimate_beams(f.points, B), f.extra["ring"])


@pytest.mark.parametrize("sev,k", [("light", 8), ("moderate", 16), ("heavy", 24)])
@pytest.mark.parametrize("with_ring", [True, False])
def test_beam_missing_removes_whole_beams(sev, k, with_ring):
    f = _scan(with_ring=with_ring)
    out = corrupt(f, "beam_missing", sev, seed=0, num_beams=B)
    ring = _scan().extra["ring"]  # the true beams (the reader estimates them when the frame has none)
    kept_ids = out.instances  # instance = original index
    kept = np.zeros(len(ring), bool)
    kept[kept_ids] = True
    per_beam = np.bincount(ring, weights=kept, minlength=B)
    assert set(np.unique(per_beam)) <= {0.0, 240.0}  # whole beams only
    removed = np.nonzero(per_beam == 0)[0]
    assert len(removed) == k and removed.min() >= 2 and removed.max() <= 29
    np.testing.assert_array_equal(out.points, f.points[kept_ids])
    np.testing.assert_array_equal(out.labels, f.labels[kept_ids])


def test_fog_drops_far_returns_and_adds_near_scatter():
    f = _scan()
    out = corrupt(f, "fog", "moderate", seed=0)
    r = np.linalg.norm(f.points[:, :3], axis=1)
    kept = out.instances[: len(out.points) - out.extra["added_points"]]  # instance = original index
    assert len(kept) < len(f.points)
    near, far = r < 10, r > 40
    kept_mask = np.zeros(len(r), bool)
    kept_mask[kept] = True
    assert kept_mask[far].mean() < 0.05 and kept_mask[near].mean() > 0.3
    beta = FOG_BETA[1]
    np.testing.assert_allclose(out.points[: len(kept), 3], f.points[kept, 3] * np.exp(-2 * beta * r[kept]), rtol=1e-5)
    added = out.points[len(kept):]
    assert len(added) > 100 and (out.labels[len(kept):] == IGNORE_INDEX).all() and (out.instances[len(kept):] == 0).all()
    assert np.median(np.linalg.norm(added[:, :3], axis=1)) < np.median(r)
    assert (out.extra["laser"][len(kept):] == -1).all()
    np.testing.assert_array_equal(out.labels[: len(kept)], f.labels[kept])


def test_snow_adds_scattered_points():
    f = _scan()
    light, heavy = corrupt(f, "snow", "light"), corrupt(f, "snow", "heavy")
    n = len(f.points)
    assert heavy.extra["added_points"] > light.extra["added_points"] >= round(0.01 * 0.5 * n)
    added = heavy.points[len(heavy.points) - heavy.extra["added_points"]:]
    assert (heavy.labels[-len(added):] == IGNORE_INDEX).all()
    rho = np.linalg.norm(added[:, :2], axis=1)
    assert rho.max() <= 60 and np.std(np.arctan2(added[:, 1], added[:, 0])) > 1.0  # spread around the sensor


def test_cross_sensor_lowers_beams_and_halves_points():
    f = _scan()
    ring = f.extra["ring"]
    for sev, kept_beams in (("light", 24), ("moderate", 16), ("heavy", 8)):
        out = corrupt(f, "cross_sensor", sev, num_beams=B)
        beams_left = np.unique(out.extra["ring"])
        assert len(beams_left) == kept_beams
        expected = np.nonzero(np.isin(ring, beams_left))[0][::2]
        np.testing.assert_array_equal(out.instances, expected)
        assert len(out.points) == kept_beams * 240 // 2


@pytest.mark.parametrize("s", range(3))
def test_incomplete_echo_drops_only_vehicle_points_at_rate(s):
    f = _scan()
    out = corrupt(f, "incomplete_echo", s, seed=0)
    vehicle = np.isin(f.labels, VEHICLE)
    kept = np.zeros(len(f.labels), bool)
    kept[out.instances] = True
    assert kept[~vehicle].all()
    assert (~kept[vehicle]).sum() == round(INCOMPLETE_ECHO_DROP[s] * vehicle.sum())
    np.testing.assert_array_equal(out.points, f.points[out.instances])


def test_motion_blur_spread():
    f = _scan()
    sigma = MOTION_BLUR_SIGMA[2]
    out = corrupt(f, "motion_blur", "heavy", seed=5)
    d = out.points[:, :3].astype(np.float64) - f.points[:, :3]
    shift = d.mean(axis=0)
    assert (np.abs(shift) <= 3 * sigma + 1e-6).all()
    np.testing.assert_allclose((d - shift).std(axis=0), [0.1 * sigma, 0.1 * sigma, 0.05 * sigma], rtol=0.08)
    np.testing.assert_array_equal(out.labels, f.labels)


def test_crosstalk_perturbs_stated_fraction():
    f = _scan()
    for s in range(3):
        out = corrupt(f, "crosstalk", s, seed=s)
        changed = np.any(out.points != f.points, axis=1)
        assert changed.sum() == round(CROSSTALK_FRACTION["default"][s] * len(f.points))
        assert (out.labels[changed] == IGNORE_INDEX).all()
        np.testing.assert_array_equal(out.labels[~changed], f.labels[~changed])
        assert (out.points[:, 3] >= 0).all()


def test_wet_ground_changes_only_ground_points():
    f = _scan()
    out = corrupt(f, "wet_ground", "heavy", seed=0)
    ground = np.isin(f.labels, GROUND)
    kept = out.instances
    # non-ground points: all kept, bit-identical
    ng = ~ground[kept]
    assert ng.sum() == (~ground).sum()
    np.testing.assert_array_equal(out.points[ng], f.points[kept[ng]])
    # ground points: fewer, same geometry, intensity scaled by exp(-h)
    g = ground[kept]
    assert 0 < g.sum() < ground.sum()
    np.testing.assert_array_equal(out.points[g, :3], f.points[kept[g], :3])
    np.testing.assert_allclose(out.points[g, 3], f.points[kept[g], 3] * np.exp(-WET_WATER_HEIGHT_MM[2]), rtol=1e-6)


def test_class_based_corruptions_need_labels_and_known_classes():
    f = _scan()
    f.labels = None
    with pytest.raises(ValueError, match="needs frame.labels"):
        corrupt(f, "incomplete_echo", "light")
    g = _scan()
    g.dataset = "unregistered"
    with pytest.raises(ValueError, match="vehicle_classes"):
        corrupt(g, "incomplete_echo", "light")
    out = corrupt(g, "incomplete_echo", "heavy", vehicle_classes=[0])
    assert (np.isin(g.labels[np.setdiff1d(np.arange(len(g.labels)), out.instances)], [0])).all()
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(g, "rain", "light")
    with pytest.raises(ValueError, match="severity"):
        corrupt(g, "fog", "extreme")
