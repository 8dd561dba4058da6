"""Shared helpers for the model tests: small LiDAR-like scans."""

from __future__ import annotations

import numpy as np
import pytest


def lidar_scan(num_beams: int = 16, points_per_ring: int = 200, seed: int = 0) -> np.ndarray:
    """A spinning-LiDAR-like scan (N, 4) float32: rings on a ground plane at -1.7 m, a wall, a few boxes, intensity
    0-255. Coordinates cover negative values on every axis."""
    rng = np.random.default_rng(seed)
    elev = np.deg2rad(np.linspace(-25.0, 8.0, num_beams))
    az = np.linspace(-np.pi, np.pi, points_per_ring, endpoint=False)
    el, a = np.meshgrid(elev, az, indexing="ij")
    el, a = el.ravel(), a.ravel() + rng.normal(0, 1e-3, el.size)
    dirs = np.stack([np.cos(el) * np.cos(a), np.cos(el) * np.sin(a), np.sin(el)], 1)
    ground = np.where(dirs[:, 2] < -1e-3, -1.7 / np.minimum(dirs[:, 2], -1e-3), np.inf)
    wall = np.where(np.abs(dirs[:, 1]) > 1e-3, 12.0 / np.abs(dirs[:, 1]), np.inf)
    r = np.minimum(np.minimum(ground, wall), 40.0) * (1 + rng.normal(0, 0.01, el.size))
    xyz = dirs * r[:, None]
    boxes = rng.uniform([-10, -8, -1.7], [10, 8, 0.5], (150, 3))
    pts = np.concatenate([xyz, boxes], 0)
    intensity = rng.uniform(0, 255, (pts.shape[0], 1))
    return np.concatenate([pts, intensity], 1).astype(np.float32)


@pytest.fixture
def make_scan():
    """The :func:`lidar_scan` generator (a factory fixture, so test modules need not import conftest)."""
    return lidar_scan


@pytest.fixture
def scan() -> np.ndarray:
    return lidar_scan()
