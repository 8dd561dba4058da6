"""Panoptic segments as superpixels, from a segmenter that ``transformers`` runs in-process.

The installable stand-in for SEEM / X-Decoder / OpenSeeD (which cannot be pip-installed): a Mask2Former or
MaskFormer panoptic checkpoint (default ``facebook/mask2former-swin-large-coco-panoptic``, COCO panoptic classes as
SEEM's maps use), through ``AutoModelForUniversalSegmentation`` / ``AutoImageProcessor`` and the processor's
``post_process_panoptic_segmentation``. The segment id map is the superpixel map: 0 where no segment was kept, segments
``1..S``. OneFormer needs text task inputs and a tokenizer and is not supported here.

The processor pads images (``size_divisor``) at the bottom/right, and its post-processing resizes the whole padded
mask to the target size; to keep segments aligned with pixels the mask logits are cropped to the unpadded area first.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from largead.data.frame import CameraView
from largead.superpixels.sam import load_model_and_processor
from largead.superpixels.sources import SuperpixelSource, register_source


@register_source("panoptic")
class PanopticSource(SuperpixelSource):
    """Mask2Former/MaskFormer panoptic segment ids as superpixels.

    ``model``: Hub id or local folder (with its image processor), or a model instance (then ``processor`` too).
    ``threshold``, ``mask_threshold``, ``overlap_mask_area_threshold`` are passed to
    ``post_process_panoptic_segmentation`` (its defaults); ``fuse_label_ids`` lists classes whose instances merge
    into one segment (e.g. COCO "stuff" classes, to mimic detectron2-style panoptic maps), none by default.
    Id 0 marks pixels no segment covers (ignored in pretraining).
    """

    ZERO_IS_SEGMENT = False

    def __init__(
        self,
        model: Any = "facebook/mask2former-swin-large-coco-panoptic",
        processor: Any = None,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        fuse_label_ids: set[int] | list[int] | None = None,
        device: str | torch.device = "cpu",
        local_files_only: bool | None = None,
    ):
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        self.model_name = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
        model, processor = load_model_and_processor(model, processor, AutoModelForUniversalSegmentation,
                                                    AutoImageProcessor, local_files_only, "a panoptic segmenter")
        if getattr(model.config, "model_type", "") == "oneformer":
            raise ValueError("OneFormer needs text task inputs and a tokenizer; use a Mask2Former/MaskFormer model")
        if not hasattr(processor, "post_process_panoptic_segmentation"):
            raise TypeError(f"{type(processor).__name__} has no post_process_panoptic_segmentation")
        self.model, self.processor, self.device = model.to(device).eval(), processor, torch.device(device)
        self.threshold, self.mask_threshold = float(threshold), float(mask_threshold)
        self.overlap_mask_area_threshold = float(overlap_mask_area_threshold)
        self.fuse_label_ids = sorted(int(i) for i in fuse_label_ids) if fuse_label_ids else []

    def params(self) -> dict[str, Any]:
        return {"model": self.model_name, "threshold": self.threshold, "mask_threshold": self.mask_threshold,
                "overlap_mask_area_threshold": self.overlap_mask_area_threshold,
                "fuse_label_ids": self.fuse_label_ids}

    @torch.no_grad()
    def panoptic(self, image: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """``(segment ids (H, W) int32, segments_info)`` of ``image``; ids 0 = no segment, else ``segments_info`` ids."""
        h, w = image.shape[:2]
        inputs = self.processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device)
        out = self.model(pixel_values=pixel_values, pixel_mask=inputs.get("pixel_mask"))
        masks = out.masks_queries_logits
        if "pixel_mask" in inputs:  # crop the logits to the unpadded area (see module docstring)
            valid = inputs["pixel_mask"][0]
            vh, vw = int(valid.any(1).sum()), int(valid.any(0).sum())
            sh, sw = masks.shape[-2] / pixel_values.shape[-2], masks.shape[-1] / pixel_values.shape[-1]
            masks = masks[..., : max(1, math.ceil(vh * sh)), : max(1, math.ceil(vw * sw))]
        out = type(out)(class_queries_logits=out.class_queries_logits, masks_queries_logits=masks)
        res = self.processor.post_process_panoptic_segmentation(
            out, threshold=self.threshold, mask_threshold=self.mask_threshold,
            overlap_mask_area_threshold=self.overlap_mask_area_threshold,
            label_ids_to_fuse=set(self.fuse_label_ids), target_sizes=[(h, w)],
        )[0]
        seg = res["segmentation"].to(torch.int64).clamp_min(0)  # -1 (nothing found at all) -> 0
        return seg.cpu().numpy().astype(np.int32), list(res["segments_info"])

    def _segment(self, image: np.ndarray, camera: CameraView | None) -> np.ndarray:
        return self.panoptic(image)[0]
