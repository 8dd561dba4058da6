"""Gather-matmul-reduce sparse convolution with a hand-written backward.

For each kernel offset ``k`` with pairs ``(i, o)``: ``out[o] += in[i] @ W[k]`` (forward),
``grad_in[i] += grad_out[o] @ W[k]^T`` and ``grad_W[k] = in[i]^T @ grad_out[o]`` (backward, from the same pairs;
the ``grad_out`` rows gathered for an offset serve both gradients).

Execution (choices measured on this project's 2-core machines, torch 2.13 CPU with MKL and oneDNN):

- per offset, the paired rows are gathered (``index_select``) and multiplied into one products buffer holding a row
  per pair; the products are then summed into destination rows in one pass by a :class:`~.kernel_map.Reduction`:
  ``embedding_bag(mode="sum")`` over the pairs sorted by destination (a parallel segment sum, ~2.5x faster than
  ``index_add_`` on CPU), or a plain gather when every destination row receives exactly one pair (transposed
  kernel-2 convolutions forward; strided kernel-2 convolutions backward);
- float32/float64: the identity offset of a submanifold kernel (every row paired with itself) is an ``addmm_`` on
  the whole feature matrix, with no gather;
- bfloat16/float16 on CPU (``torch.autocast`` or the inference path of :mod:`.inference`): products go to oneDNN,
  which compiles a kernel per distinct shape (~1-2 ms, kept in a 1024-entry cache) and costs ~20 us per call
  whatever the size. Pair counts change with every offset, layer and scan, so each offset's rows are padded to a
  "bucket" size (8 per octave) and offsets with similar buckets are *batched*: padded to one size and multiplied by
  one ``bmm`` with their kernels permuted into the batch order (:class:`~.kernel_map.PaddedLayout`; 26 offsets
  make 1-5 batches, one gather each). In inference the permuted kernels are kept with the cached weights and the
  next scan's layout prefers the same offset order when it costs at most 3% more rows, so similar scans permute
  nothing. Products over whole feature matrices run as two overlapping bucket-sized windows (:func:`bucketed_mm`),
  row sums as a bucket plus a zero-padded remainder (:func:`bucketed_tn`), and the identity offset's products (with
  the bias, in inference) join the buffer the segment sum reads. The backward runs in the forward's batches: one
  gather of output gradients per batch serves a ``bmm`` for the input gradient and one for the kernel gradients.
  After a few scans every shape is cached;
- on CPU, gathered rows and products go to per-thread workspace buffers reused across calls (large fresh allocations
  page-fault on every call); :func:`clear_workspace` releases them.

Measured for MinkUNet-34 ``embed`` on a 32k-voxel scan, two cores with AMX: batching cut 1,286 bfloat16 product
calls to ~175 and the embed time by ~15% (a ``bmm`` of 13 offsets took 0.08-0.6 of the time of 13 ``mm`` calls at
128-1024 rows each, 0.5-0.9 at 4096 rows, for 32-256 channels). Not adopted, because they measured slower here: one
``bmm`` per mirror pair in float32 (MKL's per-call cost is ~2 us, so batching gains nothing and padding costs),
sizing batches from a per-channel cost model (fixed 512 rows of slack measured faster), scattering with
``index_add_`` per offset (serial, ~3 GB/s on CPU, slower than the products round trip it saves), a CSR ``sparse @
dense`` product, or building the segment-sum order by counting instead of sorting (no faster). In float32 the GEMMs
are ~80% of a MinkUNet-34 forward+backward and run near the CPU's peak. In bfloat16 (AMX, ~1.3-2 Tflop/s on two
cores for these shapes) the products are ~45% of an embed, gathers ~20%, the segment sums ~12%, kernel maps ~15%;
a fused gather-GEMM-scatter kernel (compiled code) would be the next step.

Device-agnostic torch code: CPU and CUDA, float32, float64, bfloat16 and float16.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .kernel_map import KernelMap, Reduction

_local = threading.local()


def _workspace(name: str, shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """A scratch matrix of ``shape`` (reused across calls on CPU, fresh on other devices). Contents are garbage."""
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    store = getattr(_local, "buffers", None)
    if store is None:
        store = _local.buffers = {}
    key = (name, like.dtype)
    numel = shape[0] * shape[1]
    buf = store.get(key)
    if buf is None or buf.numel() < numel:
        buf = store[key] = torch.empty(max(numel, 1), dtype=like.dtype)
    return buf[:numel].view(shape)


def clear_workspace() -> None:
    """Free this thread's CPU workspace buffers (they grow to the largest convolution seen and are then reused)."""
    _local.buffers = {}


