"""Calibration stress sweep: perturbation is per rig, and the sweep reports drops correctly."""

from __future__ import annotations

import numpy as np
import pytest

from largead.data.frame import CameraView, Frame
from largead.data.geometry import rotation_angle
from largead.data.registry import LidarDataset
from largead.evaluation.calibration import (
    PerturbedExtrinsics,
    calibration_stress,
    perturb_frame,
)


def _frame(seq: str) -> Frame:
    cam = CameraView(image=np.zeros((4, 4, 3), np.uint8), intrinsics=np.eye(3), lidar_to_camera=np.eye(4))
    return Frame(points=np.zeros((2, 4), np.float32), sequence=seq, cameras=[cam, cam])


def test_perturbation_size_and_consistency() -> None:
    a, b, c = perturb_frame(_frame("s0"), 0.1), perturb_frame(_frame("s0"), 0.1), perturb_frame(_frame("s1"), 0.1)
    t0 = a.cameras[0].lidar_to_camera
    # 10 % = 1 degree and 5 cm with geometry's default scale
    assert np.degrees(rotation_angle(t0[:3, :3])) == pytest.approx(1.0)
    assert np.linalg.norm(t0[:3, 3]) == pytest.approx(0.05)
    assert np.array_equal(t0, b.cameras[0].lidar_to_camera)  # same sequence -> same error
    assert not np.allclose(t0, a.cameras[1].lidar_to_camera)  # each camera its own error
    assert not np.allclose(t0, c.cameras[0].lidar_to_camera)  # another sequence, another error
    assert np.array_equal(perturb_frame(_frame("s0"), 0.0).cameras[0].lidar_to_camera, np.eye(4))


class _Tiny(LidarDataset):
    """Two frames, two cameras each."""

    name = "tiny"

    def __len__(self) -> int:
        return 2

    def frame(self, i: int) -> Frame:
        return _frame(f"s{i}")


def test_dataset_view() -> None:
    view = PerturbedExtrinsics(_Tiny(), 0.5, seed=3)
    assert len(view) == 2
    assert np.linalg.norm(view[1].cameras[0].lidar_to_camera[:3, 3]) == pytest.approx(0.25)


def test_sweep_reports_drop() -> None:
    calls = []

    def pretrain(fraction: float, seed: int) -> float:
        calls.append((fraction, seed))
        return fraction

    def probe(model: float, seed: int) -> float:
        return 0.5 - model * 0.2 + 0.01 * seed  # mIoU falls linearly with the misalignment

    out = calibration_stress(pretrain, probe, fractions=(0.0, 0.1, 0.5), seeds=(0, 1))
    assert calls == [(0.0, 0), (0.0, 1), (0.1, 0), (0.1, 1), (0.5, 0), (0.5, 1)]
    rows = {r["fraction"]: r for r in out["rows"]}
    assert rows[0.0]["drop"] == 0.0
    assert rows[0.5]["drop"] == pytest.approx(0.1)
    assert rows[0.1]["miou_mean"] == pytest.approx(0.485)
    assert rows[0.1]["miou_std"] == pytest.approx(np.std([0.48, 0.49], ddof=1))
    with pytest.raises(ValueError, match="0.0"):
        calibration_stress(pretrain, probe, fractions=(0.1,))
