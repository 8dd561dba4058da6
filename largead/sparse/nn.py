"""Sparse layers with MinkowskiEngine 0.5.4's parameter names and layouts, so ME state dicts load unchanged.

Facts from ME's ``MinkowskiEngine/MinkowskiConvolution.py`` (``MinkowskiConvolutionBase.__init__``/``forward``):
``kernel`` is ``[kernel_volume, C_in, C_out]``, except a kernel of volume 1 with stride 1 which is ``[C_in, C_out]``
and is applied as ``F @ kernel`` on the same coordinates; ``bias`` is ``[1, C_out]`` added to every row.
``reset_parameters`` draws ``U(-1/sqrt(n), 1/sqrt(n))`` with ``n = C_in * kernel_volume`` (``C_out * kernel_volume``
for transposed convolutions); the same initialisation is used here. ``MinkowskiBatchNorm`` keeps a
``torch.nn.BatchNorm1d`` under ``.bn`` applied to the feature matrix.

Relation to dense convolutions (used by the tests): with a dense grid laid out ``[N, C, X, Y, Z]``,
``conv3d`` weight ``w[o, i, ix, iy, iz] = kernel[ix + ks*iy + ks^2*iz, i, o]``, i.e.
``kernel.reshape(ks, ks, ks, C_in, C_out).permute(4, 3, 2, 1, 0)``; ``conv_transpose3d`` weight
``w[i, o, ix, iy, iz]`` is ``kernel.reshape(ks, ks, ks, C_in, C_out).permute(3, 4, 2, 1, 0)``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from .functional import pointwise, sparse_conv, sparse_conv_inference
from .tensor import SparseTensor


@dataclass
class FusedPlan:
    """The inference plan :func:`~largead.sparse.inference.fused_inference` activates for the calling thread: run
    weights per convolution (``id`` -> ``(kernel, bias)``), folded BatchNorms and in-place ReLUs (``id`` sets), and
    whether residual sums (:func:`residual_add`) may overwrite their first operand."""

    weights: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)
    folded: set[int] = field(default_factory=set)
    inplace: set[int] = field(default_factory=set)
    inplace_add: bool = False


_thread = threading.local()  # per thread, so concurrent forward passes on one model do not see each other's plan


def active_plan() -> FusedPlan | None:
    """This thread's active :class:`FusedPlan`, or None."""
    return getattr(_thread, "plan", None)


def set_plan(plan: FusedPlan | None) -> FusedPlan | None:
    """Activate ``plan`` for this thread; returns the previous one (to restore)."""
    previous = active_plan()
    _thread.plan = plan
    return previous


def _fast(module: nn.Module) -> FusedPlan | None:
    """The active plan if ``module`` may use it now (eval mode, autograd off)."""
    plan = active_plan()
    if plan is None or module.training or torch.is_grad_enabled():
        return None
    return plan


def residual_add(a: SparseTensor, b: SparseTensor) -> SparseTensor:
    """``a + b`` on the same coordinates; ``a``'s features are overwritten inside an inference plan with
    ``inplace_add`` (whose caller vouches that ``a`` is a temporary, as the branch output of a residual block)."""
    if a.coordinate_set is not b.coordinate_set:
        raise ValueError("residual add needs both tensors on the same coordinates")
    plan = active_plan()
    if plan is not None and plan.inplace_add and not torch.is_grad_enabled() and a.F.dtype == b.F.dtype:
        return a.replace(a.F.add_(b.F))
    return a.replace(a.F + b.F)


def _check_input(x: SparseTensor, channels: int, layer: str) -> None:
    if not isinstance(x, SparseTensor):
        raise TypeError(f"{layer} expects a SparseTensor, got {type(x).__name__}")
    if x.F.shape[1] != channels:
        raise ValueError(f"{layer} expects {channels} input channels, got features of shape {tuple(x.F.shape)}")


