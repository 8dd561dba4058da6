"""Writers of the transfer datasets read by :mod:`largead.data.readers.kitti_family`, each in its published layout.

======================  =====================================================================================
writer                  layout (source)
======================  =====================================================================================
``write_rellis3d``      ``<seq 5 digits>/os1_cloud_node_kitti_bin/NNNNNN.bin``, ``.../os1_cloud_node_
                        semantickitti_label_id/NNNNNN.label``, ``<seq>/poses.txt``, ``pt_{train,val,test}.lst``
                        (unmannedlab/RELLIS-3D README "Folder structure")
``write_semanticposs``  ``sequences/{00..05}/{velodyne,labels}``, ``calib.txt``, ``poses.txt`` (CoSMix README
                        "SemanticPOSS"; SemanticKITTI's file formats)
``write_semanticstf``   ``{train,val,test}/velodyne/<stem>.bin`` (float32 x 5), ``labels/<stem>.label`` (int32),
                        ``val/val.txt`` lines ``<stem>,<weather>`` (xiaoaoran/SemanticSTF README,
                        ``PointDR/core/datasets/semantic_stf.py``, ``PointDR/evaluate_by_weather.py``)
``write_synlidar``      ``{00..12}/{velodyne,labels}`` (xiaoaoran/SynLiDAR README) or ``sequences/{00..12}/...``
                        (saltoricristiano/cosmix-uda README "SynLiDAR", the GIPSO / PointDR / CoSMix layout)
``write_daps3d``        ``data/<seq>/clouds/<stem>.{bin,npy}``, ``data/<seq>/labels/<stem>.{label,npy}``
                        (subake/DAPS3D ``DATASET.md``; ``.npy`` as ``train/common/laserscan.py`` reads them)
``write_synth4d``       ``<sensor>/<Town>/{velodyne,labels}/<id>.npy``, ``splits/<sensor>/{training,validation}
                        _split.pkl`` (saltoricristiano/gipso-sfouda ``utils/dataset.py`` ``SynthDataset``)
======================  =====================================================================================

Every writer validates all frames before writing, writes each file atomically and refuses a root that already
holds what it would write. Labels are training ids of the target dataset, turned into raw ids through
``inverse_lut`` (indexed by ``train_id + 1``; default :func:`largead.data.labels.inverse_lut` of the dataset's map:
the smallest raw id of each class, ignore -> the "unlabeled" id).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from largead.data.export._common import (
    atomic_write_bytes,
    check_fresh,
    group_by_sequence,
    raw_labels,
    validate_frames,
)
from largead.data.export.kitti import kitti_sequence_names, write_semantickitti
from largead.data.frame import Frame
from largead.data.labels import inverse_lut
from largead.data.labels_extra import (
    DAPS3D_LEARNING_MAP,
    RELLIS3D_LEARNING_MAP,
    SEMANTICPOSS_LEARNING_MAP,
    SEMANTICSTF_LEARNING_MAP,
    SEMANTICSTF_WEATHERS,
    SYNLIDAR_TO_SEMANTICKITTI_COSMIX,
    SYNTH4D_LEARNING_MAP,
)
from largead.data.readers._kitti_io import write_bin, write_label, write_poses

__all__ = [
    "DAPS2_SEQUENCES",
    "SYNTH4D_TOWNS",
    "write_daps3d",
    "write_rellis3d",
    "write_semanticposs",
    "write_semanticstf",
    "write_synlidar",
    "write_synth4d",
]

DAPS2_SEQUENCES = ("38-18_7_72_90", "42-48_10_78_90", "44-18_11_15_32")
"""DAPS-2's three real sequence folders (subake/DAPS3D ``DATASET.md`` / ``cfgs/navigation.yml``)."""

SYNTH4D_TOWNS = ("Town03", "Town06", "Town07", "Town10HD")
"""Synth4D's four CARLA towns (gipso-sfouda README)."""

_SPLIT_CYCLE = ("train", "val", "test")


def _inv(inverse: np.ndarray | None, mapping: Mapping[int, int], num_classes: int, ignore_raw: int = 0) -> np.ndarray:
    return inverse_lut(mapping, num_classes, ignore_raw) if inverse is None else np.asarray(inverse, dtype=np.int64)


