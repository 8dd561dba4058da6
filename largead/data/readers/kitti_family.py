"""Readers of the SemanticKITTI-format family: scan files plus per-point label files in sequence folders.

Registered names and their layouts (sources cited per class):

======================  ===================================================================================
``scribblekitti``       SemanticKITTI tree (via its reader); train labels ``scribbles/``, val (08) ``labels/``
``rellis3d``            ``Rellis-3D/<seq>/os1_cloud_node_kitti_bin``; splits from ``pt_{train,val,test}.lst``
``semanticposs``        ``sequences/{00..05}/{velodyne,labels}``; val sequence 02 (CENet) or 03 (CoSMix)
``semanticstf``         ``{train,val,test}/{velodyne,labels}``, 5 float32 columns, int32 labels (none for test)
``synlidar``            ``[sequences/]{00..12}/{velodyne,labels}``, 32 raw classes -> SemanticKITTI 19 (or POSS 13)
``daps3d``              ``data/<seq>/{clouds,labels}`` (``.bin``/``.label`` or ``.npy``; DAPS-1 / DAPS-2), 4 classes
``synth4d``             ``<sensor>/<Town>/{velodyne,labels}/<id>.npy``, splits from ``splits/<sensor>/*.pkl``
``semantickitti_c``     Robo3D ``<corruption>/<severity>/{velodyne,labels}`` (sequence 08, flattened)
======================  ===================================================================================

Binary scan and label files go through the validated parsers of :mod:`largead.data.readers._kitti_io` (``.npy``
files through the same checks here); errors name the file and the problem (missing, truncated, wrong label count,
non-finite values). Labels are mapped with the tables of
:mod:`largead.data.labels_extra` / :mod:`largead.data.labels`; raw ids outside a map become ignore. None of these
readers but ``scribblekitti`` loads cameras; ``temporal`` is set where the layout has ``poses.txt``.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from largead.data.frame import Frame
from largead.data.geometry import kitti_lidar_poses
from largead.data.labels import SEMANTICKITTI_CLASSES, apply_lut, build_lut, semantickitti_lut
from largead.data.labels_extra import (
    CORRUPTIONS,
    DAPS3D_CLASSES,
    DAPS3D_LEARNING_MAP,
    RELLIS3D_CLASSES,
    RELLIS3D_LEARNING_MAP,
    SEMANTICPOSS_CLASSES,
    SEMANTICPOSS_LEARNING_MAP,
    SEMANTICSTF_CLASSES,
    SEMANTICSTF_LEARNING_MAP,
    SEMANTICSTF_WEATHERS,
    SEVERITIES,
    SYNLIDAR_TO_SEMANTICKITTI_COSMIX,
    SYNLIDAR_TO_SEMANTICKITTI_POINTDR,
    SYNLIDAR_TO_SEMANTICPOSS,
    SYNTH4D_CLASSES,
    SYNTH4D_LEARNING_MAP,
)
from largead.data.readers._kitti_io import (
    one_line,
    present_sequences,
    read_bin,
    read_calib,
    read_label,
    read_poses,
    read_raw_label,
)
from largead.data.readers.semantickitti import SEMANTICKITTI_SPLITS, SemanticKITTIDataset
from largead.data.registry import LidarDataset, register_dataset


@dataclass(frozen=True)
class Scan:
    """One indexed sweep: where its files are and where it sits in its sequence."""

    sequence: str
    position: int  # frame number within the sequence (file stem for numbered layouts)
    points: str
    labels: str | None
    stem: str


def _listdir(path: str, suffix: str, what: str) -> list[str]:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: {what} folder not found")
    return sorted(f for f in os.listdir(path) if f.endswith(suffix))


def _labelled_scans(seq: str, scan_dir: str, label_dir: str | None, scan_ext: str, label_ext: str | Sequence[str],
                    numbered: bool | None = True, what: str | None = None) -> list[Scan]:
    """Scans ``<scan_dir>/<stem><scan_ext>`` (sorted) with their labels ``<label_dir>/<stem><label_ext>``.

    ``label_ext`` may list several extensions, tried in order; every scan must have a label file unless
    ``label_dir`` is ``None`` (an unlabelled split: ``Scan.labels`` is ``None``). ``numbered``: stems are frame
    numbers and give the position (``None``: when every stem is a number); otherwise positions are ``0, 1, ...`` in
    file order. ``what`` names the scan folder in the error raised when it is missing.
    """
    names = _listdir(scan_dir, scan_ext, what or f"sequence {seq} scan")
    stems = [name[: -len(scan_ext)] for name in names]
    if numbered is None:
        numbered = bool(stems) and all(st.isdigit() for st in stems)
    exts = (label_ext,) if isinstance(label_ext, str) else tuple(label_ext)
    out = []
    for name, stem in zip(names, stems):
        if numbered and not stem.isdigit():
            raise ValueError(f"{os.path.join(scan_dir, name)}: scan file name is not a frame number")
        lab = None
        if label_dir is not None:
            candidates = [os.path.join(label_dir, stem + e) for e in exts]
            lab = next((c for c in candidates if os.path.isfile(c)), None)
            if lab is None:
                raise FileNotFoundError(f"{candidates[0]}: label file of scan {os.path.join(scan_dir, name)} not found"
                                        + (f" (nor {', '.join(exts[1:])})" if len(exts) > 1 else ""))
        out.append(Scan(seq, int(stem) if numbered else len(out), os.path.join(scan_dir, name), lab, stem))
    return out


def _load_npy(path: str, what: str) -> np.ndarray:
    """``np.load`` without pickles; errors name ``path`` (``what`` says which file was expected when it is missing)."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy array (truncated or corrupt): {one_line(err)}") from err


