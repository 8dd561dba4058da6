"""PretrainModel wiring: which rows feed which term, gradients, weights, cross-dataset term."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from largead.pretrain.data import PretrainDataConfig, PretrainDataset, collate_pretrain
from largead.pretrain.model import ObjectiveConfig, PretrainModel
from largead.pretrain.objectives import LossWeights, l_p2s, l_tmp, l_vfm
from largead.pretrain.temporal import SegmentCache, SegmentParams
from largead.sparse.voxelize import VoxelGrid

GRID = VoxelGrid((0.1, 1.0, 0.1), True)


class _Encoder(torch.nn.Module):
    """Stand-in for LargeADEncoder.forward_batch (the real net is tested by its owner): an MLP on voxel coords."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))

    def forward_batch(self, batch):
        x = torch.cat([batch.coords[:, 1:].float() / 50.0, batch.feats.float() / 255.0], 1)
        return F.normalize(self.net(x), dim=1)


class _Teacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv2d(3, 8, 1)

    def forward(self, images):
        return F.normalize(self.head(images.float() / 255.0), dim=1)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from largead.data import get_dataset
    from largead.superpixels import get_source

    ds = get_dataset("synthetic", seed=0, num_sequences=1, frames_per_sequence=3, beams=4, num_cameras=2,
                     image_size=(24, 40), azimuth_resolution=4.0, max_range=25.0)
    cfg = PretrainDataConfig(segments=SegmentParams(min_cluster_size=5), superpixel_ignore_zero=True)
    pd = PretrainDataset([ds], get_source("synthetic-vfm"), cfg, SegmentCache(tmp_path_factory.mktemp("seg")))
    return [pd[0], pd[1]]


def test_terms_equal_objectives_on_the_right_rows(batch):
    torch.manual_seed(0)
    b = collate_pretrain(batch, GRID)
    model = PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(tau=0.1))
    out = model(b)
    assert set(out) == {"vfm", "tmp", "p2s", "cdp", "loss"} and out["cdp"].item() == 0.0  # one dataset
    vox = model.encoder.forward_batch(b.voxels)
    pix = model.teacher(b.images).permute(0, 2, 3, 1).reshape(-1, 8)
    assert out["vfm"].item() == pytest.approx(l_vfm(vox[b.pair_voxel], b.pair_superpixel, pix, b.pixel_superpixel,
                                                     0.1).item(), rel=1e-6)
    scan = b.voxels.coords[:, 0].long()
    seg = b.voxel_segment
    t, n = (scan < 2) & (seg >= 0), (scan >= 2) & (seg >= 0)
    assert out["tmp"].item() == pytest.approx(l_tmp(vox[t], seg[t], vox[n], seg[n], 0.1).item(), rel=1e-6)
    rows = t | n
    own = torch.where(scan < 2, seg, seg + 10_000)[rows]
    assert out["p2s"].item() == pytest.approx(l_p2s(vox[rows], own, scan[rows], 0.1).item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(sum(out[k].item() for k in ("vfm", "tmp", "p2s", "cdp")), rel=1e-6)
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_weights_drop_terms_and_max_rows_subsamples(batch):
    b = collate_pretrain(batch, GRID)
    out = PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(weights=LossWeights(tmp=0, p2s=0, cdp=0)))(b)
    assert set(out) == {"vfm", "loss"} and out["loss"].item() == out["vfm"].item()
    torch.manual_seed(0)
    m = PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(max_rows=8))
    a, c = m(b)["tmp"].item(), m(b)["tmp"].item()
    assert a == c  # the subsample is seeded by the batch, not by global RNG state
    with pytest.raises(ValueError, match="every loss weight is 0"):
        PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(weights=LossWeights(0, 0, 0, 0)))(b)


def test_cross_dataset_term_in_multi_source_batch(batch):
    other = dataclasses.replace(batch[1], dataset="synthetic-kitti")
    b = collate_pretrain([batch[0], other], GRID, datasets=["synthetic", "synthetic-kitti"])
    assert b.scan_dataset.tolist() == [0, 1, 0, 1]
    out = PretrainModel(_Encoder(), _Teacher())(b)
    assert out["cdp"].item() > 0 and np.isfinite(out["cdp"].item())
