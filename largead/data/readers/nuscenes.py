"""nuScenes (v1.0, with nuScenes-lidarseg) reader, built on the official ``nuscenes-devkit``.

Keyframes only. Each frame: points ``(N, 4)`` from the ``LIDAR_TOP`` ``.pcd.bin`` (float32 x 5; the 5th column,
the ring index, goes to ``frame.extra["ring"]``), lidarseg labels mapped to the 16 benchmark classes (0-based,
ignore -1, see :mod:`largead.data.labels`), the LiDAR-to-global pose (``ego_pose @ calibrated_sensor``), the
timestamp in seconds, and the six cameras in SLidR's order with ``lidar_to_camera`` composed through nuScenes' chain
lidar -> ego(t_lidar) -> global -> ego(t_cam) -> camera (:func:`~largead.data.geometry.nuscenes_lidar_to_camera`).
``frame.token`` is the LIDAR_TOP sample_data token, ``CameraView.token`` the camera sample_data token.

Splits: ``train`` / ``val`` / ``test`` / ``mini_train`` / ``mini_val`` are the devkit's ``create_splits_scenes()``;
``pretrain`` / ``pretrain_val`` are SLidR's pretraining split ("parametrizing" / "verifying" in
``valeoai/SLidR`` ``pretrain/dataloader_nuscenes.py``): the 700 training scenes minus a fixed list of 100 training
scenes held out for parameter search, and those 100 scenes (:data:`SLIDR_HELDOUT_SCENES`); ``all`` is every scene in
the tables (for exported synthetic data whose scene names are not official). Scenes appear in the order of the
``scene`` table, as in SLidR, which the label-fraction rule relies on. Which split to use: image-to-LiDAR
pretraining as in SLidR / Seal / LargeAD uses ``pretrain`` (600 scenes; ``pretrain_val`` for parameter search),
fine-tuning and linear probing ``train`` (with the label fractions of :mod:`largead.data.splits`) and evaluation
``val``.

Files (nuscenes-devkit ``docs/schema_nuscenes.md``): required are the 13 tables of ``<dataroot>/<version>/``, the
keyframe point files ``samples/LIDAR_TOP/*.pcd.bin`` and, with ``cameras=True``, the keyframe images
``samples/CAM_*/*.jpg``; the lidarseg add-on (``lidarseg.json``, ``category.json`` with ``index``,
``lidarseg/<version>/*.bin``) is required for labels (see ``labels``); ``sweeps/`` (non-keyframes) and ``maps/``
images are not read.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from largead.data.frame import CameraView, Frame
from largead.data.geometry import check_intrinsics, nuscenes_lidar_to_camera, rigid_from_quaternion
from largead.data.labels import NUSCENES_CLASSES, NUSCENES_LIDARSEG_CATEGORIES, apply_lut, nuscenes_lidarseg_lut
from largead.data.readers._kitti_io import one_line, read_bin, read_image, read_raw_label
from largead.data.registry import LidarDataset, register_dataset

NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT",
)
"""The six cameras, in SLidR's order."""

