"""Camera-LiDAR geometry: rigid transforms, projection into cameras, point/pixel pairs, calibration chains.

One implementation of each idea lives here; readers only parse files and call these helpers.

Conventions: transforms are ``(4, 4)`` float64 matrices acting on column vectors (``p_dst = T @ p_src``); camera
axes are x right, y down, z forward; ``u`` is the image column and ``v`` the image row, both in pixels with the centre
of the top-left pixel at ``(0, 0)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from largead.data.frame import Frame


def check_rigid(matrix: np.ndarray, what: str, tol: float = 1e-3) -> np.ndarray:
    """Return ``matrix`` as float64 (4, 4) if it is a finite rigid transform, else raise ``ValueError`` naming ``what``.

    A rigid transform has an orthonormal rotation block with determinant +1 and last row ``[0, 0, 0, 1]``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"{what}: expected a 4x4 transform, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{what}: transform has non-finite entries")
    r = m[:3, :3]
    if not np.allclose(m[3], [0, 0, 0, 1], atol=tol):
        raise ValueError(f"{what}: last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    det = float(np.linalg.det(r))
    if abs(det) < 1e-6:
        raise ValueError(f"{what}: rotation block is singular (det {det:.3g})")
    if not np.allclose(r @ r.T, np.eye(3), atol=tol) or det < 0:
        raise ValueError(f"{what}: rotation block is not a proper rotation (R R^T != I or det {det:.3g} != 1)")
    return m


def check_intrinsics(matrix: np.ndarray, what: str) -> np.ndarray:
    """Return ``matrix`` as float64 (3, 3) if it is a finite pinhole matrix with positive focal lengths, else raise."""
    k = np.asarray(matrix, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"{what}: expected 3x3 intrinsics, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError(f"{what}: intrinsics have non-finite entries")
    if not np.allclose(k[2], [0, 0, 1], atol=1e-6) or abs(k[1, 0]) > 1e-9:
        raise ValueError(f"{what}: intrinsics must be upper triangular with last row [0, 0, 1], got {k.tolist()}")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"{what}: intrinsics are singular or have non-positive focal lengths, got {k.tolist()}")
    return k


def invert_rigid(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform, computed as ``[R^T, -R^T t]`` (exact for rigid matrices)."""
    m = np.asarray(matrix, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def transform_points(xyz: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to points ``xyz`` (N, >=3); returns (N, 3) float64 (extra columns are dropped)."""
    pts = np.asarray(xyz)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be an (N, >=3) array, got shape {pts.shape}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"transform must be 4x4, got shape {m.shape}")
    return pts[:, :3].astype(np.float64) @ m[:3, :3].T + m[:3, 3]


def project_points(
    xyz: np.ndarray,
    lidar_to_camera: np.ndarray,
    intrinsics: np.ndarray,
    height: int,
    width: int,
    min_depth: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Project LiDAR points into one camera.

    Args:
        xyz: (N, >=3) points in the LiDAR frame, metres.
        lidar_to_camera: (4, 4) LiDAR-to-camera transform.
        intrinsics: (3, 3) pinhole matrix.
        height, width: image size in pixels.
        min_depth: points at camera depth ``<= min_depth`` metres are invalid (SLidR / devkit: 1 m).

    Returns:
        ``valid`` (N,) bool: depth > ``min_depth`` and ``0 < u < width - 1`` and ``0 < v < height - 1`` (SLidR's rule);
        ``uv`` (N, 2) float64 pixel coordinates ``(u = column, v = row)``; NaN for points at depth <= 0.
    """
    cam = transform_points(xyz, lidar_to_camera)
    k = np.asarray(intrinsics, dtype=np.float64)
    depth = cam[:, 2]
    front = depth > 0
    proj = cam @ k.T
    uv = np.full((len(cam), 2), np.nan)
    uv[front] = proj[front, :2] / depth[front, None]
    with np.errstate(invalid="ignore"):
        valid = (
            (depth > min_depth)
            & (uv[:, 0] > 0)
            & (uv[:, 0] < width - 1)
            & (uv[:, 1] > 0)
            & (uv[:, 1] < height - 1)
        )
    return valid, uv


@dataclass(frozen=True)
class Pairs:
    """Point-to-pixel correspondences of one frame: point ``point[i]`` is seen at ``(row[i], col[i])`` of ``camera[i]``.

    All four arrays are (P,) int64 numpy. ``camera`` indexes ``frame.cameras``.
    """

    point: np.ndarray
    camera: np.ndarray
    row: np.ndarray
    col: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.point)
        for name in ("point", "camera", "row", "col"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or len(arr) != n or arr.dtype != np.int64:
                raise ValueError(f"Pairs.{name} must be a ({n},) int64 array, got {getattr(arr, 'shape', None)} "
                                 f"{getattr(arr, 'dtype', type(arr))}")

    def __len__(self) -> int:
        return int(len(self.point))

    @staticmethod
    def empty() -> Pairs:
        z = np.zeros(0, dtype=np.int64)
        return Pairs(z, z.copy(), z.copy(), z.copy())

    @staticmethod
    def concat(parts: Sequence[Pairs]) -> Pairs:
        """Concatenate pairs (indices are kept as they are)."""
        if not parts:
            return Pairs.empty()
        return Pairs(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("point", "camera", "row", "col")))

    def select(self, mask_or_index: np.ndarray) -> Pairs:
        """Subset by a boolean mask or an index array."""
        return Pairs(self.point[mask_or_index], self.camera[mask_or_index], self.row[mask_or_index],
                     self.col[mask_or_index])

    def counts(self, num_cameras: int) -> np.ndarray:
        """(num_cameras,) int64 number of pairs per camera."""
        return np.bincount(self.camera, minlength=num_cameras).astype(np.int64)

    def pixel_index(self, width: int) -> np.ndarray:
        """(P,) flat pixel index ``row * width + col`` within each pair's image."""
        return self.row * width + self.col


def camera_pairs(
    xyz: np.ndarray,
    lidar_to_camera: np.ndarray,
    intrinsics: np.ndarray,
    height: int,
    width: int,
    camera: int = 0,
    min_depth: float = 1.0,
) -> Pairs:
    """Pairs of one camera: valid points (see :func:`project_points`) with ``(v, u)`` rounded to the nearest pixel.

    The rounding is numpy's (half to even), as SLidR's ``np.round``; because valid points satisfy
    ``0 < u < W - 1``, rounded pixels always lie inside the image.
    """
    valid, uv = project_points(xyz, lidar_to_camera, intrinsics, height, width, min_depth)
    idx = np.flatnonzero(valid).astype(np.int64)
    pix = np.rint(uv[idx]).astype(np.int64)
    return Pairs(idx, np.full(len(idx), camera, dtype=np.int64), pix[:, 1].copy(), pix[:, 0].copy())


def frame_pairs(frame: Frame, min_depth: float = 1.0) -> Pairs:
    """All point-to-pixel pairs of a frame (SLidR's rule), cameras in ``frame.cameras`` order.

    A point seen by several cameras yields one pair per camera.
    """
    parts = [
        camera_pairs(frame.points, cam.lidar_to_camera, cam.intrinsics, cam.height, cam.width, c, min_depth)
        for c, cam in enumerate(frame.cameras)
    ]
    return Pairs.concat(parts)


# ----------------------------------------------------------------------------------------------------------------
# Rotations and quaternions (nuScenes stores rotations as unit quaternions w, x, y, z).


def quaternion_to_matrix(q: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation of the quaternion ``q = (w, x, y, z)`` (normalised first; Hamilton convention as pyquaternion).

    Raises ``ValueError`` for a quaternion that is not 4 finite numbers with a non-zero norm.
    """
    qa = np.asarray(q, dtype=np.float64)
    norm = np.linalg.norm(qa) if qa.shape == (4,) else 0.0
    if not np.isfinite(qa).all() or not norm > 1e-12:
        raise ValueError(f"quaternion must be 4 finite numbers with non-zero norm, got {qa.tolist()}")
    w, x, y, z = qa / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a (3, 3) rotation matrix (Shepperd's method)."""
    r = np.asarray(rotation, dtype=np.float64)
    tr = np.trace(r)
    candidates = np.array([tr, r[0, 0], r[1, 1], r[2, 2]])
    i = int(np.argmax(candidates))
    if i == 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def rigid_from_quaternion(rotation: Sequence[float], translation: Sequence[float]) -> np.ndarray:
    """(4, 4) transform from a quaternion ``(w, x, y, z)`` and a translation (3,) - a nuScenes pose record."""
    m = np.eye(4)
    m[:3, :3] = quaternion_to_matrix(rotation)
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def axis_angle_to_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about ``axis`` (Rodrigues' formula; the axis is normalised)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * (kx @ kx)


def rotation_angle(rotation: np.ndarray) -> float:
    """Angle in radians of a (3, 3) rotation (or the rotation block of a 4x4 transform)."""
    r = np.asarray(rotation, dtype=np.float64)[:3, :3]
    return float(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))


# ----------------------------------------------------------------------------------------------------------------
# Calibration chains.


def nuscenes_lidar_to_camera(
    lidar_to_ego: np.ndarray,
    ego_to_global_at_lidar: np.ndarray,
    ego_to_global_at_camera: np.ndarray,
    camera_to_ego: np.ndarray,
) -> np.ndarray:
    """nuScenes' chain lidar -> ego(t_lidar) -> global -> ego(t_cam) -> camera composed into one (4, 4) transform.

    Arguments are the four records the devkit applies one after another (``calibrated_sensor`` of the LiDAR,
    ``ego_pose`` of the LiDAR sample_data, ``ego_pose`` of the camera sample_data, ``calibrated_sensor`` of the
    camera), each as a (4, 4) sensor-to-parent transform. The result maps LiDAR points at the sweep's time into the
    camera frame at the image's time, so ego motion between the two timestamps is folded in.
    """
    return (
        invert_rigid(camera_to_ego)
        @ invert_rigid(ego_to_global_at_camera)
        @ np.asarray(ego_to_global_at_lidar, dtype=np.float64)
        @ np.asarray(lidar_to_ego, dtype=np.float64)
    )


def _as_4x4(m: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    elif m.shape == (3, 3):
        out = np.eye(4)
        out[:3, :3] = m
        m = out
    if m.shape != (4, 4):
        raise ValueError(f"{what}: expected a 3x3, 3x4 or 4x4 matrix, got shape {m.shape}")
    return m


def decompose_projection(projection: np.ndarray, what: str = "projection matrix") -> tuple[np.ndarray, np.ndarray]:
    """Split a (3, 4) camera projection ``P = K [R | t]`` into intrinsics ``K`` (3, 3) and a rigid (4, 4) ``[R | t]``.

    ``K`` is upper triangular with positive diagonal and ``K[2, 2] = 1`` (RQ decomposition of ``P[:, :3]``; for
    KITTI's rectified ``P0..P3`` the left block already is ``K`` and ``R`` is the identity). ``t = K^-1 P[:, 3]`` is
    the offset of the camera from the reference (rectified camera-0) frame, e.g. KITTI's ``P2`` puts camera 2
    about 6 cm to the left of camera 0: ``t_x = P2[0, 3] / fx``.
    """
    p = np.asarray(projection, dtype=np.float64)
    if p.shape != (3, 4):
        raise ValueError(f"{what}: expected a 3x4 projection, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{what}: projection has non-finite entries")
    m = p[:, :3]
    if abs(np.linalg.det(m)) < 1e-9:
        raise ValueError(f"{what}: left 3x3 block is singular (det {np.linalg.det(m):.3g}), cannot extract intrinsics")
    from scipy.linalg import rq

    k, r = rq(m)
    signs = np.diag(np.sign(np.diag(k)))  # make the diagonal of K positive; signs @ signs = I
    k, r = k @ signs, signs @ r
    if np.linalg.det(r) < 0:
        raise ValueError(f"{what}: the rotation part has determinant -1 (a reflection), not a camera")
    scale = k[2, 2]
    k = k / scale
    t = np.linalg.solve(k, p[:, 3] / scale)
    extr = np.eye(4)
    extr[:3, :3] = r
    extr[:3, 3] = t
    k[np.abs(k) < 1e-12] = 0.0
    return k, extr


def kitti_lidar_to_camera(
    tr_velo_to_cam: np.ndarray,
    projection: np.ndarray,
    r0_rect: np.ndarray | None = None,
    what: str = "calibration",
) -> tuple[np.ndarray, np.ndarray]:
    """KITTI chain: velodyne -> camera 0 (``Tr``) -> rectified camera 0 (``R0_rect``) -> camera ``P_i``.

    The usual projection ``P_i @ R0_rect @ Tr`` is refactored as ``K @ [I | 0] @ (E @ R0_rect @ Tr)`` where
    ``P_i = K [R | t]`` (:func:`decompose_projection`) and ``E = [R | t]``, so the returned ``lidar_to_camera``
    ``E @ R0_rect @ Tr`` is rigid and ``K`` is a plain 3x3 pinhole matrix. SemanticKITTI's ``calib.txt`` has no
    ``R0_rect`` (its ``Tr`` already maps to the rectified camera-0 frame): pass ``None`` for the identity.

    Returns ``(intrinsics (3, 3), lidar_to_camera (4, 4))``. Raises ``ValueError`` naming ``what`` if any matrix is
    singular or the composed transform is not rigid.
    """
    tr = check_rigid(_as_4x4(tr_velo_to_cam, f"{what}: Tr"), f"{what}: Tr (velodyne to camera 0)")
    r0 = np.eye(4) if r0_rect is None else check_rigid(_as_4x4(r0_rect, f"{what}: R0_rect"), f"{what}: R0_rect")
    k, extr = decompose_projection(projection, f"{what}: projection")
    l2c = check_rigid(extr @ r0 @ tr, f"{what}: composed lidar_to_camera")
    return k, l2c


def kitti_lidar_poses(camera_poses: np.ndarray, tr_velo_to_cam: np.ndarray) -> np.ndarray:
    """LiDAR poses from KITTI odometry / SemanticKITTI ``poses.txt`` camera-0 poses.

    ``poses.txt`` line ``i`` is the pose of camera 0 at scan ``i`` in the frame of camera 0 at scan 0. A LiDAR
    point ``p`` of scan ``i`` reaches that world frame as ``pose_i @ Tr @ p``; expressing the world in the LiDAR frame
    of scan 0 instead (so z is up) gives the LiDAR-to-world pose ``Tr^-1 @ pose_i @ Tr`` (SemanticKITTI's own
    devkit uses the same formula). ``camera_poses`` (M, 4, 4) -> (M, 4, 4) float64.
    """
    tr = _as_4x4(tr_velo_to_cam, "Tr")
    return invert_rigid(tr)[None] @ np.asarray(camera_poses, dtype=np.float64) @ tr[None]


# ----------------------------------------------------------------------------------------------------------------
# Calibration stress test.

PERTURB_MAX_ROTATION_DEG = 10.0
"""Rotation error at ``fraction = 1`` in :func:`perturb_extrinsics` (degrees)."""
PERTURB_MAX_TRANSLATION_M = 0.5
"""Translation error at ``fraction = 1`` in :func:`perturb_extrinsics` (metres)."""


def perturb_extrinsics(
    lidar_to_camera: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    max_rotation_deg: float = PERTURB_MAX_ROTATION_DEG,
    max_translation_m: float = PERTURB_MAX_TRANSLATION_M,
) -> np.ndarray:
    """Mis-calibrate a LiDAR-to-camera transform by a controlled amount (calibration stress test).

    ``fraction`` in ``[0, 1]`` sets the size of the error exactly, only its direction is random: the camera is
    rotated by ``fraction * max_rotation_deg`` degrees about a uniformly random axis and shifted by
    ``fraction * max_translation_m`` metres in a uniformly random direction (both in the camera frame). With the
    defaults, ``fraction = 0.1`` ("10 % misalignment") is a 1 degree rotation and a 5 cm shift. The LargeAD paper does
    not define its misalignment percentage; this scale is our choice. Returns a new (4, 4) rigid transform
    ``D @ lidar_to_camera`` with ``D = [R_err | t_err]``.
    """
    if not 0.0 <= fraction <= 1.0 or not np.isfinite(fraction):
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    base = check_rigid(lidar_to_camera, "lidar_to_camera")
    axis = rng.normal(size=3)
    direction = rng.normal(size=3)
    delta = np.eye(4)
    delta[:3, :3] = axis_angle_to_matrix(axis, np.deg2rad(fraction * max_rotation_deg))
    delta[:3, 3] = fraction * max_translation_m * direction / np.linalg.norm(direction)
    return delta @ base
