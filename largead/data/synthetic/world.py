"""Procedural street scenes: classes, configuration, and the layout of one sequence.

A sequence is a straight street along the world +x axis (y to the left, z up, ground at z = 0): a road with lanes in
both directions (right-hand traffic: +x lanes at y < 0), optional bike and parking lanes, lane marks, raised sidewalks,
terrain strips, buildings with facades, street trees, bushes, lamp poles, traffic signs, parked and moving cars and
trucks, cyclists and pedestrians, and sometimes a crossing street with zebra crossings. The ego vehicle drives along
one +x lane at constant speed with a small lateral sway. Everything is drawn from one ``numpy`` generator seeded by
``(config.seed, sequence)``, so a sequence is a pure function of those two numbers.

Moving objects translate at constant velocity, so their displacement between two frames is exactly
``velocity * (t1 - t0)``. Instance ids are stable over a sequence and name one labelled part of an object, so every
instance has a single class: a tree is two instances (trunk, crown), a sign two (post, plate); a car (body, cabin,
wheels), a truck, a cyclist (bicycle and rider) or a pedestrian is one. Road, sidewalk and terrain have instance 0.

Simplifications worth knowing: objects never turn or accelerate; pedestrians walk along the sidewalks and, where a
crossing street interrupts them, cross it at sidewalk height (0.15 m above the road); curbs are approximated (a ray
entering through a curb face is placed half-way between road and sidewalk level).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from largead.data.synthetic.raycast import BOX, CYLINDER, ELLIPSOID, Primitives

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "road",  # 0  incl. lane marks and zebra crossings
    "sidewalk",  # 1  incl. curbs
    "terrain",  # 2  grass / soil
    "building",  # 3
    "vegetation",  # 4  tree crowns, bushes
    "trunk",  # 5
    "pole",  # 6  lamp posts and sign posts
    "traffic_sign",  # 7  sign plates
    "car",  # 8
    "truck",  # 9
    "bicyclist",  # 10 rider and bicycle together
    "pedestrian",  # 11
)
"""Training ids ``0..11`` of the synthetic world; names follow SemanticKITTI / nuScenes where they exist."""

(ROAD, SIDEWALK, TERRAIN, BUILDING, VEGETATION, TRUNK, POLE, TRAFFIC_SIGN, CAR, TRUCK, BICYCLIST,
 PEDESTRIAN) = range(len(SYNTHETIC_CLASSES))

# Texture codes understood by the camera shader (sensors.py).
TEX_PLAIN, TEX_FACADE, TEX_FOLIAGE, TEX_BARK, TEX_SIGN, TEX_GLASS = range(6)

_LAYOUTS = ("auto", "nuscenes", "kitti", "waymo")


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that shapes the synthetic world and its sensors.

    Attributes:
        seed: world seed; sequence ``s`` is drawn from ``numpy.random.default_rng([seed, s])``.
        frames_per_sequence: frames per sequence (sets how far the ego drives, hence the world's extent).
        frame_interval: seconds between frames (0.5 s like nuScenes keyframes).
        beams: LiDAR beams (32 like nuScenes' HDL-32E, 64 like KITTI's HDL-64E).
        vertical_fov: (up, down) elevation of the top and bottom beam in degrees, beams spaced uniformly;
            ``None`` picks HDL-32E's (10.67, -30.67) for fewer than 64 beams and HDL-64E's (2.0, -24.8) otherwise.
        azimuth_resolution: degrees between columns of the spinning LiDAR (1/3 -> 1080 columns).
        max_range, min_range: returns outside [min_range, max_range] metres are dropped.
        lidar_height: LiDAR height above the road, metres; ``None``: 1.84 (nuScenes) below 64 beams, else 1.73 (KITTI).
        range_noise: standard deviation of the Gaussian range noise, metres.
        dropout: probability that a return is dropped at random.
        intensity_scale: intensities are reflectance in [0, 1] times this (255 like nuScenes, 1 like KITTI).
        intensity_noise: relative standard deviation of the multiplicative intensity noise.
        num_cameras: 0 to 6 pinhole cameras.
        image_size: (height, width) of every image in pixels.
        camera_layout: ``"nuscenes"`` (ring of 6 named CAM_*, the first ``num_cameras`` in priority order front,
            back, front-left, front-right, back-left, back-right), ``"kitti"`` (one front camera ``image_2``, 81
            degrees wide), ``"waymo"`` (up to 5 cameras named FRONT, FRONT_LEFT, FRONT_RIGHT, SIDE_LEFT, SIDE_RIGHT
            in that priority order, 50.4 degrees wide, looking 0, +45, -45, +90, -90 degrees; the two side cameras
            are ``round(H * 886 / 1280)`` pixels high, as Waymo's 1920x886 side images against its 1920x1280 front
            ones, so a frame mixes image sizes) or ``"auto"`` (kitti when ``num_cameras == 1``, else nuscenes).
            ``image_size`` is the (front) image size.
        image_noise: standard deviation of the per-pixel colour noise (0-1 scale).
        traffic: multiplies the density of vehicles, cyclists and pedestrians.
        tag: written to ``Frame.dataset`` and the sequence names (e.g. to tell two simulated sensors apart).
    """

    seed: int = 0
    frames_per_sequence: int = 8
    frame_interval: float = 0.5
    beams: int = 32
    vertical_fov: tuple[float, float] | None = None
    azimuth_resolution: float = 1.0 / 3.0
    max_range: float = 70.0
    min_range: float = 1.0
    lidar_height: float | None = None
    range_noise: float = 0.02
    dropout: float = 0.03
    intensity_scale: float = 255.0
    intensity_noise: float = 0.08
    num_cameras: int = 6
    image_size: tuple[int, int] = (96, 160)
    camera_layout: str = "auto"
    image_noise: float = 0.02
    traffic: float = 1.0
    tag: str = "synthetic"

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"SyntheticConfig.{name} = {getattr(self, name)!r}: expected {expected}")

        if self.frames_per_sequence < 1:
            raise bad("frames_per_sequence", "an integer >= 1")
        if not self.frame_interval > 0:
            raise bad("frame_interval", "a positive number of seconds")
        if not 1 <= self.beams <= 256:
            raise bad("beams", "an integer in 1..256")
        if self.vertical_fov is not None and not (len(self.vertical_fov) == 2 and
                                                  90 > self.vertical_fov[0] > self.vertical_fov[1] > -90):
            raise bad("vertical_fov", "(up, down) degrees with 90 > up > down > -90")
        if not 0.01 <= self.azimuth_resolution <= 10:
            raise bad("azimuth_resolution", "degrees in [0.01, 10]")
        if not 0 <= self.min_range < self.max_range:
            raise bad("max_range", f"a range above min_range = {self.min_range}")
        if self.lidar_height is not None and not 0.3 <= self.lidar_height <= 5:
            raise bad("lidar_height", "metres in [0.3, 5] or None")
        if self.range_noise < 0 or not 0 <= self.dropout < 1 or self.intensity_noise < 0 or self.image_noise < 0:
            raise ValueError("SyntheticConfig: range_noise, intensity_noise, image_noise must be >= 0 and dropout "
                             f"in [0, 1); got {self.range_noise}, {self.intensity_noise}, {self.image_noise}, "
                             f"{self.dropout}")
        if not self.intensity_scale > 0:
            raise bad("intensity_scale", "a positive number (255.0 like nuScenes, 1.0 like KITTI)")
        if not 0 <= self.num_cameras <= 6:
            raise bad("num_cameras", "an integer in 0..6")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise bad("image_size", "(height, width) with both >= 8 pixels")
        if self.camera_layout not in _LAYOUTS:
            raise bad("camera_layout", f"one of {_LAYOUTS}")
        if self.camera_layout == "kitti" and self.num_cameras > 1:
            raise bad("camera_layout", "'nuscenes' or 'auto' when num_cameras > 1 (the kitti layout has one camera)")
        if self.camera_layout == "waymo" and self.num_cameras > 5:
            raise bad("num_cameras", "0..5 with the waymo layout (Waymo has five cameras)")
        if self.traffic < 0:
            raise bad("traffic", "a non-negative density factor")

    @classmethod
    def nuscenes_like(cls, **overrides) -> SyntheticConfig:
        """A 32-beam LiDAR with 0-255 intensities and a ring of 6 cameras (the defaults)."""
        return cls(**{"beams": 32, "intensity_scale": 255.0, "num_cameras": 6, "tag": "synthetic-nuscenes",
                      **overrides})

    @classmethod
    def kitti_like(cls, **overrides) -> SyntheticConfig:
        """A 64-beam LiDAR with 0-1 intensities and one wide front camera."""
        return cls(**{"beams": 64, "intensity_scale": 1.0, "num_cameras": 1, "image_size": (64, 208),
                      "tag": "synthetic-kitti", **overrides})

    @property
    def fov(self) -> tuple[float, float]:
        """(up, down) elevation of the top and bottom beam, degrees."""
        if self.vertical_fov is not None:
            return (float(self.vertical_fov[0]), float(self.vertical_fov[1]))
        return (10.67, -30.67) if self.beams < 64 else (2.0, -24.8)

    @property
    def sensor_height(self) -> float:
        """LiDAR height above the road, metres."""
        if self.lidar_height is not None:
            return float(self.lidar_height)
        return 1.84 if self.beams < 64 else 1.73

    def with_(self, **changes) -> SyntheticConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass
