"""largead.superpixels.export: maps in each official generator's layout and numbering, checked against the facts of
the official scripts (youquanl/Segment-Any-Point-Cloud ``generation/SAM/superpixel_generation.py``: masks sorted by
area, largest first, painted over a zero map with their rank, saved with ``astype(np.uint8)``; ``generation/SEEM/
demo_code/tasks/interactive.py``: the ``panoptic_seg`` map as uint8 PNG plus its ``segments_info`` as JSON beside it;
SuperFlow's ``openseed_inst17``: ids 0..16) and read back by the sources that consume them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from largead.superpixels import get_source, load_superpixels
from largead.superpixels.export import GENERATORS, generator_map, write_generator_maps

# Seven segments, ids chosen out of area order.
SEGMENTS = np.array([
    [5, 5, 5, 5, 7, 7],
    [5, 5, 5, 5, 7, 7],
    [2, 2, 2, 7, 7, 4],
    [2, 2, 2, 7, 0, 4],
    [3, 3, 3, 0, 4, 9],
])


def _areas(seg):
    ids, counts = np.unique(seg, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def test_fixture_areas():
    assert _areas(SEGMENTS) == {0: 2, 2: 6, 3: 3, 4: 3, 5: 8, 7: 7, 9: 1}


# Expected by hand. Ranks by area, largest first (the tie 3 / 4 in increasing id order: a stable sort):
# 5 -> 0, 7 -> 1, 2 -> 2, 3 -> 3, 4 -> 4, 0 -> 5, 9 -> 6. Seven segments: round(0.7) = 1 left uncovered (id 9).
RANK = {5: 0, 7: 1, 2: 2, 3: 3, 4: 4, 0: 5, 9: 6}


def test_sam_is_seals_painting():
    m = generator_map(SEGMENTS, "sam")
    # Seal: segments_sam[mask of rank r] = r over a zero map; the uncovered segment (9) stays 0, like the largest (5)
    expected = np.vectorize(lambda i: 0 if i == 9 else RANK[i])(SEGMENTS)
    assert m.ids.dtype == np.uint8 and m.info is None
    np.testing.assert_array_equal(m.ids, expected)


def test_sam_ranks_wrap_at_256_as_seals_uint8_cast():
    seg = np.arange(300, dtype=np.int64)[None, :].repeat(2, 0)  # 300 equal segments: rank = id (stable)
    m = generator_map(seg, "sam")  # 30 smallest (the last 30) left uncovered -> ranks 0..269 painted
    assert m.ids[0, 255] == 255 and m.ids[0, 256] == 0 and m.ids[0, 269] == 13 and m.ids[0, 280] == 0


def test_seem_and_xdecoder_number_from_one_with_void_zero():
    seem, xdec = generator_map(SEGMENTS, "seem"), generator_map(SEGMENTS, "xdecoder")
    expected = np.vectorize(lambda i: 0 if i == 9 else RANK[i] + 1)(SEGMENTS)
    np.testing.assert_array_equal(seem.ids, expected)
    np.testing.assert_array_equal(xdec.ids, expected)
    assert xdec.info is None
    assert [s["id"] for s in seem.info] == [1, 2, 3, 4, 5, 6]
    assert all(set(s) == {"id", "isthing", "category_id"} for s in seem.info)
    with pytest.raises(ValueError, match="do not fit the 8-bit map"):
        generator_map(np.arange(600).reshape(2, 300), "seem")


def test_openseed_has_17_ids_and_zero_is_the_largest_segment():
    m = generator_map(SEGMENTS, "openseed")
    np.testing.assert_array_equal(m.ids, np.vectorize(RANK.get)(SEGMENTS))
    many = generator_map(np.arange(40).reshape(5, 8), "openseed")
    assert set(np.unique(many.ids).tolist()) == set(range(17))


def test_bad_input():
    with pytest.raises(ValueError, match="unknown generator 'sam2'"):
        generator_map(SEGMENTS, "sam2")
    with pytest.raises(ValueError, match=r"non-empty \(H, W\) integer map"):
        generator_map(SEGMENTS.astype(float), "sam")
    from largead.data.frame import Frame

    with pytest.raises(ValueError, match="frame 0 .* has no camera image"):
        write_generator_maps([Frame(points=np.zeros((3, 4), np.float32), token="t0")], "/nonexistent")
    with pytest.raises(ValueError, match="unknown generators"):
        write_generator_maps([], "/nonexistent", generators=["seem", "sam3"])


ZERO_IS_SEGMENT = {"slic": True, "sam": True, "seem": False, "xdecoder": False, "openseed": True}


def test_every_camera_image_of_the_samples_has_every_map(official_samples, official_superpixels):
    """Every camera image of every split of the nuScenes, SemanticKITTI and Waymo samples (Waymo: two image sizes)
    has a map of its size in every generator's folder, which the configs' sources read, with each generator's id-0
    rule; the maps are the generator numbering of the segments the writer documents."""
    from largead.data import get_dataset
    from largead.superpixels.export import sample_splits

    slic48 = get_source("slic", n_segments=48)
    sizes = set()
    for key, root in official_superpixels.items():
        s = official_samples[key]
        manifest = json.loads((root / "superpixels_slic" / "_manifest.json").read_text())
        assert manifest["source"] == "slic" and manifest["dataset"] == s.dataset  # written by the script
        sources = {"slic": get_source("precomputed", root=root, kind="slic"),
                   "sam": get_source("precomputed", root=root, kind="sam"),
                   **{g: get_source(g, root=root) for g in ("seem", "xdecoder", "openseed")}}
        assert {k: v.zero_is_segment for k, v in sources.items()} == ZERO_IS_SEGMENT
        cameras = 0
        for split in sample_splits(s.splits):
            ds = get_dataset(s.dataset, s.root, split, **{**s.options, "cameras": True})
            for i in range(len(ds)):
                for cam in ds[i].cameras:
                    cameras += 1
                    sizes.add(cam.image.shape[:2])
                    maps = {k: src.segment(cam.image, cam) for k, src in sources.items()}
                    assert all(m.shape == cam.image.shape[:2] for m in maps.values())
                    if cameras == 1:  # the writer's numbering of its documented segments
                        segments = slic48.segment(cam.image, cam)
                        for g in GENERATORS:
                            np.testing.assert_array_equal(maps[g], generator_map(segments, g).ids)
                    info = json.loads(sources["seem"].path_for(cam.token).with_suffix(".json").read_text())
                    assert sorted(x["id"] for x in info) == sorted(set(np.unique(maps["seem"]).tolist()) - {0})
                    assert (maps["seem"] == 0).any() and maps["openseed"].max() <= 16
        assert cameras == sum(n for sp, n in s.splits.items() if sp in sample_splits(s.splits)) * s.cameras
    assert {(64, 96), (44, 96)} <= sizes  # Waymo's front and side cameras (1920x1280 / 1920x886 scaled)


def test_pngs_are_8_bit_like_the_official_scripts(official_superpixels):
    from PIL import Image

    root = official_superpixels["nuscenes"]
    for g in GENERATORS:
        path = next((root / f"superpixels_{g}").glob("*.png"))
        with Image.open(path) as im:
            assert im.mode == "L", (g, im.mode)
        assert load_superpixels(path).max() <= 255