# ------------------------------------------------------------------------------------------------ reduced precision
# On CPU, bfloat16/float16 matrix products go to oneDNN, which builds (and JIT-compiles) one kernel per distinct
# problem shape and keeps the last 1024 in a cache: a shape it has not seen costs ~1-2 ms, more than the product
# itself. Pair counts differ per kernel offset, layer and scan, so every product's row count is rounded to a small set
# of "bucket" sizes q * 2^e (q in 8..15, at most 8 per octave): rows [0, floor) in one product and the rest as the
# last ``ceil`` rows (the two windows overlap; overlapping rows are computed twice and written with equal values).
# MKL's float32/float64 products have no per-shape cost and run as one call.
_MIN_BUCKET = 16


def _bucket_floor(m: int) -> int:
    """Largest ``q * 2^e <= m`` with ``q`` in 8..15 (``m >= 16``)."""
    e = m.bit_length() - 4
    return (m >> e) << e


def _bucket_ceil(m: int) -> int:
    """Smallest bucket size ``>= m`` (at least 16)."""
    if m <= _MIN_BUCKET:
        return _MIN_BUCKET
    floor = _bucket_floor(m)
    return floor if floor == m else floor + (1 << (m.bit_length() - 4))


def bucketed(t: torch.Tensor) -> bool:
    """Whether products with ``t`` use bucketed shapes (reduced precision on CPU)."""
    return t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float16)


def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> None:
    if bias is None:
        torch.mm(a, b, out=out)
    else:
        torch.addmm(bias, a, b, out=out)


def bucketed_mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """``out = a @ b (+ bias)`` with ``out`` a row-contiguous (M, N) tensor; in bucketed shapes when
    :func:`bucketed`."""
    m = a.shape[0]
    if m < _MIN_BUCKET or not bucketed(a):
        _mm(a, b, out, bias)
        return out
    lo = _bucket_floor(m)
    _mm(a[:lo], b, out[:lo], bias)
    if lo < m:
        hi = _bucket_ceil(m - lo)
        _mm(a[m - hi:], b, out[m - hi:], bias)
    return out


