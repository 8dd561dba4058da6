"""Label-fraction subsets for fine-tuning (SLidR's rules), generic over any :class:`LidarDataset`.

SLidR (``valeoai/SLidR`` ``downstream/dataloader_*.py``) subsamples the training set with a skip ratio
``k = 100 / percent``:

- by sequence (nuScenes): walk the training scenes in scene-table order with a counter starting at 1 and keep the
  scenes whose counter is a multiple of ``k`` - the k-th, 2k-th, ... scene. 1 % of the 700 training scenes keeps 7.
- by frame (SemanticKITTI and the KITTI-format family): sort the training scan files and keep every k-th one starting
  with the first (``sorted(files)[::k]``).

The unit comes from the reader's ``label_fraction_unit`` class attribute (``"sequence"`` or ``"frame"``; default
``"frame"``), or the ``unit`` argument. Sequence order is the order in which sequences first appear in the dataset,
and frame order is the dataset's index order (readers list scans sorted, sequence by sequence); this matches
SLidR's order for the nuScenes and SemanticKITTI readers.
"""

from __future__ import annotations

import numpy as np

from largead.data.registry import LidarDataset

LABEL_FRACTIONS: tuple[float, ...] = (1, 5, 10, 20, 25, 50, 100)
"""Percentages with an integer skip ratio ``100 / percent``."""


def skip_ratio(percent: float) -> int:
    """``k = 100 / percent``; raises unless it is a positive integer (1, 5, 10, 20, 25, 50, 100 %)."""
    if not 0 < percent <= 100:
        raise ValueError(f"label fraction must be in (0, 100] percent, got {percent}")
    k = 100.0 / percent
    if abs(k - round(k)) > 1e-9:
        raise ValueError(f"label fraction {percent}% does not give an integer skip ratio 100 / {percent}; "
                         f"use one of {', '.join(f'{p:g}' for p in LABEL_FRACTIONS)}")
    return int(round(k))


def label_fraction_indices(dataset: LidarDataset, percent: float, unit: str | None = None) -> np.ndarray:
    """Indices (sorted, int64) of the frames of ``dataset`` kept for a ``percent`` % label fraction.

    Deterministic (no randomness). Raises ``ValueError`` if the fraction keeps no frame (e.g. 1 % of fewer than
    100 scenes) or ``unit`` is unknown.
    """
    k = skip_ratio(percent)
    unit = unit or getattr(dataset, "label_fraction_unit", "frame")
    n = len(dataset)
    if unit == "frame":
        keep = np.arange(0, n, k, dtype=np.int64)
    elif unit == "sequence":
        seqs = [dataset.sequence_of(i)[0] for i in range(n)]
        order = {s: j for j, s in enumerate(dict.fromkeys(seqs))}  # order of first appearance
        rank = np.fromiter((order[s] for s in seqs), dtype=np.int64, count=n)
        keep = np.flatnonzero((rank + 1) % k == 0).astype(np.int64)
        if len(keep) == 0:
            raise ValueError(f"{dataset.name}: {percent}% of {len(order)} sequences (every {k}-th) keeps none")
    else:
        raise ValueError(f"unknown label-fraction unit {unit!r}; expected 'sequence' or 'frame'")
    if len(keep) == 0:
        raise ValueError(f"{dataset.name}: {percent}% of {n} frames keeps none")
    return keep
