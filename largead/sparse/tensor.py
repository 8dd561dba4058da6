"""Sparse tensor: a feature matrix on a set of integer coordinates at one tensor stride, with a shared map cache."""

from __future__ import annotations

import torch

from .kernel_map import CoordinateSet, KernelMapCache

_INT32_MAX = 2**31 - 1


class SparseTensor:
    """Features ``F`` (M, C) on unique coordinates ``C`` (M, 4) int32 ``(batch, x, y, z)`` at tensor stride ``stride``.

    Spatial coordinates are kept at input resolution as multiples of ``stride`` (MinkowskiEngine's convention).
    ``cache`` is the :class:`KernelMapCache` shared by every tensor derived from this one (a new one when None).
    If ``cache`` already holds coordinates for ``stride`` and ``coords`` is that very tensor, they are reused.
    """

    __slots__ = ("F", "_cs", "cache")

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, stride: int = 1,
                 cache: KernelMapCache | None = None) -> None:
        if not isinstance(coords, torch.Tensor) or coords.ndim != 2 or coords.shape[1] != 4:
            shape = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords).__name__
            raise ValueError(f"SparseTensor coords must be an (M, 4) integer tensor (batch, x, y, z), got {shape}")
        if coords.dtype.is_floating_point or coords.dtype == torch.bool:
            raise TypeError(f"SparseTensor coords must be int32/int64, got {coords.dtype}")
        stride = int(stride)
        if stride < 1:
            raise ValueError(f"SparseTensor stride must be >= 1, got {stride}")
        if coords.device != feats.device:
            raise ValueError(f"SparseTensor coords are on {coords.device} but feats on {feats.device}")
        cache = KernelMapCache() if cache is None else cache
        known = cache.coordinates(stride)
        if known is not None and (coords is known.coords):
            cs = known
        else:
            if coords.dtype != torch.int32:
                if coords.numel() and int(coords.abs().max()) > _INT32_MAX:
                    raise ValueError("SparseTensor coords exceed the int32 range")
                coords = coords.to(torch.int32)
            coords = coords.contiguous()
            if stride > 1 and coords.numel() and bool((coords[:, 1:] % stride != 0).any()):
                raise ValueError(f"SparseTensor coords at stride {stride} must be multiples of {stride}")
            cs = cache.register(CoordinateSet(coords, stride))
        self._init(feats, cs, cache)

    def _init(self, feats: torch.Tensor, cs: CoordinateSet, cache: KernelMapCache) -> None:
        if feats.ndim != 2 or feats.shape[0] != len(cs):
            raise ValueError(f"SparseTensor feats must be ({len(cs)}, C) for {len(cs)} coordinates, "
                             f"got {tuple(feats.shape)}")
        if not feats.dtype.is_floating_point:
            raise TypeError(f"SparseTensor feats must be floating point, got {feats.dtype}")
        self.F = feats
        self._cs = cs
        self.cache = cache

    @classmethod
    def _from_set(cls, feats: torch.Tensor, cs: CoordinateSet, cache: KernelMapCache) -> SparseTensor:
        t = cls.__new__(cls)
        t._init(feats, cs, cache)
        return t

    @property
    def C(self) -> torch.Tensor:
        """Coordinates (M, 4) int32 ``(batch, x, y, z)``."""
        return self._cs.coords

    @property
    def stride(self) -> int:
        """Tensor stride (the same on every spatial axis)."""
        return self._cs.stride

    @property
    def coordinate_set(self) -> CoordinateSet:
        """The coordinate set object (identity is what the cache keys maps on)."""
        return self._cs

    @property
    def device(self) -> torch.device:
        return self.F.device

    @property
    def dtype(self) -> torch.dtype:
        return self.F.dtype

    def __len__(self) -> int:
        return int(self.F.shape[0])

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """Same coordinates, stride and cache with new features ``feats`` (M, C')."""
        return SparseTensor._from_set(feats, self._cs, self.cache)

    def __repr__(self) -> str:
        return (f"SparseTensor(n={len(self)}, channels={self.F.shape[1]}, stride={self.stride}, "
                f"dtype={self.F.dtype}, device={self.F.device})")


def cat(*tensors: SparseTensor) -> SparseTensor:
    """Concatenate features of sparse tensors on identical coordinates: ``[a.F, b.F, ...]`` along channels.

    The tensors must share their stride and their coordinates (the same coordinate set, or equal coordinates in the
    same order); otherwise a ValueError says which differs.
    """
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if not tensors:
        raise ValueError("cat needs at least one SparseTensor")
    first = tensors[0]
    for j, t in enumerate(tensors[1:], start=1):
        if not isinstance(t, SparseTensor):
            raise TypeError(f"cat argument {j} is {type(t).__name__}, expected SparseTensor")
        if t.stride != first.stride:
            raise ValueError(f"cat: tensor 0 has stride {first.stride} but tensor {j} has stride {t.stride}")
        if t._cs is not first._cs and (len(t) != len(first) or not torch.equal(t.C, first.C)):
            raise ValueError(f"cat: tensor {j} has different coordinates from tensor 0 "
                             f"({len(t)} vs {len(first)} sites at stride {first.stride})")
    return first.replace(torch.cat([t.F for t in tensors], dim=1))