class Ground:
    """The street's ground: road (z = 0) and raised sidewalk / terrain (z = ``curb``), in world coordinates.

    The main road covers ``|y| < half_width``; an optional crossing street covers ``|x - cross_x| < cross_half``.
    Sidewalks are bands of width ``sidewalk`` beyond the road edges; terrain is everything else.
    """

    half_width: float
    lanes_per_dir: int
    lane_width: float
    sidewalk: float
    curb: float
    cross_x: float | None
    cross_half: float
    asphalt: np.ndarray  # (3,) RGB
    paving: np.ndarray  # (3,)
    grass: np.ndarray  # (3,)
    soil: np.ndarray  # (3,)
    noise_seed: int

    def region(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N,) semantic id (ROAD, SIDEWALK or TERRAIN) of ground points at world ``(x, y)``."""
        ay = np.abs(y)
        road = ay < self.half_width
        walk = ay < self.half_width + self.sidewalk
        if self.cross_x is not None:
            dx = np.abs(x - self.cross_x)
            road |= dx < self.cross_half
            walk |= dx < self.cross_half + self.sidewalk
        return np.where(road, ROAD, np.where(walk, SIDEWALK, TERRAIN))

    def marks(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N,) bool: painted marks (lane lines, zebra crossings) at world ``(x, y)`` on the road."""
        ay = np.abs(y)
        w, lw, n = 0.075, self.lane_width, self.lanes_per_dir
        in_cross = np.zeros(x.shape, bool) if self.cross_x is None else np.abs(x - self.cross_x) < self.cross_half
        marks = (ay < w) & ~in_cross  # centre line
        for k in range(1, n):  # dashed lane dividers (3 m paint, 6 m gap)
            marks |= (np.abs(ay - k * lw) < w) & (np.mod(x, 9.0) < 3.0) & ~in_cross
        edge = n * lw
        if self.half_width - edge > 0.5:  # solid line between traffic lanes and bike / parking lanes
            marks |= (np.abs(ay - edge) < w) & ~in_cross
        if self.cross_x is not None:
            dx = np.abs(x - self.cross_x)
            zebra = (dx > self.cross_half + 0.5) & (dx < self.cross_half + 3.5) & (ay < self.half_width)
            marks |= zebra & (np.mod(y, 1.0) < 0.5)
            marks |= (np.abs(x - self.cross_x) < w) & (ay > self.half_width) & (np.mod(y, 9.0) < 3.0)
        return marks


