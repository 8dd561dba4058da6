"""Vectorised ray casting against analytic primitives (oriented boxes, ellipsoids, vertical cylinders).

Rays are organised as a grid (LiDAR: beams x azimuth columns; camera: rows x columns) that share one origin. For each
primitive, the sensor computes the rectangle of grid cells its bounding sphere can cover (exact for the sphere; the
cameras tighten it with the projected corners of the primitive's bounding box); the caster expands those rectangles
into (primitive, ray) candidate pairs with ``np.repeat`` and intersects all pairs of one primitive kind at once.
The nearest hit per ray is found with ``np.minimum.at``; surface details (normal, local
hit point) are then computed only for the winning pairs. No Python loop runs over rays or pairs; the only loops are
over the three primitive kinds.

All geometry is in one frame (the world frame of the synthetic scene, z up). Boxes and ellipsoids may be rotated by a
yaw about z; cylinders are vertical. A primitive's ``size`` is its half extents (box), radii (ellipsoid) or
``(radius, radius, half height)`` (cylinder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX, ELLIPSOID, CYLINDER = 0, 1, 2
"""Primitive kinds."""

_EPS = 1e-6


@dataclass
class Primitives:
    """A structure of arrays describing P primitives and what they look like.

    Attributes:
        kind: (P,) int64, one of :data:`BOX`, :data:`ELLIPSOID`, :data:`CYLINDER`.
        center: (P, 3) float64 centre, metres.
        size: (P, 3) float64 half extents / radii / (radius, radius, half height).
        yaw: (P,) float64 rotation about +z, radians (ignored for cylinders).
        label: (P,) int64 semantic training id.
        instance: (P,) int64 instance id (> 0).
        color: (P, 3) float64 base RGB albedo in [0, 1].
        texture: (P,) int64 texture code (see ``sensors.py``).
        reflectivity: (P,) float64 LiDAR reflectivity in [0, 1].
        velocity: (P, 3) float64 velocity, metres per second (0 for static primitives).
    """

    kind: np.ndarray
    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    color: np.ndarray
    texture: np.ndarray
    reflectivity: np.ndarray
    velocity: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def bound_radius(self) -> np.ndarray:
        """(P,) radius of a sphere around ``center`` that contains the primitive."""
        s = self.size
        box = np.linalg.norm(s, axis=1)
        ell = s.max(axis=1)
        cyl = np.hypot(s[:, 0], s[:, 2])
        return np.where(self.kind == BOX, box, np.where(self.kind == ELLIPSOID, ell, cyl))

    def box_corners(self) -> np.ndarray:
        """(P, 8, 3) corners of each primitive's bounding box (its own box; the box circumscribing an ellipsoid or
        cylinder), world frame."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        local = signs[None] * self.size[:, None, :]
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        out = np.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1],
                        local[..., 2]], axis=-1) + self.center[:, None, :]
        return out

    def at_time(self, t: float) -> Primitives:
        """The primitives moved to time ``t`` seconds (constant velocity)."""
        return Primitives(self.kind, self.center + self.velocity * t, self.size, self.yaw, self.label, self.instance,
                          self.color, self.texture, self.reflectivity, self.velocity)

    def select(self, index: np.ndarray) -> Primitives:
        """Subset by a boolean mask or index array."""
        return Primitives(*(getattr(self, f)[index] for f in
                            ("kind", "center", "size", "yaw", "label", "instance", "color", "texture",
                             "reflectivity", "velocity")))


@dataclass
class Hits:
    """Result of casting R rays: nearest primitive hit per ray.

    Attributes:
        t: (R,) float64 distance along the (unit) ray, ``inf`` where nothing was hit.
        prim: (R,) int64 index of the primitive hit, -1 where nothing was hit.
        normal: (R, 3) float64 unit surface normal (world frame), zeros where nothing was hit.
        local: (R, 3) float64 hit point in the primitive's own frame (centred, yaw removed).
        local_normal: (R, 3) float64 normal in the primitive's own frame.
    """

    t: np.ndarray
    prim: np.ndarray
    normal: np.ndarray
    local: np.ndarray
    local_normal: np.ndarray


