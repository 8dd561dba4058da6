"""Gather-matmul-scatter sparse convolution with a hand-written backward.

For each kernel offset ``k`` with pairs ``(i, o)``: ``out[o] += in[i] @ W[k]`` (forward),
``grad_in[i] += grad_out[o] @ W[k]^T`` and ``grad_W[k] = in[i]^T @ grad_out[o]`` (backward, from the same pairs).

Execution follows the map's :class:`~largead.sparse.kernel_map.ConvPlan`:

- offsets with equal pair counts (each submanifold offset and its mirror) run as one ``bmm``;
- the identity offset of a submanifold kernel is a plain ``mm`` that also initialises the output (no gather/scatter);
- where every output row receives exactly one pair (transposed kernel-2 convs; the input side of strided kernel-2
  convs in backward) the products are written contiguously and permuted with one gather instead of a scatter; where
  rows receive at most one pair they are copied (``index_copy_``) instead of accumulated (``index_add_``);
- on CPU, gathered rows and products go to reused per-thread workspace buffers (large fresh allocations are slow).

Device-agnostic torch code: CPU and CUDA, float32 or float64.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


from .kernel_map import ConvPlan, KernelMap, Reduction

_local = threading.local()


def _workspace(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A scratch tensor of ``shape`` (reused across calls on CPU, fresh on other devices). Contents are garbage."""
    numel = 1
    for d in shape:
        numel *= d
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    store = getattr(_local, "buffers", None)
    if store is None:
        store = _local.buffers = {}
    key = (name, like.dtype)
    buf = store.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(max(numel, 1), dtype=like.dtype)
        store[key] = buf
    return buf[:numel].view(shape)


def _group_weight(weight: torch.Tensor, plan: ConvPlan, g: int, transpose: bool) -> torch.Tensor:
    ks = plan.groups[g]
    w = weight[ks[0]].unsqueeze(0) if len(ks) == 1 else weight.index_select(0, plan.group_tensors[g])
    return w.transpose(1, 2) if transpose else w


def _apply(src: torch.Tensor, weight: torch.Tensor, plan: ConvPlan, identity: int | None, transpose_w: bool,
           src_idx: torch.Tensor, reduction: Reduction, n_dst: int) -> torch.Tensor:
    """``dst[d] = sum over pairs (s, d, k) of src[s] @ W[k]`` (``W[k]^T`` if ``transpose_w``), as a new tensor.

    Products of all pairs are written group by group into one workspace buffer (gather rows, one ``bmm`` per
    group), then summed into destination rows by ``reduction``; the identity offset is added with ``addmm_``.
    """
    c_src = src.shape[1]
    c_dst = weight.shape[1] if transpose_w else weight.shape[2]
    n_pairs = int(src_idx.numel())
    if n_pairs == 0:
        dst = src.new_zeros(n_dst, c_dst)
    else:
        prods = _workspace("prod", (n_pairs, c_dst), src)
        for g, (start, cnt) in enumerate(zip(plan.starts, plan.counts)):
            m = len(plan.groups[g])
            end = start + m * cnt
            rows = torch.index_select(src, 0, src_idx[start:end], out=_workspace("gather", (end - start, c_src), src))
            torch.bmm(rows.view(m, cnt, c_src), _group_weight(weight, plan, g, transpose_w),
                      out=prods[start:end].view(m, cnt, c_dst))
        if reduction.perm is not None:
            dst = prods.index_select(0, reduction.perm)
        else:
            dst = F.embedding_bag(reduction.order, prods, reduction.offsets, mode="sum")
    if identity is not None:
        w = weight[identity]
        dst.addmm_(src, w.t() if transpose_w else w)
    return dst


def _forward(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    plan = kmap.plan()
    return _apply(feats, weight, plan, kmap.identity, False, plan.gather_idx, plan.to_out, kmap.n_out)


def _grad_input(grad_out: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    plan = kmap.plan()
    return _apply(grad_out, weight, plan, kmap.identity, True, plan.scatter_idx, plan.to_in, kmap.n_in)


def _grad_weight(feats: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    plan = kmap.plan()
    grad_w = torch.zeros_like(weight)
    if kmap.identity is not None:
        torch.mm(feats.t(), grad_out, out=grad_w[kmap.identity])
    c_in, c_out = feats.shape[1], grad_out.shape[1]
    for g, (start, cnt) in enumerate(zip(plan.starts, plan.counts)):
        m = len(plan.groups[g])
        end = start + m * cnt
        x = torch.index_select(feats, 0, plan.gather_idx[start:end],
                               out=_workspace("gather", (end - start, c_in), feats))
        go = torch.index_select(grad_out, 0, plan.scatter_idx[start:end],
                                out=_workspace("prod", (end - start, c_out), grad_out))
        gw = torch.bmm(x.view(m, cnt, c_in).transpose(1, 2), go.view(m, cnt, c_out))
        if m == 1:
            grad_w[plan.groups[g][0]] = gw[0]
        else:
            grad_w.index_copy_(0, plan.group_tensors[g], gw)
    return grad_w


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
        grad_out = grad_out.contiguous()
        grad_in = _grad_input(grad_out, weight, ctx.kmap) if ctx.needs_input_grad[0] else None
        grad_w = _grad_weight(feats, grad_out, weight, ctx.kmap) if ctx.needs_input_grad[1] else None
        return grad_in, grad_w, None


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


def sparse_conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Apply the convolution described by ``kmap``: ``(N_in, C_in) x [K, C_in, C_out] -> (N_out, C_out)``."""
    _check(feats, weight, kmap)
    return SparseConvFunction.apply(feats, weight, kmap)