SLIDR_HELDOUT_SCENES: tuple[str, ...] = (
    "scene-0008", "scene-0009", "scene-0019", "scene-0029", "scene-0032", "scene-0042", "scene-0045", "scene-0049",
    "scene-0052", "scene-0054", "scene-0056", "scene-0066", "scene-0067", "scene-0073", "scene-0131", "scene-0152",
    "scene-0166", "scene-0168", "scene-0183", "scene-0190", "scene-0194", "scene-0208", "scene-0210", "scene-0211",
    "scene-0241", "scene-0243", "scene-0248", "scene-0259", "scene-0260", "scene-0261", "scene-0287", "scene-0292",
    "scene-0297", "scene-0305", "scene-0306", "scene-0350", "scene-0352", "scene-0358", "scene-0361", "scene-0365",
    "scene-0368", "scene-0377", "scene-0388", "scene-0391", "scene-0395", "scene-0413", "scene-0427", "scene-0428",
    "scene-0438", "scene-0444", "scene-0452", "scene-0453", "scene-0459", "scene-0463", "scene-0464", "scene-0475",
    "scene-0513", "scene-0533", "scene-0544", "scene-0575", "scene-0587", "scene-0589", "scene-0642", "scene-0652",
    "scene-0658", "scene-0669", "scene-0678", "scene-0687", "scene-0701", "scene-0703", "scene-0706", "scene-0710",
    "scene-0715", "scene-0726", "scene-0735", "scene-0740", "scene-0758", "scene-0786", "scene-0790", "scene-0804",
    "scene-0806", "scene-0847", "scene-0856", "scene-0868", "scene-0882", "scene-0897", "scene-0899", "scene-0976",
    "scene-0996", "scene-1012", "scene-1015", "scene-1016", "scene-1018", "scene-1020", "scene-1024", "scene-1044",
    "scene-1058", "scene-1094", "scene-1098", "scene-1107",
)
"""SLidR's 100 training scenes held out of pretraining for parameter search (its ``CUSTOM_SPLIT``)."""


def _devkit() -> Any:
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the nuScenes reader needs nuscenes-devkit: pip install 'largead[nuscenes]'") from err
    return NuScenes


TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log", "scene",
          "sample", "sample_data", "sample_annotation", "map")
"""The tables every nuScenes version has (the devkit loads them all); ``lidarseg.json`` comes with the add-on."""

LABELLED_SPLITS = ("train", "val", "mini_train", "mini_val")
"""Splits whose frames must have lidarseg labels by default (``labels=None``): the downstream splits."""


