import numpy as np
import pytest
import torch

from largead.superpixels import get_source
from largead.superpixels.sam import fast_mask_nms, masks_to_ids, point_grid


def seal_reference(masks, first_id):
    """Seal's SAM painting loop: sort by area (largest first), id = rank (+ first_id), later overwrite earlier."""
    anns = sorted(({"area": int(m.sum()), "segmentation": m} for m in masks), key=lambda a: a["area"], reverse=True)
    out = np.zeros(masks.shape[1:], np.int64)
    for i, ann in enumerate(anns):
        out[ann["segmentation"]] = i + first_id
    return out


@pytest.mark.parametrize("first_id", [0, 1])
def test_masks_to_ids_matches_seal_loop(first_id):
    rng = np.random.default_rng(0)
    h, w = 23, 31
    masks = np.zeros((40, h, w), bool)
    for k in range(40):  # random rectangles of distinct sizes (ties would make the order implementation-defined)
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        masks[k, y0: y0 + rng.integers(1, h - y0), x0: x0 + rng.integers(1, w - x0)] = True
    area = masks.reshape(40, -1).sum(1)
    _, first = np.unique(area, return_index=True)
    masks = masks[first]
    got = masks_to_ids(torch.as_tensor(masks), first_id=first_id, chunk=7)
    assert got.dtype == np.int32
    assert np.array_equal(got, seal_reference(masks, first_id))
    assert np.array_equal(got == 0, ~masks.any(0)) if first_id == 1 else True


def test_masks_to_ids_hand_example():
    big = np.zeros((4, 6), bool); big[:, :4] = True  # area 16 -> rank 0
    small = np.zeros((4, 6), bool); small[1:3, 2:5] = True  # area 6 -> rank 1, painted over big
    ids = masks_to_ids(np.stack([small, big]))
    expected = np.array([[1, 1, 1, 1, 0, 0],
                         [1, 1, 2, 2, 2, 0],
                         [1, 1, 2, 2, 2, 0],
                         [1, 1, 1, 1, 0, 0]])
    assert np.array_equal(ids, expected)
    assert masks_to_ids(np.zeros((0, 3, 4), bool)).tolist() == [[0] * 4] * 3


def test_point_grid_and_fast_nms():
    assert torch.allclose(point_grid(2), torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]],
                                                      dtype=torch.float64))
    a = torch.zeros(4, 10, 10, dtype=torch.bool)
    a[0, :5] = True            # best
    a[1, :5, :9] = True        # IoU 0.9 with mask 0 -> dropped
    a[2, 5:] = True            # disjoint -> kept
    a[3, :5, :3] = True        # IoU 0.3 with mask 0 -> kept
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    keep = fast_mask_nms(a, scores, 0.7)
    assert keep.tolist() == [3, 0, 2]


def tiny_sam(path):
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    cfg = SamConfig(
        vision_config={"hidden_size": 32, "output_channels": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 8, "window_size": 4, "global_attn_indexes": [1],
                       "mlp_dim": 64, "num_pos_feats": 16, "initializer_range": 0.02},
        prompt_encoder_config={"hidden_size": 32, "image_size": 64, "patch_size": 8, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "iou_head_hidden_dim": 32},
    )
    torch.manual_seed(0)
    SamModel(cfg).save_pretrained(path)
    SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 64},
                                                      pad_size={"height": 64, "width": 64})).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return tiny_sam(tmp_path_factory.mktemp("sam"))


def test_sam_end_to_end_tiny_random_model(sam_dir):
    img = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    src = get_source("sam", model=str(sam_dir), local_files_only=True, points_per_side=4, points_per_batch=5,
                     pred_iou_thresh=-1.0, stability_score_thresh=0.0, stability_score_offset=1e-7,
                     nms_iou_thresh=0.7)  # a random model's logits are ~1e-5: tiny offset so masks survive
    masks, scores = src.generate_masks(img)
    assert masks.dtype == torch.bool and masks.shape[1:] == (30, 50) and len(masks) == len(scores) >= 1
    assert len(masks) <= 4 * 4 * 3
    ids = src.segment(img)
    assert ids.dtype == np.int32 and ids.shape == (30, 50) and ids.min() >= 0
    assert np.array_equal(ids, seal_reference(masks.numpy(), 1))  # painting of the generated masks, Seal's rule
    assert np.array_equal(ids, src.segment(img))  # deterministic
    # thresholds filter: nothing passes an impossible IoU threshold -> all pixels unmasked
    strict = get_source("sam", model=str(sam_dir), local_files_only=True, points_per_side=2, pred_iou_thresh=2.0)
    assert (strict.segment(img) == 0).all()


def test_sam_stubbed_masks_give_seal_ordering(sam_dir, monkeypatch):
    src = get_source("sam", model=str(sam_dir), local_files_only=True, points_per_side=2)
    m = torch.zeros(3, 8, 8, dtype=torch.bool)
    m[0, :2, :2] = True   # area 4
    m[1, :, :] = True     # area 64 (largest -> id 1)
    m[2, 4:, 4:] = True   # area 16 -> id 2
    monkeypatch.setattr(src, "generate_masks", lambda image: (m, torch.ones(3)))
    ids = src.segment(np.zeros((8, 8, 3), np.uint8))
    assert ids[0, 0] == 3 and ids[7, 7] == 2 and ids[0, 7] == 1
    assert set(np.unique(ids)) == {1, 2, 3}


def test_sam_missing_weights_error_is_clear(tmp_path):
    with pytest.raises(OSError, match="could not load SAM from"):
        get_source("sam", model=str(tmp_path / "nope"), local_files_only=True)
