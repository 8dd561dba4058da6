"""Calibration stress test: how much does a camera-LiDAR miscalibration during pretraining cost downstream?

The LargeAD paper (Table 10) perturbs the camera-LiDAR extrinsics used to pair points with pixels during
pretraining and reports the linear-probe mIoU drop (about 1 % at 10 % misalignment). Here the perturbation is
:func:`largead.data.geometry.perturb_extrinsics` (``fraction`` scales a rotation about a random axis and a shift in a
random direction; see its docstring for the scale, which is this project's choice since the paper does not define
one). The error is a property of the rig: it is drawn once per (sequence, camera) and applied to every frame of that
sequence, so the pretraining pairs are consistently wrong as with a real miscalibrated sensor.

:func:`calibration_stress` runs the sweep given two callables, so the pipeline (which pretraining, which probe,
which budget) is the caller's and the tests can use tiny stand-ins.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from largead.data.frame import Frame
from largead.data.geometry import perturb_extrinsics
from largead.data.registry import LidarDataset

__all__ = ["DEFAULT_FRACTIONS", "PerturbedExtrinsics", "calibration_stress", "perturb_frame"]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def perturb_frame(frame: Frame, fraction: float, seed: int = 0) -> Frame:
    """A copy of ``frame`` whose cameras' ``lidar_to_camera`` are miscalibrated by ``fraction``.

    The error of camera ``k`` depends only on ``(seed, frame.sequence, k)``, so every frame of a sequence gets the
    same error. Points, labels and images are shared with the input (not copied).
    """
    seq_key = zlib.crc32(frame.sequence.encode("utf-8"))
    cams = []
    for k, cam in enumerate(frame.cameras):  # loop over the (few) cameras of one frame
        rng = np.random.default_rng([int(seed), seq_key, k])
        cams.append(dataclasses.replace(cam, lidar_to_camera=perturb_extrinsics(cam.lidar_to_camera, fraction, rng)))
    return dataclasses.replace(frame, cameras=cams)


class PerturbedExtrinsics(LidarDataset):
    """A view of ``dataset`` whose frames have miscalibrated camera extrinsics (see :func:`perturb_frame`)."""

    def __init__(self, dataset: LidarDataset, fraction: float, seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.dataset = dataset
        self.fraction = float(fraction)
        self.seed = int(seed)
        self.name = dataset.name
        self.class_names = dataset.class_names
        self.has_cameras = dataset.has_cameras
        self.temporal = dataset.temporal
        self.splits = dataset.splits

    def __len__(self) -> int:
        return len(self.dataset)

    def frame(self, i: int) -> Frame:
        f = self.dataset.frame(i)
        return f if self.fraction == 0.0 else perturb_frame(f, self.fraction, self.seed)

    def sequence_of(self, i: int) -> tuple[str, int]:
        return self.dataset.sequence_of(i)

    def next_index(self, i: int, n: int = 1) -> int | None:
        return self.dataset.next_index(i, n)


def calibration_stress(
    pretrain: Callable[[float, int], Any],
    probe: Callable[[Any, int], float],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: Sequence[int] = (0,),
) -> dict[str, Any]:
    """Sweep the miscalibration ``fractions``: pretrain with each, linear-probe, report the drop vs ``fraction 0``.

    ``pretrain(fraction, seed)`` returns a pretrained encoder (or whatever ``probe`` takes); it is expected to wrap
    its pretraining data in :class:`PerturbedExtrinsics`. ``probe(encoder, seed)`` returns a linear-probe mIoU
    (fraction in [0, 1]). Returns ``{"rows": [{"fraction", "miou_mean", "miou_std", "drop", "mious"}...],
    "seeds": [...]}`` where ``drop = mean mIoU at 0 - mean mIoU at fraction`` (positive = worse).
    """
    fr = [float(f) for f in fractions]
    if 0.0 not in fr:
        raise ValueError(f"fractions must include 0.0 (the reference), got {fr}")
    if not seeds:
        raise ValueError("need at least one seed")
    per: dict[float, list[float]] = {}
    for f in fr:  # one pretraining + probe per point of the sweep and seed
        per[f] = [float(probe(pretrain(f, int(s)), int(s))) for s in seeds]
    ref = float(np.mean(per[0.0]))
    rows = []
    for f in fr:
        vals = np.asarray(per[f])
        rows.append({
            "fraction": f,
            "miou_mean": float(vals.mean()),
            "miou_std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
            "drop": ref - float(vals.mean()),
            "mious": vals.tolist(),
        })
    return {"rows": rows, "seeds": [int(s) for s in seeds]}
