import numpy as np
import pytest
import torch

from largead.superpixels import get_source


@pytest.fixture(scope="module")
def m2f_dir(tmp_path_factory):
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessorPil,
        SwinConfig,
    )

    path = tmp_path_factory.mktemp("m2f")
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, hidden_dim=32, feature_size=32, mask_feature_size=32,
                            encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1, decoder_layers=2,
                            num_queries=10, num_attention_heads=2, num_labels=5, common_stride=4)
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(path)
    Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 128}, size_divisor=32).save_pretrained(path)
    return path


def loose(path):
    # a random model is unsure of everything: accept every query so segments exist
    return get_source("panoptic", model=str(path), local_files_only=True, threshold=0.0, mask_threshold=0.0,
                      overlap_mask_area_threshold=0.0)


def test_panoptic_tiny_model_end_to_end(m2f_dir):
    src = loose(m2f_dir)
    img = np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)  # padded by the processor
    seg, info = src.panoptic(img)
    ids = src.segment(img)
    assert ids.dtype == np.int32 and ids.shape == (40, 70) and ids.min() >= 0
    assert np.array_equal(ids, seg)
    assert len(info) >= 1
    assert set(np.unique(ids)) - {0} <= {s["id"] for s in info}


def test_panoptic_unpadded_equals_plain_postprocessing(m2f_dir):
    """When the processor adds no padding, the crop is a no-op: result = transformers' own post-processing."""
    src = loose(m2f_dir)
    img = np.random.default_rng(1).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    inputs = src.processor(images=img, return_tensors="pt")
    assert bool(inputs["pixel_mask"].all())
    with torch.no_grad():
        out = src.model(**inputs)
    ref = src.processor.post_process_panoptic_segmentation(out, threshold=0.0, mask_threshold=0.0,
                                                           overlap_mask_area_threshold=0.0,
                                                           target_sizes=[(64, 128)])[0]["segmentation"]
    assert np.array_equal(src.segment(img), ref.clamp_min(0).numpy())


def test_panoptic_nothing_found_is_all_zero(m2f_dir):
    src = get_source("panoptic", model=str(m2f_dir), local_files_only=True, threshold=1.0)
    img = np.zeros((32, 48, 3), np.uint8)
    assert (src.segment(img) == 0).all()


def test_panoptic_missing_model_error(tmp_path):
    with pytest.raises(OSError, match="could not load a panoptic segmenter"):
        get_source("panoptic", model=str(tmp_path / "none"), local_files_only=True)
