"""Coordinate sets, kernel maps and the cache that shares them across one forward pass.

Semantics follow MinkowskiEngine 0.5.4 (facts read from its source, NVIDIA/MinkowskiEngine at v0.5.4):

- ``src/kernel_region.hpp`` (``kernel_region::coordinate_at``): a kernel index is decoded first spatial axis fastest
  (``k % ks_x``, then ``// ks_x``, ...), so for a 3^3 kernel ``k = ix + 3*iy + 9*iz``. For an odd kernel size the
  offset along an axis is ``(i - ks // 2) * tensor_stride``; for an even kernel size it is ``i * tensor_stride``
  (``0 .. ks-1``, non-negative only). Dilation is 1 everywhere here.
- ``src/coordinate_map_cpu.hpp`` (``CoordinateMapCPU::kernel_map``): for every *output* coordinate ``q`` and kernel
  index ``k`` the input is looked up at ``q + offset_k``; the region uses the *input* tensor stride
  (``coordinate_map_manager.cpp``, ``kernel_map`` with ``is_transpose == false``). A pair ``(in, out)`` is stored
  for offset ``k`` when that input exists. A kernel of volume 1 pairs equal coordinates only.
- ``src/coordinate_map.hpp`` (``stride_coordinate``): a strided convolution's output coordinates are
  ``floor(c / s_out) * s_out`` per spatial axis (floor, so negative coordinates round toward -inf), batch index kept,
  duplicates merged; ``s_out = s_in * stride`` (``stride_tensor_stride``). With stride 1 the output map *is* the input
  map (``CoordinateMapManager::stride`` returns the existing key): a 3^3 stride-1 convolution is submanifold.
- ``src/convolution_transpose_cpu.cpp`` + ``coordinate_map_manager.cpp`` (``kernel_map`` with ``is_transpose``): a
  transposed convolution with ``s_out = s_in / stride`` outputs onto the coordinate map already registered for
  ``s_out`` (key ``(s_out, "")``, i.e. the finer coordinates of the same manager) when it exists; otherwise it creates
  ``{p + offset_k}`` for all inputs ``p`` (``stride_region``). Its kernel map is built from the *output* side: for
  every coarse input ``p`` and kernel index ``k`` the fine output is looked up at ``p + offset_k`` with the region
  using the *output* (fine) tensor stride, then in/out are swapped. That is exactly the swapped map of the forward
  convolution from the fine to the coarse coordinates (same region, same stride), which ME reuses when cached; so
  do we: a decoder's transposed maps are its encoder's maps swapped.
- ``src/convolution_kernel.hpp`` (``ConvolutionForwardKernelCPU``): ``out[o] += in[i] @ W[k]`` with ``W[k]`` the
  ``[C_in, C_out]`` slice of a ``[kernel_volume, C_in, C_out]`` kernel.

Coordinates are ``(batch, x, y, z)`` integers, kept at input resolution as multiples of the tensor stride (ME's
convention). Lookups pack each row into one int64 key (the box is padded by one stride, so a neighbour's key is the
member's key plus a per-offset delta), sort once per coordinate set and use ``searchsorted``. Submanifold maps are
built from half the offsets (an offset and its mirror share pairs, swapped); strided maps whose even kernel equals the
stride need no lookup at all (each input lies in one output cell). No Python loop touches points or pairs.

These semantics are checked against dense ``conv3d``/``conv_transpose3d`` oracles (tests/sparse/test_nn.py), naive
Python kernel maps (test_kernel_map.py) and MinkowskiEngine itself where installed (test_me_equivalence.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

_MAX_KEY_BITS = 62


def kernel_offsets(kernel_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Offsets ``(ks^3, 3)`` int64 (in units of the region's tensor stride) in ME's kernel index order.

    Index ``k = ix + ks*iy + ks^2*iz`` (x fastest). Odd sizes are centred (``-ks//2 .. ks//2``); even sizes run
    ``0 .. ks-1``.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    r = torch.arange(kernel_size, dtype=torch.int64, device=device)
    if kernel_size % 2 == 1:
        r = r - kernel_size // 2
    iz, iy, ix = torch.meshgrid(r, r, r, indexing="ij")
    return torch.stack([ix.reshape(-1), iy.reshape(-1), iz.reshape(-1)], dim=1)


@dataclass(eq=False)
class _Index:
    """Packed-key index of a coordinate set: the box ``lo .. lo + ext`` (padded by one stride on each spatial side,
    so every 3^3 neighbour of a member packs without overflow), each row's key and the keys sorted."""

    lo: torch.Tensor
    ext: torch.Tensor
    keys: torch.Tensor
    sorted_keys: torch.Tensor
    perm: torch.Tensor


