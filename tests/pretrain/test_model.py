"""PretrainModel wiring: which rows feed which term, gradients, weights, cross-dataset term."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from largead.pretrain.data import PretrainDataConfig, PretrainDataset, collate_pretrain
from largead.pretrain.model import ObjectiveConfig, PretrainModel
from largead.pretrain.objectives import CdpConfig, LossWeights, l_cdp, l_p2s, l_tmp, l_vfm, superpixel_prototypes
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


class _Backbone(torch.nn.Module):
    """A fixed, non-trainable stand-in for a frozen image backbone: a random 3 -> 6 1x1 conv + ReLU at stride 2."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 2, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x))


def _Teacher():
    """ImageTeacher (frozen backbone, trainable 1x1 head to 8 dims, upsampling, L2 norm) on the stand-in backbone."""
    from largead.models.image import ImageTeacher

    torch.manual_seed(0)
    return ImageTeacher(_Backbone(), out_dim=8, feature_dim=6, stride=2)


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
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert all(p.grad is None for p in model.teacher.backbone.parameters())  # the frozen backbone stays frozen


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


def _two_dataset_batch(batch):
    other = dataclasses.replace(batch[1], dataset="synthetic-kitti")
    b = collate_pretrain([batch[0], other], GRID, datasets=["synthetic", "synthetic-kitti"])
    assert b.scan_dataset.tolist() == [0, 1, 0, 1]
    return b


LOOSE = CdpConfig(threshold=0.0, warmup=0.2)  # the tiny world's few superpoints: a low bar so pairs exist


def test_cross_dataset_term_in_multi_source_batch(batch):
    b = _two_dataset_batch(batch)
    model = PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(cdp=LOOSE))
    out = model(b, progress=0.5)
    assert model.last_stats["cdp_pairs"] > 0
    assert out["cdp"].item() > 0 and np.isfinite(out["cdp"].item())
    # the term equals l_cdp on k (3D prototypes) and the frozen backbone prototypes, recomputed independently
    vox = model.encoder.forward_batch(b.voxels)
    pix = model.teacher(b.images).permute(0, 2, 3, 1).reshape(-1, 8)
    k, _, kept = superpixel_prototypes(vox[b.pair_voxel], b.pair_superpixel, pix, b.pixel_superpixel)
    with torch.no_grad():  # frozen map, nearest-cell upsampled to pixels, averaged per superpixel (a naive loop)
        fmap = model.teacher.backbone(model.teacher.normalize_images(b.images))  # (C, 6, 12, 20)
        up = fmap.repeat_interleave(2, 2).repeat_interleave(2, 3)  # stride 2, even image sizes
        per_pixel = up.permute(0, 2, 3, 1).reshape(-1, 6)
        g = torch.stack([per_pixel[b.pixel_superpixel == i].mean(0) for i in kept.tolist()])
    image_of_sp = torch.stack([torch.nonzero(b.pixel_superpixel == i)[0, 0] // (24 * 40) for i in kept.tolist()])
    ds = b.scan_dataset[b.image_scan[image_of_sp]]
    ref = l_cdp(k, g, ds, 0.07, LOOSE.threshold, LOOSE.mutual, LOOSE.negative_margin, LOOSE.center)
    assert out["cdp"].item() == pytest.approx(ref.item(), rel=1e-5)


def test_cdp_positives_come_from_frozen_features_not_the_head(batch):
    b = _two_dataset_batch(batch)
    model = PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(cdp=LOOSE))
    pairs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model.teacher.head.reset_parameters()  # a different trainable head ...
        model(b, progress=1.0)
        pairs.append(model.last_cdp_pairs)
    assert torch.equal(pairs[0][0], pairs[1][0]) and torch.equal(pairs[0][1], pairs[1][1])  # ... the same pairs
    assert pairs[0][0].numel() > 0
    with torch.no_grad():  # a different frozen backbone changes them
        model.teacher.backbone.conv.weight.mul_(-1.0).add_(0.3)
    model(b, progress=1.0)
    changed = model.last_cdp_pairs
    assert changed[0].shape != pairs[0][0].shape or not torch.equal(changed[1], pairs[0][1])


def test_cdp_warmup(batch):
    b = _two_dataset_batch(batch)
    model = PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(cdp=LOOSE))
    before = model(b, progress=0.19)
    assert before["cdp"].item() == 0.0 and model.last_stats["cdp_pairs"] == 0
    assert before["loss"].item() == pytest.approx(sum(before[k].item() for k in ("vfm", "tmp", "p2s")), rel=1e-6)
    model.set_progress(2, 10)  # 0.2: the warm-up is over
    after = model(b)
    assert after["cdp"].item() > 0 and model.last_stats["cdp_pairs"] > 0
    with pytest.raises(ValueError, match="progress"):
        PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(cdp=LOOSE))(b)  # nobody said where training is
    # a single-dataset batch needs no progress (the term is 0 anyway)
    single = collate_pretrain(batch, GRID)
    assert PretrainModel(_Encoder(), _Teacher(), ObjectiveConfig(cdp=LOOSE))(single)["cdp"].item() == 0.0


def test_checkpoints_leave_out_the_frozen_teacher_backbone(tmp_path):
    """The state dict (what accelerate's checkpoints save) has the encoder and the teacher's head, not the frozen
    backbone; strict loading accepts it with and without the backbone, also under a wrapper prefix (DDP's
    ``module.``), and through safetensors' load_model as accelerate's load_state uses it."""
    from safetensors.torch import load_model, save_file

    model = PretrainModel(_Encoder(), _Teacher())
    full = torch.nn.Module.state_dict(model)  # what it would be without the exclusion
    sd = model.state_dict()
    assert {k for k in full if k.startswith("teacher.backbone.")} == {"teacher.backbone.conv.weight",
                                                                       "teacher.backbone.conv.bias"}
    assert set(sd) == set(full) - model.frozen_keys() and "teacher.head.weight" in sd and "encoder.net.0.weight" in sd

    other = PretrainModel(_Encoder(), _Teacher())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    frozen_before = other.teacher.backbone.conv.weight.clone()
    other.load_state_dict(sd, strict=True)  # no missing-key error for the left-out backbone
    assert torch.equal(other.encoder.net[0].weight, model.encoder.net[0].weight)
    assert torch.equal(other.teacher.head.weight, model.teacher.head.weight)
    assert torch.equal(other.teacher.backbone.conv.weight, frozen_before)  # rebuilt from its source, not loaded
    other.load_state_dict(full, strict=True)  # an older checkpoint with the backbone loads it
    assert torch.equal(other.teacher.backbone.conv.weight, model.teacher.backbone.conv.weight)

    class Wrapper(torch.nn.Module):  # the prefix DDP puts in front
        def __init__(self, m):
            super().__init__()
            self.module = m

    wrapped = Wrapper(model)
    wsd = wrapped.state_dict()
    assert set(wsd) == {f"module.{k}" for k in sd}
    save_file({k: v.contiguous() for k, v in wsd.items()}, str(tmp_path / "model.safetensors"))
    target = Wrapper(PretrainModel(_Encoder(), _Teacher()))
    missing, unexpected = load_model(target, str(tmp_path / "model.safetensors"), strict=True)
    assert not missing and not unexpected
    with pytest.raises(RuntimeError, match="encoder.net.0.weight"):  # anything else missing is still an error
        target.load_state_dict({k: v for k, v in wsd.items() if "encoder.net.0.weight" not in k}, strict=True)
