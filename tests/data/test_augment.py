from __future__ import annotations

import numpy as np
import pytest

from largead.data.augment import drop_cuboid, hflip_image, random_rotate_flip_scale, resize_images, resized_crop
from largead.data.geometry import Pairs


def coord_map(h: int, w: int) -> np.ndarray:
    """Map whose value is the flat index of its own pixel: tells which source pixel a resampled pixel came from."""
    return np.arange(h * w, dtype=np.int64).reshape(h, w)


def random_pairs(rng, num_points, shapes, per_camera):
    parts = []
    for c, (h, w) in enumerate(shapes):
        n = per_camera
        parts.append(Pairs(rng.integers(0, num_points, n), np.full(n, c, np.int64), rng.integers(0, h, n),
                           rng.integers(0, w, n)))
    return Pairs.concat(parts)


def test_rotate_flip_scale_is_a_similarity_about_z():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(200, 4)).astype(np.float32)
    out, a = random_rotate_flip_scale(pts, np.random.default_rng(1), scale_range=(0.9, 1.1))
    s = abs(np.linalg.det(a)) ** (1 / 3)
    assert 0.9 <= s <= 1.1
    np.testing.assert_allclose(a.T @ a, s * s * np.eye(3), atol=1e-12)  # orthogonal up to scale
    np.testing.assert_allclose(out[:, 2], pts[:, 2] * s, rtol=1e-5, atol=1e-6)  # z only scaled
    np.testing.assert_array_equal(out[:, 3], pts[:, 3])  # intensity untouched
    np.testing.assert_allclose(out[:, :3], pts[:, :3] @ a.T, atol=1e-5)
    out2, a2 = random_rotate_flip_scale(pts, np.random.default_rng(1), scale_range=(0.9, 1.1))
    assert np.array_equal(out, out2) and np.array_equal(a, a2)


def test_flips_occur_with_probability_half():
    dets = [np.linalg.det(random_rotate_flip_scale(np.zeros((1, 3)), np.random.default_rng(s))[1]) for s in range(400)]
    frac_reflect = np.mean(np.array(dets) < 0)  # exactly one flip -> reflection, p = 0.5
    assert 0.4 < frac_reflect < 0.6
    _, a = random_rotate_flip_scale(np.zeros((1, 3)), np.random.default_rng(0), rotate=False, flip_p=1.0)
    np.testing.assert_array_equal(a, np.diag([-1.0, -1.0, 1.0]))


def test_drop_cuboid_removes_one_box_and_reindexes_pairs():
    rng = np.random.default_rng(2)
    pts = rng.uniform(-10, 10, (3000, 4))
    pairs = random_pairs(rng, 3000, [(20, 30), (20, 30)], 500)
    dropped_any = False
    for seed in range(10):
        keep, new = drop_cuboid(pts, pairs, 2, np.random.default_rng(seed), min_pairs=0)
        gone = pts[~keep, :3]
        if len(gone) == 0:
            continue
        dropped_any = True
        lo, hi = gone.min(0), gone.max(0)
        assert (hi - lo <= 0.2 * 20 + 1e-9).all()  # at most 20 % of the extent per axis
        inside_bbox = np.all((pts[:, :3] >= lo) & (pts[:, :3] <= hi), axis=1)
        np.testing.assert_array_equal(inside_bbox, ~keep)  # exactly one axis-aligned box removed
        # re-indexed pairs point at the same original points and pixels
        orig_of_new = np.flatnonzero(keep)
        ref = pairs.select(keep[pairs.point])
        np.testing.assert_array_equal(orig_of_new[new.point], ref.point)
        np.testing.assert_array_equal(new.row, ref.row)
        np.testing.assert_array_equal(new.col, ref.col)
    assert dropped_any


def test_drop_cuboid_rejected_when_a_camera_loses_too_many_pairs():
    rng = np.random.default_rng(3)
    pts = rng.uniform(-10, 10, (500, 3))
    pairs = random_pairs(rng, 500, [(20, 30)] * 2, 100)
    for seed in range(5):
        keep, new = drop_cuboid(pts, pairs, 2, np.random.default_rng(seed), min_pairs=100)
        if keep.all():
            assert new is pairs
        else:  # only accepted if no pair was lost at all
            assert (new.counts(2) >= 100).all()
    keep, new = drop_cuboid(pts, pairs, 3, np.random.default_rng(0), min_pairs=1)  # camera 2 has no pairs
    assert keep.all() and new is pairs


