"""Rotations of the linear models: Euler angles <-> matrices, nearest proper rotation.

3D angles ``(ax, ay, az)`` in radians with ``R = Rz @ Ry @ Rx`` (ITK's Euler3D with
``ComputeZYX`` on); 2D: one angle, counter-clockwise from +x towards +y.
"""

from __future__ import annotations

import numpy as np

__all__ = ["euler_to_matrix", "matrix_to_euler", "nearest_rotation"]


def _rot2(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def _axis_rotations(angles: np.ndarray) -> list[np.ndarray]:
    """[Rx, Ry, Rz] and their derivatives [dRx, dRy, dRz] (radians)."""
    ax, ay, az = angles
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    drx = np.array([[0, 0, 0], [0, -sx, -cx], [0, cx, -sx]])
    dry = np.array([[-sy, 0, cy], [0, 0, 0], [-cy, 0, -sy]])
    drz = np.array([[-sz, -cz, 0], [cz, -sz, 0], [0, 0, 0]])
    return [rx, ry, rz, drx, dry, drz]


def euler_to_matrix(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles: 2D ``(a,)`` or 3D ``(ax, ay, az)`` with R = Rz Ry Rx."""
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if angles.size == 1:
        return _rot2(angles[0])
    rx, ry, rz = _axis_rotations(angles)[:3]
    return rz @ ry @ rx


def matrix_to_euler(rotation: np.ndarray) -> np.ndarray:
    """Angles (radians) of a proper rotation, inverse of :func:`euler_to_matrix`.

    3D: ``ay`` is in [-pi/2, pi/2]; at gimbal lock (``|ay| = pi/2``) ``az`` is set to 0.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape == (2, 2):
        return np.array([np.arctan2(r[1, 0], r[0, 0])])
    cy = np.hypot(r[0, 0], r[1, 0])
    ay = np.arctan2(-r[2, 0], cy)
    if cy > 1e-9:
        ax = np.arctan2(r[2, 1], r[2, 2])
        az = np.arctan2(r[1, 0], r[0, 0])
    else:  # gimbal lock: only ax +- az is defined; choose az = 0
        az = 0.0
        ax = np.arctan2(r[0, 1], r[1, 1]) if r[2, 0] < 0 else np.arctan2(-r[0, 1], r[1, 1])
    return np.array([ax, ay, az])


def nearest_rotation(linear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest proper rotation (Frobenius, det +1) to a d x d matrix, and its singular values.

    Polar decomposition through the SVD ``A = U S V^T``: ``R = U diag(1, .., det(U V^T)) V^T``.
    """
    u, s, vt = np.linalg.svd(np.asarray(linear, dtype=np.float64))
    fix = np.ones(len(s))
    fix[-1] = np.sign(np.linalg.det(u @ vt)) or 1.0
    return (u * fix) @ vt, s
