"""Superpixels: segment camera images (SLIC, SAM, panoptic VFMs, precomputed SEEM/X-Decoder/OpenSeeD maps, the
synthetic world's stand-in VFM), store them as PNGs, and lift them to superpoints through point-pixel pairs.

    >>> from largead.superpixels import get_source
    >>> ids = get_source("slic").segment(image)          # (H, W) int32  # doctest: +SKIP
"""

from largead.superpixels.io import load_superpixels, save_superpixels, superpixel_path
from largead.superpixels.sources import SuperpixelSource, get_source, list_sources, register_source
from largead.superpixels.superpoints import (
    pixel_segment_ids,
    pool_by_segment,
    pool_voxels_by_segment,
    segment_offsets,
    superpoint_ids,
)

__all__ = [
    "SuperpixelSource",
    "get_source",
    "list_sources",
    "load_superpixels",
    "pixel_segment_ids",
    "pool_by_segment",
    "pool_voxels_by_segment",
    "register_source",
    "save_superpixels",
    "segment_offsets",
    "superpixel_path",
    "superpoint_ids",
]
