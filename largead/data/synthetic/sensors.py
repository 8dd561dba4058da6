"""Sensors of the synthetic world: a spinning multi-beam LiDAR and pinhole cameras, both ray cast.

Both sensors are ray grids with one origin. For each primitive the sensor computes which grid cells its bounding
sphere can cover (exactly: angular radius of the sphere for the LiDAR, tangent planes for the pinhole camera), the
caster intersects only those pairs, and the ground (road at z = 0, sidewalk / terrain raised by the curb height) is
intersected analytically for every ray. :func:`surface` turns hits into labels, instances, albedo and reflectivity;
the LiDAR turns reflectivity into intensity, the camera shades albedo (Lambert + ambient, sky gradient, haze).

Pixel convention (as :mod:`largead.data.geometry`): the centre of pixel ``(row, col)`` is at ``u = col, v = row``, so
the ray of a pixel passes exactly where a point seen in that pixel projects to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from largead.data.frame import IGNORE_INDEX
from largead.data.geometry import invert_rigid
from largead.data.synthetic.raycast import Hits, Primitives, cast, expand_spans
from largead.data.synthetic.world import (
    ROAD,
    SIDEWALK,
    TERRAIN,
    TEX_BARK,
    TEX_FACADE,
    TEX_FOLIAGE,
    TEX_GLASS,
    TEX_SIGN,
    Ground,
    SyntheticConfig,
)

_SKY_HORIZON = np.array([0.78, 0.84, 0.92])
_SKY_ZENITH = np.array([0.33, 0.52, 0.84])
_WINDOW = np.array([0.17, 0.22, 0.30])
_MARK = np.array([0.88, 0.88, 0.84])


def _hash01(cells: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) for each integer cell (N, k) (value noise without smoothing)."""
    c = cells.astype(np.int64).astype(np.uint64)
    primes = np.array([73856093, 19349663, 83492791], dtype=np.uint64)[: c.shape[1]]
    h = np.bitwise_xor.reduce(c * primes, axis=1) ^ np.uint64(seed & 0xFFFFFFFF)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)


def _noise(p: np.ndarray, cell: float, seed: int) -> np.ndarray:
    return _hash01(np.floor(p / cell), seed)


@dataclass
class Surface:
    """What R rays see (world frame).

    ``t`` (R,) distance (``inf`` for a miss), ``label`` (R,) training id or IGNORE_INDEX, ``instance`` (R,) id or 0,
    ``normal`` (R, 3), ``albedo`` (R, 3) RGB in [0, 1] (only when asked for), ``reflectivity`` (R,) in [0, 1].
    """

    t: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    normal: np.ndarray
    albedo: np.ndarray | None
    reflectivity: np.ndarray


