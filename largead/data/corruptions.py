"""Robo3D-style LiDAR corruptions for any :class:`~largead.data.frame.Frame`: 8 families x 3 severities.

``corrupt(frame, corruption, severity, seed)`` returns a new frame; the input is not modified. Points that survive
keep their labels, instances and per-point ``extra`` arrays; points the corruption adds get
:data:`~largead.data.frame.IGNORE_INDEX` labels, instance 0 and ``-1`` in signed-integer per-point extras
(``0`` / ``False`` in other dtypes). Robo3D gives such points their own ids (fog 21/41, snow 22/42, crosstalk
23/43), which its readers map to ignore.
Everything random comes from ``numpy.random.default_rng(seed)``, so a (frame, corruption, severity, seed) always
gives the same result.

Parameters follow Robo3D (ldkong1205/Robo3D ``create/`` and its README). Where Robo3D relies on
precomputed physics (fog's and snow's particle simulations, LISA's wet-ground model) this module uses the simplified
models below; they reproduce each corruption's defining effect, not Robo3D's exact point clouds.

- ``fog`` (backscatter beta 0.008 / 0.05 / 0.2 per metre): intensity *= ``exp(-2 beta r)``; each return is lost
  with probability ``1 - exp(-2 beta r)`` (so far returns vanish first), and half of the lost returns (at random)
  are replaced by a backscatter point on the same ray at range ``1 + (r - 1) u^2``, ``u ~ U(0, 1)`` (concentrated
  near the sensor), with 10% of the original intensity. [Simplification of Hahner et al.'s fog model.]
- ``snow`` (snowfall rate 0.5 / 1.0 / 2.5 mm/h): each ray meets a flake before its target with probability
  ``1 - exp(-0.004 rate r)``; such returns are replaced by a flake point at a uniform fraction of the range; in
  addition ``round(0.01 rate N)`` flake points are scattered uniformly within 2-20 m of the sensor (azimuth
  uniform, height within the cloud's z range). Flake intensity: 0-10% of the cloud's maximum. Terminal velocity
  (2.0 / 1.6 / 1.6 m/s) only shapes Robo3D's precomputed patterns and has no role here. [Simplification.]
- ``wet_ground`` (water height 0.2 / 1.0 / 1.2 mm; noise floor 0.3 / 0.3 / 0.7, nuScenes 0.2 / 0.3 / 0.7): ground
  points (by label) keep ``rho = exp(-h / 1 mm)`` of their intensity and are lost with probability
  ``noise_floor * (1 - rho)`` (specular reflection off the water film). Non-ground points are untouched.
  [Simplification of the LISA wet-ground model.]
- ``motion_blur`` (s = 0.2 / 0.25 / 0.3 m, Robo3D's KITTI values, used for every dataset): one global translation
  ``N(0, s)`` per axis plus per-point jitter ``N(0, 0.1 s)`` on x, y and ``N(0, 0.05 s)`` on z, each clipped to
  ``+-3`` of its own standard deviation.
- ``beam_missing``: ``B/4``, ``B/2``, ``3B/4`` random beams (KITTI 16 / 32 / 48 of 64; nuScenes 8 / 16 / 24 of 32)
  are removed, drawn from beams ``B//16 .. B - 1 - B//16`` (Robo3D: KITTI 4-58, nuScenes 2-28).
- ``crosstalk`` (fraction 0.006 / 0.008 / 0.01; nuScenes 0.03 / 0.04 / 0.05, where Robo3D's moderate and heavy
  values are our extrapolation from its light 0.03): the chosen points get ``3 N(0, 1)`` added to x, y, z and
  intensity (clipped at 0) and become ignore (Robo3D relabels them as crosstalk).
- ``incomplete_echo``: 75 / 85 / 95% of the vehicle-class points (by label) are removed at random.
- ``cross_sensor``: beams are thinned to mimic a sensor with fewer beams (light drops every 4th beam, moderate
  every 2nd, heavy keeps every 4th: KITTI 16 / 32 / 48 of 64 dropped, nuScenes 8 / 16 / 24 of 32), then every
  second remaining point (in input order) is kept.

Beam index: ``frame.extra["ring"]`` when present (nuScenes' 5th column), else estimated from the elevation angle
by splitting ``[min, max]`` elevation uniformly into ``num_beams`` bins (``num_beams`` defaults to 32 for nuScenes
frames and 64 otherwise). Real sensors space beams non-uniformly, so pass ``ring`` where the data has it.
Vehicle and ground classes are found by class name (:data:`VEHICLE_NAMES`, :data:`GROUND_NAMES`) in the class list
of the frame's registered dataset, or passed explicitly as ``vehicle_classes`` / ``ground_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from largead.data.frame import IGNORE_INDEX, Frame
from largead.data.labels_extra import CORRUPTIONS, SEVERITIES

FOG_BETA = (0.008, 0.05, 0.2)
SNOW_RATE = (0.5, 1.0, 2.5)
WET_WATER_HEIGHT_MM = (0.2, 1.0, 1.2)
WET_NOISE_FLOOR = {"default": (0.3, 0.3, 0.7), "nuscenes": (0.2, 0.3, 0.7)}
MOTION_BLUR_SIGMA = (0.2, 0.25, 0.3)
BEAM_MISSING_FRACTION = (0.25, 0.5, 0.75)
CROSSTALK_FRACTION = {"default": (0.006, 0.008, 0.01), "nuscenes": (0.03, 0.04, 0.05)}
INCOMPLETE_ECHO_DROP = (0.75, 0.85, 0.95)

VEHICLE_NAMES = frozenset({"car", "truck", "bus", "other-vehicle", "other_vehicle", "construction_vehicle", "trailer",
                           "vehicle"})
"""Class names treated as vehicles by ``incomplete_echo``."""
GROUND_NAMES = frozenset({"road", "parking", "sidewalk", "other-ground", "other_ground", "driveable_surface",
                          "other_flat", "lane_marker", "curb", "walkable", "ground", "surface", "asphalt", "concrete"})
"""Class names treated as (paved) ground by ``wet_ground``; vegetation-covered terrain is not included."""


def estimate_beams(points: np.ndarray, num_beams: int) -> np.ndarray:
    """Beam index ``0 .. num_beams-1`` (0 lowest) of each point from its elevation angle, uniform bins. ``(N,)``."""
    xyz = points[:, :3].astype(np.float64)
    elev = np.arctan2(xyz[:, 2], np.linalg.norm(xyz[:, :2], axis=1))
    lo, hi = (elev.min(), elev.max()) if len(elev) else (0.0, 1.0)
    span = max(hi - lo, 1e-9)
    return np.clip(((elev - lo) / span * num_beams).astype(np.int64), 0, num_beams - 1)


def _class_ids(frame: Frame, explicit: Sequence[int] | None, names: frozenset[str], what: str) -> np.ndarray:
    if explicit is not None:
        return np.asarray(list(explicit), dtype=np.int64)
    from largead.data.registry import dataset_class

    try:
        class_names = dataset_class(frame.dataset).class_names
    except KeyError:
        raise ValueError(f"corrupt: frame of dataset {frame.dataset!r} has no registered class list; pass "
                         f"{what}_classes explicitly") from None
    return np.array([i for i, n in enumerate(class_names) if n.lower() in names], dtype=np.int64)


def _require_labels(frame: Frame, corruption: str) -> np.ndarray:
    if frame.labels is None:
        raise ValueError(f"corrupt: {corruption} selects points by class and needs frame.labels (frame "
                         f"{frame.token or frame.index} has none)")
    return frame.labels


def _rays(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xyz = points[:, :3].astype(np.float64)
    r = np.linalg.norm(xyz, axis=1)
    return r, xyz / np.maximum(r, 1e-9)[:, None]


@dataclass
class _Job:
    """What a corruption function reads: the frame, its points, the severity index, the random generator and the
    options of :func:`corrupt`."""

    frame: Frame
    pts: np.ndarray
    s: int
    rng: np.random.Generator
    nusc: bool
    num_beams: int | None
    vehicle_classes: Sequence[int] | None
    ground_classes: Sequence[int] | None

    @property
    def n(self) -> int:
        return len(self.pts)

    def beams(self) -> tuple[np.ndarray, int]:
        """Beam index of every point (``extra["ring"]`` if the reader gave it, else estimated) and the beam count."""
        ring = self.frame.extra.get("ring")
        b = self.num_beams or (32 if self.nusc else 64)
        if ring is not None:
            ring = np.asarray(ring).astype(np.int64)
            if ring.shape != (self.n,):
                raise ValueError(f"corrupt: extra['ring'] has shape {ring.shape}, expected ({self.n},)")
            return ring, max(b, int(ring.max()) + 1 if self.n else b)
        return estimate_beams(self.pts, b), b


@dataclass
class _Effect:
    """What a corruption does: ``keep`` (indices of the input points that survive), ``kept`` (their possibly
    modified values), ``added`` (new points, labelled ignore) and ``relabel`` (input points that become ignore)."""

    keep: np.ndarray
    kept: np.ndarray
    added: np.ndarray | None = None
    relabel: np.ndarray | None = None


def _drop(job: _Job, lost: np.ndarray) -> _Effect:
    keep = np.nonzero(~lost)[0]
    return _Effect(keep, job.pts[keep].copy())


def _fog(job: _Job) -> _Effect:
    pts, n, rng = job.pts, job.n, job.rng
    beta = FOG_BETA[job.s]
    r, dirs = _rays(pts)
    att = np.exp(-2.0 * beta * r)
    lost = rng.random(n) > att
    scatter = lost & (rng.random(n) < 0.5)
    effect = _drop(job, lost)
    effect.kept[:, 3] *= att[effect.keep].astype(pts.dtype)
    d = 1.0 + (np.maximum(r[scatter], 1.0) - 1.0) * rng.random(int(scatter.sum())) ** 2
    effect.added = np.zeros((len(d), pts.shape[1]), pts.dtype)
    effect.added[:, :3] = dirs[scatter] * d[:, None]
    effect.added[:, 3] = 0.1 * pts[scatter, 3]
    return effect


def _snow(job: _Job) -> _Effect:
    pts, n, rng = job.pts, job.n, job.rng
    rate = SNOW_RATE[job.s]
    r, dirs = _rays(pts)
    hit = rng.random(n) < 1.0 - np.exp(-0.004 * rate * r)
    effect = _drop(job, hit)
    imax = float(pts[:, 3].max()) if n else 1.0
    d = r[hit] * rng.uniform(0.05, 1.0, int(hit.sum()))
    m = round(0.01 * rate * n)
    az = rng.uniform(-np.pi, np.pi, m)
    rho = rng.uniform(2.0, 20.0, m)
    zlo, zhi = (float(pts[:, 2].min()), float(pts[:, 2].max())) if n else (-2.0, 2.0)
    added = np.zeros((int(hit.sum()) + m, pts.shape[1]), pts.dtype)
    added[: len(d), :3] = dirs[hit] * d[:, None]
    added[len(d):, 0] = rho * np.cos(az)
    added[len(d):, 1] = rho * np.sin(az)
    added[len(d):, 2] = rng.uniform(zlo, zhi, m)
    added[:, 3] = rng.uniform(0.0, 0.1 * imax, len(added))
    effect.added = added
    return effect


def _wet_ground(job: _Job) -> _Effect:
    labels = _require_labels(job.frame, "wet_ground")
    ground = np.isin(labels, _class_ids(job.frame, job.ground_classes, GROUND_NAMES, "ground"))
    rho = np.exp(-WET_WATER_HEIGHT_MM[job.s] / 1.0)
    floor = WET_NOISE_FLOOR["nuscenes" if job.nusc else "default"][job.s]
    effect = _drop(job, ground & (job.rng.random(job.n) < floor * (1.0 - rho)))
    effect.kept[ground[effect.keep], 3] *= rho
    return effect


def _motion_blur(job: _Job) -> _Effect:
    sigma = MOTION_BLUR_SIGMA[job.s]
    shift = np.clip(job.rng.normal(0.0, sigma, 3), -3 * sigma, 3 * sigma)
    std = np.array([0.1, 0.1, 0.05]) * sigma
    jitter = np.clip(job.rng.normal(0.0, 1.0, (job.n, 3)), -3.0, 3.0) * std
    kept = job.pts.copy()
    kept[:, :3] = (job.pts[:, :3] + shift + jitter).astype(job.pts.dtype)
    return _Effect(np.arange(job.n), kept)


def _beam_missing(job: _Job) -> _Effect:
    ring, b = job.beams()
    lo, hi = b // 16, b - 1 - b // 16
    k = round(BEAM_MISSING_FRACTION[job.s] * b)
    dropped = job.rng.choice(np.arange(lo, hi + 1), size=k, replace=False)
    return _drop(job, np.isin(ring, dropped))


def _crosstalk(job: _Job) -> _Effect:
    n, rng = job.n, job.rng
    frac = CROSSTALK_FRACTION["nuscenes" if job.nusc else "default"][job.s]
    m = round(frac * n)
    chosen = rng.choice(n, size=m, replace=False)
    kept = job.pts.copy()
    kept[chosen, :4] += (3.0 * rng.normal(0.0, 1.0, (m, 4))).astype(job.pts.dtype)
    kept[chosen, 3] = np.maximum(kept[chosen, 3], 0)
    relabel = np.zeros(n, bool)
    relabel[chosen] = True
    return _Effect(np.arange(n), kept, relabel=relabel)


def _incomplete_echo(job: _Job) -> _Effect:
    labels = _require_labels(job.frame, "incomplete_echo")
    vehicle = np.nonzero(np.isin(labels, _class_ids(job.frame, job.vehicle_classes, VEHICLE_NAMES, "vehicle")))[0]
    m = round(INCOMPLETE_ECHO_DROP[job.s] * len(vehicle))
    lost = np.zeros(job.n, bool)
    lost[job.rng.choice(vehicle, size=m, replace=False)] = True
    return _drop(job, lost)


def _cross_sensor(job: _Job) -> _Effect:
    ring, _ = job.beams()
    keep_beam = (ring % 4 != 0, ring % 2 == 0, ring % 4 == 0)[job.s]
    keep = np.nonzero(keep_beam)[0][::2]
    return _Effect(keep, job.pts[keep].copy())


_FAMILIES = {"fog": _fog, "wet_ground": _wet_ground, "snow": _snow, "motion_blur": _motion_blur,
             "beam_missing": _beam_missing, "crosstalk": _crosstalk, "incomplete_echo": _incomplete_echo,
             "cross_sensor": _cross_sensor}
"""One function per Robo3D corruption family (see the module docstring for each model)."""


def corrupt(frame: Frame, corruption: str, severity: str | int, seed: int = 0, *, num_beams: int | None = None,
            vehicle_classes: Sequence[int] | None = None, ground_classes: Sequence[int] | None = None) -> Frame:
    """Apply Robo3D corruption ``corruption`` at ``severity`` (``"light"``/``"moderate"``/``"heavy"`` or 0/1/2).

    Returns a new :class:`Frame` (cameras, pose and metadata shared with the input) whose ``extra`` records
    ``corruption`` and ``severity``. See the module docstring for each family's model and parameters.
    """
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corrupt: unknown corruption {corruption!r}; choose from {CORRUPTIONS}")
    s = SEVERITIES.index(severity) if isinstance(severity, str) and severity in SEVERITIES else severity
    if not isinstance(s, (int, np.integer)) or not 0 <= s < 3:
        raise ValueError(f"corrupt: severity must be one of {SEVERITIES} or 0..2, got {severity!r}")
    pts = frame.points
    job = _Job(frame, pts, int(s), np.random.default_rng(seed), frame.dataset.startswith("nuscenes"), num_beams,
               vehicle_classes, ground_classes)
    effect = _FAMILIES[corruption](job)
    added = effect.added if effect.added is not None else np.zeros((0, pts.shape[1]), pts.dtype)
    relabel = effect.relabel if effect.relabel is not None else np.zeros(len(pts), bool)
    return _assemble(frame, effect.keep, effect.kept, added, relabel[effect.keep], corruption, SEVERITIES[s], seed)


def _assemble(frame: Frame, keep: np.ndarray, kept: np.ndarray, added: np.ndarray, relabel: np.ndarray,
              corruption: str, severity: str, seed: int) -> Frame:
    n, m = len(frame.points), len(added)

    def follow(arr: np.ndarray | None, fill) -> np.ndarray | None:
        if arr is None:
            return None
        return np.concatenate([arr[keep], np.full(m, fill, dtype=arr.dtype)])

    labels = follow(frame.labels, IGNORE_INDEX)
    instances = follow(frame.instances, 0)
    if labels is not None:
        labels[: len(keep)][relabel] = IGNORE_INDEX
    if instances is not None:
        instances[: len(keep)][relabel] = 0
    extra = {}
    for key, val in frame.extra.items():
        if isinstance(val, np.ndarray) and val.ndim >= 1 and len(val) == n:
            pad = np.full((m, *val.shape[1:]), -1 if val.dtype.kind == "i" else 0, dtype=val.dtype)
            extra[key] = np.concatenate([val[keep], pad])
        else:
            extra[key] = val
    extra.update(corruption=corruption, severity=severity, corruption_seed=seed, added_points=m)
    points = np.concatenate([kept, added.astype(kept.dtype)]) if m else kept
    return replace(frame, points=points, labels=labels, instances=instances, extra=extra)
