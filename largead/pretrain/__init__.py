"""LargeAD pretraining: objectives, temporal segments, multi-source handling, the sample pipeline, the trained module.

- :mod:`.objectives`: ``l_vfm`` (superpixel-to-superpoint InfoNCE), ``l_tmp`` (temporal consistency), ``l_p2s``
  (point-to-segment, leave-one-out positive), ``l_cdp`` (cross-dataset, positives from the frozen teacher,
  ``CdpConfig``), ``total_loss``.
- :mod:`.temporal`: RANSAC ground removal + joint two-frame HDBSCAN segments, cached on disk.
- :mod:`.multisource`: per-dataset intensity normalisation, ``MultiSourceSampler``.
- :mod:`.data`: ``PretrainDataset`` (frame -> pairs -> superpixels -> segments -> augmentation), ``collate_pretrain``.
- :mod:`.model`: ``PretrainModel`` (encoder + frozen teacher with trainable head -> loss terms;
  ``forward(batch, progress=step / total_steps)``).

The training loop itself is ``training/pretrain.py`` (with :mod:`largead.trainer`). Names are imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LossWeights": "objectives", "l_vfm": "objectives", "l_tmp": "objectives", "l_p2s": "objectives",
    "l_cdp": "objectives", "total_loss": "objectives", "superpixel_prototypes": "objectives",
    "CdpConfig": "objectives", "cdp_pairs": "objectives", "ignores_zero": "data",
    "SegmentParams": "temporal", "SegmentCache": "temporal", "fit_ground_plane": "temporal",
    "segment_pair": "temporal", "segment_sweeps": "temporal", "MultiSourceSampler": "multisource", "input_features": "multisource",
    "intensity_stats": "multisource", "AugmentConfig": "data", "PretrainDataConfig": "data",
    "PretrainDataset": "data", "PretrainBatch": "data", "collate_pretrain": "data", "ObjectiveConfig": "model",
    "PretrainModel": "model",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"largead.pretrain.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'largead.pretrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