@dataclass
class Layout:
    """One sequence: its ground, its primitives (world frame, at t = 0), the ego trajectory and the lighting
    (unit vector towards the sun, ambient light fraction, camera exposure)."""

    ground: Ground
    prims: Primitives
    ego_x0: float
    ego_speed: float
    ego_y: float
    sway_amplitude: float
    sway_period: float
    sway_phase: float
    sensor_height: float
    num_instances: int
    sun: np.ndarray = field(default_factory=lambda: np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84]))
    ambient: float = 0.45
    exposure: float = 1.0
    counts: dict[str, int] = field(default_factory=dict)

    def ego_state(self, t: float) -> tuple[float, float, float]:
        """Ego (x, y, yaw) at time ``t`` seconds."""
        w = 2 * np.pi / self.sway_period
        x = self.ego_x0 + self.ego_speed * t
        y = self.ego_y + self.sway_amplitude * np.sin(w * t + self.sway_phase)
        dy = self.sway_amplitude * w * np.cos(w * t + self.sway_phase)
        return float(x), float(y), float(np.arctan2(dy, self.ego_speed))

    def pose(self, t: float) -> np.ndarray:
        """(4, 4) LiDAR-to-world transform at time ``t`` (LiDAR x forward, y left, z up)."""
        x, y, yaw = self.ego_state(t)
        m = np.eye(4)
        c, s = np.cos(yaw), np.sin(yaw)
        m[:2, :2] = [[c, -s], [s, c]]
        m[:3, 3] = (x, y, self.sensor_height)
        return m


