"""On-disk format of superpixels: one single-channel PNG of segment ids per camera image.

Layout (Seal's and SLidR's): ``<root>/superpixels_<source>/<camera token>.png``, e.g.
``superpixels/nuscenes/superpixels_seem/<CAM sample_data token>.png``. The PNG holds the segment id of every pixel
and has the size of the camera image.

Seal and SLidR always write 8-bit PNGs, so a SAM map with more than 256 masks silently wraps around (id 256 becomes
0, 257 becomes 1, ...). Here a map is written as 8-bit when its largest id is below 256 (byte-identical layout to the
official files, which stay readable) and as a 16-bit PNG otherwise; ids of 65536 or more are refused. Writes are
atomic and durable (temporary file in the same folder, ``fsync``, then ``os.replace``), so neither an interrupted run
nor a power loss leaves a truncated PNG under the final name.

Reading verifies the CRC of every PNG chunk (``PIL.Image.verify``) before decoding: Pillow's decoder alone accepts some
flipped bytes and returns wrong ids. A damaged file raises :class:`largead.fileio.CorruptFileError` naming it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from largead.fileio import CorruptFileError, atomic_path

MAX_ID_16BIT = 65535


def superpixel_path(root: str | os.PathLike, source: str, token: str) -> Path:
    """Path of the superpixel PNG of camera image ``token`` made by ``source``: ``root/superpixels_{source}/{token}.png``.

    ``token`` may contain ``/`` (KITTI-style ``"<seq>/<frame>"`` ids become sub-folders) but must be relative and
    must not contain ``..``.
    """
    if not source or "/" in source or "\\" in source:
        raise ValueError(f"superpixel source name must be a non-empty name without slashes, got {source!r}")
    if not token:
        raise ValueError("camera token is empty: every CameraView needs a token to name its superpixel file")
    parts = PurePosixPath(token).parts
    if PurePosixPath(token).is_absolute() or ".." in parts or "\\" in token:
        raise ValueError(f"camera token {token!r} must be a relative name without '..' or backslashes")
    return Path(root) / f"superpixels_{source}" / f"{token}.png"


def _as_id_map(ids: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 2:
        raise ValueError(f"{what}: superpixel ids must be an (H, W) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: superpixel ids must be integers, got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"{what}: superpixel ids must be >= 0, got minimum {int(arr.min())}")
    if arr.size and int(arr.max()) > MAX_ID_16BIT:
        raise ValueError(f"{what}: largest superpixel id {int(arr.max())} does not fit a 16-bit PNG (max {MAX_ID_16BIT})")
    return arr


def save_superpixels(path: str | os.PathLike, ids: np.ndarray, *, durable: bool = True) -> Path:
    """Write the (H, W) id map ``ids`` to ``path`` atomically; 8-bit PNG if ``max < 256`` else 16-bit. Returns the path.

    Parent folders are created. ``durable``: ``fsync`` the file and its folder (see :mod:`largead.fileio`). Raises
    ``ValueError`` on negative ids, non-integer dtype, a non-2D array or ids above 65535.
    """
    path = Path(path)
    arr = _as_id_map(ids, str(path))
    dtype = np.uint8 if (arr.size == 0 or int(arr.max()) < 256) else np.uint16
    image = Image.fromarray(np.ascontiguousarray(arr.astype(dtype)))
    with atomic_path(path, suffix=".png.tmp", durable=durable) as tmp:
        image.save(tmp, format="PNG")
    return path


def load_superpixels(path: str | os.PathLike, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a superpixel PNG as an (H, W) int32 id map.

    Accepts 8-bit (``L``/``P``) and 16-bit (``I;16``/``I``) single-channel PNGs. Raises ``FileNotFoundError`` naming
    the file if it is missing, :class:`~largead.fileio.CorruptFileError` (a ``ValueError``) naming it if it is
    truncated or damaged (every chunk's CRC is checked), ``ValueError`` naming it if it is not single-channel or if
    its size differs from ``expected_hw`` = (height, width) of the camera image it belongs to.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"superpixel file not found: {path}") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # CRC of every chunk, image data included
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            if mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
                raise ValueError(f"{path}: superpixel PNG must be single-channel 8- or 16-bit, got mode {mode!r}")
            arr = np.array(im)
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise _damaged(path, data, err) from err
    except (OSError, SyntaxError, EOFError) as err:  # Pillow: UnidentifiedImageError, truncated, bad CRC (SyntaxError)
        raise _damaged(path, data, err) from err
    if arr.ndim != 2:
        raise ValueError(f"{path}: superpixel PNG must be single-channel, got array shape {arr.shape}")
    if expected_hw is not None and tuple(arr.shape) != tuple(int(v) for v in expected_hw):
        raise ValueError(
            f"{path}: superpixel map is {arr.shape[0]}x{arr.shape[1]} (HxW) but its image is "
            f"{int(expected_hw[0])}x{int(expected_hw[1])}"
        )
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"{path}: negative superpixel ids (min {int(arr.min())})")
    return arr.astype(np.int32, copy=False)


def _damaged(path: Path, data: bytes, err: BaseException) -> CorruptFileError:
    what = "empty" if not data else f"{len(data)} bytes"
    reason = " ".join(str(err).split()) or type(err).__name__
    return CorruptFileError(path, f"superpixel PNG is truncated or damaged ({what}; {type(err).__name__}: {reason}); "
                                  "regenerate it, e.g. scripts/generate_superpixels.py --verify")
