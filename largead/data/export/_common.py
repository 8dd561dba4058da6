"""Helpers shared by the dataset writers: sequence grouping, label inversion, image encoding, tokens, fresh roots."""

from __future__ import annotations

import hashlib
import io
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from largead.data.frame import IGNORE_INDEX, Frame
from largead.fileio import atomic_write_bytes

__all__ = [
    "atomic_write_bytes",
    "check_fresh",
    "encode_image",
    "group_by_sequence",
    "raw_labels",
    "token",
    "validate_frames",
]


def group_by_sequence(frames: Sequence[Frame]) -> OrderedDict[str, list[Frame]]:
    """Frames grouped by ``frame.sequence`` (order of first appearance), each group sorted by ``frame.index``.

    Raises ``ValueError`` when a sequence has two frames with the same index.
    """
    groups: OrderedDict[str, list[Frame]] = OrderedDict()
    for f in frames:
        groups.setdefault(f.sequence, []).append(f)
    for seq, fs in groups.items():
        idx = [f.index for f in fs]
        if len(set(idx)) != len(idx):
            raise ValueError(f"sequence {seq!r}: frames have duplicate indices {sorted(idx)}")
        fs.sort(key=lambda f: f.index)
    return groups


def raw_labels(labels: np.ndarray, inverse_lut: np.ndarray, where: str) -> np.ndarray:
    """Training ids (``-1 .. C-1``) -> raw ids through ``inverse_lut`` (indexed by ``train_id + 1``), int64."""
    lab = np.asarray(labels, dtype=np.int64)
    lo, hi = IGNORE_INDEX, len(inverse_lut) - 2
    if len(lab) and (lab.min() < lo or lab.max() > hi):
        raise ValueError(f"{where}: labels must be in [{lo}, {hi}] for this label map, got [{lab.min()}, {lab.max()}]")
    return np.asarray(inverse_lut, dtype=np.int64)[lab + 1]


def validate_frames(groups: OrderedDict[str, list[Frame]], inverse_lut: np.ndarray | None, what: str = "sequence",
                    max_raw: int | None = None) -> None:
    """Validate every frame (shapes, finiteness, labels within the map) before anything is written."""
    for seq, fs in groups.items():
        for f in fs:
            where = f"{what} {seq!r} frame {f.index}"
            f.validate(where)
            if f.labels is not None and inverse_lut is not None:
                raw = raw_labels(f.labels, inverse_lut, where)
                if max_raw is not None and len(raw) and raw.max() > max_raw:
                    raise ValueError(f"{where}: raw label id {raw.max()} does not fit the format (max {max_raw})")


def encode_image(image: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """Encode an (H, W, 3) uint8 image as ``"JPEG"`` (4:4:4, ``quality``) or ``"PNG"`` bytes."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(image).save(buf, format=fmt, quality=quality, subsampling=0)
    else:
        Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def token(*parts: object) -> str:
    """Deterministic 32-hex token (the nuScenes token format) from ``parts``."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def check_fresh(paths: Sequence[str | os.PathLike[str]], why: str) -> None:
    """Raise ``FileExistsError`` naming the first of ``paths`` that exists (writers never merge into old data)."""
    for p in paths:
        if Path(p).exists():
            raise FileExistsError(f"{p}: already exists; write into a fresh root ({why})")
