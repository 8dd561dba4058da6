import numpy as np
import pytest
from skimage.measure import label as connected_components
from skimage.segmentation import slic

from largead.data.frame import CameraView
from largead.superpixels import get_source, list_sources, save_superpixels
from largead.superpixels.sources import SuperpixelSource


def structured_image(h=60, w=96, seed=0):
    """Colour blocks plus mild noise: SLIC has real edges to follow."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 3] = (200, 30, 30)
    img[: h // 2, w // 3:] = (30, 200, 30)
    img[h // 2:, :] = (30, 30, 200)
    img[h // 3: 2 * h // 3, w // 2: 3 * w // 4] = (220, 220, 40)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def camera(image, token="tok", sem=None, inst=None):
    return CameraView(image=image, intrinsics=np.eye(3), lidar_to_camera=np.eye(4), name="CAM", token=token,
                      semantic_mask=sem, instance_mask=inst)


def test_registry_lists_and_errors():
    assert {"slic", "sam", "panoptic", "seem", "xdecoder", "openseed", "synthetic-vfm", "precomputed"} <= set(
        list_sources())
    with pytest.raises(KeyError, match="Did you mean 'slic'"):
        get_source("slik")
    assert isinstance(get_source("slic"), SuperpixelSource)


def test_slic_matches_skimage_with_slidr_parameters():
    img = structured_image()
    ids = get_source("slic").segment(img)
    ref = slic(img, n_segments=150, compactness=6, sigma=3.0, start_label=0)
    assert ids.dtype == np.int32 and ids.shape == img.shape[:2]
    assert np.array_equal(ids, ref)
    assert ids.min() == 0 and 10 < len(np.unique(ids)) <= 200
    # superpixels respect the strong colour edges: almost every segment lies in one block
    block = (img[..., 0] > 150) * 1 + (img[..., 1] > 150) * 2 + (img[..., 2] > 150) * 4
    pure = [np.bincount(block[ids == s]).max() / (ids == s).sum() for s in np.unique(ids)]
    assert np.mean(pure) > 0.9


def test_segment_validates_image():
    src = get_source("slic")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        src.segment(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        src.segment(np.zeros((10, 10), np.uint8))
    out = src.segment_batch([structured_image(40, 60, 1), structured_image(30, 50, 2)])
    assert [o.shape for o in out] == [(40, 60), (30, 50)]


@pytest.mark.parametrize("kind", ["seem", "xdecoder", "openseed"])
def test_precomputed_reads_seal_layout(tmp_path, kind):
    img = structured_image(20, 30)
    ids = np.arange(600).reshape(20, 30) % 7
    save_superpixels(tmp_path / f"superpixels_{kind}" / "abc.png", ids)
    src = get_source(kind, root=tmp_path)
    assert np.array_equal(src.segment(img, camera(img, "abc")), ids)
    with pytest.raises(FileNotFoundError, match=f"superpixels_{kind}/missing.png"):
        src.segment(img, camera(img, "missing"))
    with pytest.raises(ValueError, match="needs the CameraView"):
        src.segment(img)
    small = structured_image(10, 30)
    with pytest.raises(ValueError, match="abc.png.*20x30.*10x30"):
        src.segment(small, camera(small, "abc"))


def test_precomputed_directory_and_kind(tmp_path):
    img = structured_image(8, 8)
    save_superpixels(tmp_path / "flat" / "t1.png", np.full((8, 8), 3))
    assert (get_source("openseed", directory=tmp_path / "flat").segment(img, camera(img, "t1")) == 3).all()
    save_superpixels(tmp_path / "superpixels_slic" / "t1.png", np.full((8, 8), 4))
    assert (get_source("precomputed", root=tmp_path, kind="slic").segment(img, camera(img, "t1")) == 4).all()
    with pytest.raises(ValueError, match="root="):
        get_source("precomputed", root=tmp_path)


def synthetic_scene(h=48, w=96):
    """Road (class 0) bottom, building (1) top-left, vegetation (2) top-right; two cars (3) and a person (4)."""
    sem = np.zeros((h, w), np.int32)
    sem[: h // 2, : w // 2] = 1
    sem[: h // 2, w // 2:] = 2
    inst = np.zeros((h, w), np.int32)
    sem[20:34, 10:30] = 3; inst[20:34, 10:30] = 1
    sem[22:36, 50:75] = 3; inst[22:36, 50:75] = 2
    sem[10:40, 85:92] = 4; inst[10:40, 85:92] = 7
    img = np.zeros((h, w, 3), np.uint8)
    return img, sem, inst


def purity(ids, sem):
    return min(np.bincount(sem[ids == s]).max() / (ids == s).sum() for s in np.unique(ids))


def test_synthetic_vfm_seem_is_compact_and_semantic():
    img, sem, inst = synthetic_scene()
    cam = camera(img, "frame0/CAM", sem, inst)
    ids = get_source("synthetic-vfm", granularity="seem", merge_prob=0.0).segment(img, cam)
    assert ids.dtype == np.int32 and ids.shape == sem.shape and ids.min() >= 1
    assert purity(ids, sem) == 1.0  # without merges no segment crosses a class boundary
    for k in (1, 2, 7):  # each object instance is exactly one segment, not shared with anything else
        inside = np.unique(ids[inst == k])
        assert len(inside) == 1 and (ids == inside[0]).sum() == (inst == k).sum()
    road = np.unique(ids[(sem == 0)])
    assert 2 <= len(road) <= 6  # stuff split into a few regions
    for s in np.unique(ids):  # every segment connected
        assert connected_components(ids == s, connectivity=1).max() == 1
    assert len(np.unique(ids)) < 20


def test_synthetic_vfm_sam_is_finer_with_parts_and_drops():
    img, sem, inst = synthetic_scene()
    cam = camera(img, "frame0/CAM", sem, inst)
    seem = get_source("synthetic-vfm", granularity="seem").segment(img, cam)
    sam = get_source("synthetic-vfm", granularity="sam", merge_prob=0.0, drop_prob=0.0).segment(img, cam)
    assert len(np.unique(sam)) > len(np.unique(seem))
    assert purity(sam, sem) == 1.0
    assert all(len(np.unique(sam[inst == k])) >= 2 for k in (1, 2, 7))  # objects cut into parts
    dropped = get_source("synthetic-vfm", granularity="sam", drop_prob=0.5).segment(img, cam)
    assert (dropped == 0).any() and np.array_equal(np.unique(dropped), np.arange(dropped.max() + 1))


def test_synthetic_vfm_merges_deterministic_and_seeded():
    img, sem, inst = synthetic_scene()
    cam = camera(img, "frame0/CAM", sem, inst)
    merged = get_source("synthetic-vfm", granularity="sam", merge_prob=0.5, drop_prob=0.0, seed=3)
    a, b = merged.segment(img, cam), merged.segment(img, cam)
    assert np.array_equal(a, b)
    clean = get_source("synthetic-vfm", granularity="sam", merge_prob=0.0, drop_prob=0.0, seed=3).segment(img, cam)
    assert len(np.unique(a)) < len(np.unique(clean))  # merges under-segment
    other = get_source("synthetic-vfm", granularity="sam", merge_prob=0.5, drop_prob=0.0, seed=4).segment(img, cam)
    assert not np.array_equal(a, other)


def test_synthetic_vfm_errors():
    img, _, _ = synthetic_scene()
    with pytest.raises(ValueError, match="semantic_mask"):
        get_source("synthetic-vfm").segment(img, camera(img))
    with pytest.raises(ValueError, match="granularity"):
        get_source("synthetic-vfm", granularity="fine")
    with pytest.raises(TypeError, match="unknown synthetic-vfm options"):
        get_source("synthetic-vfm", merge=0.1)


# ------------------------------------------------------------------------------------ id 0, per official generator


def write_png_uint8(path, ids):
    """The official scripts' writer: ``Image.fromarray(ids.astype(np.uint8)).save(path)`` (Seal's SAM and SEEM
    scripts, SLidR's SLIC script), parents created."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(ids).astype(np.uint8)).save(path)


