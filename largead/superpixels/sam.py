"""Segment Anything superpixels, run in-process through ``transformers`` (``SamModel`` + ``SamProcessor``).

Automatic mask generation, written here on top of SAM's prompt interface (the algorithm of SAM's
``SamAutomaticMaskGenerator``, single crop, which Seal runs with its defaults on nuScenes):

1. embed the image once (``get_image_embeddings``);
2. prompt a regular ``points_per_side`` x ``points_per_side`` grid of foreground points (cell centres), in batches of
   ``points_per_batch``, three masks per point (``multimask_output=True``);
3. keep masks whose predicted IoU exceeds ``pred_iou_thresh`` and whose stability score (IoU of the mask thresholded
   at ``mask_threshold +/- stability_score_offset``) exceeds ``stability_score_thresh``;
4. drop duplicates with a vectorised "fast NMS" on mask IoU: a mask is dropped when a better-scored mask overlaps it
   with IoU above ``nms_iou_thresh`` (SAM uses greedy box NMS at 0.7; mask IoU is the choice here);
5. upsample the kept masks to the image and paint them as Seal does (:func:`masks_to_ids`).

Deviation, on purpose for CPU memory: steps 3-4 run on the model's low-resolution mask logits (256 x 256 for a
1024 input, cropped to the image's area) instead of full-resolution masks. Only step 5 works at image size.

Seal's id convention: masks sorted by area, largest first, each takes its rank as id, later (smaller) masks overwrite
earlier ones, unmasked pixels 0. Seal numbers ranks from 0 (``generation/SAM/superpixel_generation.py`` in
youquanl/Segment-Any-Point-Cloud), so its largest mask shares id 0 with unmasked pixels and 0 is a segment there;
here ranks start at ``first_id=1`` by default so the two stay distinct and 0 means "unmasked" (ignored in
pretraining). ``first_id=0`` reproduces Seal's maps, and then 0 is a segment (:meth:`SamSource.zero_is_segment_for`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from largead.data.frame import CameraView
from largead.superpixels.sources import SuperpixelSource, register_source


def masks_to_ids(masks: torch.Tensor | np.ndarray, first_id: int = 1, chunk: int = 32) -> np.ndarray:
    """Paint binary masks (K, H, W) into one (H, W) int32 id map, Seal's way.

    Masks are sorted by area, largest first (stable for ties); the mask of rank ``r`` gets id ``r + first_id``; a pixel
    covered by several masks keeps the id of the last (smallest) one; pixels no mask covers are 0. Vectorised as a
    running maximum of rank over chunks of masks.
    """
    m = torch.as_tensor(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got shape {tuple(m.shape)}")
    if first_id < 0:
        raise ValueError(f"first_id must be >= 0, got {first_id}")
    m = m.to(torch.bool)
    k, h, w = m.shape
    out = torch.full((h, w), -1, dtype=torch.int64)
    if k == 0:
        return out.clamp_min(0).to(torch.int32).numpy()
    area = m.flatten(1).sum(1)
    order = torch.sort(-area, stable=True).indices
    for start in range(0, k, chunk):  # chunks of masks bound memory; not a loop over segments
        idx = order[start:start + chunk]
        rank = torch.arange(start, start + idx.numel(), dtype=torch.int64)[:, None, None]
        out = torch.maximum(out, torch.where(m[idx], rank, torch.tensor(-1)).amax(0))
    return torch.where(out >= 0, out + first_id, torch.zeros_like(out)).to(torch.int32).numpy()


def point_grid(points_per_side: int) -> torch.Tensor:
    """(n*n, 2) grid of (x, y) in [0, 1]: centres of an n x n tiling of the image."""
    c = (torch.arange(points_per_side, dtype=torch.float64) + 0.5) / points_per_side
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], 1)


def fast_mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Indices (kept, by descending score) of binary masks (K, h, w) not overlapping a better one with IoU > thresh."""
    order = torch.argsort(scores, descending=True)
    flat = masks[order].flatten(1).to(torch.float32)
    inter = flat @ flat.T
    area = flat.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1.0)
    iou = torch.triu(iou, diagonal=1)  # iou[i, j] for better-scored i < j
    keep = iou.amax(0) <= iou_thresh if len(order) else torch.ones(0, dtype=torch.bool)
    return order[keep]


def load_model_and_processor(model: Any, processor: Any, model_cls: Any, processor_cls: Any,
                             local_files_only: bool | None, what: str) -> tuple[Any, Any]:
    """``(model, processor)`` for a ``transformers`` segmenter given as a Hub id / local folder or as instances.

    A path is loaded with ``model_cls`` / ``processor_cls`` (local files only when offline or asked); a failure is
    one ``OSError`` saying how to get the weights. An instance needs its processor (``ValueError`` otherwise).
    """
    if isinstance(model, (str, os.PathLike)):
        from largead.hub import local_files_only as _local_only

        local = _local_only(local_files_only)
        try:
            model_obj = model_cls.from_pretrained(model, local_files_only=local)
            processor = processor or processor_cls.from_pretrained(model, local_files_only=local)
        except OSError as err:
            raise OSError(f"could not load {what} from {str(model)!r} (local_files_only={local}): pass a local folder "
                          f"saved with save_pretrained (model and processor), or download it once with "
                          f"`huggingface-cli download {model}`. Cause: {err}") from err
        return model_obj, processor
    if processor is None:
        raise ValueError(f"a {what} model instance needs its processor: pass processor=")
    return model, processor