class _Builder:
    """Collects primitives one object at a time (layout generation only; a few hundred objects per sequence)."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.next_instance = 1
        self.counts: dict[str, int] = {}

    def new_instance(self, what: str) -> int:
        self.counts[what] = self.counts.get(what, 0) + 1
        inst = self.next_instance
        self.next_instance += 1
        return inst

    def add(self, kind: int, center, size, yaw: float, label: int, inst: int, color, texture: int, refl: float,
            velocity=(0.0, 0.0, 0.0)) -> None:
        self.rows.append((kind, tuple(center), tuple(size), yaw, label, inst, tuple(np.clip(color, 0, 1)), texture,
                          refl, tuple(velocity)))

    def build(self) -> Primitives:
        if not self.rows:
            raise ValueError("synthetic layout produced no primitives")
        fields = ("kind", "center", "size", "yaw", "label", "instance", "color", "texture", "reflectivity", "velocity")
        integer = {"kind", "label", "instance", "texture"}
        return Primitives(**{name: np.asarray(col, dtype=np.int64 if name in integer else np.float64)
                             for name, col in zip(fields, zip(*self.rows))})


_BUILDING_COLORS = np.array([[0.80, 0.74, 0.62], [0.66, 0.36, 0.28], [0.88, 0.87, 0.83], [0.56, 0.56, 0.59],
                             [0.74, 0.63, 0.46], [0.52, 0.44, 0.39], [0.63, 0.69, 0.73], [0.83, 0.78, 0.70]])
_CAR_COLORS = np.array([[0.78, 0.08, 0.08], [0.10, 0.20, 0.62], [0.92, 0.92, 0.92], [0.08, 0.08, 0.09],
                        [0.60, 0.61, 0.63], [0.18, 0.40, 0.24], [0.88, 0.75, 0.16], [0.34, 0.34, 0.40]])
_TRUCK_COLORS = np.array([[0.93, 0.93, 0.93], [0.85, 0.50, 0.10], [0.20, 0.32, 0.72], [0.72, 0.12, 0.10]])
_SKIN = np.array([[0.95, 0.80, 0.70], [0.82, 0.62, 0.47], [0.56, 0.39, 0.27], [0.36, 0.25, 0.18]])
_SIGN_COLORS = np.array([[0.80, 0.08, 0.08], [0.08, 0.28, 0.75], [0.95, 0.80, 0.10]])
_GLASS = np.array([0.16, 0.20, 0.26])


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float = 0.06) -> np.ndarray:
    return np.clip(color * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, amount / 3, 3), 0, 1)


def _car(b: _Builder, rng: np.random.Generator, x: float, y: float, yaw: float, vel: tuple) -> None:
    inst = b.new_instance("car")
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95)
    color = _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))])
    refl = rng.uniform(0.12, 0.35)
    c, s = np.cos(yaw), np.sin(yaw)

    def at(u: float, v: float, z: float) -> tuple:
        return (x + c * u - s * v, y + s * u + c * v, z)

    b.add(BOX, at(0, 0, 0.65), (length / 2, width / 2, 0.37), yaw, CAR, inst, color, TEX_PLAIN, refl, vel)
    cab_len = length * rng.uniform(0.45, 0.58)
    cab_h = rng.uniform(0.42, 0.55)
    b.add(BOX, at(-0.08 * length, 0, 1.02 + cab_h / 2), (cab_len / 2, width / 2 - 0.08, cab_h / 2), yaw, CAR, inst,
          0.55 * _GLASS + 0.25 * color, TEX_GLASS, 0.05, vel)
    for u in (-0.32 * length, 0.32 * length):
        for v in (-(width / 2 - 0.12), width / 2 - 0.12):
            b.add(ELLIPSOID, at(u, v, 0.33), (0.33, 0.13, 0.33), yaw, CAR, inst, (0.06, 0.06, 0.07), TEX_PLAIN,
                  0.04, vel)


def _truck(b: _Builder, rng: np.random.Generator, x: float, y: float, yaw: float, vel: tuple) -> float:
    inst = b.new_instance("truck")
    cargo, width = rng.uniform(5.0, 8.0), rng.uniform(2.3, 2.55)
    cab_color = _jitter(rng, _TRUCK_COLORS[rng.integers(len(_TRUCK_COLORS))])
    box_color = _jitter(rng, _TRUCK_COLORS[rng.integers(len(_TRUCK_COLORS))])
    refl = rng.uniform(0.2, 0.45)
    length = cargo + 2.3
    c, s = np.cos(yaw), np.sin(yaw)

    def at(u: float, v: float, z: float) -> tuple:
        return (x + c * u - s * v, y + s * u + c * v, z)

    h = rng.uniform(2.8, 3.6)
    b.add(BOX, at(length / 2 - 1.1, 0, 1.55), (1.05, width / 2 - 0.05, 1.05), yaw, TRUCK, inst, cab_color, TEX_PLAIN,
          refl, vel)
    b.add(BOX, at(length / 2 - 1.1 + 0.6, 0, 2.25), (0.3, width / 2 - 0.1, 0.3), yaw, TRUCK, inst, _GLASS, TEX_GLASS,
          0.05, vel)
    b.add(BOX, at(-length / 2 + cargo / 2, 0, 0.75 + h / 2), (cargo / 2, width / 2, h / 2), yaw, TRUCK, inst,
          box_color, TEX_PLAIN, refl, vel)
    for u in (length / 2 - 1.3, -length / 2 + 1.2, -length / 2 + 2.4):
        for v in (-(width / 2 - 0.2), width / 2 - 0.2):
            b.add(ELLIPSOID, at(u, v, 0.48), (0.48, 0.16, 0.48), yaw, TRUCK, inst, (0.06, 0.06, 0.07), TEX_PLAIN,
                  0.04, vel)
    return length


def _pedestrian(b: _Builder, rng: np.random.Generator, x: float, y: float, yaw: float, vel: tuple) -> None:
    inst = b.new_instance("pedestrian")
    h = rng.uniform(1.55, 1.92)
    shirt = rng.uniform(0.05, 0.95, 3)
    trousers = _jitter(rng, np.array([0.12, 0.14, 0.25]) if rng.random() < 0.6 else rng.uniform(0.05, 0.6, 3))
    refl = rng.uniform(0.08, 0.22)
    leg_h = 0.47 * h
    b.add(BOX, (x, y, leg_h / 2), (0.12, 0.17, leg_h / 2), yaw, PEDESTRIAN, inst, trousers, TEX_PLAIN, refl, vel)
    b.add(ELLIPSOID, (x, y, leg_h + 0.17 * h), (0.15, 0.24, 0.21 * h), yaw, PEDESTRIAN, inst, shirt, TEX_PLAIN, refl,
          vel)
    b.add(ELLIPSOID, (x, y, h - 0.11), (0.1, 0.1, 0.12), yaw, PEDESTRIAN, inst, _SKIN[rng.integers(len(_SKIN))],
          TEX_PLAIN, refl, vel)


def _cyclist(b: _Builder, rng: np.random.Generator, x: float, y: float, yaw: float, vel: tuple) -> None:
    inst = b.new_instance("bicyclist")
    c, s = np.cos(yaw), np.sin(yaw)

    def at(u: float, z: float) -> tuple:
        return (x + c * u, y + s * u, z)

    frame = rng.uniform(0.05, 0.9, 3)
    shirt = rng.uniform(0.05, 0.95, 3)
    refl = rng.uniform(0.1, 0.3)
    for u in (-0.55, 0.55):
        b.add(ELLIPSOID, at(u, 0.34), (0.34, 0.04, 0.34), yaw, BICYCLIST, inst, (0.08, 0.08, 0.08), TEX_PLAIN, 0.05,
              vel)
    b.add(BOX, at(0.0, 0.62), (0.5, 0.05, 0.15), yaw, BICYCLIST, inst, frame, TEX_PLAIN, refl, vel)
    b.add(BOX, at(-0.1, 0.85), (0.16, 0.16, 0.2), yaw, BICYCLIST, inst, (0.12, 0.13, 0.22), TEX_PLAIN, refl, vel)
    b.add(ELLIPSOID, at(0.05, 1.3), (0.22, 0.2, 0.3), yaw, BICYCLIST, inst, shirt, TEX_PLAIN, refl, vel)
    b.add(ELLIPSOID, at(0.15, 1.72), (0.11, 0.1, 0.12), yaw, BICYCLIST, inst, _SKIN[rng.integers(len(_SKIN))],
          TEX_PLAIN, refl, vel)


def _tree(b: _Builder, rng: np.random.Generator, x: float, y: float, ground_z: float) -> None:
    trunk_h = rng.uniform(1.8, 3.5)
    radius = rng.uniform(0.12, 0.26)
    crown = rng.uniform(1.3, 2.8)
    trunk = b.new_instance("tree")
    b.add(CYLINDER, (x, y, ground_z + trunk_h / 2), (radius, radius, trunk_h / 2), 0.0, TRUNK, trunk,
          _jitter(rng, np.array([0.36, 0.26, 0.17])), TEX_BARK, rng.uniform(0.1, 0.2))
    leaves = b.new_instance("crown")
    green = _jitter(rng, np.array([rng.uniform(0.14, 0.34), rng.uniform(0.36, 0.55), rng.uniform(0.08, 0.2)]), 0.1)
    rz = crown * rng.uniform(0.8, 1.3)
    b.add(ELLIPSOID, (x, y, ground_z + trunk_h + 0.65 * rz), (crown, crown, rz), rng.uniform(0, np.pi), VEGETATION,
          leaves, green, TEX_FOLIAGE, rng.uniform(0.12, 0.25))


def generate_layout(config: SyntheticConfig, sequence: int) -> Layout:
    """Draw sequence ``sequence`` of the world seeded by ``config.seed`` (pure function of the two)."""
    if sequence < 0:
        raise ValueError(f"sequence index must be >= 0, got {sequence}")
    rng = np.random.default_rng([int(config.seed), int(sequence)])
    b = _Builder()
    dens = config.traffic

    # --- road cross-section and ego trajectory
    lw = 3.5
    n = int(rng.choice([1, 2], p=[0.55, 0.45]))
    bike = 1.5 if rng.random() < 0.5 else 0.0
    parking = 2.3 if rng.random() < 0.7 else 0.0
    half = n * lw + bike + parking
    sidewalk = rng.uniform(2.0, 4.0)
    curb = 0.15
    ego_speed = rng.uniform(4.0, 10.0)
    travel = ego_speed * config.frame_interval * (config.frames_per_sequence - 1)
    reach = max(config.max_range, 50.0) + 25.0
    x_lo, x_hi = -reach, travel + reach
    cross_x = float(rng.uniform(0.2 * travel + 10, travel + 35)) if rng.random() < 0.5 else None
    cross_half = lw + (1.5 if rng.random() < 0.5 else 0.0)
    ego_lane = int(rng.integers(n))
    ground = Ground(half_width=half, lanes_per_dir=n, lane_width=lw, sidewalk=sidewalk, curb=curb, cross_x=cross_x,
                    cross_half=cross_half, asphalt=np.full(3, rng.uniform(0.26, 0.36)) * (1.0, 1.0, 1.04),
                    paving=_jitter(rng, np.array([0.64, 0.62, 0.58]), 0.05),
                    grass=_jitter(rng, np.array([0.30, 0.47, 0.18]), 0.08),
                    soil=_jitter(rng, np.array([0.46, 0.38, 0.27]), 0.05), noise_seed=int(rng.integers(2**31)))

    def near_cross(x: np.ndarray | float, margin: float) -> np.ndarray | bool:
        return cross_x is not None and abs(x - cross_x) < cross_half + margin

    # --- buildings along both sides, beyond the sidewalk and a terrain strip
    for side in (-1.0, 1.0):
        x = x_lo + rng.uniform(0, 10)
        setback = rng.uniform(0.5, 7.0)
        while x < x_hi:
            width = rng.uniform(8.0, 26.0)
            gap = rng.uniform(1.0, 9.0)
            if cross_x is not None and x + width > cross_x - cross_half - sidewalk - 2 and \
                    x < cross_x + cross_half + sidewalk + 2:
                x = cross_x + cross_half + sidewalk + 2 + rng.uniform(0, 4)
                continue
            depth, height = rng.uniform(8.0, 18.0), rng.uniform(4.0, 24.0)
            front = half + sidewalk + setback + rng.uniform(0, 2.0)
            inst = b.new_instance("building")
            color = _jitter(rng, _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS))])
            b.add(BOX, (x + width / 2, side * (front + depth / 2), curb + height / 2),
                  (width / 2, depth / 2, height / 2), 0.0, BUILDING, inst, color, TEX_FACADE, rng.uniform(0.15, 0.4))
            x += width + gap
        # terrain strip: bushes and trees between the sidewalk and the buildings
        strip_lo, strip_hi = half + sidewalk, half + sidewalk + setback
        if setback > 1.5:
            for _ in range(rng.poisson((x_hi - x_lo) / 12.0)):
                bx = rng.uniform(x_lo, x_hi)
                if near_cross(bx, sidewalk + 1):
                    continue
                r = rng.uniform(0.35, min(1.2, setback / 2))
                inst = b.new_instance("bush")
                green = _jitter(rng, np.array([0.22, 0.42, 0.15]), 0.12)
                b.add(ELLIPSOID, (bx, side * rng.uniform(strip_lo + r, strip_hi - r + 1e-3), curb + 0.6 * r),
                      (r * rng.uniform(1.0, 1.8), r, r * 0.9), rng.uniform(0, np.pi), VEGETATION, inst, green,
                      TEX_FOLIAGE, rng.uniform(0.1, 0.22))
            for _ in range(rng.poisson((x_hi - x_lo) / 30.0)):
                tx = rng.uniform(x_lo, x_hi)
                if not near_cross(tx, sidewalk + 3):
                    _tree(b, rng, tx, side * rng.uniform(strip_lo + 0.5, strip_hi - 0.3), curb)
        # street furniture on the sidewalk: trees near the curb, lamp posts, signs
        if rng.random() < 0.65:
            x = x_lo + rng.uniform(0, 8)
            while x < x_hi:
                if not near_cross(x, sidewalk + 2):
                    _tree(b, rng, x, side * (half + 0.9), curb)
                x += rng.uniform(8.0, 16.0)
        x = x_lo + rng.uniform(0, 20)
        lamp_h = rng.uniform(6.0, 8.5)
        while x < x_hi:
            if not near_cross(x, 1.0):
                inst = b.new_instance("lamp")
                b.add(CYLINDER, (x, side * (half + 0.45), curb + lamp_h / 2), (0.1, 0.1, lamp_h / 2), 0.0, POLE,
                      inst, (0.42, 0.44, 0.47), TEX_PLAIN, 0.35)
                b.add(BOX, (x, side * (half + 0.45 - 0.8), curb + lamp_h - 0.1), (0.15, 0.8, 0.07), 0.0, POLE, inst,
                      (0.42, 0.44, 0.47), TEX_PLAIN, 0.35)
            x += rng.uniform(22.0, 32.0)
        for _ in range(rng.integers(2, 6)):
            sx = rng.uniform(x_lo, x_hi)
            if near_cross(sx, 0.5):
                continue
            post = b.new_instance("sign post")
            sh = rng.uniform(2.2, 2.9)
            sy = side * (half + 0.6)
            b.add(CYLINDER, (sx, sy, curb + sh / 2), (0.04, 0.04, sh / 2), 0.0, POLE, post, (0.5, 0.52, 0.55),
                  TEX_PLAIN, 0.3)
            plate = b.new_instance("sign")
            color = _SIGN_COLORS[rng.integers(len(_SIGN_COLORS))]
            size = rng.uniform(0.3, 0.45)
            shape = ELLIPSOID if rng.random() < 0.5 else BOX
            b.add(shape, (sx - side * 0.06, sy, curb + sh + size * 0.8), (0.025, size, size), 0.0, TRAFFIC_SIGN,
                  plate, color, TEX_SIGN, rng.uniform(0.75, 0.95))

    # --- moving traffic: per-lane speed and spacing (same speed in a lane, so vehicles never overlap)
    def spawn_vehicle(x: float, y: float, yaw: float, vel: tuple) -> float:
        if rng.random() < 0.15:
            return _truck(b, rng, x, y, yaw, vel)
        _car(b, rng, x, y, yaw, vel)
        return 4.9

    for direction in (1.0, -1.0):
        for k in range(n):
            y = -direction * (k + 0.5) * lw
            speed = ego_speed if (direction > 0 and k == ego_lane) else rng.uniform(3.0, 13.0)
            yaw = 0.0 if direction > 0 else np.pi
            vel = (direction * speed, 0.0, 0.0)
            x = x_lo - speed * config.frame_interval * config.frames_per_sequence + rng.uniform(0, 20)
            while x < x_hi + 20:
                if dens > 0 and not (direction > 0 and k == ego_lane and -14 < x < 14):
                    length = spawn_vehicle(x, y, yaw, vel)
                else:
                    length = 5.0
                x += length + rng.uniform(6.0, 45.0) / max(dens, 1e-3)
    # parked vehicles along the curb
    if parking > 0:
        for side in (-1.0, 1.0):
            x = x_lo + rng.uniform(0, 5)
            while x < x_hi:
                length = 5.0
                if rng.random() < 0.6 * min(dens, 1.5) and not near_cross(x, 6.0):
                    yaw = (0.0 if side < 0 else np.pi) + rng.normal(0, 0.03)
                    length = spawn_vehicle(x, side * (half - parking / 2), yaw, (0.0, 0.0, 0.0))
                x += length + rng.uniform(0.8, 4.0)
    # cyclists in the bike lanes
    if bike > 0:
        for direction in (1.0, -1.0):
            y = -direction * (n * lw + 0.75)
            speed = rng.uniform(3.0, 6.0)
            x = x_lo + rng.uniform(0, 30)
            while x < x_hi:
                if rng.random() < min(dens, 1.0) * 0.8:
                    _cyclist(b, rng, x, y, 0.0 if direction > 0 else np.pi, (direction * speed, 0.0, 0.0))
                x += rng.uniform(15.0, 60.0)
    # pedestrians on the sidewalks: walkers keep to one half per direction, some stand still
    for side in (-1.0, 1.0):
        for _ in range(rng.poisson(dens * (x_hi - x_lo) / 9.0)):
            px = rng.uniform(x_lo, x_hi)
            direction = 1.0 if rng.random() < 0.5 else -1.0
            inner = direction * side < 0  # walkers keep right: inner half of the sidewalk
            lo, hi = (half + 1.0, half + sidewalk / 2) if inner else (half + sidewalk / 2, half + sidewalk - 0.3)
            speed = 0.0 if rng.random() < 0.2 else rng.uniform(0.9, 1.7)
            yaw = (0.0 if direction > 0 else np.pi) if speed > 0 else rng.uniform(-np.pi, np.pi)
            _pedestrian(b, rng, px, side * rng.uniform(lo, max(lo, hi)), yaw, (direction * speed, 0.0, 0.0))
    # pedestrians sidewalk z: lift everything standing on the sidewalk by the curb height
    prims = b.build()
    sun_elev, sun_az = np.deg2rad(rng.uniform(25.0, 70.0)), rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(sun_elev) * np.cos(sun_az), np.cos(sun_elev) * np.sin(sun_az), np.sin(sun_elev)])
    on_walk = np.isin(prims.label, (PEDESTRIAN,))
    prims.center[on_walk, 2] += curb

    return Layout(ground=ground, prims=prims, ego_x0=0.0, ego_speed=ego_speed, ego_y=-(ego_lane + 0.5) * lw,
                  sway_amplitude=rng.uniform(0.0, 0.3), sway_period=rng.uniform(6.0, 14.0),
                  sway_phase=rng.uniform(0, 2 * np.pi), sensor_height=config.sensor_height, sun=sun,
                  ambient=rng.uniform(0.38, 0.55), exposure=rng.uniform(0.9, 1.1),
                  num_instances=b.next_instance - 1, counts=dict(b.counts))
