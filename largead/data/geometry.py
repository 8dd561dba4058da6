"""Camera-LiDAR geometry: rigid transforms, projection into cameras, augmentations that keep pairs consistent.

One implementation of each idea lives here; readers only parse files.
"""

from __future__ import annotations

import numpy as np


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
