"""Corrupted copies in Robo3D's layouts (nuScenes-C, SemanticKITTI-C), made from an official-layout root.

Layouts (ldkong1205/Robo3D ``docs/DATA_PREPARE.md``)::

    <out>/<corruption>/<light|moderate|heavy>/velodyne/NNNNNN.bin, labels/NNNNNN.label    # SemanticKITTI-C (seq 08)
    <out>/<corruption>/<light|moderate|heavy>/samples/LIDAR_TOP/<original name>.pcd.bin,
                                              lidarseg/<version>/<token>_lidarseg.bin      # nuScenes-C

The files are written in exactly these layouts and formats, but their **content comes from
:func:`largead.data.corruptions.corrupt`** (this project's simplified corruption models), not from Robo3D's
physics simulations: use them to test pipelines, or to evaluate on your own corrupted copies; for the benchmark
numbers use Robo3D's released sets. Raw labels are carried through unchanged (the file's own ids, instance bits
included); points a corruption adds get Robo3D's added-point id where Robo3D defines one (fog, snow, crosstalk:
SemanticKITTI-C 21 / 22 / 23, nuScenes-C 41 / 42 / 43), as do points the corruption relabels (crosstalk), and raw
0 otherwise. nuScenes-C keeps the ring column, ``-1`` for added points [our choice; Robo3D's value is not
documented].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largead.data.export._common import atomic_write_bytes, check_fresh
from largead.data.frame import IGNORE_INDEX, Frame
from largead.data.labels_extra import CORRUPTIONS, NUSCENES_C_ADDED_IDS, SEMANTICKITTI_C_ADDED_IDS, SEVERITIES

__all__ = ["write_nuscenes_c", "write_semantickitti_c"]


def _added_id(ids: dict[int, str], corruption: str) -> int:
    return {name: raw for raw, name in ids.items()}.get(corruption, 0)


def _corrupted_raw(frame: Frame, raw: np.ndarray, corruption: str, severity: str, seed: int,
                   added_ids: dict[int, str]) -> tuple[Frame, np.ndarray]:
    """Corrupt ``frame`` carrying its raw labels through; returns the corrupted frame and its raw labels."""
    from dataclasses import replace

    from largead.data.corruptions import corrupt

    carried = replace(frame, extra={**frame.extra, "_raw": raw.astype(np.int64),
                                    "_train": np.asarray(frame.labels, dtype=np.int64)})
    out = corrupt(carried, corruption, severity, seed=seed)
    new_raw = out.extra.pop("_raw")
    before = out.extra.pop("_train")
    touched = (out.labels == IGNORE_INDEX) & (before != IGNORE_INDEX)  # relabelled by the corruption
    touched |= new_raw < 0  # added by the corruption
    return out, np.where(touched, _added_id(added_ids, corruption), new_raw)


def _variants(corruptions: Sequence[str], severities: Sequence[str]) -> list[tuple[str, str]]:
    bad = [c for c in corruptions if c not in CORRUPTIONS] + [s for s in severities if s not in SEVERITIES]
    if bad:
        raise ValueError(f"unknown corruptions / severities {bad}; expected names from {CORRUPTIONS} and {SEVERITIES}")
    return [(c, s) for c in corruptions for s in severities]


def write_semantickitti_c(
    semantickitti_root: str | Path,
    out: str | Path,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[str] = SEVERITIES,
    seed: int = 0,
    sequence: str = "08",
) -> int:
    """Write SemanticKITTI-C from sequence ``sequence`` of a SemanticKITTI root (flattened, as Robo3D's release is:
    file ``NNNNNN`` keeps the scan's name). Returns the number of scans per variant."""
    from largead.data.readers._kitti_io import read_label, write_bin
    from largead.data.readers.semantickitti import SemanticKITTIDataset

    variants = _variants(corruptions, severities)
    out = Path(out)
    check_fresh([out / c / s for c, s in variants], "left-over scans would be read as part of the set")
    src = SemanticKITTIDataset(semantickitti_root, "val", sequences=(sequence,), poses=False)
    for i in range(len(src)):
        frame = src[i]
        sem, inst = read_label(src.label_path(i), frame.num_points)
        raw = sem | (inst << 16)
        stem = Path(frame.token).name
        for k, (c, s) in enumerate(variants):
            bad, new_raw = _corrupted_raw(frame, raw, c, s, seed + 1000 * i + k, SEMANTICKITTI_C_ADDED_IDS)
            d = out / c / s
            write_bin(d / "velodyne" / f"{stem}.bin", bad.points[:, :4])
            atomic_write_bytes(d / "labels" / f"{stem}.label", new_raw.astype(np.uint32).tobytes())
    return len(src)


def write_nuscenes_c(
    nuscenes_root: str | Path,
    out: str | Path,
    version: str = "v1.0-trainval",
    split: str = "val",
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[str] = SEVERITIES,
    seed: int = 0,
) -> int:
    """Write nuScenes-C from the ``split`` keyframes of a nuScenes root with lidarseg (the corrupted sweeps keep the
    original file names and tokens, so the original tables index them). Returns the number of sweeps per variant."""
    from largead.data.readers._kitti_io import read_raw_label
    from largead.data.readers.nuscenes import NuScenesDataset

    variants = _variants(corruptions, severities)
    out = Path(out)
    check_fresh([out / c / s for c, s in variants], "left-over sweeps would be read as part of the set")
    src = NuScenesDataset(nuscenes_root, split, version=version, cameras=False)
    for i in range(len(src)):
        frame = src[i]
        label_file = src.lidarseg_filename(i)
        raw = read_raw_label(src.root / label_file, frame.num_points, np.uint8)
        point_file = src.nusc.get("sample_data", src.lidar_token(i))["filename"]
        for k, (c, s) in enumerate(variants):
            bad, new_raw = _corrupted_raw(frame, raw, c, s, seed + 1000 * i + k, NUSCENES_C_ADDED_IDS)
            ring = np.asarray(bad.extra["ring"], np.float32).reshape(-1, 1)
            d = out / c / s
            atomic_write_bytes(d / point_file, np.hstack([bad.points[:, :4].astype(np.float32), ring]).tobytes())
            atomic_write_bytes(d / label_file, new_raw.astype(np.uint8).tobytes())
    return len(src)