def _reduce(prods: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Sum pair products into destination rows (a new tensor)."""
    if reduction.perm is not None:
        return prods.index_select(0, reduction.perm)
    return F.embedding_bag(reduction.order, prods, reduction.offsets, mode="sum")


def bucketed_tn(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = a.T @ b`` (a sum over the rows of ``a`` and ``b``) with the row count in bucketed shapes when
    :func:`bucketed`: the first ``floor`` rows in one product, the rest zero-padded to a bucket in a second."""
    m = a.shape[0]
    if m < _MIN_BUCKET or not bucketed(a):
        return torch.mm(a.t(), b, out=out)
    lo = _bucket_floor(m)
    torch.mm(a[:lo].t(), b[:lo], out=out)
    if lo < m:
        hi = _bucket_ceil(m - lo)
        ta = a.new_zeros(hi, a.shape[1])
        tb = b.new_zeros(hi, b.shape[1])
        ta[: m - lo] = a[lo:]
        tb[: m - lo] = b[lo:]
        out.addmm_(ta.t(), tb)
    return out


def _forward_padded(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                    bias: torch.Tensor | None = None, keep_kernels: bool = False) -> torch.Tensor:
    """Reduced-precision CPU forward in bucketed shapes (:class:`~.kernel_map.PaddedLayout`): one product per batch
    of offsets (rows padded to the batch's bucket), the identity offset's products (plus ``bias``) in the same
    buffer, one segment sum. ``keep_kernels``: keep the kernels permuted to the layout's offset order on ``weight``
    (a cached inference weight) and prefer that order for the next scan."""
    c_in, c_out = weight.shape[1], weight.shape[2]
    cached = getattr(weight, "_largead_batched", None) if keep_kernels else None
    if cached is not None and cached[1] != weight._version:
        cached = None
    layout = kmap.padded(_bucket_ceil, cached[0] if cached is not None else None)
    if layout.total == 0:
        out = feats.new_zeros(kmap.n_out, c_out)
        return out if bias is None else out.add_(bias)
    prods = _workspace("prod", (layout.total, c_out), feats)
    kernels = None
    if len(layout.batches) < len(layout.groups):
        if cached is not None and cached[0] == layout.order:
            kernels = cached[2]
        else:
            kernels = weight.index_select(0, layout.kernel_order)
            if keep_kernels:
                weight._largead_batched = (layout.order, weight._version, kernels)
    for start, stop, p, base in layout.batches:  # loop over batches of kernel offsets (<= 27)
        n = (stop - start) * p
        rows = torch.index_select(feats, 0, layout.gather_index[base:base + n],
                                  out=_workspace("gather", (n, c_in), feats))
        if stop - start == 1:
            torch.mm(rows, weight[layout.groups[start][0]], out=prods[base:base + n])
        else:
            torch.bmm(rows.view(stop - start, p, c_in), kernels[start:stop],
                      out=prods[base:base + n].view(stop - start, p, c_out))
    if layout.identity_base is not None:
        bucketed_mm(feats, weight[kmap.identity], prods[layout.identity_base:], bias)
        bias = None
    out = _reduce(prods, layout.to_out())
    return out if bias is None else out.add_(bias)


def _forward(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    if bucketed(feats):
        return _forward_padded(feats, weight, kmap)
    c_in, c_out = weight.shape[1], weight.shape[2]
    n_pairs = kmap.ptr[-1]
    if n_pairs == 0:
        out = feats.new_zeros(kmap.n_out, c_out)
    else:
        prods = _workspace("prod", (n_pairs, c_out), feats)
        for k in range(kmap.kernel_volume):  # loop over kernel offsets (<= 27): one GEMM over each offset's pairs
            s, e = kmap.ptr[k], kmap.ptr[k + 1]
            if e > s:
                rows = torch.index_select(feats, 0, kmap.in_idx[s:e], out=_workspace("gather", (e - s, c_in), feats))
                torch.mm(rows, weight[k], out=prods[s:e])
        out = _reduce(prods, kmap.to_out())
    if kmap.identity is not None:
        out.addmm_(feats, weight[kmap.identity])
    return out


def _backward_padded(feats: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                     need_in: bool, need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Reduced-precision CPU backward in the forward's bucketed layout, batch by batch (:func:`_forward_padded`):
    the output gradients of a batch's pairs are gathered once and serve both ``grad_in`` products (one ``bmm``
    with the transposed kernels) and the kernel gradients (one ``bmm`` of gathered inputs and gradients). Padding
    rows of the gathered inputs and gradients are zeroed, so they add nothing to the kernel gradient."""
    c_in, c_out = weight.shape[1], weight.shape[2]
    layout = kmap.padded(_bucket_ceil)
    grad_w = torch.zeros_like(weight) if need_w else None
    prods = _workspace("prod", (layout.total, c_in), feats) if need_in and layout.total else None
    batched = len(layout.batches) < len(layout.groups)
    kernels = weight.index_select(0, layout.kernel_order) if batched and prods is not None else None
    grad_kernels = weight.new_empty(len(layout.groups), c_in, c_out) if need_w else None
    grad_index = layout.grad_gather_index()
    for b, (start, stop, p, base) in enumerate(layout.batches):  # loop over batches of kernel offsets (<= 27)
        g, n = stop - start, (stop - start) * p
        go = torch.index_select(grad_out, 0, grad_index[base:base + n], out=_workspace("grad", (n, c_out), grad_out))
        if prods is not None:
            if g == 1:
                torch.mm(go, weight[layout.groups[start][0]].t(), out=prods[base:base + n])
            else:
                torch.bmm(go.view(g, p, c_out), kernels[start:stop].transpose(1, 2),
                          out=prods[base:base + n].view(g, p, c_in))
        if grad_w is not None:
            rows = torch.index_select(feats, 0, layout.gather_index[base:base + n],
                                      out=_workspace("gather", (n, c_in), feats))
            pad = layout.padding_rows(b)
            if pad.numel():
                go.index_fill_(0, pad, 0)
                rows.index_fill_(0, pad, 0)
            if g == 1:
                torch.mm(rows.t(), go, out=grad_kernels[start])
            else:
                torch.bmm(rows.view(g, p, c_in).transpose(1, 2), go.view(g, p, c_out),
                          out=grad_kernels[start:stop])
    if grad_w is not None and layout.groups:
        grad_w.index_copy_(0, layout.kernel_order, grad_kernels)
    grad_in = None
    if need_in:
        if prods is not None:
            if layout.identity_base is not None:
                bucketed_mm(grad_out, weight[kmap.identity].t(), prods[layout.identity_base:])
            grad_in = _reduce(prods, layout.to_in())
        else:
            grad_in = feats.new_zeros(kmap.n_in, c_in)
    if grad_w is not None and kmap.identity is not None:
        bucketed_tn(feats, grad_out, grad_w[kmap.identity])
    return grad_in, grad_w


def _backward(feats: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, need_in: bool,
              need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if bucketed(feats):
        return _backward_padded(feats, grad_out, weight, kmap, need_in, need_w)
    c_in, c_out = weight.shape[1], weight.shape[2]
    n_pairs = kmap.ptr[-1]
    grad_w = torch.zeros_like(weight) if need_w else None
    prods = _workspace("prod", (n_pairs, c_in), feats) if need_in and n_pairs else None
    for k in range(kmap.kernel_volume):  # loop over kernel offsets
        s, e = kmap.ptr[k], kmap.ptr[k + 1]
        if e == s:
            continue
        go = torch.index_select(grad_out, 0, kmap.out_idx[s:e], out=_workspace("grad", (e - s, c_out), grad_out))
        if prods is not None:
            torch.mm(go, weight[k].t(), out=prods[s:e])
        if grad_w is not None:
            rows = torch.index_select(feats, 0, kmap.in_idx[s:e], out=_workspace("gather", (e - s, c_in), feats))
            torch.mm(rows.t(), go, out=grad_w[k])
    grad_in = None
    if need_in:
        grad_in = _reduce(prods, kmap.to_in()) if prods is not None else feats.new_zeros(kmap.n_in, c_in)
        if kmap.identity is not None:
            grad_in.addmm_(grad_out, weight[kmap.identity].t())
    if grad_w is not None and kmap.identity is not None:
        torch.mm(feats.t(), grad_out, out=grad_w[kmap.identity])
    return grad_in, grad_w


class SparseConvFunction(torch.autograd.Function):
    """``out = SparseConvFunction.apply(feats (N_in, C_in), weight (K, C_in, C_out), kmap) -> (N_out, C_out)``."""

    @staticmethod
    def forward(ctx: Any, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        feats = feats.contiguous()
        weight = weight.contiguous()
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        return _forward(feats, weight, kmap)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        feats, weight = ctx.saved_tensors
        grad_in, grad_w = _backward(feats, grad_out.contiguous(), weight, ctx.kmap, ctx.needs_input_grad[0],
                                    ctx.needs_input_grad[1])
        return grad_in, grad_w, None


class PointwiseFunction(torch.autograd.Function):
    """``feats (M, C_in) @ weight (C_in, C_out)`` with bucketed product shapes in both directions (1x1 convolution)."""

    @staticmethod
    def forward(ctx: Any, feats: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        feats = feats.contiguous()
        ctx.save_for_backward(feats, weight)
        return bucketed_mm(feats, weight, feats.new_empty(feats.shape[0], weight.shape[1]))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        feats, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_in = bucketed_mm(grad_out, weight.t(), grad_out.new_empty(grad_out.shape[0], weight.shape[0]))
        if ctx.needs_input_grad[1]:
            grad_w = bucketed_tn(feats, grad_out, weight.new_empty(weight.shape))
        return grad_in, grad_w


def pointwise(feats: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``feats @ weight`` (a 1x1 convolution); products in bucketed shapes for reduced precision on CPU."""
    if not bucketed(feats):
        return feats @ weight
    if torch.is_grad_enabled() and (feats.requires_grad or weight.requires_grad):
        return PointwiseFunction.apply(feats, weight)
    return bucketed_mm(feats, weight, feats.new_empty(feats.shape[0], weight.shape[1]))


def _check(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> None:
    if feats.ndim != 2 or feats.shape[0] != kmap.n_in:
        raise ValueError(f"sparse conv expects features of shape ({kmap.n_in}, C_in), got {tuple(feats.shape)}")
    if weight.ndim != 3 or weight.shape[0] != kmap.kernel_volume or weight.shape[1] != feats.shape[1]:
        raise ValueError(f"sparse conv kernel must be [{kmap.kernel_volume}, {feats.shape[1]}, C_out], "
                         f"got {list(weight.shape)}")
    if weight.dtype != feats.dtype:
        raise TypeError(f"features are {feats.dtype} but the kernel is {weight.dtype}")
    if weight.device != feats.device or kmap.in_idx.device != feats.device:
        raise ValueError(f"features ({feats.device}), kernel ({weight.device}) and kernel map "
                         f"({kmap.in_idx.device}) must be on one device")


def sparse_conv_inference(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap | None,
                          bias: torch.Tensor | None = None, keep_kernels: bool = False) -> torch.Tensor:
    """``sparse_conv(feats, weight, kmap) + bias`` without autograd (``kmap=None``: a 1x1 convolution ``feats @
    weight``), the bias fused into a product where possible; the result is a new tensor. ``keep_kernels``: for a
    weight reused across calls (:func:`~.inference.fused_inference`'s cached ones), keep the kernels permuted for
    batched reduced-precision products on it (until it changes in place), at the cost of that copy's memory."""
    if kmap is None:
        out = feats.new_empty(feats.shape[0], weight.shape[1])
        if bucketed(feats):
            return bucketed_mm(feats, weight, out, bias)
        torch.mm(feats, weight, out=out)
    else:
        _check(feats, weight, kmap)
        feats = feats.contiguous()
        if bucketed(feats):
            return _forward_padded(feats, weight.contiguous(), kmap, bias, keep_kernels)
        out = _forward(feats, weight.contiguous(), kmap)
    return out if bias is None else out.add_(bias)


def sparse_conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Apply the convolution described by ``kmap``: ``(N_in, C_in) x [K, C_in, C_out] -> (N_out, C_out)``."""
    _check(feats, weight, kmap)
    return SparseConvFunction.apply(feats, weight, kmap)