def _to_local(prims: Primitives, idx: np.ndarray, origin: np.ndarray,
              dirs: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Ray origin / direction of each pair in its primitive's frame, as component lists, and cos / sin of yaw."""
    c, s = np.cos(prims.yaw[idx]), np.sin(prims.yaw[idx])
    center = prims.center[idx]
    rx, ry, rz = origin[0] - center[:, 0], origin[1] - center[:, 1], origin[2] - center[:, 2]
    dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    return [c * rx + s * ry, c * ry - s * rx, rz], [c * dx + s * dy, c * dy - s * dx, dz], c, s


def intersect(prims: Primitives, kind: int, idx: np.ndarray, origin: np.ndarray, dirs: np.ndarray,
              details: bool = False) -> tuple[np.ndarray, ...]:
    """Intersect pairs (primitive ``idx[i]`` of kind ``kind``, ray ``origin + t * dirs[i]``).

    Args:
        prims: the primitive table.
        kind: the kind shared by every ``idx`` (callers group pairs by kind).
        idx: (M,) int64 primitive indices.
        origin: (3,) common ray origin.
        dirs: (M, 3) unit ray directions.
        details: also return the world normal, the local hit point and the local normal.

    Returns:
        ``t`` (M,) entry distance (``inf`` on a miss); with ``details`` also ``normal`` (M, 3), ``local`` (M, 3) and
        ``local_normal`` (M, 3).
    """
    o, d, cy, sy = _to_local(prims, idx, origin, dirs)
    size = prims.size[idx]
    s = [size[:, 0], size[:, 1], size[:, 2]]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == BOX:
            lo, hi = [], []
            for k in range(3):
                inv = 1.0 / d[k]
                ta, tb = (-s[k] - o[k]) * inv, (s[k] - o[k]) * inv
                lo.append(np.minimum(ta, tb))
                hi.append(np.maximum(ta, tb))
            tnear = np.maximum(np.maximum(lo[0], lo[1]), lo[2])
            tfar = np.minimum(np.minimum(hi[0], hi[1]), hi[2])
            t = np.where((tnear <= tfar) & (tnear > _EPS), tnear, np.inf)
            if details:
                axis = np.stack(lo, axis=1).argmax(axis=1)
                nl = [np.where(axis == k, -np.sign(d[k]), 0.0) for k in range(3)]
        elif kind == ELLIPSOID:
            q = [o[k] / s[k] for k in range(3)]
            e = [d[k] / s[k] for k in range(3)]
            a = e[0] * e[0] + e[1] * e[1] + e[2] * e[2]
            b = q[0] * e[0] + q[1] * e[1] + q[2] * e[2]
            c = q[0] * q[0] + q[1] * q[1] + q[2] * q[2] - 1.0
            disc = b * b - a * c
            t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
            if details:
                tt = np.where(np.isfinite(t), t, 0.0)
                nl = [(o[k] + tt * d[k]) / (s[k] * s[k]) for k in range(3)]
        elif kind == CYLINDER:
            r, hh = s[0], s[2]
            a = d[0] * d[0] + d[1] * d[1]
            b = o[0] * d[0] + o[1] * d[1]
            c = o[0] * o[0] + o[1] * o[1] - r * r
            disc = b * b - a * c
            ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            side = (disc >= 0) & (a > 0) & (ts > _EPS) & (np.abs(o[2] + ts * d[2]) <= hh)
            tc = (hh - o[2]) / d[2]
            pcx, pcy = o[0] + tc * d[0], o[1] + tc * d[1]
            cap = (d[2] < 0) & (o[2] > hh) & (pcx * pcx + pcy * pcy <= r * r) & (tc > _EPS)
            t = np.minimum(np.where(side, ts, np.inf), np.where(cap, tc, np.inf))
            if details:
                tt = np.where(np.isfinite(t), t, 0.0)
                is_cap = cap & (~side | (tc <= ts))
                nl = [np.where(is_cap, 0.0, o[0] + tt * d[0]), np.where(is_cap, 0.0, o[1] + tt * d[1]),
                      is_cap.astype(np.float64)]
        else:
            raise ValueError(f"unknown primitive kind {kind}")
    if not details:
        return (t,)
    tt = np.where(np.isfinite(t), t, 0.0)
    p = np.stack([o[k] + tt * d[k] for k in range(3)], axis=1)
    nl = np.stack(nl, axis=1)
    nl /= np.maximum(np.linalg.norm(nl, axis=1, keepdims=True), 1e-12)
    normal = np.stack([cy * nl[:, 0] - sy * nl[:, 1], sy * nl[:, 0] + cy * nl[:, 1], nl[:, 2]], axis=1)
    return t, normal, p, nl


def expand_spans(r0: np.ndarray, nr: np.ndarray, c0: np.ndarray, nc: np.ndarray, width: int,
                 wrap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Expand per-primitive cell rectangles into candidate pairs.

    Primitive ``p`` covers rows ``r0[p] .. r0[p] + nr[p] - 1`` and columns ``c0[p] .. c0[p] + nc[p] - 1`` (taken
    modulo ``width`` when ``wrap``). Returns ``(prim (M,), ray (M,))`` with ``ray = row * width + col``.
    """
    counts = (nr * nc).astype(np.int64)
    total = int(counts.sum())
    prim = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    start = np.cumsum(counts) - counts
    local = np.arange(total, dtype=np.int64) - np.repeat(start, counts)
    ncp = nc[prim]
    row = r0[prim] + local // ncp
    col = c0[prim] + local % ncp
    if wrap:
        col %= width
    return prim, row * width + col


def cast(prims: Primitives, origin: np.ndarray, dirs: np.ndarray, pair_prim: np.ndarray,
         pair_ray: np.ndarray) -> Hits:
    """Nearest hit of each ray among its candidate primitives.

    Args:
        prims: primitive table (world frame).
        origin: (3,) common origin of all rays.
        dirs: (R, 3) unit ray directions.
        pair_prim, pair_ray: (M,) candidate pairs from :func:`expand_spans` (a ray absent from every pair misses).
    """
    n_rays = len(dirs)
    best = np.full(n_rays, np.inf)
    hit_ray, hit_t, hit_prim = [], [], []
    kinds = prims.kind[pair_prim]
    for kind in (BOX, ELLIPSOID, CYLINDER):
        sel = np.flatnonzero(kinds == kind)
        if len(sel) == 0:
            continue
        p, r = pair_prim[sel], pair_ray[sel]
        (t,) = intersect(prims, kind, p, origin, dirs[r])
        ok = np.isfinite(t)
        hit_ray.append(r[ok])
        hit_t.append(t[ok])
        hit_prim.append(p[ok])
    prim = np.full(n_rays, -1, dtype=np.int64)
    normal = np.zeros((n_rays, 3))
    local = np.zeros((n_rays, 3))
    local_normal = np.zeros((n_rays, 3))
    if hit_ray:
        ray_all, t_all, prim_all = np.concatenate(hit_ray), np.concatenate(hit_t), np.concatenate(hit_prim)
        np.minimum.at(best, ray_all, t_all)
        win = t_all == best[ray_all]
        prim[ray_all[win]] = prim_all[win]
        rays = np.flatnonzero(prim >= 0)
        pk = prims.kind[prim[rays]]
        for kind in (BOX, ELLIPSOID, CYLINDER):
            sel = rays[pk == kind]
            if len(sel) == 0:
                continue
            t, n, loc, nl = intersect(prims, kind, prim[sel], origin, dirs[sel], details=True)
            best[sel] = t
            normal[sel], local[sel], local_normal[sel] = n, loc, nl
    return Hits(best, prim, normal, local, local_normal)