@pytest.mark.parametrize("src_shape", [(40, 60), (300, 500)])
def test_resized_crop_pairs_point_at_same_content(src_shape):
    rng = np.random.default_rng(4)
    h, w = src_shape
    shapes = [src_shape] * 3
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in shapes]
    maps = [coord_map(h, w) for _ in shapes]
    pairs = random_pairs(rng, 1000, shapes, 400)
    size = (56, 104)
    res = resized_crop(images, pairs, np.random.default_rng(5), size=size, min_pairs=50, maps=maps)
    assert res.images.shape == (3, *size, 3) and res.maps.shape == (3, *size)
    src = res.maps[res.pairs.camera, res.pairs.row, res.pairs.col]
    src_row, src_col = src // w, src % w
    # find each surviving pair's original pixel (pairs are kept in order)
    orig = pairs.select(_survivors(pairs, res, size))
    for c in range(3):
        top, left, bh, bw = res.boxes[c]
        sel = res.pairs.camera == c
        sr, sc = size[0] / bh, size[1] / bw
        tol_r = 0 if sr >= 1 else 0.5 / sr + 0.5
        tol_c = 0 if sc >= 1 else 0.5 / sc + 0.5
        assert np.abs(src_row[sel] - orig.row[sel]).max() <= tol_r
        assert np.abs(src_col[sel] - orig.col[sel]).max() <= tol_c
        assert (orig.point[sel] == res.pairs.point[sel]).all()
        # survival rule: > min_pairs or > 75 % of the image's pairs
        n = (pairs.camera == c).sum()
        assert sel.sum() > 50 or sel.sum() / n > 0.75
        # crop geometry: area fraction and aspect ratio in range (unless the whole-image fallback was used)
        if (bh, bw) != (h, w):
            assert 0.3 * h * w * 0.9 <= bh * bw <= h * w
            assert 14 / 9 * 0.95 <= bw / bh <= 17 / 9 * 1.05


def _survivors(pairs, res, size):
    ok = np.zeros(len(pairs), dtype=bool)
    for c, (top, left, bh, bw) in enumerate(res.boxes):
        sel = pairs.camera == c
        r = np.floor((pairs.row[sel] + 0.5 - top) * size[0] / bh)
        cc = np.floor((pairs.col[sel] + 0.5 - left) * size[1] / bw)
        ok[sel] = (r >= 0) & (r < size[0]) & (cc >= 0) & (cc < size[1])
    return ok


def test_resized_crop_image_content_follows_pairs():
    rng = np.random.default_rng(6)
    h, w = 48, 80
    blocks = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(blocks, 8, 0), 8, 1)
    pairs = random_pairs(rng, 100, [(h, w)], 300)
    res = resized_crop([image], pairs, np.random.default_rng(7), size=(96, 160), min_pairs=10)
    orig = pairs.select(_survivors(pairs, res, (96, 160)))
    # pixels away from block borders keep their colour exactly through the bilinear upsampling
    interior = ((orig.row % 8) >= 1) & ((orig.row % 8) <= 6) & ((orig.col % 8) >= 1) & ((orig.col % 8) <= 6)
    got = res.images[0, res.pairs.row, res.pairs.col].astype(int)
    want = image[orig.row, orig.col].astype(int)
    assert interior.sum() > 50
    assert np.abs(got[interior] - want[interior]).max() <= 1


def test_resized_crop_is_deterministic_and_falls_back_to_whole_image():
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)]
    pairs = random_pairs(rng, 10, [(30, 50)], 40)
    a = resized_crop(images, pairs, np.random.default_rng(1), size=(20, 36), min_pairs=5)
    b = resized_crop(images, pairs, np.random.default_rng(1), size=(20, 36), min_pairs=5)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.images, b.images)
    # impossible survival demand: after max_tries the whole image is used and every pair survives
    c = resized_crop(images, pairs, np.random.default_rng(1), size=(20, 36), min_pairs=10**6, min_fraction=1.0,
                     max_tries=3)
    np.testing.assert_array_equal(c.boxes[0], [0, 0, 30, 50])
    assert len(c.pairs) == len(pairs)


def test_resize_images_keeps_all_pairs():
    rng = np.random.default_rng(9)
    pairs = random_pairs(rng, 10, [(90, 160)] * 2, 100)
    res = resize_images([np.zeros((90, 160, 3), np.uint8)] * 2, pairs, size=(45, 80), maps=[coord_map(90, 160)] * 2)
    assert len(res.pairs) == len(pairs)
    np.testing.assert_array_equal(res.pairs.row, pairs.row // 2)
    np.testing.assert_array_equal(res.pairs.col, pairs.col // 2)


def test_hflip_updates_columns_consistently():
    rng = np.random.default_rng(10)
    shapes = [(20, 30), (20, 31)]
    images = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in shapes]  # different widths
    maps = [coord_map(*s) for s in shapes]
    pairs = random_pairs(rng, 50, shapes, 60)
    imgs, new, new_maps, flipped = hflip_image(images, pairs, np.random.default_rng(0), p=0.5, maps=maps)
    for c, m in enumerate(maps):
        sel = pairs.camera == c
        np.testing.assert_array_equal(new_maps[c][new.row[sel], new.col[sel]], m[pairs.row[sel], pairs.col[sel]])
        np.testing.assert_array_equal(imgs[c][new.row[sel], new.col[sel]], images[c][pairs.row[sel], pairs.col[sel]])
    assert flipped.tolist() == [new_maps[c][0, 0] != 0 for c in range(2)]
    _, all_flip, _, f1 = hflip_image(np.stack([images[0]] * 2), pairs, rng, p=1.0)  # stacked input
    assert f1.all() and (all_flip.col[pairs.camera == 0] == 29 - pairs.col[pairs.camera == 0]).all()
    _, none, _, f0 = hflip_image(images, pairs, rng, p=0.0)
    assert not f0.any() and np.array_equal(none.col, pairs.col)
    flips = np.concatenate([hflip_image(images, pairs, np.random.default_rng(s))[3] for s in range(200)])
    assert 0.4 < flips.mean() < 0.6