def _split_of(sequences: Sequence[str], split_of_sequence: Mapping[str, str] | None,
              allowed: Sequence[str] = _SPLIT_CYCLE) -> dict[str, str]:
    """``frame.sequence -> split``: as given, else cycling ``train, val, test`` over the sequences in order."""
    if split_of_sequence is None:
        return {s: allowed[n % len(allowed)] for n, s in enumerate(sequences)}
    out = {}
    for s in sequences:
        if s not in split_of_sequence:
            raise KeyError(f"split_of_sequence has no entry for sequence {s!r}")
        if split_of_sequence[s] not in allowed:
            raise ValueError(f"split_of_sequence[{s!r}] = {split_of_sequence[s]!r}; expected one of {list(allowed)}")
        out[s] = split_of_sequence[s]
    return out


# ----------------------------------------------------------------------------------------------------- RELLIS-3D
def _organise(points: np.ndarray, raw: np.ndarray | None, ring: np.ndarray, shape: tuple[int, int],
              where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Place points in an organised ``H x W`` cloud (row = beam, column = azimuth bin), all-zero rows elsewhere."""
    h, w = shape
    ring = np.asarray(ring, dtype=np.int64)
    if len(ring) != len(points) or (len(ring) and (ring.min() < 0 or ring.max() >= h)):
        raise ValueError(f"{where}: organised output needs extra['ring'] in 0..{h - 1} for every point")
    az = np.mod(np.arctan2(points[:, 1].astype(np.float64), points[:, 0]), 2 * np.pi)
    col = np.mod(np.floor(az / (2 * np.pi / w) + 0.5).astype(np.int64), w)
    cell = ring * w + col
    if len(np.unique(cell)) != len(cell):
        raise ValueError(f"{where}: two points fall in the same cell of the {h} x {w} organised cloud")
    grid = np.zeros((h * w, points.shape[1]), np.float32)
    grid[cell] = points
    lab = None
    if raw is not None:
        lab = np.zeros(h * w, np.int64)
        lab[cell] = raw
    return grid, lab


def write_rellis3d(
    frames: Sequence[Frame],
    root: str | Path,
    split_of_sequence: Mapping[str, str] | None = None,
    inverse_lut: np.ndarray | None = None,
    organised: tuple[int, int] | None = None,
    poses: bool = True,
) -> dict[str, str]:
    """Write frames as RELLIS-3D's LiDAR release (``Rellis-3D/`` in the module table).

    Sequences become folders ``00000, 00001, ...`` (or ``frame.sequence`` when it is a 5-digit number); file
    ``NNNNNN`` is the frame's position. Each sequence's frames are listed in the split file of
    ``split_of_sequence[frame.sequence]`` (default: sequences cycle through train, val, test). ``organised=(H, W)``
    writes Ouster-style organised clouds of ``H * W`` rows, point ``p`` at row ``ring * W + azimuth bin`` (ring from
    ``frame.extra["ring"]``) and all-zero rows (raw label 0, void) for missing returns, as RELLIS-3D's ``.bin``
    files are; otherwise the points are written as given. ``poses.txt`` holds the LiDAR poses (RELLIS-3D's reader
    uses them as given). Returns the ``frame.sequence -> folder`` mapping.
    """
    inv = _inv(inverse_lut, RELLIS3D_LEARNING_MAP, 14)
    groups = group_by_sequence(frames)
    validate_frames(groups, inv)
    names = {s: s if (len(s) == 5 and s.isdigit()) else f"{n:05d}" for n, s in enumerate(groups)}
    if len(set(names.values())) != len(names):
        raise ValueError(f"sequence folder names collide: {names}")
    splits = _split_of(list(groups), split_of_sequence)
    root = Path(root)
    check_fresh([root / f"pt_{s}.lst" for s in _SPLIT_CYCLE] + [root / names[s] for s in groups],
                "the split files list every scan of the dataset")
    lines: dict[str, list[str]] = {s: [] for s in _SPLIT_CYCLE}
    for seq, fs in groups.items():
        d = names[seq]
        for pos, f in enumerate(fs):
            scan = f"{d}/os1_cloud_node_kitti_bin/{pos:06d}.bin"
            label = f"{d}/os1_cloud_node_semantickitti_label_id/{pos:06d}.label"
            raw = None if f.labels is None else raw_labels(f.labels, inv, f"{seq} {pos}")
            pts = f.points[:, :4]
            if organised is not None:
                pts, raw = _organise(pts, raw, f.extra.get("ring", np.zeros(0)), organised, f"sequence {seq!r} frame "
                                     f"{f.index}")
            write_bin(root / scan, pts)
            if raw is not None:
                write_label(root / label, raw)
            lines[splits[seq]].append(f"{scan} {label}")
        if poses:
            write_poses(root / d / "poses.txt", np.stack([f.pose for f in fs]))
    for split, entries in lines.items():
        if entries:
            atomic_write_bytes(root / f"pt_{split}.lst", ("\n".join(entries) + "\n").encode())
    return names


# -------------------------------------------------------------------------------------------------- SemanticPOSS
def write_semanticposs(frames: Sequence[Frame], root: str | Path, sequence_names: dict[str, str] | None = None,
                       inverse_lut: np.ndarray | None = None) -> dict[str, str]:
    """Write frames as SemanticPOSS ``sequences/NN/{velodyne,labels}`` with ``calib.txt`` (``Tr``) and ``poses.txt``
    (camera poses, as SemanticKITTI), through :func:`~largead.data.export.kitti.write_semantickitti` with
    SemanticPOSS's raw ids (default: CENet's map, ignore -> 0 unlabeled). No ``times.txt``, images or ``tag/`` range
    masks (40 x 1800 bit masks of the organised scan, which no reader here uses). Returns the folder mapping."""
    inv = _inv(inverse_lut, SEMANTICPOSS_LEARNING_MAP, 13)
    return write_semantickitti(frames, root, sequence_names, inverse_lut=inv, write_images=False, times=False)


# -------------------------------------------------------------------------------------------------- SemanticSTF
def _stem(seq: str, pos: int) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in seq)
    return f"{safe}_{pos:05d}"


def write_semanticstf(
    frames: Sequence[Frame],
    root: str | Path,
    split_of_sequence: Mapping[str, str] | None = None,
    inverse_lut: np.ndarray | None = None,
    weathers: Sequence[str] = SEMANTICSTF_WEATHERS,
    labelled_splits: Sequence[str] = ("train", "val"),
    intensity_scale: float = 255.0,
) -> dict[str, list[str]]:
    """Write frames as SemanticSTF ``{train,val,test}/{velodyne,labels}`` (see the module table).

    Points: float32 x 5: x, y, z, intensity times ``intensity_scale`` (SemanticSTF stores 0-255; the reader divides
    by 255), and the ring (``frame.extra["ring"]``, else 0) as the 5th column. Labels: int32 SemanticSTF ids 0-20
    (default: train id + 1, ignore -> 0), written for ``labelled_splits`` only (the test split is published without
    labels). File stems are ``<sequence>_<position>`` (non-numeric, as SemanticSTF's are). Validation frames cycle
    through ``weathers`` in ``val/val.txt``. Returns ``{split: [stems]}``.
    """
    inv = _inv(inverse_lut, SEMANTICSTF_LEARNING_MAP, 19)
    groups = group_by_sequence(frames)
    validate_frames(groups, inv)
    splits = _split_of(list(groups), split_of_sequence)
    root = Path(root)
    check_fresh([root / s for s in set(splits.values())], "left-over scans would be read as part of the split")
    stems: dict[str, list[str]] = {}
    for seq, fs in groups.items():
        split = splits[seq]
        for pos, f in enumerate(fs):
            stem = _stem(seq, pos)
            ring = np.asarray(f.extra.get("ring", np.zeros(f.num_points)), np.float32)
            pts = np.column_stack([f.points[:, :3], f.points[:, 3] * intensity_scale, ring]).astype(np.float32)
            write_bin(root / split / "velodyne" / f"{stem}.bin", pts)
            if split in labelled_splits and f.labels is not None:
                raw = raw_labels(f.labels, inv, stem).astype(np.int32)
                atomic_write_bytes(root / split / "labels" / f"{stem}.label", raw.tobytes())
            stems.setdefault(split, []).append(stem)
    if "val" in stems:
        lines = [f"{s},{weathers[k % len(weathers)]}" for k, s in enumerate(sorted(stems["val"]))]
        atomic_write_bytes(root / "val" / "val.txt", ("\n".join(lines) + "\n").encode())
    return stems


# ------------------------------------------------------------------------------------------------------ SynLiDAR
def write_synlidar(frames: Sequence[Frame], root: str | Path, layout: str = "sequences",
                   sequence_names: dict[str, str] | None = None,
                   inverse_lut: np.ndarray | None = None) -> dict[str, str]:
    """Write frames as SynLiDAR ``NN/{velodyne,labels}`` (``layout="flat"``, the download) or
    ``sequences/NN/{velodyne,labels}`` (``layout="sequences"``, as GIPSO / PointDR / CoSMix expect). Points float32
    x 4, labels uint32 raw SynLiDAR ids (default: the smallest raw id of each SemanticKITTI class under CoSMix's map,
    ignore -> 0 unlabeled). Returns the ``frame.sequence -> folder`` mapping."""
    if layout not in ("flat", "sequences"):
        raise ValueError(f"layout must be 'flat' or 'sequences', got {layout!r}")
    inv = _inv(inverse_lut, SYNLIDAR_TO_SEMANTICKITTI_COSMIX, 19)
    groups = group_by_sequence(frames)
    validate_frames(groups, inv)
    names = kitti_sequence_names(list(groups), sequence_names)
    base = Path(root) / "sequences" if layout == "sequences" else Path(root)
    check_fresh([base / names[s] for s in groups], "left-over scans would be read as part of the sequence")
    for seq, fs in groups.items():
        for pos, f in enumerate(fs):
            write_bin(base / names[seq] / "velodyne" / f"{pos:06d}.bin", f.points[:, :4])
            if f.labels is not None:
                write_label(base / names[seq] / "labels" / f"{pos:06d}.label", raw_labels(f.labels, inv, seq),
                            f.instances)
    return names


# ------------------------------------------------------------------------------------------------------- DAPS-3D
def write_daps3d(
    frames: Sequence[Frame],
    root: str | Path,
    variant: str = "daps-1",
    fmt: str = "bin",
    sequence_names: dict[str, str] | None = None,
    inverse_lut: np.ndarray | None = None,
) -> dict[str, str]:
    """Write frames as DAPS-3D ``data/<seq>/{clouds,labels}`` under ``root`` (the ``daps-1`` or ``daps-2`` folder).

    ``fmt="bin"``: float32 x 4 ``.bin`` clouds and int32 ``.label`` files (SemanticKITTI raw id | instance << 16)
    named ``NNNNNN``; ``fmt="npy"``: ``.npy`` clouds (float32 (N, 4)) and ``.npy`` labels (int32 (N,)) named
    ``<sequence>_<timestamp in microseconds>`` (non-numeric stems, as own recordings loaded through DAPS3D's
    ``.npy`` path are). Sequence folders: ``variant="daps-1"`` as SemanticKITTI (``00`` ... ``10``), ``"daps-2"``
    the three real sequences of :data:`DAPS2_SEQUENCES` in order. Default raw ids: the smallest SemanticKITTI raw id
    of each DAPS-3D class, ignore -> 0. Returns the ``frame.sequence -> folder`` mapping.
    """
    if variant not in ("daps-1", "daps-2"):
        raise ValueError(f"variant must be 'daps-1' or 'daps-2', got {variant!r}")
    if fmt not in ("bin", "npy"):
        raise ValueError(f"fmt must be 'bin' or 'npy', got {fmt!r}")
    inv = _inv(inverse_lut, DAPS3D_LEARNING_MAP, 4)
    groups = group_by_sequence(frames)
    validate_frames(groups, inv)
    if variant == "daps-2" and sequence_names is None:
        if len(groups) > len(DAPS2_SEQUENCES):
            raise ValueError(f"DAPS-2 has {len(DAPS2_SEQUENCES)} sequences, got {len(groups)}")
        names = dict(zip(groups, DAPS2_SEQUENCES))
    else:
        names = kitti_sequence_names(list(groups), sequence_names)
    data = Path(root) / "data"
    check_fresh([data / names[s] for s in groups], "left-over scans would be read as part of the sequence")
    for seq, fs in groups.items():
        d = data / names[seq]
        for pos, f in enumerate(fs):
            raw = None
            if f.labels is not None:
                inst = np.zeros(f.num_points, np.int64) if f.instances is None else f.instances
                raw = (raw_labels(f.labels, inv, seq) | (inst.astype(np.int64) << 16)).astype(np.int32)
            if fmt == "bin":
                stem = f"{pos:06d}"
                write_bin(d / "clouds" / f"{stem}.bin", f.points[:, :4])
                if raw is not None:
                    atomic_write_bytes(d / "labels" / f"{stem}.label", raw.tobytes())
            else:
                stem = f"{names[seq]}_{int(round(f.timestamp * 1e6)):016d}"
                _save_npy(d / "clouds" / f"{stem}.npy", f.points[:, :4].astype(np.float32))
                if raw is not None:
                    _save_npy(d / "labels" / f"{stem}.npy", raw)
    return names


def _save_npy(path: Path, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------------------------- Synth4D
def write_synth4d(
    frames: Sequence[Frame],
    root: str | Path,
    sensor: str = "kitti_synth",
    split_of_sequence: Mapping[str, str] | None = None,
    inverse_lut: np.ndarray | None = None,
) -> dict[str, str]:
    """Write frames as Synth4D ``<sensor>/<Town>/{velodyne,labels}/<id>.npy`` plus the GIPSO split pickles
    ``splits/<sensor>/{training,validation}_split.pkl`` (dicts town -> frame ids).

    Sequences become towns (``frame.sequence`` when it starts with ``Town``, else :data:`SYNTH4D_TOWNS` in order);
    the frame id is ``frame.index``, file name ``str(id) + ".npy"`` as GIPSO builds it. Points: float32 (N, 4);
    labels: int32 (N,) CARLA semantic tags (default: the smallest tag of each class, ignore -> 0 noise). Sequences
    go to the training or validation pickle by ``split_of_sequence`` (default alternating train, val). Returns the
    ``frame.sequence -> town`` mapping.
    """
    if sensor not in ("kitti_synth", "nuscenes_synth"):
        raise ValueError(f"sensor must be 'kitti_synth' or 'nuscenes_synth', got {sensor!r}")
    inv = _inv(inverse_lut, SYNTH4D_LEARNING_MAP, 7)
    groups = group_by_sequence(frames)
    validate_frames(groups, inv)
    towns = {}
    for n, seq in enumerate(groups):
        if seq.startswith("Town"):
            towns[seq] = seq
        elif n < len(SYNTH4D_TOWNS):
            towns[seq] = SYNTH4D_TOWNS[n]
        else:
            raise ValueError(f"more than {len(SYNTH4D_TOWNS)} sequences: name them Town* explicitly")
    if len(set(towns.values())) != len(towns):
        raise ValueError(f"town names collide: {towns}")
    splits = _split_of(list(groups), split_of_sequence, ("train", "val"))
    root = Path(root)
    pkl_dir = root / "splits" / sensor
    check_fresh([pkl_dir / "training_split.pkl", pkl_dir / "validation_split.pkl"]
                + [root / sensor / towns[s] for s in groups], "the split pickles list every frame")
    table: dict[str, dict[str, list[int]]] = {"train": {}, "val": {}}
    for seq, fs in groups.items():
        d = root / sensor / towns[seq]
        for f in fs:
            _save_npy(d / "velodyne" / f"{f.index}.npy", f.points[:, :4].astype(np.float32))
            if f.labels is not None:
                _save_npy(d / "labels" / f"{f.index}.npy", raw_labels(f.labels, inv, seq).astype(np.int32))
        table[splits[seq]][towns[seq]] = [int(f.index) for f in fs]
    for split, name in (("train", "training_split.pkl"), ("val", "validation_split.pkl")):
        atomic_write_bytes(pkl_dir / name, pickle.dumps(table[split]))
    return towns
