"""Augmentations for image-to-LiDAR pretraining and LiDAR fine-tuning, keeping point/pixel pairs consistent.

SLidR's recipe (``valeoai/SLidR`` ``utils/transforms.py``), re-implemented in vectorised numpy and driven by an
explicit ``np.random.Generator`` so every call is reproducible:

- :func:`random_rotate_flip_scale`: rotation about z (uniform angle), x / y flips (p = 0.5 each), optional scaling.
  Pairs index points, so they are unchanged.
- :func:`drop_cuboid`: remove the points of a random axis-aligned cuboid (side up to ``max_fraction`` of the cloud's
  extent per axis, centred on a random point); rejected (nothing dropped) unless every camera keeps at least
  ``min_pairs`` pairs.
- :func:`resized_crop`: per image, a random crop (area fraction in ``scale``, aspect ratio in ``ratio``, log-uniform)
  resized to ``size``; redrawn until more than ``min_pairs`` pairs or more than ``min_fraction`` of the image's pairs
  survive.
- :func:`hflip_image`: per image horizontal flip with probability ``p``.

Pixel convention (in image-edge coordinates, PIL's; a projected ``u`` corresponds to ``u + 0.5`` there): pixel
``(r, c)`` covers ``[r, r + 1) x [c, c + 1)``. A crop box ``(top, left, h, w)`` resized to
``(H', W')`` sends pixel ``r`` to ``floor((r + 0.5 - top) * H' / h)`` (the output pixel containing its centre) and
output pixel ``r'`` samples source ``floor(top + (r' + 0.5) * h / H')`` for nearest-neighbour maps (superpixels),
the same geometry PIL uses for the bilinear image resize. So pairs keep pointing at the same content (exactly when
upsampling, within half an output pixel when downsampling). SLidR instead rounds ``(r - top) * H' / h``, which is
biased by half a pixel; this is our documented deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from largead.data.geometry import Pairs


def random_rotate_flip_scale(
    points: np.ndarray,
    rng: np.random.Generator,
    rotate: bool = True,
    flip_p: float = 0.5,
    scale_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation about z, x / y flips and isotropic scaling of ``points`` (N, >=3).

    Draw order: angle ``U[0, 2 pi)`` (if ``rotate``), flip x, flip y (each with probability ``flip_p``), scale
    ``U[scale_range]`` (if given). Returns the new points (a copy, same dtype; columns beyond xyz untouched) and the
    (3, 3) float64 matrix ``A`` applied (``xyz' = xyz @ A.T``), e.g. to carry the change into camera extrinsics.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be an (N, >=3) array, got shape {pts.shape}")
    a = np.eye(3)
    if rotate:
        th = rng.random() * 2 * math.pi
        c, s = math.cos(th), math.sin(th)
        a = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    flips = rng.random(2) < flip_p
    a = np.diag([-1.0 if flips[0] else 1.0, -1.0 if flips[1] else 1.0, 1.0]) @ a
    if scale_range is not None:
        a = rng.uniform(*scale_range) * a
    out = pts.copy()
    out[:, :3] = (pts[:, :3].astype(np.float64) @ a.T).astype(pts.dtype)
    return out, a


def drop_cuboid(
    points: np.ndarray,
    pairs: Pairs,
    num_cameras: int,
    rng: np.random.Generator,
    max_fraction: float = 0.2,
    min_pairs: int = 1024,
) -> tuple[np.ndarray, Pairs]:
    """SLidR's drop-cuboid: remove the points strictly inside a random axis-aligned cuboid.

    The cuboid's half-sizes are ``extent * f / 2`` with ``f ~ U[0, max_fraction)`` (``extent`` = the cloud's
    max - min per axis) and it is centred on a uniformly drawn point (draw order: ``f``, then the point). The drop is
    kept only if every camera ``0 .. num_cameras - 1`` keeps at least ``min_pairs`` pairs; otherwise nothing changes.

    Returns ``keep`` (N,) bool (apply it to points, features, labels) and the pairs re-indexed into the kept points.
    """
    xyz = np.asarray(points)[:, :3]
    if len(xyz) == 0:
        return np.ones(0, dtype=bool), pairs
    extent = xyz.max(0) - xyz.min(0)
    half = extent * (rng.random() * max_fraction) / 2.0
    centre = xyz[rng.integers(len(xyz))]
    inside = np.all((xyz > centre - half) & (xyz < centre + half), axis=1)
    keep = ~inside
    kept_pair = keep[pairs.point]
    new_pairs = pairs.select(kept_pair)
    if (new_pairs.counts(num_cameras) < min_pairs).any():
        return np.ones(len(xyz), dtype=bool), pairs
    new_index = np.cumsum(keep) - 1
    return keep, Pairs(new_index[new_pairs.point], new_pairs.camera, new_pairs.row, new_pairs.col)


@dataclass
class CropResult:
    """Output of :func:`resized_crop` / :func:`resize_images`.

    ``images`` (C, H', W', 3) uint8; ``pairs`` re-targeted (pairs falling outside a crop removed); ``maps``
    (C, H', W') per-pixel maps (superpixels) resampled nearest-neighbour, or ``None``; ``boxes`` (C, 4) float64
    ``(top, left, height, width)`` of each crop in source pixels.
    """

    images: np.ndarray
    pairs: Pairs
    maps: np.ndarray | None
    boxes: np.ndarray


def _sample_box(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float],
                ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """A crop (top, left, h, w) with area fraction ~ U[scale] and log-uniform aspect w / h in ``ratio``.

    Up to 10 draws for a box that fits the image, then the largest centred box with the ratio clamped into range
    (the rule of the common ``RandomResizedCrop``).
    """
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * ar)))
        h = int(round(math.sqrt(target / ar)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _map_pairs(rows: np.ndarray, cols: np.ndarray, box: tuple[float, float, float, float],
               size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    top, left, h, w = box
    r = np.floor((rows + 0.5 - top) * (size[0] / h)).astype(np.int64)
    c = np.floor((cols + 0.5 - left) * (size[1] / w)).astype(np.int64)
    ok = (r >= 0) & (r < size[0]) & (c >= 0) & (c < size[1])
    return r, c, ok


def _resample(image: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    top, left, h, w = box
    im = Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR, box=(left, top, left + w, top + h))
    return np.asarray(im)


def _resample_nearest(m: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    top, left, h, w = box
    r = np.floor(top + (np.arange(size[0]) + 0.5) * (h / size[0])).astype(np.int64).clip(0, m.shape[0] - 1)
    c = np.floor(left + (np.arange(size[1]) + 0.5) * (w / size[1])).astype(np.int64).clip(0, m.shape[1] - 1)
    return m[r[:, None], c[None, :]]


def _apply_boxes(images: Sequence[np.ndarray], pairs: Pairs, boxes: np.ndarray, size: tuple[int, int],
                 maps: Sequence[np.ndarray] | None) -> CropResult:
    rows = np.empty_like(pairs.row)
    cols = np.empty_like(pairs.col)
    keep = np.zeros(len(pairs), dtype=bool)
    for c, box in enumerate(boxes):
        sel = pairs.camera == c
        r, cc, ok = _map_pairs(pairs.row[sel], pairs.col[sel], tuple(box), size)
        rows[sel], cols[sel], keep[sel] = r, cc, ok
    out_pairs = Pairs(pairs.point[keep], pairs.camera[keep], rows[keep], cols[keep])
    out_images = np.stack([_resample(im, tuple(b), size) for im, b in zip(images, boxes)]) if len(images) else \
        np.zeros((0, *size, 3), np.uint8)
    out_maps = None
    if maps is not None:
        out_maps = np.stack([_resample_nearest(np.asarray(m), tuple(b), size) for m, b in zip(maps, boxes)])
    return CropResult(out_images, out_pairs, out_maps, np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def _check_inputs(images: Sequence[np.ndarray], pairs: Pairs, maps: Sequence[np.ndarray] | None) -> None:
    for c, im in enumerate(images):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f"image {c} must be (H, W, 3) uint8, got {im.shape} {im.dtype}")
        if maps is not None and np.asarray(maps[c]).shape != im.shape[:2]:
            raise ValueError(f"map {c} has shape {np.asarray(maps[c]).shape}, expected {im.shape[:2]}")
    if maps is not None and len(maps) != len(images):
        raise ValueError(f"got {len(maps)} maps for {len(images)} images")
    if len(pairs) and (pairs.camera.min() < 0 or pairs.camera.max() >= len(images)):
        raise ValueError(f"pairs refer to camera {int(pairs.camera.max())} but there are {len(images)} images")


def resized_crop(
    images: Sequence[np.ndarray],
    pairs: Pairs,
    rng: np.random.Generator,
    size: tuple[int, int] = (224, 416),
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (14.0 / 9.0, 17.0 / 9.0),
    min_pairs: int = 1024,
    min_fraction: float = 0.75,
    max_tries: int = 100,
    maps: Sequence[np.ndarray] | None = None,
) -> CropResult:
    """SLidR's per-image random resized crop, with pairs (and optional superpixel maps) kept consistent.

    For each image a box is drawn (:func:`_sample_box`) until more than ``min_pairs`` of its pairs, or more than
    ``min_fraction`` of them, fall inside; SLidR retries forever, we stop after ``max_tries`` draws and use the whole
    image (which keeps every pair). ``size`` is (height, width). See the module docstring for the pixel mapping.
    """
    _check_inputs(images, pairs, maps)
    boxes = np.zeros((len(images), 4))
    for c, im in enumerate(images):
        h_img, w_img = im.shape[:2]
        sel = pairs.camera == c
        rows, cols = pairs.row[sel], pairs.col[sel]
        n = int(sel.sum())
        box: tuple[float, float, float, float] = (0.0, 0.0, float(h_img), float(w_img))
        for _ in range(max_tries):
            cand = _sample_box(rng, h_img, w_img, scale, ratio)
            kept = int(_map_pairs(rows, cols, cand, size)[2].sum())
            if kept > min_pairs or (n > 0 and kept / n > min_fraction):
                box = cand
                break
        boxes[c] = box
    return _apply_boxes(images, pairs, boxes, size, maps)


def resize_images(images: Sequence[np.ndarray], pairs: Pairs, size: tuple[int, int] = (224, 416),
                  maps: Sequence[np.ndarray] | None = None) -> CropResult:
    """Resize whole images to ``size`` (SLidR's validation transform), re-targeting pairs (none are lost)."""
    _check_inputs(images, pairs, maps)
    boxes = np.array([[0.0, 0.0, im.shape[0], im.shape[1]] for im in images]).reshape(-1, 4)
    return _apply_boxes(images, pairs, boxes, size, maps)


def hflip_image(
    images: Sequence[np.ndarray] | np.ndarray,
    pairs: Pairs,
    rng: np.random.Generator,
    p: float = 0.5,
    maps: Sequence[np.ndarray] | np.ndarray | None = None,
) -> tuple[np.ndarray | list[np.ndarray], Pairs, np.ndarray | list[np.ndarray] | None, np.ndarray]:
    """Flip each image horizontally with probability ``p`` (one draw per image), updating ``col -> W - 1 - col``.

    Returns ``(images, pairs, maps, flipped)`` with ``flipped`` (C,) bool; images and maps are new arrays (a stacked
    array in, a stacked array out; a list in, a list out), inputs are not modified.
    """
    flipped = rng.random(len(images)) < p
    widths = np.array([im.shape[1] for im in images], dtype=np.int64)
    flip_pair = flipped[pairs.camera] if len(pairs) else np.zeros(0, dtype=bool)
    cols = np.where(flip_pair, widths[pairs.camera] - 1 - pairs.col, pairs.col) if len(pairs) else pairs.col.copy()
    new_pairs = Pairs(pairs.point.copy(), pairs.camera.copy(), pairs.row.copy(), cols)

    def flip_all(xs):
        out = [x[:, ::-1].copy() if f else np.array(x, copy=True) for x, f in zip(xs, flipped)]
        return np.stack(out) if isinstance(xs, np.ndarray) else out

    return flip_all(images), new_pairs, None if maps is None else flip_all(maps), flipped
