"""The inference fast path: precision choice, BatchNorm folded into convolutions, weights cached in the run dtype.

- :func:`native_bf16` says whether a device computes bfloat16 natively (CPU: AVX512-BF16 or AMX-BF16 and a torch
  build whose oneDNN uses them; CUDA: ``torch.cuda.is_bf16_supported()``); :func:`resolve_precision` turns
  ``"auto" | "fp32" | "bf16"`` into a dtype ("auto" = bf16 where native, fp32 elsewhere).
- :func:`fused_inference` is a context manager for eval-mode forward passes without autograd. Every sparse
  convolution of the model runs with weights cast once to the run dtype, and each ``(conv, batchnorm)`` pair given
  is folded: in eval mode ``bn(conv(x)) = conv'(x)`` with ``kernel' = kernel * s`` and ``bias' = bias * s + t``
  per output channel, ``s = gamma / sqrt(running_var + eps)``, ``t = beta - running_mean * s`` (the BatchNorm then
  passes its input through). The folded weights are cached on the convolution, keyed on the parameters' and
  buffers' version counters (any in-place update, e.g. an optimiser step or ``load_state_dict``, rebuilds them), so
  repeated calls cost nothing. In reduced precision on CPU each cached kernel also keeps a copy permuted for its
  batched products (:mod:`.functional`), so the cache holds about twice the run-dtype weights (MinkUNet-34 in
  bfloat16: ~150 MB); :func:`clear_inference_cache` frees it all.

In bfloat16 the products accumulate in float32 inside oneDNN / cuBLAS and round to bfloat16 on output; features
between layers are bfloat16 (as under ``torch.autocast``).
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .nn import BatchNorm, FusedPlan, ReLU, _ConvBase, set_plan

PRECISIONS = ("auto", "fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The ``flags`` of /proc/cpuinfo (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _torch_cpu_bf16() -> bool | None:
    """torch's own CPU feature probe (cpuinfo), or None where this torch does not expose it."""
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if callable(p)]
    if not probes:
        return None
    try:
        return any(bool(p()) for p in probes)
    except RuntimeError:
        return None


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where ``device`` computes bfloat16 matrix products natively.

    CPU: an x86 processor with AVX512-BF16 or AMX-BF16 (torch's cpuinfo probe, else the /proc/cpuinfo flags
    ``avx512_bf16`` / ``amx_bf16``) and a torch build whose oneDNN runs bfloat16 (``torch.ops.mkldnn``). Elsewhere
    (AVX2-only x86, ARM, builds without oneDNN) bfloat16 would be emulated and slower than float32, so False.
    CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    probed = _torch_cpu_bf16()
    if probed is not None:
        return probed
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``"fp32"`` -> float32, ``"bf16"`` -> bfloat16, ``"auto"`` -> bfloat16 where :func:`native_bf16`, else float32."""
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    try:
        return _DTYPES[precision]
    except (KeyError, TypeError):
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}") from None


def _versions(*tensors: torch.Tensor | None) -> tuple[Any, ...]:
    return tuple((id(t), t._version, t.device, t.dtype) if t is not None else None for t in tensors)


def _bn_affine(bn: BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` of an eval-mode BatchNorm, in float64."""
    b = bn.bn
    var = b.running_var.double()
    mean = b.running_mean.double()
    scale = torch.rsqrt(var + b.eps)
    if b.weight is not None:
        scale = scale * b.weight.double()
    shift = -mean * scale
    if b.bias is not None:
        shift = shift + b.bias.double()
    return scale, shift


