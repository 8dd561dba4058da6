"""The inference fast path: precision choice, BatchNorm folding (against BatchNorm1d applied by hand), weight cache."""

from __future__ import annotations

import pytest
import torch

from largead.models.minkunet import MinkUNet
from largead.sparse import BatchNorm, Conv3d, ConvTranspose3d, ReLU, SparseTensor, inference
from largead.sparse.inference import clear_inference_cache, fused_inference, native_bf16, resolve_precision
from largead.sparse.nn import active_plan


def random_coords(n: int, extent: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.cat([torch.randint(0, 2, (n, 1), generator=g), torch.randint(-extent, extent, (n, 3), generator=g)], 1)
    return torch.unique(c, dim=0).int()


def randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)


@pytest.mark.parametrize("precision, expected", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_resolve_explicit_precisions(precision, expected):
    assert resolve_precision(precision, "cpu") == expected


def test_resolve_auto_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": True)
    assert resolve_precision("auto") == torch.bfloat16
    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": False)
    assert resolve_precision("auto") == torch.float32


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None, 32])
def test_resolve_rejects_unknown_precision(bad):
    with pytest.raises(ValueError, match="unknown precision .* expected one of auto, fp32, bf16"):
        resolve_precision(bad)


def test_native_bf16_reads_the_cpu(monkeypatch):
    """Without torch's probe, the /proc/cpuinfo flags decide; a CPU without avx512_bf16/amx_bf16 says no."""
    monkeypatch.setattr(inference.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(inference, "_torch_cpu_bf16", lambda: None)
    monkeypatch.setattr(inference, "_cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert native_bf16("cpu") is torch.ops.mkldnn._is_mkldnn_bf16_supported()
    monkeypatch.setattr(inference, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert native_bf16("cpu") is False
    monkeypatch.setattr(inference, "_torch_cpu_bf16", lambda: False)
    monkeypatch.setattr(inference, "_cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert native_bf16("cpu") is False  # torch's own probe wins when it exists
    monkeypatch.setattr(inference.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(inference, "_torch_cpu_bf16", lambda: True)
    assert native_bf16("cpu") is False


def test_native_bf16_on_cuda_needs_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert native_bf16("cuda") is False


def test_folded_conv_bn_equals_bn_applied_by_hand():
    """conv -> BatchNorm1d (eval) in float64 against the folded convolution, for a 3^3, a strided, a transposed and a
    biased 1x1 convolution."""
    torch.manual_seed(0)
    coords = random_coords(400, 6, 1)
    x = SparseTensor(torch.randn(len(coords), 5, dtype=torch.float64), coords)
    layers = [(Conv3d(5, 7, 3), BatchNorm(7)), (Conv3d(5, 7, 2, 2), BatchNorm(7)), (Conv3d(5, 7, 1, bias=True),
                                                                                   BatchNorm(7))]
    for conv, bn in layers:
        model = torch.nn.ModuleList([conv, bn]).double().eval()
        randomize_bn(model, 3)
        with torch.no_grad():
            y = conv(x)
            b = bn.bn
            ref = (y.F - b.running_mean) / torch.sqrt(b.running_var + b.eps) * b.weight + b.bias
            with fused_inference(model, torch.float64, [(conv, bn)]):
                got = bn(conv(x)).F
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    down = Conv3d(5, 7, 2, 2).double()
    up, bn = ConvTranspose3d(7, 3, 2, 2).double(), BatchNorm(3).double()
    model = torch.nn.ModuleList([down, up, bn]).eval()
    randomize_bn(model, 4)
    with torch.no_grad():
        d = down(x)
        ref = bn(up(d)).F
        with fused_inference(model, torch.float64, [(up, bn)]):
            got = bn(up(down(x))).F
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = MinkUNet(1, 16, "minkunet14").eval()
    randomize_bn(model, 0)
    return model


@pytest.fixture(scope="module")
def sparse_input():
    coords = random_coords(3000, 12, 2)
    return coords, torch.rand(len(coords), 1)


@pytest.mark.parametrize("inplace_add", [False, True])
def test_fused_minkunet_equals_plain_eval(net, sparse_input, inplace_add):
    coords, feats = sparse_input
    before = feats.clone()
    with torch.no_grad():
        ref = net(SparseTensor(feats, coords)).F
        with fused_inference(net, torch.float32, net.conv_bn_pairs(), inplace_relu=True, inplace_add=inplace_add):
            got = net(SparseTensor(feats, coords)).F
            again = net(SparseTensor(feats, coords)).F
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(got, again)
    assert torch.equal(feats, before)  # in-place ReLUs and residual sums only overwrite temporaries
    assert len(net.conv_bn_pairs()) == sum(isinstance(m, BatchNorm) for m in net.modules())


def test_fused_bf16_agrees_with_fp32(net, sparse_input):
    coords, feats = sparse_input
    with torch.no_grad():
        ref = net(SparseTensor(feats, coords)).F
        with fused_inference(net, torch.bfloat16, net.conv_bn_pairs(), inplace_relu=True):
            out = net(SparseTensor(feats, coords)).F
    assert out.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(out.float(), ref, dim=1)
    assert float(cos.min()) > 0.99 and float(cos.mean()) > 0.999


def test_layers_restored_after_the_context(net, sparse_input):
    coords, feats = sparse_input
    relus = [m for m in net.modules() if isinstance(m, ReLU)]
    with pytest.raises(RuntimeError, match="boom"), fused_inference(net, torch.float32, net.conv_bn_pairs(), True):
        assert active_plan() is not None and len(active_plan().inplace) == len(relus)
        raise RuntimeError("boom")
    assert active_plan() is None
    x = SparseTensor(torch.randn(5, 3), torch.arange(20).reshape(5, 4).int())
    y = ReLU()(x)
    assert (x.F < 0).any() and not torch.equal(x.F, y.F)  # out of the context, ReLU is not in place
    with torch.no_grad(), fused_inference(net, torch.float32):  # without pairs: BatchNorm still applied
        torch.testing.assert_close(net(SparseTensor(feats, coords)).F, net(SparseTensor(feats, coords)).F)


def test_fused_inference_needs_eval_mode_and_plain_layers_with_grad(sparse_input):
    coords, feats = sparse_input
    conv, bn = Conv3d(1, 4, 3), BatchNorm(4)
    model = torch.nn.ModuleList([conv, bn])
    with pytest.raises(ValueError, match="eval mode"), fused_inference(model.train(), torch.float32, [(conv, bn)]):
        pass
    model.eval()
    randomize_bn(model, 5)
    x = SparseTensor(feats, coords)
    with fused_inference(model, torch.float32, [(conv, bn)]):  # autograd on: the plain layers run
        out = bn(conv(x)).F
    assert out.requires_grad
    torch.testing.assert_close(out, bn(conv(x)).F)
    with pytest.raises(TypeError, match="pairs must be"), fused_inference(model, torch.float32, [(bn, conv)]):
        pass


def test_weight_cache_follows_parameter_updates(sparse_input):
    coords, feats = sparse_input
    torch.manual_seed(1)
    conv, bn = Conv3d(1, 4, 3), BatchNorm(4)
    model = torch.nn.ModuleList([conv, bn]).eval()
    randomize_bn(model, 6)
    x = SparseTensor(feats, coords)

    def fused():
        with torch.no_grad(), fused_inference(model, torch.float32, [(conv, bn)]) as plan:
            return bn(conv(x)).F, plan.weights[id(conv)][0]

    first, w1 = fused()
    _, w2 = fused()
    assert w2 is w1  # cached: no refolding while nothing changed
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    bn(conv(SparseTensor(feats, coords))).F.square().sum().backward()
    opt.step()  # in-place updates: kernel and BN parameters; train-mode forward moved the running statistics
    model.eval()
    second, w3 = fused()
    assert w3 is not w1
    with torch.no_grad():
        ref = bn(conv(x)).F
    torch.testing.assert_close(second, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    assert not torch.allclose(first, second)
    clear_inference_cache(model)
    assert "_infer_cache" not in conv.__dict__


def test_plan_is_per_thread(net, sparse_input):
    """A fused pass in one thread leaves another thread's pass on the plain layers (same model, same time)."""
    import threading

    coords, feats = sparse_input
    with torch.no_grad():
        ref = net(SparseTensor(feats, coords)).F
    seen = {}

    def other():
        seen["plan"] = active_plan()
        with torch.no_grad():
            seen["out"] = net(SparseTensor(feats, coords)).F

    with torch.no_grad(), fused_inference(net, torch.bfloat16, net.conv_bn_pairs(), inplace_relu=True):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        fused = net(SparseTensor(feats, coords)).F
    assert seen["plan"] is None and torch.equal(seen["out"], ref)
    assert fused.dtype == torch.bfloat16


def test_bf16_inplace_relu_equals_torch_relu():
    """The integer-clamp ReLU of bfloat16 features gives torch.relu's values bit for bit (up to the sign of zero),
    NaN included: every finite, infinite, subnormal and NaN value torch produces."""
    from largead.sparse.nn import _relu_inplace

    special = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), -float("inf"), 1e-40, -1e-40, 3e38, -3e38],
                           dtype=torch.bfloat16)
    nan = (torch.zeros(2, dtype=torch.bfloat16) / 0) * torch.tensor([1.0, -1.0], dtype=torch.bfloat16)
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    every = every[~torch.isnan(every)]  # every non-NaN bit pattern
    x = torch.cat([special, nan, every, torch.randn(10_000).bfloat16()])
    ref = torch.relu(x)
    got = _relu_inplace(x.clone())
    assert torch.isnan(got[10:12]).all() and torch.isnan(ref[10:12]).all()
    keep = ~torch.isnan(ref)
    assert torch.equal(got[keep], ref[keep])
    assert torch.equal(torch.isnan(got), torch.isnan(ref))


def test_bf16_kernels_permuted_once_and_refreshed_when_weights_change(sparse_input):
    """The fused bfloat16 pass keeps each convolution's kernels permuted to its layout's offset order: a second pass
    over the same scan permutes no kernel, and an in-place weight update is seen (the result follows the new
    weights)."""
    torch.manual_seed(0)
    model = MinkUNet(1, 16, "minkunet14").eval()
    randomize_bn(model, 0)
    coords, feats = sparse_input
    permuted = []
    real = torch.Tensor.index_select

    def spy(self, dim, index, *args, **kwargs):
        if self.dim() == 3:
            permuted.append(tuple(self.shape))
        return real(self, dim, index, *args, **kwargs)

    def run():
        with torch.no_grad(), fused_inference(model, torch.bfloat16, model.conv_bn_pairs(), True, True):
            return model(SparseTensor(feats, coords)).F.float()

    torch.Tensor.index_select = spy
    try:
        first = run()
        n_first = len(permuted)
        second = run()
        n_second = len(permuted) - n_first
        with torch.no_grad():
            model.conv0p1s1.kernel.mul_(-1.0)
        third = run()
    finally:
        torch.Tensor.index_select = real
    assert n_first > 5 and n_second == 0
    assert torch.equal(first, second)
    with torch.no_grad():
        ref = model(SparseTensor(feats, coords)).F
    err_new, err_old = (third - ref).norm(), (first - ref).norm()  # bf16 rounding vs the weight change
    assert float(err_new) < 0.2 * float(err_old)
