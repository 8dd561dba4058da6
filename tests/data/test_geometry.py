from __future__ import annotations

import numpy as np
import pytest
from pyquaternion import Quaternion

from largead.data.frame import CameraView, Frame
from largead.data.geometry import (
    Pairs,
    axis_angle_to_matrix,
    check_rigid,
    decompose_projection,
    frame_pairs,
    invert_rigid,
    kitti_lidar_poses,
    kitti_lidar_to_camera,
    matrix_to_quaternion,
    nuscenes_lidar_to_camera,
    perturb_extrinsics,
    project_points,
    quaternion_to_matrix,
    rigid_from_quaternion,
    rotation_angle,
    transform_points,
)


def random_rigid(rng: np.random.Generator, scale: float = 5.0) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = axis_angle_to_matrix(rng.normal(size=3), rng.uniform(0, np.pi))
    m[:3, 3] = rng.normal(size=3) * scale
    return m


def test_transform_points_hand_computed():
    m = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=float)  # 90 deg about z, then +t
    out = transform_points(np.array([[1.0, 0.0, 0.0, 7.0], [0.0, 2.0, -1.0, 7.0]]), m)
    np.testing.assert_allclose(out, [[1.0, 3.0, 3.0], [-1.0, 2.0, 2.0]])
    assert out.shape == (2, 3) and out.dtype == np.float64


def test_project_points_hand_computed_and_borders():
    k = np.array([[100.0, 0, 50.0], [0, 100.0, 40.0], [0, 0, 1]])
    pts = np.array([
        [1.0, 2.0, 10.0],  # u = 60, v = 60: valid
        [0.0, 0.0, 1.0],  # depth exactly 1 m: invalid (strict)
        [0.0, 0.0, 1.01],  # valid
        [-5.0, 0.0, 10.0],  # u = 0: invalid (strict 0 < u)
        [4.9, 0.0, 10.0],  # u = 99 = W - 1: invalid
        [4.89, 3.89, 10.0],  # u = 98.9, v = 78.9: valid
        [0.0, 0.0, -5.0],  # behind: invalid, uv NaN
    ])
    valid, uv = project_points(pts, np.eye(4), k, height=80, width=100)
    assert valid.tolist() == [True, False, True, False, False, True, False]
    np.testing.assert_allclose(uv[0], [60.0, 60.0])
    np.testing.assert_allclose(uv[5], [98.9, 78.9])
    assert np.isnan(uv[6]).all()


def test_frame_pairs_matches_naive_loop():
    rng = np.random.default_rng(0)
    n = 400
    pts = np.concatenate([rng.uniform(-20, 20, (n, 3)), rng.uniform(0, 1, (n, 1))], 1).astype(np.float32)
    cams = []
    for c in range(3):
        l2c = random_rigid(rng, 0.5)
        k = np.array([[30.0 + c, 0, 20.0], [0, 31.0, 15.0], [0, 0, 1]])
        cams.append(CameraView(image=np.zeros((30, 40, 3), np.uint8), intrinsics=k, lidar_to_camera=l2c))
    frame = Frame(points=pts, cameras=cams)
    pairs = frame_pairs(frame)
    expected = []
    for c, cam in enumerate(cams):  # independent per-point oracle
        for i in range(n):
            p = cam.lidar_to_camera @ np.append(pts[i, :3].astype(float), 1.0)
            if p[2] <= 1.0:
                continue
            u = (cam.intrinsics[0, 0] * p[0] + cam.intrinsics[0, 2] * p[2]) / p[2]
            v = (cam.intrinsics[1, 1] * p[1] + cam.intrinsics[1, 2] * p[2]) / p[2]
            if 0 < u < 39 and 0 < v < 29:
                expected.append((i, c, round(v), round(u)))
    got = list(zip(pairs.point.tolist(), pairs.camera.tolist(), pairs.row.tolist(), pairs.col.tolist()))
    assert got == expected and len(got) > 30
    assert all(a.dtype == np.int64 for a in (pairs.point, pairs.camera, pairs.row, pairs.col))
    assert pairs.counts(3).sum() == len(pairs)


def test_pairs_rejects_bad_arrays():
    with pytest.raises(ValueError, match="int64"):
        Pairs(np.zeros(3, np.int32), np.zeros(3, np.int64), np.zeros(3, np.int64), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="Pairs.row"):
        Pairs(np.zeros(3, np.int64), np.zeros(3, np.int64), np.zeros(2, np.int64), np.zeros(3, np.int64))


def test_quaternions_agree_with_pyquaternion():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(quaternion_to_matrix(q), Quaternion(q).rotation_matrix, atol=1e-12)
        back = matrix_to_quaternion(Quaternion(q).rotation_matrix)
        assert np.allclose(back, q, atol=1e-9) or np.allclose(back, -q, atol=1e-9)
    # near-180-degree rotations take the other branches
    for axis in np.eye(3):
        r = axis_angle_to_matrix(axis, np.pi - 1e-9)
        np.testing.assert_allclose(Quaternion(matrix_to_quaternion(r)).rotation_matrix, r, atol=1e-8)