def ground_hits(ground: Ground, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Intersect rays with the two-level ground.

    Returns ``t`` (R,) (``inf`` for a miss), ``label`` (R,) ROAD / SIDEWALK / TERRAIN, ``normal`` (R, 3) and
    ``curb`` (R,) bool for rays that enter through a curb face (hit placed half-way between the two levels).
    """
    dz = dirs[:, 2]
    down = dz < -1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = np.where(down, -origin[2] / dz, np.inf)
        t_high = np.where(down, (ground.curb - origin[2]) / dz, np.inf)
    tl, th = np.where(down, t_low, 0.0), np.where(down, t_high, 0.0)
    reg_high = ground.region(origin[0] + th * dirs[:, 0], origin[1] + th * dirs[:, 1])
    reg_low = ground.region(origin[0] + tl * dirs[:, 0], origin[1] + tl * dirs[:, 1])
    high = reg_high != ROAD
    curb = ~high & (reg_low != ROAD)
    t = np.where(high, t_high, np.where(curb, 0.5 * (t_high + t_low), t_low))
    label = np.where(high, reg_high, np.where(curb, SIDEWALK, ROAD))
    normal = np.zeros_like(dirs)
    normal[:, 2] = 1.0
    if curb.any():
        h = -dirs[curb, :2]
        normal[curb, :2] = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-9)
        normal[curb, 2] = 0.0
    return t, label, normal, curb & down


def surface(prims: Primitives, ground: Ground, origin: np.ndarray, dirs: np.ndarray, hits: Hits,
            with_albedo: bool) -> Surface:
    """Combine primitive hits and the ground into per-ray labels, instances, albedo and reflectivity."""
    tg, lg, ng, curb = ground_hits(ground, origin, dirs)
    use_prim = hits.t < tg
    t = np.where(use_prim, hits.t, tg)
    pid = np.where(use_prim, hits.prim, -1)
    has = pid >= 0
    hit_any = np.isfinite(t)
    label = np.where(has, prims.label[np.maximum(pid, 0)], np.where(hit_any, lg, IGNORE_INDEX))
    instance = np.where(has, prims.instance[np.maximum(pid, 0)], 0)
    normal = np.where(has[:, None], hits.normal, ng)
    refl = np.zeros(len(t))
    albedo = np.zeros((len(t), 3)) if with_albedo else None
    p = origin[None, :] + np.where(hit_any, t, 0.0)[:, None] * dirs
    seed = ground.noise_seed

    # ground
    g = hit_any & ~has
    gi = np.flatnonzero(g)
    if len(gi):
        pg, lab = p[gi], lg[gi]
        fine = _noise(pg[:, :2], 0.3, seed)
        is_road, is_walk, is_terr = lab == ROAD, lab == SIDEWALK, lab == TERRAIN
        marks = is_road & ground.marks(pg[:, 0], pg[:, 1])
        r = np.where(is_road, 0.05 + 0.03 * fine, np.where(is_walk, 0.13 + 0.04 * fine, 0.06 + 0.1 * fine))
        refl[gi] = np.where(marks, 0.5, r)
        if with_albedo:
            coarse = _noise(pg[:, :2], 3.0, seed + 1)
            mix = np.clip((coarse - 0.55) * 4.0, 0.0, 1.0)[:, None]
            col = np.empty((len(gi), 3))
            col[:] = ground.asphalt * (0.88 + 0.24 * fine)[:, None]
            col[marks] = _MARK
            tile = np.minimum(np.mod(pg[:, 0], 0.6), np.mod(pg[:, 1], 0.6)) < 0.05
            walk = ground.paving * (0.94 + 0.1 * fine)[:, None] * np.where(tile, 0.78, 1.0)[:, None]
            walk[curb[gi]] *= 0.85
            col[is_walk] = walk[is_walk]
            terr = (ground.grass * (1 - mix) + ground.soil * mix) * (0.8 + 0.4 * fine)[:, None]
            col[is_terr] = terr[is_terr]
            albedo[gi] = col

    # primitives
    oi = np.flatnonzero(has)
    if len(oi):
        q = pid[oi]
        tex = prims.texture[q]
        refl[oi] = prims.reflectivity[q]
        loc, nl = hits.local[oi], hits.local_normal[oi]
        facade = tex == TEX_FACADE
        if facade.any():
            fl, fn, fs = loc[facade], nl[facade], prims.size[q[facade]]
            horiz = np.where(np.abs(fn[:, 0]) > 0.5, fl[:, 1], fl[:, 0])
            z = fl[:, 2] + fs[:, 2]
            wall = np.abs(fn[:, 2]) < 0.5
            window = wall & (np.mod(horiz + 50.0, 3.0) > 0.8) & (np.mod(horiz + 50.0, 3.0) < 2.2) & \
                (np.mod(z, 3.2) > 1.0) & (np.mod(z, 3.2) < 2.6) & (z > 0.8)
            sub = oi[facade]
            refl[sub[window]] = 0.04
        if with_albedo:
            col = prims.color[q].copy()
            if facade.any():
                fcol = col[facade]
                fcol[~wall] *= 0.55
                fcol[window] = _WINDOW * (0.9 + 0.3 * _noise(fl[window], 1.5, seed + 2))[:, None]
                col[facade] = fcol
            leaf = tex == TEX_FOLIAGE
            if leaf.any():
                nz = _noise(loc[leaf], 0.25, seed + 3)
                col[leaf] *= (0.65 + 0.6 * nz)[:, None]
            bark = tex == TEX_BARK
            if bark.any():
                ang = np.arctan2(loc[bark, 1], loc[bark, 0])
                col[bark] *= np.where(np.mod(ang * 4.0 / np.pi, 1.0) < 0.5, 0.75, 1.05)[:, None]
            sign = tex == TEX_SIGN
            if sign.any():
                ss = prims.size[q[sign]]
                edge = np.maximum(np.abs(loc[sign, 1]) / ss[:, 1], np.abs(loc[sign, 2]) / ss[:, 2])
                col[sign] = np.where((edge > 0.75)[:, None], 0.95, col[sign])
            glass = tex == TEX_GLASS
            if glass.any():
                col[glass] += 0.12 * np.clip(hits.normal[oi[glass], 2], 0, 1)[:, None]
            albedo[oi] = col
    return Surface(t=t, label=label.astype(np.int64), instance=instance.astype(np.int64), normal=normal,
                   albedo=albedo, reflectivity=refl)


# ----------------------------------------------------------------------------------------------------- LiDAR


class Lidar:
    """A spinning LiDAR: ``beams`` rows (row 0 = top beam) by ``columns`` azimuths (column 0 looks along +x)."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        up, down = config.fov
        self.beams = config.beams
        self.columns = round(360.0 / config.azimuth_resolution)
        self.up, self.down = np.deg2rad(up), np.deg2rad(down)
        self.d_elev = (self.up - self.down) / max(self.beams - 1, 1)
        self.d_az = 2 * np.pi / self.columns
        elev = self.up - self.d_elev * np.arange(self.beams)
        az = self.d_az * np.arange(self.columns)
        ce = np.cos(elev)[:, None]
        self.dirs = np.stack(np.broadcast_arrays(ce * np.cos(az)[None], ce * np.sin(az)[None],
                                                 np.sin(elev)[:, None]), axis=-1).reshape(-1, 3)

    def spans(self, centers: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, ...]:
        """Cell rectangles (r0, nr, c0, nc) covered by spheres given in the LiDAR frame."""
        rho = np.hypot(centers[:, 0], centers[:, 1])
        dist = np.hypot(rho, centers[:, 2])
        with np.errstate(invalid="ignore", divide="ignore"):
            elev = np.arctan2(centers[:, 2], rho)
            gamma = np.arcsin(np.clip(radius / np.maximum(dist, 1e-9), 0, 1))
            az = np.arctan2(centers[:, 1], centers[:, 0])
            beta = np.arcsin(np.clip(radius / np.maximum(rho, 1e-9), 0, 1))
        r_lo = np.ceil((self.up - (elev + gamma)) / self.d_elev - 1e-9)
        r_hi = np.floor((self.up - (elev - gamma)) / self.d_elev + 1e-9)
        inside = dist <= radius
        r_lo = np.where(inside, 0, np.clip(r_lo, 0, self.beams))
        r_hi = np.where(inside, self.beams - 1, np.clip(r_hi, -1, self.beams - 1))
        nr = np.maximum(r_hi - r_lo + 1, 0)
        c_lo = np.ceil((az - beta) / self.d_az - 1e-9)
        c_hi = np.floor((az + beta) / self.d_az + 1e-9)
        full = rho <= radius
        c0 = np.where(full, 0, c_lo)
        nc = np.where(full, self.columns, np.clip(c_hi - c_lo + 1, 0, self.columns))
        nr = np.where(dist - radius > self.config.max_range, 0, nr)
        return r_lo.astype(np.int64), nr.astype(np.int64), c0.astype(np.int64), nc.astype(np.int64)

    def scan(self, prims: Primitives, ground: Ground, pose: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Cast every beam; returns points (N, 4) float32 (LiDAR frame), labels, instances, rings (N,) int64.

        Points are ordered column by column (the order of a spinning sensor), top beam first within a column.
        """
        cfg = self.config
        rot, origin = pose[:3, :3], pose[:3, 3]
        dirs_w = self.dirs @ rot.T
        centers = (prims.center - origin) @ rot
        r0, nr, c0, nc = self.spans(centers, prims.bound_radius)
        pair_prim, pair_ray = expand_spans(r0, nr, c0, nc, self.columns, wrap=True)
        hits = cast(prims, origin, dirs_w, pair_prim, pair_ray)
        surf = surface(prims, ground, origin, dirs_w, hits, with_albedo=False)
        order = (np.arange(self.beams)[None, :] * self.columns + np.arange(self.columns)[:, None]).ravel()
        t = surf.t[order]
        keep = np.isfinite(t) & (t >= cfg.min_range) & (t <= cfg.max_range)
        if cfg.dropout > 0:
            keep &= rng.random(len(t)) >= cfg.dropout
        idx = order[keep]
        rng_t = surf.t[idx] + rng.normal(0.0, cfg.range_noise, len(idx)) if cfg.range_noise > 0 else surf.t[idx]
        xyz = self.dirs[idx] * rng_t[:, None]
        incidence = np.abs((surf.normal[idx] * dirs_w[idx]).sum(axis=1))
        inten = surf.reflectivity[idx] * (0.3 + 0.7 * incidence)
        if cfg.intensity_noise > 0:
            inten = inten * (1.0 + rng.normal(0.0, cfg.intensity_noise, len(idx)))
        inten = np.clip(inten, 0.0, 1.0) * cfg.intensity_scale
        points = np.concatenate([xyz, inten[:, None]], axis=1).astype(np.float32)
        return points, surf.label[idx], surf.instance[idx], idx // self.columns


# ----------------------------------------------------------------------------------------------------- cameras

# name, yaw (degrees, left of forward), horizontal field of view (degrees), position in the LiDAR frame (metres)
_NUSCENES_RING = (
    ("CAM_FRONT", 0.0, 70.0, (0.9, 0.0, -0.35)),
    ("CAM_FRONT_RIGHT", -55.0, 70.0, (0.7, -0.5, -0.35)),
    ("CAM_BACK_RIGHT", -110.0, 70.0, (-0.3, -0.5, -0.35)),
    ("CAM_BACK", 180.0, 100.0, (-1.0, 0.0, -0.35)),
    ("CAM_BACK_LEFT", 110.0, 70.0, (-0.3, 0.5, -0.35)),
    ("CAM_FRONT_LEFT", 55.0, 70.0, (0.7, 0.5, -0.35)),
)
_NUSCENES_PRIORITY = ("CAM_FRONT", "CAM_BACK", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
_KITTI_FRONT = ("image_2", 0.0, 81.0, (0.27, 0.06, -0.08))
# Waymo's five cameras (names as the v2 CameraName enum); side cameras are shorter (1920x886 against 1920x1280)
_WAYMO_RING = (
    ("FRONT", 0.0, 50.4, (0.6, 0.0, -0.3)),
    ("FRONT_LEFT", 45.0, 50.4, (0.5, 0.3, -0.3)),
    ("FRONT_RIGHT", -45.0, 50.4, (0.5, -0.3, -0.3)),
    ("SIDE_LEFT", 90.0, 50.4, (0.2, 0.5, -0.3)),
    ("SIDE_RIGHT", -90.0, 50.4, (0.2, -0.5, -0.3)),
)
_WAYMO_SIDE_HEIGHT = 886 / 1280


@dataclass
class Camera:
    """A pinhole camera rigidly mounted on the LiDAR (x right, y down, z forward)."""

    name: str
    intrinsics: np.ndarray  # (3, 3)
    lidar_to_camera: np.ndarray  # (4, 4)
    height: int
    width: int

    def __post_init__(self) -> None:
        cam_to_lidar = invert_rigid(self.lidar_to_camera)
        v, u = np.mgrid[0: self.height, 0: self.width].astype(np.float64)
        k = self.intrinsics
        d = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1).reshape(-1, 3)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        self.dirs_cam_z = d[:, 2]  # optical-axis component of each unit pixel ray (depth = t * this)
        self.dirs = d @ cam_to_lidar[:3, :3].T  # (H*W, 3) in the LiDAR frame
        self.origin = cam_to_lidar[:3, 3]

    def spans(self, centers: np.ndarray, radius: np.ndarray, far: float,
              corners: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Pixel rectangles (r0, nr, c0, nc) covered by spheres given in the camera frame.

        Per image axis, the pixels a sphere can cover lie between its two tangent planes through that axis (exact
        for the sphere, and conservative when it crosses the camera plane, since camera rays all look forward).
        ``corners`` (P, 8, 3), the camera-frame corners of each primitive's bounding box, tighten the rectangle of
        primitives lying wholly in front of the camera to the bounds of the projected corners (a projected box is
        the convex hull of its projected corners).
        """
        k = self.intrinsics
        lim = np.pi / 2 - 1e-6

        def axis(a: np.ndarray, focal: float, centre: float) -> tuple[np.ndarray, np.ndarray]:
            rho = np.hypot(a, centers[:, 2])
            with np.errstate(invalid="ignore", divide="ignore"):
                ang = np.arctan2(a, centers[:, 2])
                half = np.arcsin(np.clip(radius / np.maximum(rho, 1e-9), 0, 1))
            lo = focal * np.tan(np.clip(ang - half, -lim, lim)) + centre
            hi = focal * np.tan(np.clip(ang + half, -lim, lim)) + centre
            inside = rho <= radius
            return np.where(inside, -np.inf, lo), np.where(inside, np.inf, hi)

        u_lo, u_hi = axis(centers[:, 0], k[0, 0], k[0, 2])
        v_lo, v_hi = axis(centers[:, 1], k[1, 1], k[1, 2])
        if corners is not None:
            z = corners[..., 2]
            ahead = np.all(z > 1e-3, axis=1)
            if ahead.any():
                c = corners[ahead]
                u = k[0, 0] * c[..., 0] / c[..., 2] + k[0, 2]
                v = k[1, 1] * c[..., 1] / c[..., 2] + k[1, 2]
                u_lo[ahead], u_hi[ahead] = np.maximum(u_lo[ahead], u.min(1)), np.minimum(u_hi[ahead], u.max(1))
                v_lo[ahead], v_hi[ahead] = np.maximum(v_lo[ahead], v.min(1)), np.minimum(v_hi[ahead], v.max(1))

        def cells(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
            first = np.clip(np.ceil(lo - 1e-9), 0, size)
            last = np.clip(np.floor(hi + 1e-9), -1, size - 1)
            return first.astype(np.int64), np.maximum(last - first + 1, 0).astype(np.int64)

        c0, nc = cells(u_lo, u_hi, self.width)
        r0, nr = cells(v_lo, v_hi, self.height)
        gone = (centers[:, 2] + radius < 0) | (np.linalg.norm(centers, axis=1) - radius > far)
        nr = np.where(gone, 0, nr)
        return r0, nr, c0, nc

    def render(self, prims: Primitives, ground: Ground, pose: np.ndarray, rng: np.random.Generator,
               noise: float, light: tuple[np.ndarray, float, float],
               far: float = 250.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ray cast the image.

        ``light`` is (unit vector towards the sun, ambient fraction, exposure). Returns the image (H, W, 3) uint8,
        semantic mask (H, W) int32 (IGNORE_INDEX for sky), instance mask (H, W) int32 and depth (H, W) float32
        (camera z of the surface seen, metres; 0 for sky).
        """
        rot = pose[:3, :3]
        origin = rot @ self.origin + pose[:3, 3]
        dirs_w = self.dirs @ rot.T
        world_to_cam = self.lidar_to_camera @ invert_rigid(pose)
        centers = prims.center @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        corners = prims.box_corners() @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        r0, nr, c0, nc = self.spans(centers, prims.bound_radius, far, corners)
        pair_prim, pair_ray = expand_spans(r0, nr, c0, nc, self.width, wrap=False)
        hits = cast(prims, origin, dirs_w, pair_prim, pair_ray)
        surf = surface(prims, ground, origin, dirs_w, hits, with_albedo=True)
        hit = np.isfinite(surf.t) & (surf.t <= far)
        sky_w = np.clip(dirs_w[:, 2] * 2.5, 0, 1)[:, None]
        sky = _SKY_HORIZON * (1 - sky_w) + _SKY_ZENITH * sky_w
        sun, ambient, exposure = light
        shade = exposure * (ambient + (1.05 - ambient) * np.clip(surf.normal @ sun, 0, 1))
        col = surf.albedo * shade[:, None]
        haze = (1 - np.exp(-np.where(hit, surf.t, 0.0) / 400.0))[:, None]
        col = col * (1 - haze) + _SKY_HORIZON * haze
        col = np.where(hit[:, None], col, sky)
        if noise > 0:
            col = col + rng.normal(0.0, noise, col.shape)
        image = (np.clip(col, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(self.height, self.width, 3)
        label = np.where(hit, surf.label, IGNORE_INDEX).astype(np.int32).reshape(self.height, self.width)
        inst = np.where(hit, surf.instance, 0).astype(np.int32).reshape(self.height, self.width)
        depth = np.where(hit, surf.t * self.dirs_cam_z, 0.0)
        return image, label, inst, depth.astype(np.float32).reshape(self.height, self.width)


def _mount(name: str, yaw_deg: float, hfov_deg: float, position: tuple, size: tuple[int, int]) -> Camera:
    h, w = size
    focal = (w / 2.0) / np.tan(np.deg2rad(hfov_deg) / 2)
    k = np.array([[focal, 0.0, (w - 1) / 2.0], [0.0, focal, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    yaw = np.deg2rad(yaw_deg)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    cam_to_lidar = np.eye(4)
    cam_to_lidar[:3, :3] = np.stack([right, down, forward], axis=1)
    cam_to_lidar[:3, 3] = position
    return Camera(name=name, intrinsics=k, lidar_to_camera=invert_rigid(cam_to_lidar), height=h, width=w)


def make_cameras(config: SyntheticConfig) -> list[Camera]:
    """The camera rig of ``config`` (see :class:`SyntheticConfig` for layouts and naming)."""
    n = config.num_cameras
    size = (int(config.image_size[0]), int(config.image_size[1]))
    layout = config.camera_layout
    if layout == "auto":
        layout = "kitti" if n == 1 else "nuscenes"
    if n == 0:
        return []
    if layout == "kitti":
        return [_mount(*_KITTI_FRONT, size)]
    if layout == "waymo":
        side = (max(1, round(size[0] * _WAYMO_SIDE_HEIGHT)), size[1])
        return [_mount(*spec, side if spec[0].startswith("SIDE") else size) for spec in _WAYMO_RING[:n]]
    chosen = set(_NUSCENES_PRIORITY[:n])
    return [_mount(*spec, size) for spec in _NUSCENES_RING if spec[0] in chosen]
