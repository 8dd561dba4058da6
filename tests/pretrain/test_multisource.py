"""Per-dataset intensity normalisation and the multi-source sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from largead.pretrain.multisource import (
    MultiSourceSampler,
    estimate_input_norm,
    input_features,
    intensity_stats,
)


def test_intensity_stats_match_numpy():
    rng = np.random.default_rng(0)
    parts = [rng.uniform(0, 255, n) for n in (10, 1000, 7)]
    mean, std = intensity_stats(parts)
    allv = np.concatenate(parts)
    assert mean == pytest.approx(allv.mean(), rel=1e-12) and std == pytest.approx(allv.std(), rel=1e-9)
    with pytest.raises(ValueError, match="constant"):
        intensity_stats([np.ones(5)])
    with pytest.raises(ValueError, match="no intensity"):
        intensity_stats([])
    norm = estimate_input_norm({"a": [np.c_[np.zeros((3, 3)), [0.0, 1.0, 2.0]]]})
    assert norm["a"] == pytest.approx([1.0, np.sqrt(2 / 3)])


def test_input_features_match_encoder_voxelize():
    from largead import LargeADConfig, LargeADEncoder
    from largead.sparse.voxelize import batch_voxelize

    rng = np.random.default_rng(1)
    pts = np.c_[rng.uniform(-10, 10, (50, 3)), rng.uniform(0, 255, 50)].astype(np.float32)
    norm = {"nuscenes": [100.0, 50.0], "semantickitti": [0.3, 0.1]}
    enc = LargeADEncoder(LargeADConfig(backbone="minkunet14", input_norm=norm))
    ours = batch_voxelize([torch.as_tensor(pts[:, :3])], enc.grid,
                          features=[input_features(pts, "intensity", norm, "nuscenes")])
    ref = enc.voxelize([pts], dataset="nuscenes")
    assert torch.equal(ours.coords, ref.coords) and torch.allclose(ours.feats, ref.feats)
    assert torch.allclose(ours.feats[:, 0], (torch.as_tensor(pts[ours.first_index.numpy(), 3]) - 100) / 50)
    with pytest.raises(KeyError, match="no input statistics for dataset 'waymo'.*fine-tune it there"):
        input_features(pts, "intensity", norm, "waymo")
    raw = torch.as_tensor(pts[:, 3:4])
    assert torch.equal(input_features(pts, "intensity", {}, "waymo"), raw)  # no statistics: raw
    assert torch.equal(input_features(pts, "intensity", norm, None), raw)  # no dataset named: raw


def test_sampler_ratios_determinism_and_mixing():
    s = MultiSourceSampler([10, 30, 5], ratios=[2, 1, 1], num_samples=8000, seed=3)
    idx = s.indices()
    which = np.searchsorted([10, 40], idx, side="right")
    frac = np.bincount(which, minlength=3) / len(idx)
    assert np.allclose(frac, [0.5, 0.25, 0.25], atol=0.02)
    assert idx.min() >= 0 and idx.max() < 45
    # every index of a dataset is used before any repeats (per-dataset permutation, cycled)
    first10 = idx[which == 0][:10]
    assert sorted(first10.tolist()) == list(range(10))
    assert np.array_equal(idx, MultiSourceSampler([10, 30, 5], [2, 1, 1], 8000, seed=3).indices())
    s.set_epoch(1)
    assert not np.array_equal(idx, s.indices())
    batches = which[: 4 * 100].reshape(100, 4)
    assert (np.ptp(batches, axis=1) > 0).mean() > 0.5  # most batches of 4 mix datasets
    assert list(iter(MultiSourceSampler([2, 2], num_samples=3, seed=0))) == \
        MultiSourceSampler([2, 2], num_samples=3, seed=0).indices().tolist()


def test_sampler_errors():
    with pytest.raises(ValueError, match="non-empty"):
        MultiSourceSampler([3, 0])
    with pytest.raises(ValueError, match="ratios"):
        MultiSourceSampler([3, 3], ratios=[1.0])
