"""Tests of the procedural synthetic world (largead.data.synthetic).

Small sensor settings (coarse azimuth, small images) keep each frame to a few tens of milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from largead.data import IGNORE_INDEX, get_dataset
from largead.data.geometry import frame_pairs, invert_rigid
from largead.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_TO_SEMANTICKITTI,
    SyntheticConfig,
    SyntheticDataset,
    SyntheticWorld,
    benchmark_lut,
    export_lut,
    write_synthetic,
)
from largead.data.synthetic.raycast import (
    BOX,
    ELLIPSOID,
    Primitives,
    cast,
    expand_spans,
    intersect,
)
from largead.data.synthetic.world import PEDESTRIAN, ROAD, SIDEWALK, TERRAIN

SMALL = {"azimuth_resolution": 1.0, "image_size": (48, 80), "frames_per_sequence": 4}


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(SyntheticConfig(seed=3, **SMALL))


@pytest.fixture(scope="module")
def frames(world: SyntheticWorld) -> list:
    return [world.frame(0, i) for i in range(4)]


# ------------------------------------------------------------------------------------------------ ray casting


def _random_prims(rng: np.random.Generator, n: int) -> Primitives:
    kind = rng.integers(0, 3, n)
    return Primitives(kind=kind, center=rng.uniform(-8, 8, (n, 3)), size=rng.uniform(0.3, 2.0, (n, 3)),
                      yaw=rng.uniform(-np.pi, np.pi, n), label=rng.integers(0, 12, n), instance=np.arange(1, n + 1),
                      color=rng.random((n, 3)), texture=np.zeros(n, np.int64), reflectivity=rng.random(n),
                      velocity=np.zeros((n, 3)))


def _inside(prims: Primitives, i: int, p: np.ndarray) -> np.ndarray:
    """Naive point-in-primitive test (oracle)."""
    c, s = np.cos(prims.yaw[i]), np.sin(prims.yaw[i])
    rel = p - prims.center[i]
    loc = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], axis=1)
    size = prims.size[i]
    if prims.kind[i] == BOX:
        return np.all(np.abs(loc) <= size, axis=1)
    if prims.kind[i] == ELLIPSOID:
        return ((loc / size) ** 2).sum(axis=1) <= 1
    return (np.hypot(loc[:, 0], loc[:, 1]) <= size[0]) & (np.abs(loc[:, 2]) <= size[2])


def test_intersections_match_ray_marching():
    rng = np.random.default_rng(0)
    prims = _random_prims(rng, 15)
    origin = np.array([0.5, -0.3, 12.0])
    # aim at random primitives, with jitter, so that both hits and misses are frequent; all rays point down, so the
    # uncapped cylinder bottoms are never entered
    dirs = prims.center[rng.integers(0, len(prims), 90)] + rng.normal(0, 1.0, (90, 3)) - origin
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    steps = np.arange(0, 32, 0.005)  # every primitive lies within 32 m of the origin
    checked = 0
    for i in range(len(prims)):
        # the origin must lie outside every primitive for "first entry" to be the nearest hit
        assert not _inside(prims, i, origin[None])[0]
        (t,) = intersect(prims, int(prims.kind[i]), np.full(len(dirs), i), origin, dirs)
        samples = origin + steps[None, :, None] * dirs[:, None, :]  # (rays, steps, 3)
        inside = _inside(prims, i, samples.reshape(-1, 3)).reshape(len(dirs), len(steps))
        first = np.where(inside.any(axis=1), steps[inside.argmax(axis=1)], np.inf)
        both = np.isfinite(first) & np.isfinite(t)
        np.testing.assert_allclose(t[both], first[both], atol=0.01, err_msg=f"primitive {i} kind {prims.kind[i]}")
        assert not (np.isfinite(first) & ~np.isfinite(t)).any(), f"primitive {i}: a hit was missed"
        for r in np.flatnonzero(np.isfinite(t) & ~np.isfinite(first)):  # grazing hits thinner than a step
            fine = origin + (t[r] + np.linspace(0, 0.005, 201))[:, None] * dirs[r]
            assert _inside(prims, i, fine).any(), f"primitive {i}: hit at t={t[r]} is not on the primitive"
        checked += int(both.sum())
    assert checked > 30  # enough rays actually hit something


def test_culled_cast_equals_brute_force(world: SyntheticWorld):
    """The bounding-sphere / corner culling of both sensors never loses the nearest hit."""
    layout = world.layout(0)
    prims = layout.prims.at_time(0.5)
    pose = layout.pose(0.5)
    lidar = world.lidar
    dirs = lidar.dirs @ pose[:3, :3].T
    origin = pose[:3, 3]
    r0, nr, c0, nc = lidar.spans((prims.center - origin) @ pose[:3, :3], prims.bound_radius)
    culled = cast(prims, origin, dirs, *expand_spans(r0, nr, c0, nc, lidar.columns, wrap=True))
    near = np.linalg.norm(prims.center - origin, axis=1) - prims.bound_radius < world.config.max_range
    rays = np.arange(0, len(dirs), 3)  # a third of the rays keeps the brute force cheap
    pp, rr = np.meshgrid(np.flatnonzero(near), rays, indexing="ij")
    brute = cast(prims, origin, dirs, pp.ravel(), rr.ravel())
    within = rays[brute.t[rays] <= world.config.max_range]
    assert len(within) > 1000
    np.testing.assert_array_equal(culled.prim[within], brute.prim[within])
    np.testing.assert_allclose(culled.t[within], brute.t[within])

    cam = world.cameras[0]
    world_to_cam = cam.lidar_to_camera @ invert_rigid(pose)
    centers = prims.center @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    corners = prims.box_corners() @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    r0, nr, c0, nc = cam.spans(centers, prims.bound_radius, 250.0, corners)
    corigin = pose[:3, :3] @ cam.origin + pose[:3, 3]
    cdirs = cam.dirs @ pose[:3, :3].T
    culled = cast(prims, corigin, cdirs, *expand_spans(r0, nr, c0, nc, cam.width, wrap=False))
    pixels = np.arange(0, len(cdirs), 2)
    pp, rr = np.meshgrid(np.arange(len(prims)), pixels, indexing="ij")
    brute = cast(prims, corigin, cdirs, pp.ravel(), rr.ravel())
    assert (brute.prim[pixels] >= 0).sum() > 500
    np.testing.assert_array_equal(culled.prim[pixels], brute.prim[pixels])


# ------------------------------------------------------------------------------------------------ frames


def test_determinism():
    a = SyntheticWorld(SyntheticConfig(seed=5, **SMALL)).frame(1, 2)
    b = SyntheticWorld(SyntheticConfig(seed=5, **SMALL)).frame(1, 2)
    for name in ("points", "labels", "instances", "pose"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.extra["ring"], b.extra["ring"])
    assert a.timestamp == b.timestamp and a.token == b.token
    for ca, cb in zip(a.cameras, b.cameras):
        np.testing.assert_array_equal(ca.image, cb.image)
        np.testing.assert_array_equal(ca.semantic_mask, cb.semantic_mask)
        np.testing.assert_array_equal(ca.instance_mask, cb.instance_mask)
    c = SyntheticWorld(SyntheticConfig(seed=6, **SMALL)).frame(1, 2)
    d = SyntheticWorld(SyntheticConfig(seed=5, **SMALL)).frame(2, 2)
    for other in (c, d):
        assert other.points.shape != a.points.shape or not np.array_equal(other.points, a.points)
        assert not np.array_equal(other.cameras[0].image, a.cameras[0].image)


def test_frame_contents(world: SyntheticWorld, frames: list):
    cfg = world.config
    for f in frames:
        f.validate()
        n = f.num_points
        assert f.points.dtype == np.float32 and f.points.shape == (n, 4)
        assert f.labels.dtype == np.int64 and f.instances.dtype == np.int64
        # every ray with a return hits something labelled; nothing is ignore
        assert f.labels.min() >= 0 and f.labels.max() < len(SYNTHETIC_CLASSES)
        rng = np.linalg.norm(f.points[:, :3], axis=1)
        assert rng.min() >= cfg.min_range - 0.1 and rng.max() <= cfg.max_range + 0.1
        # about (1 - dropout) of 32 x 360 rays return (the sky above the horizon gives nothing)
        assert 0.5 * cfg.beams * 360 < n < cfg.beams * 360
        # ground classes carry no instance; all other classes do
        ground = np.isin(f.labels, (ROAD, SIDEWALK, TERRAIN))
        assert (f.instances[ground] == 0).all() and (f.instances[~ground] > 0).all()
        assert len(f.cameras) == 6 and [c.name for c in f.cameras] == [
            "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]
        for cam in f.cameras:
            assert cam.image.shape == (48, 80, 3) and cam.semantic_mask.shape == (48, 80)
            assert cam.instance_mask.dtype == np.int32 and cam.semantic_mask.dtype == np.int32
            sky = cam.semantic_mask == IGNORE_INDEX
            assert (cam.instance_mask[sky] == 0).all()
            # cameras are level and the ground plane is infinite: no sky below the principal row
            assert not sky[int(np.ceil(cam.intrinsics[1, 2])):].any()
        assert sum(c.semantic_mask[0].tolist().count(IGNORE_INDEX) for c in f.cameras) > 40  # some sky somewhere
        assert len({c.token for c in f.cameras}) == 6
    # many classes are present over a few frames
    present = np.unique(np.concatenate([f.labels for f in frames]))
    assert len(present) >= 10, [SYNTHETIC_CLASSES[i] for i in present]


def test_ground_heights(world: SyntheticWorld, frames: list):
    """Road points lie on z = 0 and sidewalk / terrain tops on the curb (0.15 m), in world coordinates."""
    for f in frames:
        xyz = f.points[:, :3] @ f.pose[:3, :3].T + f.pose[:3, 3]
        road = f.labels == ROAD
        assert np.median(np.abs(xyz[road, 2])) < 0.02
        terrain = f.labels == TERRAIN
        assert np.median(np.abs(xyz[terrain, 2] - 0.15)) < 0.02


def test_instances_have_one_label(frames: list):
    for f in frames:
        pairs = np.unique(np.stack([f.instances, f.labels], axis=1), axis=0)
        pairs = pairs[pairs[:, 0] > 0]
        assert len(pairs) > 20
        assert len(np.unique(pairs[:, 0])) == len(pairs), "an instance carries two labels"
        for cam in f.cameras:
            mp = np.unique(np.stack([cam.instance_mask.ravel(), cam.semantic_mask.ravel()], axis=1), axis=0)
            mp = mp[mp[:, 0] > 0]
            assert len(np.unique(mp[:, 0])) == len(mp)
    # instance ids are stable over the sequence: same id -> same label in every frame
    allp = np.unique(np.concatenate([np.stack([f.instances, f.labels], axis=1) for f in frames]), axis=0)
    allp = allp[allp[:, 0] > 0]
    assert len(np.unique(allp[:, 0])) == len(allp)


def test_timestamps_and_ego_motion(world: SyntheticWorld, frames: list):
    layout = world.layout(0)
    ts = np.array([f.timestamp for f in frames])
    np.testing.assert_allclose(np.diff(ts), 0.5)
    pos = np.stack([f.pose[:3, 3] for f in frames])
    step = np.linalg.norm(np.diff(pos[:, :2], axis=0), axis=1)
    np.testing.assert_allclose(step, layout.ego_speed * 0.5, rtol=0.02)
    assert (np.diff(pos[:, 0]) > 0).all()
    np.testing.assert_allclose(pos[:, 2], world.config.sensor_height)
    assert [f.index for f in frames] == [0, 1, 2, 3] and len({f.sequence for f in frames}) == 1


def test_moving_objects_move_by_velocity_times_dt(world: SyntheticWorld, frames: list):
    """World points of a moving object at t1, moved back by v (t1 - t0), lie inside its t0 bounding box."""
    layout = world.layout(0)
    prims0 = layout.prims  # t = 0
    f0, f1 = frames[0], frames[2]
    dt = f1.timestamp - f0.timestamp
    xyz1 = f1.points[:, :3] @ f1.pose[:3, :3].T + f1.pose[:3, 3]
    checked = moved_far = 0
    for inst in np.unique(f1.instances[f1.instances > 0]):
        own = prims0.instance == inst
        vel = prims0.velocity[own][0]
        pts = xyz1[f1.instances == inst]
        if len(pts) < 10:
            continue
        corners = prims0.select(own).box_corners().reshape(-1, 3)
        lo, hi = corners.min(0) - 0.1, corners.max(0) + 0.1
        back = pts - vel * dt
        assert np.all((back >= lo) & (back <= hi)), f"instance {inst} (v={vel}) does not follow its velocity"
        checked += 1
        if np.linalg.norm(vel) * dt > 1.0:
            moved_far += 1
            # without undoing the motion the points are not in the t0 box: the test can fail
            assert np.mean(np.all((pts >= lo) & (pts <= hi), axis=1)) < 0.5
    assert checked > 10 and moved_far >= 2
    # there are moving objects of several kinds in this sequence
    moving = np.linalg.norm(prims0.velocity, axis=1) > 0
    assert {8, PEDESTRIAN} <= set(prims0.label[moving].tolist())


def test_camera_masks_agree_with_projected_point_labels():
    """Projected points mostly carry the label / instance of the mask at their pixel.

    Where they disagree it is parallax: the cameras sit up to a metre from the LiDAR (as on nuScenes), so a point the
    LiDAR sees may be hidden from the camera behind a pole or a pedestrian. Restricted to points the camera sees
    (their camera depth matches the rendered depth map), agreement is limited only by pixel discretisation.
    """
    world = SyntheticWorld(SyntheticConfig(seed=3, azimuth_resolution=1.0, frames_per_sequence=4))
    ok_sem, ok_inst, visible = [], [], []
    for i in (0, 2):
        f = world.frame(0, i)
        pairs = frame_pairs(f)
        assert len(pairs) > 1000
        at = (pairs.camera, pairs.row, pairs.col)
        ok_sem.append(np.stack([c.semantic_mask for c in f.cameras])[at] == f.labels[pairs.point])
        ok_inst.append(np.stack([c.instance_mask for c in f.cameras])[at] == f.instances[pairs.point])
        l2c = np.stack([c.lidar_to_camera for c in f.cameras])[pairs.camera]
        z = np.einsum("ij,ij->i", l2c[:, 2, :3], f.points[pairs.point, :3]) + l2c[:, 2, 3]
        depth = np.stack(f.extra["camera_depth"])[at]
        visible.append(np.abs(z - depth) < 0.05 * z + 0.1)
    ok_sem, ok_inst, visible = map(np.concatenate, (ok_sem, ok_inst, visible))
    assert visible.mean() > 0.85
    assert ok_sem[visible].mean() > 0.985 and ok_inst[visible].mean() > 0.98
    assert ok_sem.mean() > 0.93 and ok_inst.mean() > 0.93


def test_slic_segments_follow_the_scene(world: SyntheticWorld):
    """Colours and textures carry the scene's boundaries: SLIC superpixels are purer than a grid of equal count."""
    from skimage.segmentation import slic

    def purity(seg: np.ndarray, sem: np.ndarray) -> float:
        counts = np.zeros((seg.max() + 1, len(SYNTHETIC_CLASSES) + 1), np.int64)
        np.add.at(counts, (seg.ravel(), sem.ravel() + 1), 1)
        return counts.max(axis=1).sum() / sem.size

    f = SyntheticWorld(SyntheticConfig(seed=0, azimuth_resolution=2.0)).frame(1, 0)
    got, grid_purity = [], []
    for cam in f.cameras:
        seg = slic(cam.image, n_segments=150, compactness=6, sigma=3.0, start_label=0)
        h, w = seg.shape
        grid = (np.arange(h)[:, None] // 8) * 1000 + np.arange(w)[None, :] // 13  # 12 x 13 = 156 cells
        got.append(purity(seg, cam.semantic_mask))
        grid_purity.append(purity(np.unique(grid, return_inverse=True)[1].reshape(h, w), cam.semantic_mask))
    assert np.mean(got) > 0.9 and np.mean(got) > np.mean(grid_purity) + 0.02


@pytest.mark.parametrize("beams", [32, 64])
def test_beam_count_visible_in_elevations(beams: int):
    cfg = SyntheticConfig(seed=1, beams=beams, num_cameras=0, azimuth_resolution=1.0, frames_per_sequence=2)
    f = SyntheticWorld(cfg).frame(0, 0)
    p = f.points[:, :3].astype(np.float64)
    elev = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
    up, down = cfg.fov
    spacing = (up - down) / (beams - 1)
    ring = np.rint((up - elev) / spacing)
    assert np.abs((up - elev) / spacing - ring).max() < 1e-3  # elevations sit exactly on the beam grid
    assert len(np.unique(ring)) == beams
    np.testing.assert_array_equal(ring.astype(np.int64), f.extra["ring"])
    assert elev.max() <= up + 1e-3 and elev.min() >= down - 1e-3


def test_intensity_scale():
    base = {"seed": 2, "num_cameras": 0, "azimuth_resolution": 1.0, "frames_per_sequence": 2}
    a = SyntheticWorld(SyntheticConfig(intensity_scale=255.0, **base)).frame(0, 1)
    b = SyntheticWorld(SyntheticConfig(intensity_scale=1.0, **base)).frame(0, 1)
    np.testing.assert_array_equal(a.points[:, :3], b.points[:, :3])
    np.testing.assert_allclose(a.points[:, 3], 255.0 * b.points[:, 3], rtol=1e-5, atol=1e-4)
    assert b.points[:, 3].min() >= 0 and b.points[:, 3].max() <= 1.0 and b.points[:, 3].max() > 0.5
    assert a.points[:, 3].max() > 100
    # materials differ: road is darker than lane marks / signs on average
    road = b.points[b.labels == ROAD, 3].mean()
    sign = b.points[np.isin(b.labels, (SYNTHETIC_CLASSES.index("traffic_sign"),)), 3]
    assert road < 0.15 and (len(sign) == 0 or sign.mean() > 2 * road)


def test_kitti_like_sensor():
    cfg = SyntheticConfig.kitti_like(seed=0, azimuth_resolution=1.0, frames_per_sequence=2)
    f = SyntheticWorld(cfg).frame(0, 0)
    assert cfg.beams == 64 and cfg.intensity_scale == 1.0
    assert [c.name for c in f.cameras] == ["image_2"] and f.cameras[0].image.shape == (64, 208, 3)
    assert len(np.unique(f.extra["ring"])) == 64 and f.points[:, 3].max() <= 1.0
    assert f.dataset == "synthetic-kitti"
    pairs = frame_pairs(f)
    sem = f.cameras[0].semantic_mask[pairs.row, pairs.col]
    assert np.mean(sem == f.labels[pairs.point]) > 0.95


# ------------------------------------------------------------------------------------------------ dataset


def test_dataset_registry_and_splits():
    ds = get_dataset("synthetic", split="train", num_sequences=2, frames_per_sequence=3, num_cameras=1,
                     image_size=(32, 64), azimuth_resolution=2.0)
    assert isinstance(ds, SyntheticDataset) and len(ds) == 6
    assert ds.has_cameras and ds.temporal and ds.class_names == SYNTHETIC_CLASSES and ds.num_classes == 12
    assert ds.sequence_of(4) == (ds.frame(4).sequence, 1)
    assert ds.sequence_of(0)[0] != ds.sequence_of(3)[0]
    assert ds.next_index(0) == 1 and ds.next_index(1, 1) == 2 and ds.next_index(2) is None and ds.next_index(3) == 4
    assert ds.next_frame(3).index == 1
    assert ds[-1].token == ds.frame(5).token
    val = get_dataset("synthetic", split="val", num_sequences=2, frames_per_sequence=3, num_cameras=1,
                      image_size=(32, 64), azimuth_resolution=2.0)
    assert val.sequence_of(0)[0] != ds.sequence_of(0)[0]
    assert not np.array_equal(val[0].points[:100], ds[0].points[:100])
    with pytest.raises(IndexError):
        ds.frame(6)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['beam'\] \('beam': did you mean 'beams'\?\)"):
        get_dataset("synthetic", beam=32)
    with pytest.raises(ValueError, match="split"):
        get_dataset("synthetic", split="test")


@pytest.mark.parametrize("bad", [{"beams": 0}, {"num_cameras": 7}, {"image_size": (4, 4)},
                                 {"vertical_fov": (-5.0, 5.0)}, {"intensity_scale": 0.0},
                                 {"num_cameras": 3, "camera_layout": "kitti"}, {"camera_layout": "fisheye"},
                                 {"dropout": 1.0}, {"max_range": 0.5}])
def test_bad_config_is_rejected(bad: dict):
    with pytest.raises(ValueError, match="SyntheticConfig"):
        SyntheticConfig(**bad)


def test_world_rejects_out_of_range_frames(world: SyntheticWorld):
    with pytest.raises(IndexError, match="frames_per_sequence"):
        world.frame(0, 4)
    with pytest.raises(ValueError):
        world.frame(-1, 0)


# ------------------------------------------------------------------------------------------------ export


def test_label_maps():
    assert list(export_lut("semantickitti")[1:]) == [SYNTHETIC_TO_SEMANTICKITTI[c] for c in SYNTHETIC_CLASSES]
    kitti = benchmark_lut("semantickitti")
    assert len(set(kitti.tolist())) == len(SYNTHETIC_CLASSES) and kitti.min() >= 0
    from largead.data.labels import NUSCENES_CLASSES, SEMANTICKITTI_CLASSES

    names = dict(zip(SYNTHETIC_CLASSES, (SEMANTICKITTI_CLASSES[i] for i in kitti)))
    assert names["road"] == "road" and names["bicyclist"] == "bicyclist" and names["pedestrian"] == "person"
    nus = dict(zip(SYNTHETIC_CLASSES, (NUSCENES_CLASSES[i] for i in benchmark_lut("nuscenes"))))
    assert nus == {"road": "driveable_surface", "sidewalk": "sidewalk", "terrain": "terrain", "building": "manmade",
                   "vegetation": "vegetation", "trunk": "vegetation", "pole": "manmade", "traffic_sign": "manmade",
                   "car": "car", "truck": "truck", "bicyclist": "bicycle", "pedestrian": "pedestrian"}
    with pytest.raises(ValueError, match="unknown export target 'kitti360'"):
        export_lut("kitti360")


# what each transfer reader reports for each synthetic class after an export (None = not evaluated there), written
# out by hand from the class lists of largead/data/labels_extra.py
_TRANSFER_NAMES = {
    "waymo": ("road", "sidewalk", "walkable", "building", "vegetation", "tree_trunk", "pole", "sign", "car", "truck",
              "bicyclist", "pedestrian"),
    "rellis3d": (None, "concrete", "grass", None, "bush", "tree", "pole", None, "vehicle", "vehicle", "person",
                 "person"),
    "semanticposs": ("ground", "ground", "ground", "building", "plants", "trunk", "pole", "traffic-sign", "car", "car",
                     "rider", "person"),
    "semanticstf": ("road", "sidewalk", "terrain", "building", "vegetation", "trunk", "pole", "traffic-sign", "car",
                    "truck", "bicyclist", "person"),
    "synlidar": ("road", "sidewalk", "terrain", "building", "vegetation", "trunk", "pole", "traffic-sign", "car",
                 "truck", "bicyclist", "person"),
    "daps3d": ("surface", "surface", "surface", "obstacle", "obstacle", "obstacle", "obstacle", "obstacle", "vehicle",
               "vehicle", "human", "human"),
    "synth4d": ("road", "sidewalk", "terrain", "manmade", "vegetation", "vegetation", "manmade", "manmade", "vehicle",
                "vehicle", "pedestrian", "pedestrian"),
}


@pytest.mark.parametrize("target", sorted(_TRANSFER_NAMES))
def test_transfer_label_maps(target):
    from largead.data.registry import dataset_class

    classes = dataset_class(target).class_names
    got = tuple(None if i < 0 else classes[i] for i in benchmark_lut(target))
    assert dict(zip(SYNTHETIC_CLASSES, got)) == dict(zip(SYNTHETIC_CLASSES, _TRANSFER_NAMES[target]))
    assert export_lut(target)[0] == 0  # ignore is written as the dataset's 0


def _export_frames() -> list:
    world = SyntheticWorld(SyntheticConfig(seed=4, azimuth_resolution=2.0, image_size=(32, 48),
                                           frames_per_sequence=2))
    return [world.frame(s, i) for s in (0, 1) for i in (0, 1)]


def test_semantickitti_round_trip(tmp_path):
    frames = _export_frames()
    write_synthetic(frames, tmp_path, "semantickitti")
    ds = get_dataset("semantickitti", tmp_path, split="train", sequences=("00", "01"), cameras=True)
    assert len(ds) == 4
    kitti = benchmark_lut("semantickitti")
    back = np.full(kitti.max() + 1, -1)
    back[kitti] = np.arange(len(kitti))  # injective: synthetic labels are recovered exactly
    for f, g in zip(frames, ds):
        np.testing.assert_array_equal(g.points, f.points[:, :4])
        np.testing.assert_array_equal(back[g.labels], f.labels)
        np.testing.assert_array_equal(g.instances, f.instances)
        np.testing.assert_allclose(g.pose, f.pose, atol=1e-6)
        assert g.timestamp == pytest.approx(f.timestamp)
        np.testing.assert_allclose(g.cameras[0].lidar_to_camera, f.cameras[0].lidar_to_camera, atol=1e-6)
        np.testing.assert_allclose(g.cameras[0].intrinsics, f.cameras[0].intrinsics, atol=1e-6)
        np.testing.assert_array_equal(g.cameras[0].image, f.cameras[0].image)


def test_nuscenes_round_trip(tmp_path):
    pytest.importorskip("nuscenes", reason="the nuScenes reader needs nuscenes-devkit (extra 'nuscenes')")
    frames = _export_frames()
    write_synthetic(frames, tmp_path, "nuscenes")
    ds = get_dataset("nuscenes", tmp_path, split="all", version="v1.0-mini")
    assert len(ds) == 4
    lut = benchmark_lut("nuscenes")
    for f, g in zip(frames, ds):
        np.testing.assert_array_equal(g.points, f.points[:, :4])
        np.testing.assert_array_equal(g.labels, lut[f.labels])
        np.testing.assert_array_equal(g.extra["ring"], f.extra["ring"])
        np.testing.assert_allclose(g.pose, f.pose, atol=1e-6)
        assert g.timestamp == pytest.approx(f.timestamp, abs=1e-6)
        assert [c.name for c in g.cameras] == [c.name for c in f.cameras]
        for cg, cf in zip(g.cameras, f.cameras):
            np.testing.assert_allclose(cg.lidar_to_camera, cf.lidar_to_camera, atol=1e-6)
            np.testing.assert_allclose(cg.intrinsics, cf.intrinsics, atol=1e-9)
            assert np.abs(cg.image.astype(int) - cf.image.astype(int)).mean() < 6  # JPEG


def test_waymo_camera_layout_mixes_image_sizes():
    cfg = SyntheticConfig(camera_layout="waymo", num_cameras=5, image_size=(64, 96), beams=8,
                          azimuth_resolution=4.0, frames_per_sequence=1)
    f = SyntheticWorld(cfg).frame(0, 0)
    assert [(c.name, c.image.shape[:2]) for c in f.cameras] == [
        ("FRONT", (64, 96)), ("FRONT_LEFT", (64, 96)), ("FRONT_RIGHT", (64, 96)), ("SIDE_LEFT", (44, 96)),
        ("SIDE_RIGHT", (44, 96))]  # 1920x886 side images against 1920x1280 front ones
    forward = [np.linalg.inv(c.lidar_to_camera)[:3, 2] for c in f.cameras]  # optical axes in the LiDAR frame
    yaws = [round(float(np.degrees(np.arctan2(v[1], v[0])))) for v in forward]
    assert yaws == [0, 45, -45, 90, -90]
    f.validate("waymo layout")
    with pytest.raises(ValueError, match=r"num_cameras = 6: expected 0..5 with the waymo layout"):
        SyntheticConfig(camera_layout="waymo", num_cameras=6)