class CoordinateSet:
    """One set of unique sparse coordinates at one tensor stride (ME's coordinate map).

    ``coords`` (M, 4) int32 ``(batch, x, y, z)``; spatial coordinates are multiples of ``stride``. The lookup index
    (packed int64 keys, sorted) is built lazily on first use and checks that coordinates are unique.
    """

    def __init__(self, coords: torch.Tensor, stride: int) -> None:
        self.coords = coords
        self.stride = int(stride)
        self._index: _Index | None = None

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def _build_index(self) -> _Index:
        c = self.coords.to(torch.int64)
        if c.shape[0] == 0:
            z = torch.zeros(4, dtype=torch.int64, device=c.device)
            e = torch.zeros(0, dtype=torch.int64, device=c.device)
            return _Index(z, z + 1, e, e, e)
        pad = torch.tensor([0, self.stride, self.stride, self.stride], device=c.device)
        lo = c.min(0).values - pad
        ext = c.max(0).values + pad - lo + 1
        ext_list = ext.tolist()
        total_bits = sum(int(e).bit_length() for e in ext_list)
        if total_bits > _MAX_KEY_BITS:
            raise ValueError(
                f"coordinate extents {ext_list} (batch, x, y, z) are too large to pack into one int64 key; "
                "coordinates must span less than 2^62 cells in total")
        keys = _pack(c, lo, ext)
        if bool((keys[1:] > keys[:-1]).all()):  # already sorted and unique (strided and voxelised sets are)
            return _Index(lo, ext, keys, keys, torch.arange(keys.numel(), device=keys.device))
        sorted_keys, perm = torch.sort(keys)
        dup = sorted_keys[1:] == sorted_keys[:-1]
        if bool(dup.any()):
            first = c[perm[1:][dup][0]].tolist()
            raise ValueError(f"sparse coordinates must be unique; (batch, x, y, z) = {first} occurs more than once")
        return _Index(lo, ext, keys, sorted_keys, perm)

    @property
    def index(self) -> _Index:
        """The packed-key index (built once)."""
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _find(self, keys: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        idx = self.index
        pos = torch.searchsorted(idx.sorted_keys, keys.reshape(-1)).reshape(keys.shape)
        pos.clamp_(max=idx.sorted_keys.numel() - 1)
        hit = idx.sorted_keys[pos] == keys
        if valid is not None:
            hit &= valid
        return torch.where(hit, idx.perm[pos], torch.full_like(pos, -1))

    def lookup(self, query: torch.Tensor) -> torch.Tensor:
        """Row index of each query coordinate ``(..., 4)`` int64 in this set, or -1 where absent."""
        idx = self.index
        if idx.sorted_keys.numel() == 0:
            return torch.full(query.shape[:-1], -1, dtype=torch.int64, device=query.device)
        rel = query - idx.lo
        inside = ((rel >= 0) & (rel < idx.ext)).all(-1)
        return self._find(_pack(torch.where(inside[..., None], rel, torch.zeros_like(rel)), None, idx.ext), inside)

    def neighbours(self, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows holding ``coords[r] + offsets[k]`` (spatial offsets in coordinate units, each axis within one stride).

        Returns ``(found (K, M), rows (M,))``: ``found[k, m]`` is the row of the neighbour of member ``rows[m]`` at
        offset ``k``, or -1. Members are visited in key order (sorted queries search faster); packing is linear, so
        the query keys are the members' keys plus one delta per offset.
        """
        idx = self.index
        if idx.sorted_keys.numel() == 0:
            return torch.full((offsets.shape[0], 0), -1, dtype=torch.int64, device=offsets.device), idx.perm
        e = idx.ext.tolist()
        delta = (offsets[:, 0] * e[2] + offsets[:, 1]) * e[3] + offsets[:, 2]
        return self._find(idx.sorted_keys[None, :] + delta[:, None]), idx.perm


def _pack(c: torch.Tensor, lo: torch.Tensor | None, ext: torch.Tensor) -> torch.Tensor:
    """Pack ``(..., 4)`` coordinates (minus ``lo``) into int64 keys, row-major over ``ext`` (lexicographic order)."""
    rel = c - lo if lo is not None else c
    e = ext.tolist()
    return ((rel[..., 0] * e[1] + rel[..., 1]) * e[2] + rel[..., 2]) * e[3] + rel[..., 3]


@dataclass(eq=False)
class Reduction:
    """How pair products (one row per pair, in pair order) are summed into destination rows.

    ``perm`` set: every destination row receives exactly one pair; the result is ``products[perm]``.
    Otherwise ``order``/``offsets`` describe the pairs sorted by destination row (CSR), summed with
    ``embedding_bag(order, products, offsets, mode="sum")`` (a parallel segment sum; rows without pairs get zeros).
    """

    perm: torch.Tensor | None
    order: torch.Tensor | None
    offsets: torch.Tensor | None


def _batch_plan(order: list[int], counts: list[int], bucket: Callable[[int], int], slack: int, max_rows: int,
                frac: int) -> tuple[list[tuple[int, int]], int]:
    """Cut kernel offsets, in ``order``, into batches ``(size, p)`` of consecutive offsets padded to ``p`` rows: ``p``
    is the first offset's bucket; the next offset joins while its bucket is at most ``p`` and at most
    ``max(slack, p // frac)`` below it and the batch stays within ``max_rows``. Returns the batches and their rows."""
    batches = []
    rows = 0
    i = 0
    while i < len(order):  # loop over kernel offsets (<= 27)
        p = bucket(counts[order[i]])
        j = i + 1
        while j < len(order) and (j - i + 1) * p <= max_rows:
            b = bucket(counts[order[j]])
            if b > p or p - b > max(slack, p // frac):
                break
            j += 1
        batches.append((j - i, p))
        rows += (j - i) * p
        i = j
    return batches, rows


def _layout_plan(counts: list[int], bucket: Callable[[int], int], prefer: tuple[int, ...] | None = None,
                 slack: int = 512, max_rows: int = 1 << 16, frac: int = 8
                 ) -> tuple[list[int], tuple[list[tuple[int, int]], int]]:
    """The order of the offsets with pairs (by pair count, or ``prefer`` when it costs at most 3% more rows and one
    batch more) and its :func:`_batch_plan`."""
    order = sorted((k for k in range(len(counts)) if counts[k]), key=lambda k: -counts[k])  # offsets (<= 27)
    plan = _batch_plan(order, counts, bucket, slack, max_rows, frac)
    if prefer is not None and prefer != tuple(order) and sorted(prefer) == sorted(order):
        alt = _batch_plan(list(prefer), counts, bucket, slack, max_rows, frac)
        if alt[1] <= plan[1] * 1.03 and len(alt[0]) <= len(plan[0]) + 1:
            return list(prefer), alt
    return order, plan


class PaddedLayout:
    """Where each pair's product goes when products run in padded ("bucketed") shapes (reduced precision on CPU).

    The products buffer holds ``total`` rows. Offsets with pairs are ordered by pair count (largest first) and cut
    into ``batches`` ``(start, stop, p, base)``: offsets ``groups[start:stop]`` each padded to the same ``p`` rows
    (a bucket size), one after another from row ``base``, so one batched product (``bmm``) serves them all (on
    CPU a reduced-precision product costs ~20 us per call whatever its size, more than padding a few hundred
    rows). An offset joins the current batch while its own bucket is at most the batch's ``p`` and at most 512 rows
    (or an eighth of ``p``) below it, and while the batch stays within 65,536 rows (:func:`_batch_plan`).
    :meth:`KernelMap.padded` may be given a preferred order of the same offsets, used instead when it costs at most
    3% more rows and one batch more (the order a convolution's kernels were last permuted to, so that similar scans
    reuse the permuted kernels); ``order`` is the order used.

    ``groups`` ``(k, m, p, base)`` describe each offset (``m`` pairs at rows ``base .. base + p``);
    ``kernel_order`` (a tensor) lists their kernel indices in buffer order. ``gather_index`` (``identity_base``
    rows) holds the input row of every product row (padding rows repeat row 0; their products are never summed);
    :meth:`grad_gather_index` is the same for output rows and :meth:`padding_rows` lists a batch's padding rows (for
    gradients). The identity offset (if any)
    owns rows ``identity_base .. identity_base + n_in``. :meth:`to_out` / :meth:`to_in` sum the real rows into
    output / input rows, the identity included. Built once per kernel map and order; backward-only parts on first
    use.
    """

    def __init__(self, km: KernelMap, order: list[int], plan: tuple[list[tuple[int, int]], int]) -> None:
        kv = km.kernel_volume
        counts = km._offset_counts()
        self.order = tuple(order)
        self.groups: list[tuple[int, int, int, int]] = []
        self.batches: list[tuple[int, int, int, int]] = []
        base = 0
        i = 0
        for size, p in plan[0]:  # loop over batches of kernel offsets, not pairs
            start = len(self.groups)
            for t in range(i, i + size):
                self.groups.append((order[t], counts[order[t]], p, base + (t - i) * p))
            self.batches.append((start, len(self.groups), p, base))
            base += size * p
            i += size
        self.identity_base = base
        if km.identity is not None:
            base += km.n_in
        else:
            self.identity_base = None
        self.total = base
        self._km = km
        device = km.in_idx.device
        self.kernel_order = torch.tensor([g[0] for g in self.groups], dtype=torch.int64, device=device)
        shift = torch.zeros(kv, dtype=torch.int64)
        for k, _, _, gbase in self.groups:
            shift[k] = gbase - km.ptr[k]
        n_pairs = km.ptr[-1]
        self.position = torch.arange(n_pairs, device=device) + torch.repeat_interleave(
            shift.to(device), torch.tensor(counts, device=device), output_size=n_pairs)
        self.gather_index = self._scatter_rows(km.in_idx)
        self._grad_index: torch.Tensor | None = None
        self._padding: list[torch.Tensor] | None = None
        self._to_out: Reduction | None = None
        self._to_in: Reduction | None = None

    def _scatter_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """``idx`` (one entry per pair) laid out on the padded product rows (padding rows get row 0)."""
        n_rows = self.total if self.identity_base is None else self.identity_base
        rows = idx.new_zeros(n_rows)
        rows[self.position] = idx
        return rows

    def grad_gather_index(self) -> torch.Tensor:
        """The output row of every product row (like ``gather_index`` for inputs): whose gradient multiplies it."""
        if self._grad_index is None:
            self._grad_index = self._scatter_rows(self._km.out_idx)
        return self._grad_index

    def padding_rows(self, b: int) -> torch.Tensor:
        """Rows of batch ``b``'s products (relative to its ``base``) that are padding, not pairs."""
        if self._padding is None:
            device = self._km.in_idx.device
            self._padding = []
            for start, stop, p, _ in self.batches:  # loop over batches of kernel offsets (<= 27)
                pad = [torch.arange(j * p + m, (j + 1) * p) for j, (_, m, _, _) in enumerate(self.groups[start:stop])]
                self._padding.append(torch.cat(pad).to(device))
        return self._padding[b]

    def _reduction(self, idx: torch.Tensor, n_dst: int) -> Reduction:
        km = self._km
        rows = self.position
        dst = idx
        if self.identity_base is not None:
            ar = torch.arange(km.n_in, device=idx.device)
            rows = torch.cat([rows, ar + self.identity_base])
            dst = torch.cat([dst, ar])
        return _reduction_rows(rows, dst, n_dst)

    def to_out(self) -> Reduction:
        if self._to_out is None:
            self._to_out = self._reduction(self._km.out_idx, self._km.n_out)
        return self._to_out

    def to_in(self) -> Reduction:
        if self._to_in is None:
            self._to_in = self._reduction(self._km.in_idx, self._km.n_in)
        return self._to_in


@dataclass(eq=False)
class KernelMap:
    """Input/output row pairs of one sparse convolution, grouped by kernel offset.

    Pairs of offset ``k`` are ``in_idx[ptr[k]:ptr[k+1]]`` -> ``out_idx[ptr[k]:ptr[k+1]]`` (int64, same device as the
    coordinates), meaning ``out[o] += in[i] @ W[k]``. ``identity`` is the offset whose pairs are exactly
    ``(r, r)`` for every row (the centre of a submanifold kernel); its slice is empty and the convolution uses the
    features directly. ``n_in``/``n_out`` are the row counts.
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    ptr: list[int]
    n_in: int
    n_out: int
    identity: int | None = None
    kernel_volume: int = field(init=False)
    _to_out: Reduction | None = field(default=None, init=False, repr=False)
    _to_in: Reduction | None = field(default=None, init=False, repr=False)
    _padded: dict[tuple[int, ...] | None, PaddedLayout] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.kernel_volume = len(self.ptr) - 1

    def pair_counts(self) -> list[int]:
        """Number of pairs per kernel offset (the identity offset counts ``n_in``)."""
        counts = [self.ptr[k + 1] - self.ptr[k] for k in range(self.kernel_volume)]
        if self.identity is not None:
            counts[self.identity] = self.n_in
        return counts

    def swapped(self) -> KernelMap:
        """The same pairs with input and output exchanged (ME's transposed map of the same region)."""
        km = KernelMap(self.out_idx, self.in_idx, list(self.ptr), self.n_out, self.n_in, self.identity)
        km._to_out, km._to_in = self._to_in, self._to_out
        return km  # (a padded layout is not swapped: it is rebuilt for the swapped map when needed)

    def to_out(self) -> Reduction:
        """How pair products (one row per pair, in pair order) sum into output rows (built once)."""
        if self._to_out is None:
            self._to_out = _reduction(self.out_idx, self.n_out, self.identity is not None)
        return self._to_out

    def to_in(self) -> Reduction:
        """How pair products sum into input rows, for the gradient of the input (built once)."""
        if self._to_in is None:
            self._to_in = _reduction(self.in_idx, self.n_in, self.identity is not None)
        return self._to_in

    def padded(self, bucket: Callable[[int], int], prefer: tuple[int, ...] | None = None) -> PaddedLayout:
        """The :class:`PaddedLayout` with each offset's rows padded to ``bucket(m)`` (built once per map and
        preferred order ``prefer``, see :class:`PaddedLayout`)."""
        if self._padded is None:
            self._padded = {}
        layout = self._padded.get(prefer)
        if layout is None:
            order, plan = _layout_plan(self._offset_counts(), bucket, prefer)
            layout = self._padded.get(tuple(order))
            if layout is None:
                layout = self._padded[tuple(order)] = PaddedLayout(self, order, plan)
            self._padded[prefer] = layout
        return layout

    def _offset_counts(self) -> list[int]:
        """Number of pairs per kernel offset, the identity offset counting none (it is not padded)."""
        return [self.ptr[k + 1] - self.ptr[k] for k in range(self.kernel_volume)]


def _sort_order(dst: torch.Tensor, n_dst: int) -> torch.Tensor:
    """Stable argsort of destination rows (int32 keys where they fit: about twice as fast)."""
    if n_dst < 2**31 - 1:
        return torch.argsort(dst.to(torch.int32), stable=True)
    return torch.argsort(dst, stable=True)


def _reduction_rows(rows: torch.Tensor, dst: torch.Tensor, n_dst: int) -> Reduction:
    """Reduction of a products buffer whose row ``rows[j]`` goes to ``dst[j]`` (other rows are never summed)."""
    counts = torch.bincount(dst, minlength=n_dst)
    if dst.numel() == n_dst and n_dst > 0 and int(counts.max()) == 1:
        perm = torch.empty_like(rows)
        perm[dst] = rows
        return Reduction(perm, None, None)
    offsets = torch.zeros(n_dst, dtype=torch.int64, device=dst.device)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    return Reduction(None, rows.index_select(0, _sort_order(dst, n_dst)), offsets)


def _reduction(dst_idx: torch.Tensor, n_dst: int, has_identity: bool) -> Reduction:
    """The :class:`Reduction` of pair products onto ``n_dst`` rows, pair ``j`` going to row ``dst_idx[j]``."""
    counts = torch.bincount(dst_idx, minlength=n_dst)
    if not has_identity and dst_idx.numel() == n_dst and n_dst > 0 and int(counts.max()) == 1:
        perm = torch.empty_like(dst_idx)
        perm[dst_idx] = torch.arange(n_dst, device=dst_idx.device)
        return Reduction(perm, None, None)
    offsets = torch.zeros(n_dst, dtype=torch.int64, device=dst_idx.device)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    return Reduction(None, _sort_order(dst_idx, n_dst), offsets)


def _ptr_from_counts(counts: torch.Tensor) -> list[int]:
    ptr = [0]
    for c in counts.tolist():  # loop over kernel offsets (<= 27), not pairs
        ptr.append(ptr[-1] + int(c))
    return ptr


def _pairs_from_lookup(found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Pairs grouped by offset from a ``(K, M_out)`` lookup: ``found[k, o]`` is the input row of output ``o`` at
    offset ``k`` or -1. Returns ``(in_idx, out_idx, ptr)``."""
    mask = found >= 0
    return found[mask], mask.nonzero()[:, 1], _ptr_from_counts(mask.sum(1))


def build_conv_map(inp: CoordinateSet, out: CoordinateSet, kernel_size: int) -> KernelMap:
    """Kernel map of a (non-transposed) convolution: for each out ``q`` and offset ``k``, input at ``q + off_k*s_in``."""
    offs = kernel_offsets(kernel_size, inp.device) * inp.stride
    n_in, n_out = len(inp), len(out)
    if inp is out and kernel_size % 2 == 1:
        return _build_submanifold_map(inp, offs)
    q = out.coords.to(torch.int64)
    query = q[None].repeat(offs.shape[0], 1, 1)
    query[..., 1:] += offs[:, None, :]
    in_idx, out_idx, ptr = _pairs_from_lookup(inp.lookup(query))
    return KernelMap(in_idx, out_idx, ptr, n_in, n_out)


def _build_submanifold_map(cs: CoordinateSet, offs: torch.Tensor) -> KernelMap:
    """Submanifold map (out coords = in coords, odd kernel) built from half the offsets.

    If ``c_i = c_o + d`` pairs ``(i, o)`` for offset ``d``, then ``c_o = c_i - d`` pairs ``(o, i)`` for the mirrored
    offset ``-d``, which has kernel index ``K - 1 - k``. The centre offset pairs every row with itself.
    """
    kv = offs.shape[0]
    half = kv // 2
    n = len(cs)
    if kv == 27 and n > 0:
        return _build_submanifold_map_3(cs)
    if int(offs.abs().max()) <= cs.stride:
        found, members = cs.neighbours(offs[:half])
    else:
        query = cs.coords.to(torch.int64)[None].repeat(half, 1, 1)
        query[..., 1:] += offs[:half, None, :]
        found, members = cs.lookup(query), None
    mask = found >= 0
    counts = mask.sum(1)
    rows = mask.nonzero()[:, 1]
    if members is not None:
        rows = members[rows]
    other = found[mask]
    # lower half: out = row, in = found. Mirrored half (K-1-k, reversed order of k): out = found, in = row.
    counts_list = counts.tolist()
    ptr_low = _ptr_from_counts(counts)
    rev_pieces_in, rev_pieces_out = [], []
    for k in range(half - 1, -1, -1):  # loop over kernel offsets, not pairs
        s, e = ptr_low[k], ptr_low[k + 1]
        rev_pieces_in.append(rows[s:e])
        rev_pieces_out.append(other[s:e])
    in_idx = torch.cat([other, *rev_pieces_in])
    out_idx = torch.cat([rows, *rev_pieces_out])
    all_counts = counts_list + [0] + counts_list[::-1]
    ptr = [0]
    for cnt in all_counts:
        ptr.append(ptr[-1] + cnt)
    return KernelMap(in_idx, out_idx, ptr, n, n, identity=half)


def _build_submanifold_map_3(cs: CoordinateSet) -> KernelMap:
    """3^3 submanifold map from one sorted search of 4 column offsets.

    Keys pack ``(b, x, y, z)`` row-major with ``z`` fastest and the box padded by one stride, so the neighbours at
    ``dz = -s, 0, +s`` of a query column ``key + delta(dx, dy)`` are adjacent in the sorted keys: one
    ``searchsorted`` of the column key finds all three. Four column offsets ``(dx, dy)`` in one half-plane times
    three ``dz``, plus ``(0, 0, +s)`` (the next sorted key), make 13 offsets, one of each mirror pair; the mirrors
    get the same pairs swapped. All 13 are found as one ``(13, n)`` hit matrix (one search, one ``nonzero``).
    Pairs of an offset come in sorted-key order of their first member.
    """
    idx = cs.index
    sk, perm = idx.sorted_keys, idx.perm
    n = sk.numel()
    s = cs.stride
    e = idx.ext.tolist()
    columns = ((1, -1), (1, 0), (1, 1), (0, 1))
    delta = torch.tensor([(dx * s * e[2] + dy * s) * e[3] for dx, dy in columns], device=sk.device)
    q = sk[None, :] + delta[:, None]  # (4, n) column keys
    p = torch.searchsorted(sk, q)
    pc = p.clamp(max=n - 1)
    hit0 = sk[pc] == q
    pp = (p + hit0).clamp_(max=n - 1)
    pm = (p - 1).clamp_(min=0)
    hit_m = (sk[pm] == q - s) & (p > 0)
    hit_p = sk[pp] == q + s
    ar = torch.arange(n, device=sk.device)
    nxt = (ar + 1).clamp_(max=n - 1)
    hit_z = (sk[nxt] == sk + s)[None]  # (0, 0, +s): the next key in sorted order
    # rows: (dz=-1, 0, +1) for each column, then (0, 0, +s)
    pos = torch.stack([pm, pc, pp], dim=1).reshape(12, n)
    pos = torch.cat([pos, nxt[None]])
    hit = torch.stack([hit_m, hit0, hit_p], dim=1).reshape(12, n)
    hit = torch.cat([hit, hit_z])
    kernel_index = [(dx + 1) + 3 * (dy + 1) + 9 * dz for dx, dy in columns for dz in range(3)] + [1 + 3 + 18]
    found = hit.nonzero()
    row, member = found[:, 0], found[:, 1]
    counts = torch.bincount(row, minlength=13).tolist()
    a = perm.index_select(0, member)  # the member: output of offset k, input of its mirror
    b = perm.index_select(0, pos.reshape(-1).index_select(0, row * n + member))  # its neighbour
    pieces_in: list[torch.Tensor] = [sk.new_zeros(0)] * 27
    pieces_out: list[torch.Tensor] = [sk.new_zeros(0)] * 27
    start = 0
    for j, k in enumerate(kernel_index):  # 13 offsets: out = member, in = neighbour; the mirror the other way round
        stop = start + counts[j]
        pieces_in[k], pieces_out[k] = b[start:stop], a[start:stop]
        pieces_in[26 - k], pieces_out[26 - k] = a[start:stop], b[start:stop]
        start = stop
    ptr = [0]
    for piece in pieces_in:
        ptr.append(ptr[-1] + int(piece.numel()))
    return KernelMap(torch.cat(pieces_in), torch.cat(pieces_out), ptr, n, n, identity=13)


def strided_coords(cs: CoordinateSet, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output coordinates of a stride-``stride`` convolution on ``cs``: ``floor(c / s_out) * s_out``, unique.

    Returns ``(coords (M', 4) int32 sorted lexicographically, inverse (M,) int64 output row of every input row)``.
    """
    s_out = cs.stride * stride
    c = cs.coords.to(torch.int64)
    q = torch.cat([c[:, :1], torch.div(c[:, 1:], s_out, rounding_mode="floor") * s_out], dim=1)
    if q.shape[0] == 0:
        return q.to(torch.int32), torch.zeros(0, dtype=torch.int64, device=c.device)
    lo = q.min(0).values
    ext = q.max(0).values - lo + 1
    uniq, inverse = torch.unique(_pack(q, lo, ext), sorted=True, return_inverse=True)
    return _unpack(uniq, lo, ext).to(torch.int32), inverse


def build_cell_map(inp: CoordinateSet, out: CoordinateSet, inverse: torch.Tensor, kernel_size: int) -> KernelMap:
    """Kernel map of a conv whose even kernel equals its stride (``s_out = kernel_size * s_in``), without lookups.

    Every input lies in exactly one output cell ``q = floor(c / s_out) * s_out`` (``inverse``) at offset
    ``(c - q) / s_in`` in ``0 .. ks-1`` per axis, which is ME's even-kernel region; so the pairs follow directly.
    """
    c = inp.coords.to(torch.int64)
    rel = torch.div(c[:, 1:] - out.coords.to(torch.int64)[inverse, 1:], inp.stride, rounding_mode="floor")
    k = rel[:, 0] + kernel_size * rel[:, 1] + kernel_size * kernel_size * rel[:, 2]
    order = torch.argsort(k, stable=True)
    counts = torch.bincount(k, minlength=kernel_size**3)
    return KernelMap(order, inverse[order], _ptr_from_counts(counts), len(inp), len(out))


def expanded_coords(cs: CoordinateSet, kernel_size: int, s_out: int) -> torch.Tensor:
    """Coordinates ``{p + off_k * s_out}`` (unique, sorted) that ME creates for a transposed conv with no finer map."""
    offs = kernel_offsets(kernel_size, cs.device) * s_out
    p = cs.coords.to(torch.int64)
    q = p[None].repeat(offs.shape[0], 1, 1)
    q[..., 1:] += offs[:, None, :]
    q = q.reshape(-1, 4)
    if q.shape[0] == 0:
        return q.to(torch.int32)
    lo = q.min(0).values
    ext = q.max(0).values - lo + 1
    uniq = torch.unique(_pack(q, lo, ext), sorted=True)
    return _unpack(uniq, lo, ext).to(torch.int32)


def _unpack(keys: torch.Tensor, lo: torch.Tensor, ext: torch.Tensor) -> torch.Tensor:
    e = ext.tolist()
    z = keys % e[3]
    r = keys // e[3]
    y = r % e[2]
    r = r // e[2]
    x = r % e[1]
    b = r // e[1]
    return torch.stack([b, x, y, z], dim=1) + lo


class KernelMapCache:
    """Coordinate sets and kernel maps shared by every sparse tensor of one forward pass (ME's coordinate manager).

    - ``coordinates(stride)``: the coordinate set registered first for a tensor stride (what a transposed conv
      outputs onto, like ME's ``(stride, "")`` key).
    - ``strided(cs, stride)``: the output coordinate set of a stride-``stride`` conv on ``cs`` (built once).
    - ``kernel_map(inp, out, kernel_size, transposed)``: the pairs of one convolution (built once per key). A
      transposed map is the swapped map of the forward convolution from its output to its input (ME builds it the
      same way and reuses the forward map when cached), so a decoder reuses its encoder's maps.

    ``builds`` counts kernel maps actually built (swapping a cached map is not a build).
    """

    def __init__(self) -> None:
        self._by_stride: dict[int, CoordinateSet] = {}
        self._strided: dict[tuple[CoordinateSet, int], CoordinateSet] = {}
        self._inverse: dict[tuple[CoordinateSet, CoordinateSet], torch.Tensor] = {}
        self._maps: dict[tuple[CoordinateSet, CoordinateSet, int, bool], KernelMap] = {}
        self.builds = 0

    def __len__(self) -> int:
        return len(self._maps)

    def register(self, cs: CoordinateSet) -> CoordinateSet:
        """Make ``cs`` the coordinate set of its stride if that stride has none yet; returns ``cs``."""
        self._by_stride.setdefault(cs.stride, cs)
        return cs

    def coordinates(self, stride: int) -> CoordinateSet | None:
        """The coordinate set registered for tensor stride ``stride``, or None."""
        return self._by_stride.get(int(stride))

    def strided(self, cs: CoordinateSet, stride: int) -> CoordinateSet:
        """Output coordinates of a stride-``stride`` convolution on ``cs`` (``cs`` itself when stride is 1)."""
        if stride == 1:
            return cs
        key = (cs, int(stride))
        out = self._strided.get(key)
        if out is None:
            coords, inverse = strided_coords(cs, stride)
            out = self.register(CoordinateSet(coords, cs.stride * stride))
            self._strided[key] = out
            self._inverse[(cs, out)] = inverse
        return out

    def transposed_target(self, cs: CoordinateSet, kernel_size: int, stride: int) -> CoordinateSet:
        """Output coordinates of a stride-``stride`` transposed convolution on ``cs`` (cached finer coordinates)."""
        if cs.stride % stride != 0:
            raise ValueError(f"transposed convolution with stride {stride} needs an input tensor stride divisible by "
                             f"it, got tensor stride {cs.stride}")
        if stride == 1:
            return cs
        s_out = cs.stride // stride
        out = self._by_stride.get(s_out)
        if out is None:
            out = self.register(CoordinateSet(expanded_coords(cs, kernel_size, s_out), s_out))
        return out

    def kernel_map(self, inp: CoordinateSet, out: CoordinateSet, kernel_size: int, transposed: bool) -> KernelMap:
        """The kernel map of one convolution, built on first request and returned from the cache afterwards."""
        key = (inp, out, int(kernel_size), bool(transposed))
        km = self._maps.get(key)
        if km is None:
            if transposed:
                km = self.kernel_map(out, inp, kernel_size, transposed=False).swapped()
            else:
                inverse = self._inverse.get((inp, out))
                if inverse is not None and kernel_size % 2 == 0 and out.stride == inp.stride * kernel_size:
                    km = build_cell_map(inp, out, inverse, kernel_size)
                else:
                    km = build_conv_map(inp, out, kernel_size)
                self.builds += 1
            self._maps[key] = km
        return km
