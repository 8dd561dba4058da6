"""Multi-source pretraining: per-dataset input normalisation and a sampler that mixes datasets.

Intensity scales differ between sensors (nuScenes 0-255, SemanticKITTI 0-1, ...). LargeAD normalises input features
per dataset by their mean and variance. Here the intensity column is mapped to ``(i - mean_d) / std_d`` with
statistics either given in the config or estimated from data (:func:`intensity_stats`), and the table
``{dataset: [mean, std]}`` is stored in the encoder's ``config.input_norm`` so that inference applies the same
normalisation (``LargeADEncoder.voxelize(scans, dataset=...)``); both apply it with
:func:`largead.sparse.input_features`.

:class:`MultiSourceSampler` draws indices of a concatenation of datasets with given mixing ratios; every batch may
contain several datasets. Its order depends only on ``(seed, epoch)``, so every process draws the same stream and
accelerate shards it into disjoint per-process batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from largead.sparse.voxelize import input_features  # the one implementation, shared with the encoder


def intensity_stats(intensities: Iterable[np.ndarray]) -> tuple[float, float]:
    """Mean and standard deviation of all values of the given intensity arrays (streamed in float64).

    Raises ``ValueError`` if there are no values or the standard deviation is 0 (a constant channel cannot be
    normalised; give the statistics in the config instead)."""
    n, s, ss = 0, 0.0, 0.0
    for arr in intensities:
        a = np.asarray(arr, dtype=np.float64).reshape(-1)
        n += a.size
        s += float(a.sum())
        ss += float((a * a).sum())
    if n == 0:
        raise ValueError("intensity_stats: no intensity values")
    mean = s / n
    std = float(np.sqrt(max(ss / n - mean * mean, 0.0)))
    if not std > 1e-12:
        raise ValueError(f"intensity_stats: constant intensity ({mean}); set input_norm for this dataset explicitly")
    return mean, std


def dataset_intensity_stats(dataset: Any, max_frames: int = 64,
                            indices: Sequence[int] | None = None) -> tuple[float, float]:
    """``(mean, std)`` of the intensity of ``dataset`` (a reader), from up to ``max_frames`` frames evenly spaced
    over ``indices`` (default: every frame): how pretraining fills ``input_norm`` and how fine-tuning adds a dataset
    the encoder has not seen."""
    pool = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(pool) == 0:
        raise ValueError(f"{getattr(dataset, 'name', 'dataset')}: no frames to estimate the intensity statistics from")
    picks = pool[np.unique(np.linspace(0, len(pool) - 1, min(max_frames, len(pool))).round().astype(np.int64))]
    return intensity_stats(dataset[int(i)].points[:, 3] for i in picks)


def estimate_input_norm(frames_by_dataset: dict[str, Iterable[np.ndarray]]) -> dict[str, list[float]]:
    """``{dataset: [mean, std]}`` of the intensity column (index 3) of each dataset's point arrays."""
    return {name: list(intensity_stats(p[:, 3] for p in points)) for name, points in frames_by_dataset.items()}


class MultiSourceSampler(torch.utils.data.Sampler[int]):
    """Indices into ``ConcatDataset(datasets)`` drawn with mixing ``ratios``.

    Each of the ``num_samples`` draws (default: the total size) picks a dataset with probability ``ratios[d]``
    (normalised), then the next index of a per-epoch random permutation of that dataset (cycled if it runs out).
    Deterministic in ``(seed, epoch)``; call :meth:`set_epoch` (accelerate does) to change the stream.
    """

    def __init__(self, sizes: Sequence[int], ratios: Sequence[float] | None = None, num_samples: int | None = None,
                 seed: int = 0):
        if len(sizes) == 0 or any(s <= 0 for s in sizes):
            raise ValueError(f"MultiSourceSampler needs non-empty datasets, got sizes {list(sizes)}")
        ratios = [1.0] * len(sizes) if ratios is None else list(ratios)
        if len(ratios) != len(sizes) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ValueError(f"ratios {ratios} must be {len(sizes)} non-negative numbers with a positive sum")
        self.sizes = [int(s) for s in sizes]
        self.probs = np.asarray(ratios, dtype=np.float64) / sum(ratios)
        self.num_samples = int(num_samples) if num_samples is not None else int(sum(sizes))
        self.seed = int(seed)
        self.epoch = 0
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def indices(self) -> np.ndarray:
        """The epoch's ``num_samples`` global indices (vectorised)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        which = rng.choice(len(self.sizes), size=self.num_samples, p=self.probs)
        out = np.empty(self.num_samples, dtype=np.int64)
        for d, size in enumerate(self.sizes):  # loop over datasets (a handful), not samples
            pos = np.flatnonzero(which == d)
            if pos.size == 0:
                continue
            reps = -(-pos.size // size)
            perm = np.concatenate([rng.permutation(size) for _ in range(reps)])[: pos.size]
            out[pos] = self.offsets[d] + perm
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())


__all__ = ["MultiSourceSampler", "dataset_intensity_stats", "estimate_input_norm", "input_features", "intensity_stats"]