class _ConvBase(nn.Module):
    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.kernel_volume = self.kernel_size**3
        self.use_mm = self.kernel_volume == 1 and self.stride == 1
        shape = (in_channels, out_channels) if self.use_mm else (self.kernel_volume, in_channels, out_channels)
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(1, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ME's initialisation: uniform in ``+-1/sqrt(fan)``, fan = (C_out if transposed else C_in) * volume."""
        fan = (self.out_channels if self.transposed else self.in_channels) * self.kernel_volume
        bound = 1.0 / math.sqrt(fan)
        with torch.no_grad():
            self.kernel.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"bias={self.bias is not None}")

    def forward(self, x: SparseTensor) -> SparseTensor:
        _check_input(x, self.in_channels, type(self).__name__)
        inp, weight, bias = x.F, self.kernel, self.bias
        plan = _fast(self)
        entry = plan.weights.get(id(self)) if plan is not None else None
        if entry is not None:
            # inference fast path: cached run-dtype weights (BatchNorm folded in), bias fused into a product
            weight, bias = entry
            if self.use_mm:
                out_cs, kmap = x.coordinate_set, None
            else:
                out_cs, kmap = self._map(x)
            feats = sparse_conv_inference(inp.to(weight.dtype), weight, kmap, bias, keep_kernels=True)
            return SparseTensor._from_set(feats, out_cs, x.cache)
        if torch.is_autocast_enabled(inp.device.type):  # mixed precision: compute in the autocast dtype
            dtype = torch.get_autocast_dtype(inp.device.type)
            inp, weight = inp.to(dtype), weight.to(dtype)
        if self.use_mm:
            out_cs = x.coordinate_set
            feats = pointwise(inp, weight)
        else:
            out_cs, kmap = self._map(x)
            feats = sparse_conv(inp, weight, kmap)
        if bias is not None:
            feats = feats + bias
        return SparseTensor._from_set(feats, out_cs, x.cache)


class Conv3d(_ConvBase):
    """Sparse 3D convolution (ME ``MinkowskiConvolution``, dimension 3, dilation 1).

    ``kernel_size=3, stride=1``: submanifold (output on the input coordinates). ``stride=s``: output coordinates
    ``floor(c / (s * t)) * (s * t)`` at tensor stride ``s * t``. ``kernel_size=1``: pointwise. Parameter ``kernel``
    is ``[k^3, C_in, C_out]`` (``[C_in, C_out]`` for k=1, s=1); ``bias`` ``[1, C_out]`` when ``bias=True``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, bias)

    def _map(self, x: SparseTensor):
        out_cs = x.cache.strided(x.coordinate_set, self.stride)
        return out_cs, x.cache.kernel_map(x.coordinate_set, out_cs, self.kernel_size, transposed=False)


class ConvTranspose3d(_ConvBase):
    """Sparse transposed 3D convolution (ME ``MinkowskiConvolutionTranspose``, dimension 3, dilation 1).

    Outputs at tensor stride ``t / stride`` onto the coordinates the cache already holds for that stride (the finer
    coordinates of the same forward pass); if none exist, onto ``{p + offset_k}`` as ME generates them.
    Parameter ``kernel`` is ``[k^3, C_in, C_out]``.
    """

    transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2,
                 bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, bias)

    def _map(self, x: SparseTensor):
        out_cs = x.cache.transposed_target(x.coordinate_set, self.kernel_size, self.stride)
        return out_cs, x.cache.kernel_map(x.coordinate_set, out_cs, self.kernel_size, transposed=True)


class BatchNorm(nn.Module):
    """Batch normalisation over the feature matrix; ``.bn`` is a ``torch.nn.BatchNorm1d`` (ME's key layout)."""

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        _check_input(x, self.bn.num_features, "BatchNorm")
        plan = _fast(self)
        if plan is not None and id(self) in plan.folded:  # folded into the preceding convolution
            return x
        return x.replace(self.bn(x.F))


class ReLU(nn.Module):
    """Rectified linear unit on the features; never modifies its input in place (except inside
    :func:`~largead.sparse.inference.fused_inference` with ``inplace_relu=True``, whose caller vouches that every
    ReLU input is a temporary)."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"ReLU expects a SparseTensor, got {type(x).__name__}")
        plan = _fast(self)
        if plan is not None and id(self) in plan.inplace:
            return x.replace(_relu_inplace(x.F))
        return x.replace(torch.relu(x.F))


def _relu_inplace(f: torch.Tensor) -> torch.Tensor:
    """``f.relu_()``; for bfloat16 on CPU as an integer clamp of the bit patterns (~3.5x faster than torch's
    bfloat16 ReLU, which converts through float32): a bfloat16 with the sign bit set is a negative int16, so
    ``clamp(min=0)`` zeroes exactly the negative values (and -0). NaN stays NaN: torch writes every bfloat16 NaN as
    the positive 0x7FC0, which the clamp keeps."""
    if f.dtype == torch.bfloat16 and f.device.type == "cpu" and f.is_contiguous():
        f.view(torch.int16).clamp_(min=0)
        return f
    return f.relu_()