@register_source("sam")
class SamSource(SuperpixelSource):
    """SAM automatic masks as superpixels (see the module docstring for the algorithm and the id convention).

    ``model``: a Hub id or local folder of a ``transformers`` SAM checkpoint (``facebook/sam-vit-huge`` is the ViT-H
    Seal uses), or a ``SamModel`` instance (then ``processor`` must be given too). Weights are read from the local
    folder or the Hugging Face cache; with ``local_files_only`` (default: ``HF_HUB_OFFLINE``) nothing is downloaded.
    Defaults of the thresholds are SAM's automatic mask generator's.
    """

    def __init__(
        self,
        model: Any = "facebook/sam-vit-huge",
        processor: Any = None,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        nms_iou_thresh: float = 0.7,
        mask_threshold: float = 0.0,
        first_id: int = 1,
        device: str | torch.device = "cpu",
        local_files_only: bool | None = None,
    ):
        from transformers import SamModel, SamProcessor

        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError(f"points_per_side and points_per_batch must be >= 1, got {points_per_side}, "
                             f"{points_per_batch}")
        self.model_name = model if isinstance(model, (str, os.PathLike)) else type(model).__name__
        model, processor = load_model_and_processor(model, processor, SamModel, SamProcessor, local_files_only, "SAM")
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.points_per_side, self.points_per_batch = int(points_per_side), int(points_per_batch)
        self.pred_iou_thresh, self.stability_score_thresh = float(pred_iou_thresh), float(stability_score_thresh)
        self.stability_score_offset, self.nms_iou_thresh = float(stability_score_offset), float(nms_iou_thresh)
        self.mask_threshold, self.first_id = float(mask_threshold), int(first_id)

    @classmethod
    def zero_is_segment_for(cls, params: dict[str, Any]) -> bool:
        """``first_id=0`` (Seal's script, and maps without a manifest): 0 is the largest mask plus the unmasked pixels,
        a segment; ``first_id>=1``: 0 marks unmasked pixels only."""
        return int(params.get("first_id", 0)) == 0

    def params(self) -> dict[str, Any]:
        return {"model": str(self.model_name), "points_per_side": self.points_per_side,
                "points_per_batch": self.points_per_batch, "pred_iou_thresh": self.pred_iou_thresh,
                "stability_score_thresh": self.stability_score_thresh,
                "stability_score_offset": self.stability_score_offset, "nms_iou_thresh": self.nms_iou_thresh,
                "mask_threshold": self.mask_threshold, "first_id": self.first_id}

    @torch.no_grad()
    def generate_masks(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Automatic masks of ``image`` (H, W, 3) uint8: ``(masks (K, H, W) bool, scores (K,))``, best score first."""
        h, w = image.shape[:2]
        inputs = self.processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device)
        rh, rw = (int(v) for v in inputs["reshaped_input_sizes"][0])
        emb = self.model.get_image_embeddings(pixel_values)
        pts = point_grid(self.points_per_side) * torch.tensor([rw, rh], dtype=torch.float64)  # model-input (x, y)
        logits_all, scores_all = [], []
        for start in range(0, len(pts), self.points_per_batch):  # batches of prompts
            p = pts[start:start + self.points_per_batch].to(torch.float32)[None, :, None, :].to(self.device)
            labels = torch.ones(p.shape[:3], dtype=torch.long, device=self.device)
            out = self.model(image_embeddings=emb, input_points=p, input_labels=labels, multimask_output=True)
            low = out.pred_masks[0].flatten(0, 1)  # (n * 3, L, L) logits over the padded model input
            side = low.shape[-1] / pixel_values.shape[-1]
            low = low[:, : max(1, round(rh * side)), : max(1, round(rw * side))]  # crop to the image's area
            iou = out.iou_scores[0].flatten()
            hi = (low > self.mask_threshold + self.stability_score_offset).flatten(1).sum(1)
            lo = (low > self.mask_threshold - self.stability_score_offset).flatten(1).sum(1)
            stability = hi.to(torch.float32) / lo.clamp_min(1).to(torch.float32)
            keep = (iou > self.pred_iou_thresh) & (stability > self.stability_score_thresh) & (lo > 0)
            logits_all.append(low[keep].cpu())
            scores_all.append(iou[keep].cpu())
        logits = torch.cat(logits_all) if logits_all else torch.zeros(0, 1, 1)
        scores = torch.cat(scores_all) if scores_all else torch.zeros(0)
        keep = fast_mask_nms(logits > self.mask_threshold, scores, self.nms_iou_thresh)
        logits, scores = logits[keep], scores[keep]
        if len(logits) == 0:
            return torch.zeros(0, h, w, dtype=torch.bool), scores
        masks = torch.cat([F.interpolate(c[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
                           > self.mask_threshold for c in logits.split(16)])
        nonempty = masks.flatten(1).any(1)
        return masks[nonempty], scores[nonempty]

    def _segment(self, image: np.ndarray, camera: CameraView | None) -> np.ndarray:
        masks, _ = self.generate_masks(image)
        return masks_to_ids(masks, first_id=self.first_id)