def _open_devkit(root: Path, version: str) -> Any:
    """Load the tables with the devkit, after checking what it would fail on with an unhelpful message."""
    table_dir = root / version
    if not table_dir.is_dir():
        raise FileNotFoundError(f"{table_dir}: nuScenes tables for version {version!r} not found (expected "
                                f"<dataroot>/{version}/scene.json ...)")
    for name in TABLES:
        if not (table_dir / f"{name}.json").is_file():
            raise FileNotFoundError(f"{table_dir / (name + '.json')}: nuScenes table not found")
    if (table_dir / "lidarseg.json").is_file() and not (root / "lidarseg" / version).is_dir():
        raise FileNotFoundError(f"{root / 'lidarseg' / version}: nuScenes-lidarseg label folder not found "
                                f"({table_dir / 'lidarseg.json'} lists label files there)")
    try:
        return _devkit()(version=version, dataroot=str(root), verbose=False)
    except json.JSONDecodeError as err:
        bad = next((f for f in sorted(table_dir.glob("*.json")) if not _parses(f)), table_dir)
        raise ValueError(f"{bad}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except AssertionError as err:  # the devkit's checks (label file count, category index, ...)
        raise ValueError(f"{table_dir}: nuscenes-devkit refused the tables: {one_line(err)}") from None
    except (KeyError, IndexError, TypeError) as err:  # broken references between tables
        raise ValueError(f"{table_dir}: inconsistent nuScenes tables (a record refers to a missing one: "
                         f"{type(err).__name__} {one_line(err)})") from None


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (ValueError, OSError):
        return False


def check_lidarseg_categories(nusc: Any, where: str) -> None:
    """Refuse a ``category.json`` whose lidarseg ``index`` order differs from :data:`NUSCENES_LIDARSEG_CATEGORIES`.

    The label files store these indices, and the class map (:func:`~largead.data.labels.nuscenes_lidarseg_lut`)
    is written for that order; the dataset's own ``category.json`` is the authority, so a mismatch is an error
    naming both rather than a silent relabelling.
    """
    index = {}
    for rec in nusc.category:
        if "index" not in rec:
            raise ValueError(f"{where}: category {rec.get('name')!r} has no 'index': use the category.json that "
                             "comes with nuScenes-lidarseg")
        index[int(rec["index"])] = rec["name"]
    expected = dict(enumerate(NUSCENES_LIDARSEG_CATEGORIES))
    for i in sorted(set(index) | set(expected)):
        if index.get(i) != expected.get(i):
            raise ValueError(f"{where}: lidarseg index {i} is {index.get(i)!r} in the dataset but {expected.get(i)!r} "
                             "in largead's class map (largead.data.labels.NUSCENES_LIDARSEG_CATEGORIES); refusing to "
                             "map labels by a different category order")


def split_scenes(split: str) -> set[str] | None:
    """Scene names of ``split`` (``None`` for ``all``)."""
    if split == "all":
        return None
    from nuscenes.utils.splits import create_splits_scenes

    official = create_splits_scenes()
    if split == "pretrain":
        return set(official["train"]) - set(SLIDR_HELDOUT_SCENES)
    if split == "pretrain_val":
        return set(SLIDR_HELDOUT_SCENES)
    return set(official[split])


@register_dataset("nuscenes")
class NuScenesDataset(LidarDataset):
    """nuScenes keyframes with lidarseg labels and six cameras (see the module docstring).

    Args:
        root: the nuScenes ``dataroot`` (holding ``samples/``, ``lidarseg/`` and the ``version`` folder).
        split: one of :attr:`splits`.
        version: table version, e.g. ``v1.0-trainval``, ``v1.0-mini``, ``v1.0-test``.
        cameras: load the camera views (images, intrinsics, ``lidar_to_camera``).
        camera_names: which channels, in which order (default :data:`NUSCENES_CAMERAS`).
        nusc: an already loaded ``NuScenes`` object to share (its tables take seconds to load on trainval).
        labels: read the lidarseg labels. ``None`` (default): required for the downstream splits ``train``, ``val``,
            ``mini_train``, ``mini_val`` (a dataroot without the lidarseg add-on is an error naming
            ``lidarseg.json``), read when present for the others (``pretrain``, ``pretrain_val``, ``all``, ``test``);
            ``True``: required; ``False``: not read (``labels=None``).

    With labels, the dataset's ``category.json`` must give the lidarseg ``index`` order of
    :data:`~largead.data.labels.NUSCENES_LIDARSEG_CATEGORIES` (:func:`check_lidarseg_categories`).
    """

    class_names: ClassVar[tuple[str, ...]] = NUSCENES_CLASSES
    has_cameras: ClassVar[bool] = True
    temporal: ClassVar[bool] = True
    splits: ClassVar[tuple[str, ...]] = (
        "train", "val", "test", "mini_train", "mini_val", "pretrain", "pretrain_val", "all")
    label_fraction_unit: ClassVar[str] = "sequence"

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        version: str = "v1.0-trainval",
        cameras: bool = True,
        camera_names: Sequence[str] = NUSCENES_CAMERAS,
        nusc: Any = None,
        labels: bool | None = None,
    ) -> None:
        if split not in self.splits:
            raise ValueError(f"nuscenes has no split {split!r}; available: {', '.join(self.splits)}")
        if labels not in (None, True, False):
            raise ValueError(f"nuscenes: labels must be True, False or None (required for "
                             f"{', '.join(LABELLED_SPLITS)}), got {labels!r}")
        if nusc is None:
            if root is None:
                raise ValueError("nuscenes: root (the nuScenes dataroot) is required")
            nusc = _open_devkit(Path(root), version)
        self.nusc = nusc
        self.root = Path(nusc.dataroot)
        self.split = split
        self.version = nusc.version
        self.load_cameras = cameras
        self.camera_names = tuple(camera_names)
        unknown = [c for c in self.camera_names if c not in NUSCENES_CAMERAS]
        if unknown:
            raise ValueError(f"nuscenes: unknown camera channels {unknown}; choose from {list(NUSCENES_CAMERAS)}")
        self._lut = nuscenes_lidarseg_lut()
        table = self.root / self.version / "lidarseg.json"
        has_lidarseg = hasattr(nusc, "lidarseg")
        need = labels if labels is not None else split in LABELLED_SPLITS
        if need and not has_lidarseg:
            raise FileNotFoundError(
                f"{table}: not found; split {split!r} needs the nuScenes-lidarseg add-on (lidarseg.json, category.json "
                f"with 'index', lidarseg/{self.version}/*.bin) in the dataroot; pass labels=False to read the LiDAR "
                "without labels")
        self.has_labels = has_lidarseg and labels is not False
        if self.has_labels:
            check_lidarseg_categories(nusc, str(self.root / self.version / "category.json"))
        # sample_data token -> lidarseg label file
        self._label_files = ({r["sample_data_token"]: r["filename"] for r in nusc.lidarseg} if self.has_labels
                             else {})

        wanted = split_scenes(split)
        tokens: list[str] = []
        seq: list[str] = []
        pos: list[int] = []
        for scene in nusc.scene:
            if wanted is not None and scene["name"] not in wanted:
                continue
            sample_token = scene["first_sample_token"]
            k = 0
            while sample_token:
                sample = nusc.get("sample", sample_token)
                tokens.append(sample["data"]["LIDAR_TOP"])
                seq.append(scene["name"])
                pos.append(k)
                k += 1
                sample_token = sample["next"]
        self._tokens = tokens
        self._seq = seq
        self._pos = np.asarray(pos, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._tokens)

    def sequence_of(self, i: int) -> tuple[str, int]:
        return self._seq[i], int(self._pos[i])

    def next_index(self, i: int, n: int = 1) -> int | None:
        """Index of the keyframe ``n`` samples after frame ``i`` in the same scene, or ``None``."""
        j = i + n
        if 0 <= j < len(self) and self._seq[j] == self._seq[i] and self._pos[j] == self._pos[i] + n:
            return j
        return None

    def _record_matrix(self, table: str, token: str) -> np.ndarray:
        rec = self.nusc.get(table, token)
        try:
            m = rigid_from_quaternion(rec["rotation"], rec["translation"])
        except ValueError as err:
            raise ValueError(f"{self.version}/{table}.json: record {token} has a degenerate rotation "
                             f"({one_line(err)})") from None
        if not np.isfinite(m).all():
            raise ValueError(f"{self.version}/{table}.json: record {token} has a non-finite translation "
                             f"{rec['translation']}")
        return m

    def lidar_token(self, i: int) -> str:
        """LIDAR_TOP sample_data token of frame ``i`` (``frame(i).token`` without loading anything)."""
        return self._tokens[i]

    def lidarseg_filename(self, i: int) -> str | None:
        """Label file of frame ``i`` relative to the dataroot (``lidarseg/<version>/<token>_lidarseg.bin``), or
        ``None`` when labels are not read (no lidarseg add-on, ``v1.0-test``, ``labels=False``). Raises ``KeyError``
        when a labelled version has no record for the frame."""
        if not self.has_labels:
            return None
        token = self._tokens[i]
        if token not in self._label_files:
            point_file = Path(self.nusc.get("sample_data", token)["filename"]).name
            raise KeyError(f"{self.root / self.version / 'lidarseg.json'}: no record for LIDAR_TOP sample_data "
                           f"{token} ({point_file}); every keyframe of a labelled version must have one")
        return self._label_files[token]

    def _lidar_calibration(self, sd: dict) -> tuple[np.ndarray, np.ndarray]:
        return (self._record_matrix("calibrated_sensor", sd["calibrated_sensor_token"]),
                self._record_matrix("ego_pose", sd["ego_pose_token"]))

    def lidar_pose(self, i: int) -> np.ndarray:
        """(4, 4) LiDAR-to-global pose of frame ``i`` (``ego_pose @ calibrated_sensor``), from the tables only."""
        lidar_to_ego, ego_lidar = self._lidar_calibration(self.nusc.get("sample_data", self._tokens[i]))
        return ego_lidar @ lidar_to_ego

    def camera_views(self, i: int) -> list[CameraView]:
        """The camera views of frame ``i`` (images loaded) in ``camera_names`` order, without reading the points."""
        nusc = self.nusc
        sd = nusc.get("sample_data", self._tokens[i])
        lidar_to_ego, ego_lidar = self._lidar_calibration(sd)
        sample = nusc.get("sample", sd["sample_token"])
        cams: list[CameraView] = []
        for channel in self.camera_names:
            if channel not in sample["data"]:
                raise KeyError(f"{self.version}: sample {sample['token']} has no {channel} camera (a LiDAR-only "
                               "dataroot? pass cameras=False to read the LiDAR without images)")
            cam_sd = nusc.get("sample_data", sample["data"][channel])
            cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
            k = check_intrinsics(cs["camera_intrinsic"], f"{self.version}/calibrated_sensor.json: "
                                 f"record {cs['token']} ({channel}) camera_intrinsic")
            l2c = nuscenes_lidar_to_camera(
                lidar_to_ego, ego_lidar,
                self._record_matrix("ego_pose", cam_sd["ego_pose_token"]),
                self._record_matrix("calibrated_sensor", cam_sd["calibrated_sensor_token"]))
            image = read_image(self.root / cam_sd["filename"])
            cams.append(CameraView(image=image, intrinsics=k, lidar_to_camera=l2c, name=channel,
                                   token=cam_sd["token"]))
        return cams

    def read_lidar(self, i: int, data_root: str | Path | None = None,
                   added_label_ids: Collection[int] = ()) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray | None]:
        """Read the ``LIDAR_TOP`` sweep of frame ``i`` and its lidarseg labels, by their table file names.

        Args:
            data_root: folder the table file names are relative to (default: the dataroot). Datasets that keep
                nuScenes' file names under another folder (nuScenes-C) pass it.
            added_label_ids: raw label ids accepted besides the 32 lidarseg categories, mapped to ignore (the ids
                nuScenes-C gives the points it adds); any other index above 31 is an error naming the file.

        Returns:
            ``(point file, points (N, 4) float32 x, y, z, intensity, ring (N,) int64, labels (N,) int64 training ids
            or None when the tables carry no lidarseg)``.
        """
        base = self.root if data_root is None else Path(data_root)
        pc_path = base / self.nusc.get("sample_data", self._tokens[i])["filename"]
        raw_pts = read_bin(pc_path, columns=5, dtype=np.float32)
        points, ring = np.ascontiguousarray(raw_pts[:, :4]), raw_pts[:, 4].astype(np.int64)
        label_file = self.lidarseg_filename(i)
        if label_file is None:
            return pc_path, points, ring, None
        lab_path = base / label_file
        raw = read_raw_label(lab_path, len(points), np.uint8)
        known = (raw < len(self._lut)) | np.isin(raw, list(added_label_ids))
        if not known.all():
            category = "a nuScenes-lidarseg category (0..31)"
            what = (f"neither {category} nor an added-point id {sorted(added_label_ids)}" if added_label_ids
                    else f"not {category}")
            raise ValueError(f"{lab_path}: label index {int(raw[~known][0])} is {what}")
        return pc_path, points, ring, apply_lut(self._lut, raw)

    def frame(self, i: int) -> Frame:
        token = self._tokens[i]
        pc_path, points, ring, labels = self.read_lidar(i)
        sd = self.nusc.get("sample_data", token)
        sample = self.nusc.get("sample", sd["sample_token"])
        cams = self.camera_views(i) if self.load_cameras else []
        seq, pos = self.sequence_of(i)
        frame = Frame(
            points=points, labels=labels, pose=self.lidar_pose(i), timestamp=sd["timestamp"] * 1e-6,
            sequence=seq, index=pos, dataset=self.name, token=token, cameras=cams,
            extra={"ring": ring, "sample_token": sample["token"], "scene_token": sample["scene_token"]},
        )
        return frame.validate(str(pc_path))