def _folded(conv: _ConvBase, bn: BatchNorm | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The conv's (kernel, bias) in ``dtype`` with ``bn`` folded in (cached on the conv)."""
    tensors = [conv.kernel, conv.bias]
    if bn is not None:
        tensors += [bn.bn.weight, bn.bn.bias, bn.bn.running_mean, bn.bn.running_var]
    key = (id(bn), _versions(*tensors))
    store = conv.__dict__.setdefault("_infer_cache", {})
    cached = store.get(dtype)
    if cached is not None and cached[0] == key:
        return cached[1]
    work = torch.float64 if dtype == torch.float64 else torch.float32
    with torch.no_grad():
        kernel = conv.kernel.to(work)
        bias = conv.bias.to(work) if conv.bias is not None else None
        if bn is not None:
            scale, shift = (t.to(work) for t in _bn_affine(bn))
            kernel = kernel * scale
            bias = shift[None] if bias is None else bias * scale + shift
        result = (kernel.to(dtype).contiguous(), bias.to(dtype).contiguous() if bias is not None else None)
    store[dtype] = (key, result)
    return result


def clear_inference_cache(model: nn.Module) -> None:
    """Drop the folded/cast weights :func:`fused_inference` cached on ``model``'s convolutions."""
    for m in model.modules():
        m.__dict__.pop("_infer_cache", None)


@contextlib.contextmanager
def fused_inference(model: nn.Module, dtype: torch.dtype = torch.float32,
                    pairs: Iterable[tuple[nn.Module, nn.Module]] = (),
                    inplace_relu: bool = False, inplace_add: bool = False) -> Iterator[FusedPlan]:
    """Run ``model``'s sparse layers with cached ``dtype`` weights and the given ``(conv, batchnorm)`` pairs folded.

    Each pair must be a convolution whose output goes *only* into that BatchNorm (the caller's structural
    knowledge, e.g. :meth:`largead.models.minkunet.MinkUNet.conv_bn_pairs`). Only eval mode without autograd is
    supported: the model must be in eval mode, and the fast path is taken only while gradients are disabled
    (otherwise layers run as usual). Inputs are cast to ``dtype`` by the first convolution. ``inplace_relu``: the
    model's sparse ReLUs overwrite their input (the caller vouches that no ReLU input is used elsewhere, as in
    MinkUNet, where they follow a convolution, a folded BatchNorm or a residual sum). ``inplace_add``: residual sums
    (:func:`largead.sparse.nn.residual_add`) overwrite their first operand (the caller vouches that it is the
    block's branch output, used nowhere else, as in MinkUNet's blocks). The plan is active for the
    calling thread only (other threads running the same model meanwhile use the plain layers) and yielded.
    """
    if model.training:
        raise ValueError("fused_inference needs the model in eval mode (call .eval())")
    if dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise ValueError(f"fused_inference: unsupported dtype {dtype}")
    folded: dict[int, BatchNorm] = {}
    bns = []
    for conv, bn in pairs:
        if not isinstance(conv, _ConvBase) or not isinstance(bn, BatchNorm):
            raise TypeError(f"fused_inference pairs must be (sparse conv, sparse BatchNorm), got "
                            f"({type(conv).__name__}, {type(bn).__name__})")
        if bn.bn.running_mean is None or bn.bn.running_var is None:
            continue  # no running statistics: the BatchNorm normalises with batch statistics, nothing to fold
        if bn.bn.num_features != conv.out_channels:
            raise ValueError(f"cannot fold BatchNorm({bn.bn.num_features}) into a conv with {conv.out_channels} "
                             "output channels")
        folded[id(conv)] = bn
        bns.append(bn)
    plan = FusedPlan()
    for conv in model.modules():
        if isinstance(conv, _ConvBase):
            plan.weights[id(conv)] = _folded(conv, folded.get(id(conv)), dtype)
    plan.folded = {id(bn) for bn in bns}
    if inplace_relu:
        plan.inplace = {id(m) for m in model.modules() if isinstance(m, ReLU)}
    plan.inplace_add = bool(inplace_add)
    previous = set_plan(plan)
    try:
        yield plan
    finally:
        set_plan(previous)


__all__ = ["PRECISIONS", "clear_inference_cache", "fused_inference", "native_bf16", "resolve_precision"]