class KittiFamilyDataset(LidarDataset):
    """Shared machinery: a list of :class:`Scan` s, per-sequence poses, point/label decoding hooks.

    Subclasses fill ``self.scans`` (and optionally ``self.poses``: sequence -> (M, 4, 4) indexed by position) in
    ``__init__`` and implement :meth:`load_points` / :meth:`load_labels`.
    """

    def __init__(self, root: str | None, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name} has no split {split!r}; available: {', '.join(self.splits)}")
        if root is None:
            raise ValueError(f"{self.name}: root (the dataset directory) is required")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{os.fspath(root)}: {self.name} root folder not found")
        self.root = os.fspath(root)
        self.split = split
        self.scans: list[Scan] = []
        self.poses: dict[str, np.ndarray] = {}

    def _finish_index(self) -> None:
        if not self.scans:
            raise FileNotFoundError(f"{self.name}: no scans found for split {self.split!r} under {self.root}")
        self._lookup = {(s.sequence, s.position): i for i, s in enumerate(self.scans)}

    def _load_sequence_poses(self, seq: str, seq_dir: str, n_frames: int, kitti_camera_poses: bool) -> None:
        """Read ``<seq_dir>/poses.txt`` when it exists; with ``kitti_camera_poses`` they are KITTI camera-0 poses and
        ``calib.txt``'s ``Tr`` (when present) turns them into LiDAR poses ``Tr^-1 @ P @ Tr``."""
        path = os.path.join(seq_dir, "poses.txt")
        if not os.path.isfile(path):
            return
        poses = read_poses(path)
        if len(poses) < n_frames:
            raise ValueError(f"{path}: has {len(poses)} poses but sequence {seq} has scans up to frame {n_frames - 1}")
        calib = os.path.join(seq_dir, "calib.txt")
        tr = read_calib(calib).get("Tr") if kitti_camera_poses and os.path.isfile(calib) else None
        self.poses[seq] = poses if tr is None else kitti_lidar_poses(poses, tr)

    def __len__(self) -> int:
        return len(self.scans)

    def sequence_of(self, i: int) -> tuple[str, int]:
        s = self.scans[i]
        return s.sequence, s.position

    def next_index(self, i: int, n: int = 1) -> int | None:
        s = self.scans[i]
        return self._lookup.get((s.sequence, s.position + n))

    def load_points(self, scan: Scan) -> tuple[np.ndarray, dict]:
        """``(N, 4)`` float32 x, y, z, intensity of ``scan`` and a dict of extra per-point arrays."""
        return read_bin(scan.points, 4, np.float32), {}

    def load_labels(self, scan: Scan, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Training ids and instance ids (int64, length ``n``) of ``scan``, or ``(None, None)`` if unlabelled."""
        raise NotImplementedError

    def frame(self, i: int) -> Frame:
        s = self.scans[i]
        points, extra = self.load_points(s)
        labels, instances = self.load_labels(s, len(points))
        pose = np.eye(4)
        if s.sequence in self.poses:
            pose = self.poses[s.sequence][s.position]
        return Frame(points=points, labels=labels, instances=instances, pose=pose, timestamp=0.0,
                     sequence=s.sequence, index=s.position, dataset=self.name, token=f"{s.sequence}/{s.stem}",
                     extra=extra).validate(s.points)


class _SemanticKittiLabels(KittiFamilyDataset):
    """``.label`` files of ``label_dtype`` records with SemanticKITTI-style raw ids (semantic id in the lower 16
    bits, instance id in the upper 16), mapped through ``self.lut``."""

    lut: np.ndarray
    label_dtype: type = np.uint32

    def load_labels(self, scan: Scan, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if scan.labels is None:
            return None, None
        sem, inst = read_label(scan.labels, n, self.label_dtype)
        return apply_lut(self.lut, sem), inst


# ------------------------------------------------------------------------------------------------- ScribbleKITTI
@register_dataset("scribblekitti")
class ScribbleKittiDataset(SemanticKITTIDataset):
    """ScribbleKITTI (ouenal/scribblekitti): SemanticKITTI scans with scribble labels for training.

    ScribbleKITTI ships only ``sequences/NN/scribbles/NNNNNN.label``, placed into a full SemanticKITTI tree, so this
    is the :class:`~largead.data.readers.semantickitti.SemanticKITTIDataset` reader (scans, poses, times,
    ``image_2`` cameras with ``cameras=True``, the same required / optional files and ``poses`` option) with its
    ``label_dir`` set to ``scribbles`` for train (00-07, 09, 10;
    ``dense_train_labels=True`` reads the dense ``labels/`` instead) and the dense ``labels`` for val (08), as the
    official evaluation does. Raw ids and the 19-class map are SemanticKITTI's (unannotated = 0 -> ignore).
    """

    splits = ("train", "val")

    def __init__(self, root: str | None, split: str = "train", cameras: bool = False,
                 dense_train_labels: bool = False, poses: bool | None = None) -> None:
        label_dir = "scribbles" if split == "train" and not dense_train_labels else "labels"
        super().__init__(root, split, cameras=cameras, label_dir=label_dir, poses=poses)


# ----------------------------------------------------------------------------------------------------- RELLIS-3D
@register_dataset("rellis3d")
class Rellis3dDataset(_SemanticKittiLabels):
    """RELLIS-3D Ouster OS1 scans (unmannedlab/RELLIS-3D), 14 classes (rellis.yaml; void, dirt, sky, object,
    asphalt, building -> ignore).

    ``root`` is ``Rellis-3D/`` with ``pt_{train,val,test}.lst`` (lines ``<scan> <label>`` relative to ``root``).
    Scans are float32 (N, 4), organised 64 x 2048 with all-zero rows for missing returns; ``drop_empty=True`` (the
    default) removes rows whose x, y, z are all zero, labels following. Poses: ``<seq>/poses.txt`` read as LiDAR
    poses (RELLIS-3D's SLAM poses; whether they need KITTI's camera ``Tr`` is [unverified]; we use them as given).
    """

    class_names = RELLIS3D_CLASSES
    temporal = True
    splits = ("train", "val", "test")

    def __init__(self, root: str | None, split: str = "train", drop_empty: bool = True) -> None:
        super().__init__(root, split)
        self.lut = build_lut(RELLIS3D_LEARNING_MAP, 65536)
        self.drop_empty = drop_empty
        lst = os.path.join(self.root, f"pt_{split}.lst")
        if not os.path.isfile(lst):
            raise FileNotFoundError(f"{lst}: RELLIS-3D split file not found")
        max_pos: dict[str, int] = {}
        with open(lst) as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise ValueError(f"{lst}: line {lineno}: expected '<scan path> <label path>', got {line.strip()!r}")
                scan, label = parts
                seq = scan.split("/")[0]
                stem = os.path.splitext(os.path.basename(scan))[0]
                if not stem.isdigit():
                    raise ValueError(f"{lst}: line {lineno}: scan file name {scan!r} is not a frame number")
                self.scans.append(Scan(seq, int(stem), os.path.join(self.root, scan), os.path.join(self.root, label),
                                       stem))
                max_pos[seq] = max(max_pos.get(seq, 0), int(stem))
        for seq, m in max_pos.items():
            self._load_sequence_poses(seq, os.path.join(self.root, seq), m + 1, False)
        self._finish_index()

    def frame(self, i: int) -> Frame:
        f = super().frame(i)
        if self.drop_empty:
            keep = np.any(f.points[:, :3] != 0, axis=1)
            f.points = f.points[keep]
            f.labels = None if f.labels is None else f.labels[keep]
            f.instances = None if f.instances is None else f.instances[keep]
        return f


# -------------------------------------------------------------------------------------------------- SemanticPOSS
@register_dataset("semanticposs")
class SemanticPossDataset(_SemanticKittiLabels):
    """SemanticPOSS (CENet / CoSMix loaders): 13 evaluated classes + ignore.

    The "14 classes" of some papers count CENet's ignore class 0 (its ``nclasses`` is 14); 13 are evaluated, so
    ``num_classes`` is 13 here (our ids are CENet's minus one). Split: CENet trains on 00, 01, 03, 04, 05 and
    validates/tests on 02 (``val_sequence="02"``, the default); CoSMix validates on 03 (``val_sequence="03"``).
    ``tag/`` range masks are not needed and not read. Poses: ``poses.txt`` (+ ``calib.txt`` ``Tr``) if present.
    """

    class_names = SEMANTICPOSS_CLASSES
    splits = ("train", "val", "test")

    def __init__(self, root: str | None, split: str = "train", val_sequence: str = "02") -> None:
        super().__init__(root, split)
        if val_sequence not in ("02", "03"):
            raise ValueError(f"semanticposs: val_sequence must be '02' (CENet) or '03' (CoSMix), got {val_sequence!r}")
        self.lut = build_lut(SEMANTICPOSS_LEARNING_MAP, 65536)
        all_seqs = ("00", "01", "02", "03", "04", "05")
        seqs = [s for s in all_seqs if s != val_sequence] if split == "train" else [val_sequence]
        for seq in present_sequences(os.path.join(self.root, "sequences"), seqs, split, who=self.name)[0]:
            seq_dir = os.path.join(self.root, "sequences", seq)
            scans = _labelled_scans(seq, os.path.join(seq_dir, "velodyne"), os.path.join(seq_dir, "labels"),
                                    ".bin", ".label")
            self.scans += scans
            self._load_sequence_poses(seq, seq_dir, max(s.position for s in scans) + 1 if scans else 0, True)
        self._finish_index()


# -------------------------------------------------------------------------------------------------- SemanticSTF
@register_dataset("semanticstf")
class SemanticStfDataset(KittiFamilyDataset):
    """SemanticSTF (xiaoaoran/SemanticSTF, PointDR ``semantic_stf.py``): adverse-weather scans, 19 classes.

    Points are float32 (N, 5); intensity (column 3, 0-255) is divided by 255 so it matches SemanticKITTI's 0-1
    scale; the 5th column (probably the laser channel [unverified]) is returned as ``extra["channel"]``. Labels are
    int32 per point in SemanticSTF's own ids 0-20 (no bit mask): 1-19 -> id - 1, 0 (unlabeled) and 20 (invalid)
    -> ignore. ``weather`` (``dense_fog``, ``light_fog``, ``snow``, ``rain``) keeps the validation scans listed
    with that weather in ``val/val.txt`` (lines ``<file stem>,<weather>``, as ``evaluate_by_weather.py`` reads).
    No poses, images or calibration. ``labels/`` is required for train and val; the test split is published
    without labels, so there ``labels/`` is read when present and frames have ``labels=None`` otherwise.
    """

    class_names = SEMANTICSTF_CLASSES
    splits = ("train", "val", "test")

    def __init__(self, root: str | None, split: str = "train", weather: str | None = None) -> None:
        super().__init__(root, split)
        self.lut = build_lut(SEMANTICSTF_LEARNING_MAP, 21)
        d = os.path.join(self.root, split)
        label_dir = os.path.join(d, "labels")
        if split == "test" and not os.path.isdir(label_dir):
            label_dir = None  # published without labels
        scans = _labelled_scans(split, os.path.join(d, "velodyne"), label_dir, ".bin", ".label",
                                numbered=False, what=f"SemanticSTF {split} velodyne")
        if weather is not None:
            if split != "val":
                raise ValueError(f"semanticstf: weather subsets exist for the val split only, got split {split!r}")
            if weather not in SEMANTICSTF_WEATHERS:
                raise ValueError(f"semanticstf: weather must be one of {SEMANTICSTF_WEATHERS}, got {weather!r}")
            keep = self._weather_stems(os.path.join(d, "val.txt"), weather)
            scans = [Scan(s.sequence, k, s.points, s.labels, s.stem)
                     for k, s in enumerate(s for s in scans if s.stem in keep)]
        self.scans = scans
        self._finish_index()

    @staticmethod
    def _weather_stems(path: str, weather: str) -> set[str]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: SemanticSTF weather list not found")
        keep = set()
        with open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                parts = [p.strip() for p in line.split(",")]
                if len(parts) != 2 or parts[1] not in SEMANTICSTF_WEATHERS:
                    raise ValueError(f"{path}: line {lineno}: expected '<file stem>,<weather>', got {line.strip()!r}")
                if parts[1] == weather:
                    keep.add(os.path.splitext(parts[0])[0])
        return keep

    def load_points(self, scan: Scan) -> tuple[np.ndarray, dict]:
        raw = read_bin(scan.points, 5, np.float32)
        pts = raw[:, :4].copy()
        pts[:, 3] /= 255.0
        return pts, {"channel": raw[:, 4].copy()}

    def load_labels(self, scan: Scan, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if scan.labels is None:
            return None, None
        raw = read_raw_label(scan.labels, n, np.int32)
        return apply_lut(self.lut, raw), np.zeros(n, np.int64)


# ------------------------------------------------------------------------------------------------------ SynLiDAR
@register_dataset("synlidar")
class SynLidarDataset(_SemanticKittiLabels):
    """SynLiDAR (xiaoaoran/SynLiDAR): synthetic 64-beam scans with 32 raw classes.

    ``root`` is the SynLiDAR folder as downloaded (``<root>/{00..12}/{velodyne,labels}``) or as GIPSO, PointDR and
    CoSMix expect it (``<root>/sequences/{00..12}/...``, cosmix-uda README "SynLiDAR"; a root ending in
    ``sequences`` works too). ``target="semantickitti"`` (default) maps to the 19 SemanticKITTI classes;
    ``mapping`` picks how the two classes the loaders disagree on are handled: ``"cosmix"`` (default; CoSMix ignores
    pick-up and crowd) or ``"pointdr"`` (PointDR maps pick-up -> truck, crowd -> person). ``target="semanticposs"``
    uses CoSMix's map to the 13 SemanticPOSS classes.

    Splits (SynLiDAR has no official one):

    - ``train`` / ``val``: GIPSO's "full" split, whole sequences (val 00, 04, 07; the rest train;
      saltoricristiano/gipso-sfouda ``utils/dataset.py`` ``SynLiDARDataset``);
    - ``all``: every sequence, as PointDR trains (SemanticSTF ``PointDR/core/datasets/synlidar.py``);
    - CoSMix splits *frames within every sequence* instead (10 % of each sequence's frames drawn at random for
      training, 1 % of the rest for validation; the draw is stored in its repository's
      ``utils/datasets/_splits/synlidar.pkl``, written with ``torch.save``). Pass ``split_file=`` a JSON file
      ``{"train": {"00": [frame numbers]}, "val": {...}}`` (``"validation"`` accepted) holding such a draw, e.g.
      converted from that pickle, to reproduce it; ``split`` then picks the entry.
    """

    class_names = SEMANTICKITTI_CLASSES
    splits = ("train", "val", "all")
    VAL_SEQUENCES = ("00", "04", "07")

    def __init__(self, root: str | None, split: str = "train", target: str = "semantickitti",
                 mapping: str = "cosmix", split_file: str | None = None) -> None:
        super().__init__(root, split)
        if target == "semantickitti":
            if mapping not in ("cosmix", "pointdr"):
                raise ValueError(f"synlidar: mapping must be 'cosmix' or 'pointdr', got {mapping!r}")
            table = SYNLIDAR_TO_SEMANTICKITTI_COSMIX if mapping == "cosmix" else SYNLIDAR_TO_SEMANTICKITTI_POINTDR
            self.class_names = SEMANTICKITTI_CLASSES
        elif target == "semanticposs":
            if mapping != "cosmix":
                raise ValueError("synlidar: the SemanticPOSS target exists only with mapping='cosmix'")
            table = SYNLIDAR_TO_SEMANTICPOSS
            self.class_names = SEMANTICPOSS_CLASSES
        else:
            raise ValueError(f"synlidar: target must be 'semantickitti' or 'semanticposs', got {target!r}")
        self.lut = build_lut(table, 65536)
        base = self.root
        if os.path.basename(os.path.normpath(base)) != "sequences" and os.path.isdir(os.path.join(base, "sequences")):
            base = os.path.join(base, "sequences")
        if not os.path.isdir(base):
            raise FileNotFoundError(f"{base}: SynLiDAR folder not found (expected <root>/NN/velodyne/ or "
                                    "<root>/sequences/NN/velodyne/)")
        self.sequence_root = base
        all_seqs = [f"{k:02d}" for k in range(13)]
        keep: dict[str, set[int]] | None = None
        if split_file is not None:
            keep = self._read_split_file(split_file, split)
            seqs = sorted(keep)
        else:
            seqs = {"all": all_seqs, "val": list(self.VAL_SEQUENCES),
                    "train": [s for s in all_seqs if s not in self.VAL_SEQUENCES]}[split]
        for seq in present_sequences(base, seqs, split, who=self.name)[0]:
            seq_dir = os.path.join(base, seq)
            scans = _labelled_scans(seq, os.path.join(seq_dir, "velodyne"), os.path.join(seq_dir, "labels"),
                                    ".bin", ".label")
            if keep is not None:
                found = {s.position for s in scans}
                absent = sorted(keep[seq] - found)
                if absent:
                    raise FileNotFoundError(f"{os.path.join(seq_dir, 'velodyne', f'{absent[0]:06d}.bin')}: listed in "
                                            f"{split_file} ({split}) but not found")
                scans = [s for s in scans if s.position in keep[seq]]
            self.scans += scans
        self._finish_index()

    @staticmethod
    def _read_split_file(path: str, split: str) -> dict[str, set[int]]:
        try:
            with open(path) as fh:
                table = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: SynLiDAR split file not found") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({one_line(err)})") from None
        key = split if split in table or split != "val" else "validation"
        if not isinstance(table, dict) or key not in table or not isinstance(table[key], dict):
            raise ValueError(f"{path}: expected {{\"train\": {{\"NN\": [frames]}}, \"val\": ...}} with an entry "
                             f"for split {split!r}")
        out = {}
        for seq, frames in table[key].items():
            if not isinstance(frames, list) or not all(isinstance(f, int) and f >= 0 for f in frames):
                raise ValueError(f"{path}: {key}.{seq} must be a list of frame numbers")
            out[str(seq)] = set(frames)
        return out


# ------------------------------------------------------------------------------------------------------- DAPS-3D
@register_dataset("daps3d")
class Daps3dDataset(_SemanticKittiLabels):
    """DAPS-3D (subake/DAPS3D): Ouster OS0 scans, 4 classes (vehicle, human, surface, obstacle).

    ``root`` is the ``daps-1`` or ``daps-2`` folder holding ``data/<seq>/{clouds,labels}`` (``DATASET.md``). Clouds
    are float32 (N, 4) ``.bin`` or ``.npy`` (used when a sequence has no ``.bin``), labels int32 ``.label`` or
    ``.npy`` (SemanticKITTI raw ids in the lower 16 bits, instance ids above), as the official loader
    (``train/common/laserscan.py``) reads both. A cloud's label file has the same stem; stems that are frame numbers
    give the position, any other stems (e.g. timestamps) are ordered by file name. ``variant="daps-1"``: train
    00-07, 09, 10, val 08. ``variant="daps-2"`` (3 real sequences, for evaluation): ``val`` holds every sequence
    folder under ``data/``, ``train`` is refused.
    """

    class_names = DAPS3D_CLASSES
    splits = ("train", "val")
    label_dtype = np.int32

    def __init__(self, root: str | None, split: str = "train", variant: str = "daps-1") -> None:
        super().__init__(root, split)
        self.lut = build_lut(DAPS3D_LEARNING_MAP, 65536)
        data = os.path.join(self.root, "data")
        if not os.path.isdir(data):
            raise FileNotFoundError(f"{data}: DAPS-3D data folder not found (expected <root>/data/<seq>/clouds/)")
        if variant == "daps-1":
            seqs = list(SEMANTICKITTI_SPLITS[split])
        elif variant == "daps-2":
            if split != "val":
                raise ValueError("daps3d: DAPS-2 is an evaluation set; use split='val'")
            seqs = sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)))
        else:
            raise ValueError(f"daps3d: variant must be 'daps-1' or 'daps-2', got {variant!r}")
        for seq in present_sequences(data, seqs, split, who=self.name)[0]:
            seq_dir = os.path.join(data, seq)
            clouds = os.path.join(seq_dir, "clouds")
            ext = ".npy" if not _listdir(clouds, ".bin", f"DAPS-3D {seq} clouds") else ".bin"
            self.scans += _labelled_scans(seq, clouds, os.path.join(seq_dir, "labels"), ext, (".label", ".npy"),
                                          numbered=None)
        self._finish_index()

    def load_points(self, scan: Scan) -> tuple[np.ndarray, dict]:
        if scan.points.endswith(".npy"):
            return _load_npy_points(scan.points), {}
        return read_bin(scan.points, 4, np.float32), {}

    def load_labels(self, scan: Scan, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if scan.labels is None or not scan.labels.endswith(".npy"):
            return super().load_labels(scan, n)
        raw = _load_npy(scan.labels, f"label file of scan {scan.points}")
        raw = raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw
        if raw.ndim != 1 or len(raw) != n or raw.dtype.kind not in "iu":
            raise ValueError(f"{scan.labels}: expected ({n},) integer labels to match the point cloud, got "
                             f"{raw.dtype} {raw.shape}")
        raw = raw.astype(np.int64) & 0xFFFFFFFF
        return apply_lut(self.lut, raw & 0xFFFF), raw >> 16


def _load_npy_points(path: str) -> np.ndarray:
    """An ``.npy`` point array (N, >= 3) as float32 (N, 4); a missing intensity column becomes zeros."""
    arr = _load_npy(path, "point file")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"{path}: expected an (N, >=3) point array, got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: point array has non-finite values")
    if arr.shape[1] == 3:
        arr = np.concatenate([arr, np.zeros((len(arr), 1), np.float32)], axis=1)
    return np.ascontiguousarray(arr[:, :4])


# ------------------------------------------------------------------------------------------------------- Synth4D
@register_dataset("synth4d")
class Synth4dDataset(KittiFamilyDataset):
    """Synth4D (saltoricristiano/gipso-sfouda): CARLA scans, 7 classes.

    ``root`` holds ``<sensor>/<Town>/{velodyne,labels}/<id>.npy`` and ``splits/<sensor>/{training,validation}_split
    .pkl`` (a dict town -> frame ids); ``sensor`` is ``"kitti_synth"`` (HDL-64E, default) or ``"nuscenes_synth"``
    (HDL-32E). File names are the bare frame id (``str(id) + '.npy'``, as GIPSO builds them); zero-padded
    ``NNNNNN.npy`` is accepted too. Points: float array (N, >= 3) with intensity in column 3 (dtype and column count
    [unverified]; cast to float32, zeros if absent). Labels: CARLA semantic tags (N,) or (N, 1) -> 7 classes, the rest
    ignore. The poses/calibration files are not used (no cameras; frames are not treated as a temporal sequence).
    """

    class_names = SYNTH4D_CLASSES
    splits = ("train", "val")

    def __init__(self, root: str | None, split: str = "train", sensor: str = "kitti_synth") -> None:
        super().__init__(root, split)
        if sensor not in ("kitti_synth", "nuscenes_synth"):
            raise ValueError(f"synth4d: sensor must be 'kitti_synth' or 'nuscenes_synth', got {sensor!r}")
        self.lut = build_lut(SYNTH4D_LEARNING_MAP, 23)
        pkl = os.path.join(self.root, "splits", sensor, ("training" if split == "train" else "validation") + "_split.pkl")
        if not os.path.isfile(pkl):
            raise FileNotFoundError(f"{pkl}: Synth4D split file not found")
        try:
            with open(pkl, "rb") as fh:
                table = pickle.load(fh)
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ValueError(f"{pkl}: not a readable split pickle (truncated or corrupt): "
                             f"{one_line(err)}") from err
        if not isinstance(table, dict):
            raise ValueError(f"{pkl}: expected a dict town -> frame ids, got {type(table).__name__}")
        for town in sorted(table):
            base = os.path.join(self.root, sensor, str(town))
            for fid in sorted(int(f) for f in table[town]):
                vel = os.path.join(base, "velodyne", f"{fid}.npy")
                if not os.path.isfile(vel) and os.path.isfile(os.path.join(base, "velodyne", f"{fid:06d}.npy")):
                    vel = os.path.join(base, "velodyne", f"{fid:06d}.npy")
                name = os.path.basename(vel)
                self.scans.append(Scan(str(town), fid, vel, os.path.join(base, "labels", name), name[:-4]))
        self._finish_index()

    def load_points(self, scan: Scan) -> tuple[np.ndarray, dict]:
        return _load_npy_points(scan.points), {}

    def load_labels(self, scan: Scan, n: int) -> tuple[np.ndarray, np.ndarray]:
        raw = _load_npy(scan.labels, f"label file of scan {scan.points}")
        raw = raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw
        if raw.ndim != 1 or len(raw) != n:
            raise ValueError(f"{scan.labels}: has labels of shape {raw.shape} but the point cloud has {n} points")
        return apply_lut(self.lut, raw.astype(np.int64)), np.zeros(n, np.int64)


# ----------------------------------------------------------------------------------------------- SemanticKITTI-C
@register_dataset("semantickitti_c")
class SemanticKittiCDataset(_SemanticKittiLabels):
    """SemanticKITTI-C (Robo3D, ldkong1205/Robo3D ``docs/DATA_PREPARE.md``): corrupted copies of sequence 08.

    ``root/<corruption>/<light|moderate|heavy>/{velodyne,labels}/NNNNNN.{bin,label}``; the scans are flattened
    (no sequence folders), so the sequence id is ``"08"``. Labels use the SemanticKITTI map; the ids Robo3D gives
    the points it adds (fog 21, snow 22, crosstalk 23) are not in the map and become ignore.
    """

    class_names = SEMANTICKITTI_CLASSES
    splits = ("val",)

    def __init__(self, root: str | None, split: str = "val", corruption: str = "fog", severity: str = "light") -> None:
        super().__init__(root, split)
        if corruption not in CORRUPTIONS:
            raise ValueError(f"semantickitti_c: corruption must be one of {CORRUPTIONS}, got {corruption!r}")
        if severity not in SEVERITIES:
            raise ValueError(f"semantickitti_c: severity must be one of {SEVERITIES}, got {severity!r}")
        self.corruption, self.severity = corruption, severity
        self.lut = semantickitti_lut()
        d = os.path.join(self.root, corruption, severity)
        self.scans = _labelled_scans("08", os.path.join(d, "velodyne"), os.path.join(d, "labels"), ".bin", ".label")
        self._finish_index()

    def frame(self, i: int) -> Frame:
        f = super().frame(i)
        f.extra.update(corruption=self.corruption, severity=self.severity)
        return f
