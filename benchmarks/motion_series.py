"""Synthetic 4D series with known per-frame rigid head motion, built from the MNI T1.

Conventions (GUIDE §2): ``motion[k]`` is the 4x4 matrix mapping **reference** world RAS mm
(frame 0, which does not move) to **frame k** world mm, the direction a motion-correction
transform has. Frame k is made by pull resampling the 1 mm template through the inverse,
``frame_k(y) = template(motion[k]^{-1}(y))``, onto a coarser grid (2 mm by default), so
``frame_k(motion[k](x)) = frame_0(x)`` and a perfect correction returns ``motion[k]``.

On top of the motion: Gaussian noise (2 % of the intensity range) and a slow multiplicative
intensity drift (+8 % over the run, with a gentle spatial gradient), as scanner drift does.
The error of an estimate is the mean over the brain voxels x of ``|T_est(x) - motion[k](x)|``.

Only numpy, scipy and nibabel (no napari_reg import): it runs in the peers' venv too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pairs import brain_mask, load_mni

__all__ = ["MotionSeries", "make_series", "rigid_matrix", "frame_errors"]

MAX_ROTATION_DEG = 3.0
MAX_TRANSLATION_MM = 4.0


@dataclass
class MotionSeries:
    """``data`` (X, Y, Z, T) float32 on ``affine`` (voxel -> world RAS mm), the true
    reference->frame maps ``motion`` (T, 4, 4), the brain ``mask`` on the grid, ``tr`` s."""

    data: np.ndarray
    affine: np.ndarray
    motion: np.ndarray
    mask: np.ndarray
    tr: float = 2.0

    def mask_points(self) -> np.ndarray:
        ijk = np.argwhere(self.mask).astype(np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


def rigid_matrix(angles_deg: np.ndarray, translation_mm: np.ndarray,
                 center: np.ndarray) -> np.ndarray:
    """``x -> R (x - c) + c + t`` with ``R = Rz Ry Rx`` (angles in degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = center + np.asarray(translation_mm) - r @ center
    return m


def _trajectory(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 6) motion parameters: a slow random walk plus one or two sudden jerks, clipped
    to the bounds; frame 0 is at rest (all zero)."""
    steps = rng.normal(0.0, 1.0, size=(n, 6)) * np.r_[[0.15] * 3, [0.25] * 3]
    for k in rng.choice(np.arange(2, n), size=min(2, n - 2), replace=False):
        steps[k] += rng.normal(0.0, 1.0, size=6) * np.r_[[1.0] * 3, [1.5] * 3]
    params = np.cumsum(steps, axis=0)
    params -= params[0]
    bounds = np.r_[[MAX_ROTATION_DEG] * 3, [MAX_TRANSLATION_MM] * 3]
    return np.clip(params, -bounds, bounds)


def make_series(n_frames: int = 16, step: int = 2, seed: int = 20261202,
                noise: float = 0.02, drift: float = 0.08) -> MotionSeries:
    """The series on the ``step`` mm template grid (see the module docstring)."""
    t1, gm, wm, affine1 = load_mni(1)
    rng = np.random.default_rng(seed)
    # Anti-alias the 1 mm template before sampling it on the coarser grid.
    source = ndimage.gaussian_filter(t1, sigma=0.4 * step) if step > 1 else t1
    coeffs = ndimage.spline_filter(source.astype(np.float64), order=3)
    grid_affine = affine1.copy()
    grid_affine[:3, :3] *= step
    shape = tuple(int(s) for s in np.ceil(np.asarray(t1.shape) / step))
    mask = brain_mask(gm[::step, ::step, ::step], wm[::step, ::step, ::step])
    ijk = np.argwhere(mask).mean(axis=0)
    center = grid_affine[:3, :3] @ ijk + grid_affine[:3, 3]
    params = _trajectory(rng, n_frames)
    motion = np.stack([rigid_matrix(p[:3], p[3:], center) for p in params])
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    gradient = (np.indices(shape, dtype=np.float32)[0] / shape[0] - 0.5).astype(np.float32)
    frames = np.empty(shape + (n_frames,), np.float32)
    for k in range(n_frames):
        # voxel of the frame grid -> world -> reference world -> 1 mm template voxel
        vox = np.linalg.inv(affine1) @ np.linalg.inv(motion[k]) @ grid_affine
        coords = vox[:3, :3] @ grid + vox[:3, 3:4]
        frame = ndimage.map_coordinates(coeffs, coords, order=3, prefilter=False,
                                        mode="constant", cval=0.0).reshape(shape)
        frame = np.clip(frame, 0.0, None).astype(np.float32)
        gain = 1.0 + drift * k / max(n_frames - 1, 1) * (1.0 + 0.5 * gradient)
        frame = frame * gain + rng.normal(0.0, noise * 255.0, size=shape).astype(np.float32)
        frames[..., k] = np.clip(frame, 0.0, None)
    return MotionSeries(frames, grid_affine, motion, mask)


def frame_errors(series: MotionSeries, estimates: np.ndarray,
                 points: np.ndarray | None = None) -> np.ndarray:
    """Per frame: mean over the brain of ``|T_est(x) - T_true(x)|`` in mm. ``estimates``
    are (T, 4, 4) reference->frame world matrices (RAS mm)."""
    pts = series.mask_points() if points is None else points
    errors = []
    for est, true in zip(np.asarray(estimates), series.motion, strict=True):
        diff = est - true
        errors.append(float(np.linalg.norm(pts @ diff[:3, :3].T + diff[:3, 3], axis=1).mean()))
    return np.asarray(errors)