def seal_sam_map(h=24, w=32):
    """Seal's generation/SAM/superpixel_generation.py: masks sorted by area (largest first), painted over a
    zero-filled map with ``id`` from ``enumerate`` (0 first): the largest mask and the unmasked pixels share 0."""
    masks = np.zeros((3, h, w), bool)
    masks[0, h // 2:, :] = True  # road: the largest mask
    masks[1, :8, :10] = True
    masks[2, 2:6, 20:28] = True
    seg = np.zeros((h, w))
    for i, m in enumerate(sorted(masks, key=lambda m: m.sum(), reverse=True)):
        seg[m] = i
    return seg, masks


def panoptic_map(h=24, w=32):
    """detectron2-style ``panoptic_inference`` (SEEM's seem_model.py, X-Decoder's xdecoder_model.py, OpenSeeD's
    openseed_model.py): a zero-filled int32 map, kept segments numbered from 1, unclaimed pixels left 0 (void)."""
    seg = np.zeros((h, w), np.int32)
    seg[: h // 2, : w // 2] = 1
    seg[h // 2:, :] = 2
    seg[2:6, 20:28] = 3  # the rest of the top-right quarter stays void
    return seg


@pytest.mark.parametrize("kind,writer,zero_is_segment", [
    ("seem", "panoptic", False),
    ("xdecoder", "panoptic", False),
    ("openseed", "superflow", True),
    ("sam", "seal_sam", True),
    ("slic", "slic", True),
])
def test_zero_rule_per_source_on_official_maps(tmp_path, kind, writer, zero_is_segment):
    img = structured_image(24, 32)
    if writer == "panoptic":
        ids = panoptic_map()
    elif writer == "superflow":  # SuperFlow's openseed_inst17: ids 0..16, <sample_data token>.png in one folder
        ids = (np.arange(24 * 32).reshape(24, 32) // 48) % 17
    elif writer == "seal_sam":
        ids, _ = seal_sam_map()
    else:  # SLidR's superpixel_segmenter.py
        ids = slic(img, n_segments=150, compactness=6, sigma=3.0, start_label=0)
    if kind == "openseed":
        write_png_uint8(tmp_path / "openseed_inst17" / "tok.png", ids)
        src = get_source("openseed", directory=tmp_path / "openseed_inst17")
    elif kind in ("seem", "xdecoder"):
        write_png_uint8(tmp_path / f"superpixels_{kind}" / "tok.png", ids)
        src = get_source(kind, root=tmp_path)
    else:  # Seal / SLidR maps read by the generic reader, no manifest beside them
        write_png_uint8(tmp_path / f"superpixels_{kind}" / "tok.png", ids)
        src = get_source("precomputed", root=tmp_path, kind=kind)
    got = src.segment(img, camera(img, "tok"))
    assert np.array_equal(got, np.asarray(ids).astype(np.uint8)) and (got == 0).any()
    assert src.zero_is_segment is zero_is_segment


def test_zero_rule_of_maps_written_here_follows_the_manifest(tmp_path):
    import json

    _, masks = seal_sam_map()
    from largead.superpixels.sam import SamSource, masks_to_ids

    ours = masks_to_ids(masks)  # first_id=1: 0 = unmasked only
    assert not SamSource.zero_is_segment_for({"first_id": 1}) and SamSource.zero_is_segment_for({"first_id": 0})
    save_superpixels(tmp_path / "superpixels_sam" / "tok.png", ours)
    src = get_source("precomputed", root=tmp_path, kind="sam")
    assert src.zero_is_segment  # no manifest: Seal's maps, 0 = largest mask + unmasked
    manifest = {"source": "sam", "tag": "sam", "params": {"model": "x", "first_id": 1}}
    (tmp_path / "superpixels_sam" / "_manifest.json").write_text(json.dumps(manifest))
    assert src.zero_is_segment is False
    manifest["params"]["first_id"] = 0
    (tmp_path / "superpixels_sam" / "_manifest.json").write_text(json.dumps(manifest))
    assert src.zero_is_segment is True
    # in-process sources know their own rule
    assert get_source("slic").zero_is_segment is True
    assert get_source("synthetic-vfm", granularity="sam").zero_is_segment is False
    # a kind nobody knows, without a manifest: an error that says how to decide
    save_superpixels(tmp_path / "superpixels_mystery" / "tok.png", np.zeros((24, 32), int))
    mystery = get_source("precomputed", root=tmp_path, kind="mystery")
    with pytest.raises(ValueError, match="superpixel_ignore_zero"):
        _ = mystery.zero_is_segment
    # a synthetic-vfm tag resolves to its source
    save_superpixels(tmp_path / "superpixels_synthetic-vfm-sam" / "tok.png", np.zeros((24, 32), int))
    assert get_source("precomputed", root=tmp_path, kind="synthetic-vfm-sam").zero_is_segment is False