def test_nuscenes_chain_matches_devkit_steps():
    rng = np.random.default_rng(2)
    records = [(Quaternion(rng.normal(size=4)).normalised, rng.normal(size=3) * 10) for _ in range(4)]
    mats = [rigid_from_quaternion(q.elements, t) for q, t in records]
    l2c = nuscenes_lidar_to_camera(*mats)
    pts = rng.normal(size=(50, 3)) * 10
    # the devkit's map_pointcloud_to_image steps, one after another
    p = pts.T.copy()
    (q1, t1), (q2, t2), (q3, t3), (q4, t4) = records
    p = q1.rotation_matrix @ p + t1[:, None]
    p = q2.rotation_matrix @ p + t2[:, None]
    p = q3.rotation_matrix.T @ (p - t3[:, None])
    p = q4.rotation_matrix.T @ (p - t4[:, None])
    np.testing.assert_allclose(transform_points(pts, l2c), p.T, atol=1e-9)
    check_rigid(l2c, "chain")


KITTI_P2 = np.array([[718.856, 0.0, 607.1928, 45.38225], [0.0, 718.856, 185.2157, -0.1130887],
                     [0.0, 0.0, 1.0, 0.003779761]])


def test_kitti_chain_reproduces_p2_tr_projection():
    rng = np.random.default_rng(3)
    tr = random_rigid(rng, 0.3)
    r0 = np.eye(4)
    r0[:3, :3] = axis_angle_to_matrix([0.3, 1.0, 0.1], 0.01)
    k, l2c = kitti_lidar_to_camera(tr[:3], KITTI_P2, r0[:3, :3])
    assert np.allclose(np.tril(k, -1), 0) and k[2, 2] == 1 and (np.diag(k) > 0).all()
    np.testing.assert_allclose(k, KITTI_P2[:, :3], atol=1e-9)  # rectified P2: left block is K
    check_rigid(l2c, "l2c")
    pts = np.concatenate([rng.uniform(-10, 10, (100, 2)), rng.uniform(5, 30, (100, 1))], 1)
    ph = np.concatenate([pts, np.ones((100, 1))], 1)
    ref = (KITTI_P2 @ r0 @ tr @ ph.T).T  # the usual KITTI projection
    ref_uv = ref[:, :2] / ref[:, 2:]
    cam = transform_points(pts, l2c) @ k.T
    np.testing.assert_allclose(cam[:, :2] / cam[:, 2:], ref_uv, atol=1e-8)
    # P2's offset is camera 2 sitting ~6 cm left of camera 0: t = K^-1 P2[:, 3]
    np.testing.assert_allclose(invert_rigid(l2c @ invert_rigid(r0 @ tr))[:3, 3],
                               -np.linalg.solve(KITTI_P2[:, :3], KITTI_P2[:, 3]), atol=1e-12)


def test_decompose_general_projection():
    rng = np.random.default_rng(4)
    k0 = np.array([[500.0, 0.5, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
    e0 = random_rigid(rng)
    p = 3.7 * k0 @ e0[:3]  # arbitrary projective scale
    k, e = decompose_projection(p)
    np.testing.assert_allclose(k, k0, atol=1e-8)
    np.testing.assert_allclose(e, e0, atol=1e-9)


def test_kitti_chain_errors_name_the_matrix():
    with pytest.raises(ValueError, match="calib.txt: projection.*singular"):
        kitti_lidar_to_camera(np.eye(4), np.zeros((3, 4)), what="seq/calib.txt")
    bad_tr = np.eye(4)
    bad_tr[0, 0] = 2.0
    with pytest.raises(ValueError, match="calib.txt: Tr.*not a proper rotation"):
        kitti_lidar_to_camera(bad_tr, KITTI_P2, what="seq/calib.txt")


def test_kitti_lidar_poses_move_points_like_camera_poses():
    rng = np.random.default_rng(5)
    tr = random_rigid(rng, 0.3)
    cam_poses = np.stack([random_rigid(rng) for _ in range(3)])
    lidar = kitti_lidar_poses(cam_poses, tr)
    p = np.append(rng.normal(size=3), 1.0)
    for i in range(3):
        # point of scan i -> camera 0 of scan i -> world (camera 0 of scan 0) -> LiDAR 0 frame
        expected = np.linalg.inv(tr) @ cam_poses[i] @ tr @ p
        np.testing.assert_allclose(lidar[i] @ p, expected, atol=1e-9)


def test_perturb_extrinsics_has_exact_magnitude_and_is_deterministic():
    base = random_rigid(np.random.default_rng(6))
    for fraction in (0.0, 0.1, 0.5, 1.0):
        new = perturb_extrinsics(base, fraction, np.random.default_rng(7))
        delta = new @ invert_rigid(base)
        assert np.isclose(np.rad2deg(rotation_angle(delta)), 10.0 * fraction, atol=1e-6)
        assert np.isclose(np.linalg.norm(delta[:3, 3]), 0.5 * fraction, atol=1e-12)
        check_rigid(new, "perturbed")
    a = perturb_extrinsics(base, 0.3, np.random.default_rng(8))
    b = perturb_extrinsics(base, 0.3, np.random.default_rng(8))
    c = perturb_extrinsics(base, 0.3, np.random.default_rng(9))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    with pytest.raises(ValueError, match="fraction"):
        perturb_extrinsics(base, 1.5, np.random.default_rng(0))


@pytest.mark.parametrize("matrix, problem", [
    (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
    (np.diag([1.0, 2.0, 1.0, 1.0]), "not a proper rotation"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "not a proper rotation"),
    (np.full((4, 4), np.nan), "non-finite"),
    (np.eye(3), "4x4"),
])
def test_check_rigid_messages(matrix, problem):
    with pytest.raises(ValueError, match=f"calib X.*{problem}"):
        check_rigid(matrix, "calib X")
