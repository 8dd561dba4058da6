"""Equivalence with MinkowskiEngine 0.5.4: the same weights through ME and through largead.sparse.

This is the proof that ``largead.sparse`` has ME's semantics (strided/transposed coordinate maps, kernel offsets,
negative coordinates) and that the MinkUNet wiring matches: outputs in eval mode, outputs and every parameter
gradient in train mode (in float64, where ME and largead.sparse must agree to rounding; in float32 train mode,
BatchNorm's reductions make deep gradients of any two float32 implementations differ at ~1e-3 relative, so float32 is
compared on outputs only).
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from largead import LargeADConfig, LargeADEncoder
from largead.models.minkowski import (
    INSTALL_HINT,
    import_minkowski,
    minkowski_available,
    minkowski_twin,
)
from largead.models.minkunet import MinkUNet
from largead.sparse import VoxelGrid, batch_voxelize

needs_me = pytest.mark.skipif(not minkowski_available(), reason=INSTALL_HINT)
pytestmark = [
    pytest.mark.minkowski,
    # ME 0.5.4 instantiates its autograd Functions, which torch 2.x deprecates (harmless, once per layer call)
    pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning"),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def two_scans(make_scan, grid: VoxelGrid, per_ring: int = 120):
    a = make_scan(num_beams=16, points_per_ring=per_ring, seed=1)
    b = make_scan(num_beams=16, points_per_ring=per_ring, seed=2)
    b[:, :2] = b[:, :2] @ np.array([[0.6, -0.8], [0.8, 0.6]], dtype=np.float32) + 3.0  # another pose
    batch = batch_voxelize([a, b], grid)
    return batch.coords, batch.feats / 255.0


def randomize(net: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) * 0.8 + 0.6)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def test_missing_minkowski_names_the_install_script(monkeypatch):
    monkeypatch.setitem(sys.modules, "MinkowskiEngine", None)
    with pytest.raises(ImportError, match="MinkowskiEngine not installed: run scripts/install_minkowski.sh"):
        import_minkowski()


@needs_me
@pytest.mark.parametrize("grid", [VoxelGrid((0.1, 1.0, 0.1), True), VoxelGrid((0.15, 0.15, 0.15), False)],
                         ids=["cylindrical", "cartesian"])
def test_eval_outputs_match_minkowski(make_scan, grid):
    coords, feats = two_scans(make_scan, grid)
    assert coords[:, 1:].min() < 0 and coords.shape[0] > 2000 and set(coords[:, 0].tolist()) == {0, 1}
    torch.manual_seed(0)
    net = MinkUNet(1, 64, "minkunet34").eval()
    randomize(net, 1)
    twin = minkowski_twin(net)
    assert twin.backend == "minkowski" and not twin.training
    with torch.no_grad():
        x = net._ops.sparse_input(coords, feats)
        ours = net(x).F
        dec = net.decoder_features(x).F
        xm = twin._ops.sparse_input(coords, feats)
        theirs = twin._ops.output_features(twin(xm), xm)
        dec_me = twin._ops.output_features(twin.decoder_features(xm), xm)
    assert theirs.abs().max() > 1e-2
    assert rel_err(ours, theirs) < 1e-4
    assert rel_err(dec, dec_me) < 1e-4


def _train_step(net: MinkUNet, coords: torch.Tensor, feats: torch.Tensor, target: torch.Tensor):
    x = net._ops.sparse_input(coords, feats.to(target.dtype))
    out = net._ops.output_features(net(x), x)
    ((out - target) ** 2).mean().backward()
    return out.detach(), {n: p.grad.detach().double() for n, p in net.named_parameters()}


@needs_me
def test_train_mode_outputs_and_gradients_match_minkowski(make_scan):
    coords, feats = two_scans(make_scan, VoxelGrid((0.1, 1.0, 0.1), True), per_ring=70)
    assert coords.shape[0] > 2000
    torch.manual_seed(0)
    net = MinkUNet(1, 16, "minkunet34").double().train()
    randomize(net, 2)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    twin = minkowski_twin(net)
    target = torch.randn(coords.shape[0], 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    # float64: the two engines must agree to rounding (measured ~1e-14)
    ours, grads = _train_step(net, coords, feats, target)
    theirs, grads_me = _train_step(twin, coords, feats, target)
    assert rel_err(ours, theirs) < 1e-11
    for name in grads:
        assert rel_err(grads[name], grads_me[name]) < 1e-10, name
    for name, buf in net.named_buffers():  # BatchNorm running statistics updated identically
        assert torch.allclose(buf.double(), dict(twin.named_buffers())[name].double(), rtol=1e-11, atol=1e-14), name

    # float32: train-mode BatchNorm reductions put deep gradients of any float32 engine ~1e-2 (relative) away from
    # float64; largead.sparse must be as close to the float64 reference as MinkowskiEngine is.
    net32 = MinkUNet(1, 16, "minkunet34").train()
    net32.load_state_dict(start)
    twin32 = minkowski_twin(net32)
    out32, g32 = _train_step(net32, coords, feats, target.float())
    out32_me, g32_me = _train_step(twin32, coords, feats, target.float())
    assert rel_err(out32.double(), ours) < 1e-4 and rel_err(out32_me.double(), ours) < 1e-4
    ours_err = torch.tensor([rel_err(g32[n], grads[n]) for n in grads])
    me_err = torch.tensor([rel_err(g32_me[n], grads[n]) for n in grads])
    assert me_err.max() < 0.1  # the tolerance float32 itself needs here
    assert ours_err.max() <= 3 * me_err.max() and ours_err.median() <= 3 * me_err.median()


@needs_me
def test_encoder_minkowski_backend_embeds_like_torch(make_scan, tmp_path):
    scan = make_scan(num_beams=16, points_per_ring=150, seed=4)
    torch.manual_seed(0)
    enc = LargeADEncoder(LargeADConfig(backbone="minkunet14")).eval()
    randomize(enc, 5)
    enc.save_pretrained(tmp_path / "enc")
    me_enc = LargeADEncoder.from_pretrained(tmp_path / "enc", backend="minkowski")
    assert me_enc.backend == "minkowski" and me_enc.config == replace(enc.config, backend="minkowski")
    assert list(me_enc.state_dict()) == list(enc.state_dict())
    ours, theirs = enc.embed(scan, precision="fp32"), me_enc.embed(scan)
    assert rel_err(ours, theirs) < 1e-4
    me_enc.save_pretrained(tmp_path / "me")  # ME state dict loads into the torch build unchanged
    back = LargeADEncoder.from_pretrained(tmp_path / "me", backend="torch")
    assert torch.equal(back.embed(scan, precision="fp32"), ours)
