"""SegmentationModel: linear probe freezes the backbone (weights and BN statistics), finetune groups, checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from largead.models.encoder import LargeADConfig, LargeADEncoder
from largead.models.heads import (
    SegmentationModel,
    check_encoder_matches,
    set_bn_momentum,
)
from largead.models.losses import SegmentationLoss
from largead.sparse import VoxelGrid


def _encoder(seed: int = 0) -> LargeADEncoder:
    torch.manual_seed(seed)
    return LargeADEncoder(LargeADConfig(backbone="minkunet14", voxel_size=(0.5, 0.5, 0.5), cylindrical=False))


def _scans(n: int = 2, points: int = 300, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.uniform(-8, 8, (points, 3)), rng.uniform(0, 1, (points, 1))], 1).astype(np.float32)
            for _ in range(n)]


def _train_steps(model: SegmentationModel, steps: int = 2, lr: float = 0.5) -> None:
    opt = torch.optim.SGD(model.param_groups(lr, head_lr=lr), lr=lr, momentum=0.9)
    loss_fn = SegmentationLoss()
    model.train()
    for s in range(steps):
        batch = model.encoder.voxelize(_scans(seed=s))
        labels = torch.randint(0, model.num_classes, (batch.feats.shape[0],), generator=torch.Generator().manual_seed(s))
        loss = loss_fn(model(batch), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_linear_probe_freezes_backbone_weights_and_bn_statistics() -> None:
    model = SegmentationModel(_encoder(), 5, mode="linear_probe")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    _train_steps(model)
    after = model.encoder.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["final.bias", "final.kernel"]  # running_mean/var and num_batches_tracked included in `before`
    assert any(k.endswith("running_mean") for k in before)
    assert model.training and not model.encoder.training and model.encoder.final.training
    assert all(not m.training for n, m in model.encoder.named_modules() if n and not n.startswith("final"))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["encoder.final.kernel", "encoder.final.bias"]


def test_finetune_trains_everything_with_two_learning_rates() -> None:
    model = SegmentationModel(_encoder(), 4, mode="finetune")
    groups = model.param_groups(0.02, head_lr=2.0)
    assert [g["name"] for g in groups] == ["backbone", "head"] and [g["lr"] for g in groups] == [0.02, 2.0]
    n_all = sum(1 for _ in model.parameters())
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_all
    before = copy.deepcopy(model.encoder.state_dict())
    _train_steps(model, steps=1)
    after = model.encoder.state_dict()
    assert not torch.equal(before["conv0p1s1.kernel"], after["conv0p1s1.kernel"])
    assert not torch.equal(before["bn0.bn.running_mean"], after["bn0.bn.running_mean"])


def test_head_replaces_final_in_minkowski_layout() -> None:
    enc = _encoder()
    model = SegmentationModel(enc, 7)
    assert tuple(enc.final.kernel.shape) == (96, 7) and tuple(enc.final.bias.shape) == (1, 7)
    batch = enc.voxelize(_scans(1))
    model.eval()
    with torch.no_grad():
        logits = model(batch)
        ref = enc.decoder_forward(batch) @ enc.final.kernel + enc.final.bias
        assert torch.allclose(logits, ref)
        assert model.point_logits(batch).shape == (300, 7)
        assert torch.equal(model.point_logits(batch), logits[batch.inverse])


def test_save_and_load_round_trip(tmp_path) -> None:
    model = SegmentationModel(_encoder(), 3, mode="finetune", class_names=("a", "b", "c")).eval()
    model.save_pretrained(tmp_path / "m", dataset="synthetic")
    loaded = SegmentationModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.class_names == ("a", "b", "c") and loaded.mode == "finetune"
    batch = model.encoder.voxelize(_scans(1))
    with torch.no_grad():
        assert torch.allclose(model(batch), loaded(batch))
        # the saved folder is an ordinary encoder whose forward gives the logits
        plain = LargeADEncoder.from_pretrained(str(tmp_path / "m"))
        assert torch.allclose(plain.forward_batch(batch), model(batch), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="segmentation.json"):
        SegmentationModel.from_pretrained(tmp_path)


def test_refuses_mismatched_checkpoint() -> None:
    cfg = LargeADConfig(voxel_size=(0.1, 1.0, 0.1), cylindrical=True, in_channels=1)
    check_encoder_matches(cfg, VoxelGrid((0.1, 1.0, 0.1), True), 1)
    with pytest.raises(ValueError) as err:
        check_encoder_matches(cfg, VoxelGrid((0.05, 0.05, 0.05), False), 4, source="ckpt X", target="nuscenes config")
    msg = str(err.value)
    assert "ckpt X has voxel_size=(0.1, 1.0, 0.1), cylindrical=True" in msg
    assert "nuscenes config has voxel_size=(0.05, 0.05, 0.05), cylindrical=False" in msg
    assert "in_channels=1" in msg and "gives 4" in msg


def test_bn_momentum_follows_slidr_quirk() -> None:
    enc = _encoder()
    set_bn_momentum(enc, 0.02, block_momentum=0.1)
    mom = {n: m.momentum for n, m in enc.named_modules() if isinstance(m, torch.nn.BatchNorm1d)}
    assert mom["bn0.bn"] == 0.02 and mom["block1.0.norm1.bn"] == 0.1
    assert mom["block2.0.downsample.1.bn"] == 0.02
    set_bn_momentum(enc, 0.02)
    assert all(v == 0.02 for n, v in ((n, m.momentum) for n, m in enc.named_modules()
                                      if isinstance(m, torch.nn.BatchNorm1d)))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        SegmentationModel(_encoder(), 3, mode="probe")
    with pytest.raises(ValueError, match="expected \\(96, 3\\)"):
        SegmentationModel(_encoder(), 3, new_head=False)
