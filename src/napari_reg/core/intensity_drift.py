"""A frame's smooth intensity drift relative to the reference: fitted, then applied.

Scanner drift is not a global scale: receive-coil and B1 changes make it vary slowly in
space. A global-correlation (or histogram) metric reads a spatial gain gradient as a
small shift, so motion correction of a drifting series is biased (on the synthetic MNI
series of benchmarks/bench_motion.py, 0.006 mm without drift, 0.019 mm with +8 % drift
and a gradient). Modelled here as a first-order gain field in world space,

    frame(T(x)) ~= gain(x) * reference(x),   gain(x) = c0 + c . (x - centre) / 100 mm,

fitted by least squares once the frame is roughly aligned; the reference multiplied by
the gain is then what the frame is registered to. Qt-free and file-free.
"""

from __future__ import annotations

import numpy as np

from .image import Volume

__all__ = ["fit_gain", "apply_gain", "GAIN_SCALE_MM"]

GAIN_SCALE_MM = 100.0  # world offsets are divided by this: coefficients of order 1
_MAX_POINTS = 200_000


def _design(reference: Volume, ijk: np.ndarray) -> np.ndarray:
    world = reference.voxel_to_world(ijk.astype(np.float64))
    offsets = (world - reference.center_world()) / GAIN_SCALE_MM
    return np.column_stack([np.ones(len(ijk)), offsets])


def fit_gain(reference: Volume, aligned: np.ndarray, mask: np.ndarray | None = None
             ) -> np.ndarray:
    """Coefficients ``(c0, c_x, c_y, c_z)`` of ``aligned ~= gain * reference``.

    ``aligned`` is the frame resampled on the reference grid through its current map
    (NaN where the frame has no data). Fitted over ``mask`` (default: voxels above 10 % of
    the reference's 99th percentile, where the signal dominates the noise). Returns the
    identity gain ``(1, 0, 0, 0)`` when there is too little to fit.
    """
    ref = np.asarray(reference.data, dtype=np.float64)
    aligned = np.asarray(aligned, dtype=np.float64)
    if mask is None:
        mask = ref > 0.1 * np.percentile(ref, 99)
    use = mask & np.isfinite(aligned)
    ijk = np.argwhere(use)
    identity = np.array([1.0, 0.0, 0.0, 0.0])
    if len(ijk) < 100:
        return identity
    if len(ijk) > _MAX_POINTS:
        ijk = ijk[:: len(ijk) // _MAX_POINTS + 1]
    r = ref[tuple(ijk.T)]
    a = aligned[tuple(ijk.T)]
    design = _design(reference, ijk) * r[:, None]
    coeffs, *_ = np.linalg.lstsq(design, a, rcond=None)
    return coeffs if np.all(np.isfinite(coeffs)) and coeffs[0] > 0 else identity


def apply_gain(reference: Volume, coeffs: np.ndarray) -> Volume:
    """The reference multiplied by the gain field (float32, same grid).

    The gain is affine in world coordinates, hence in voxel indices: it is summed from
    one ramp per axis (broadcast), never from a world coordinate per voxel.
    """
    coeffs = np.asarray(coeffs, dtype=np.float64)
    linear, offset = reference.affine[:3, :3], reference.affine[:3, 3]
    per_index = linear.T @ coeffs[1:] / GAIN_SCALE_MM  # d gain / d (i, j, k)
    gain = coeffs[0] + coeffs[1:] @ (offset - reference.center_world()) / GAIN_SCALE_MM
    field = np.full(reference.shape, gain, dtype=np.float32)
    for axis, slope in enumerate(per_index):
        shape = [1, 1, 1]
        shape[axis] = reference.shape[axis]
        field = field + (slope * np.arange(reference.shape[axis])).astype(
            np.float32).reshape(shape)
    return reference.with_data((np.asarray(reference.data) * field).astype(np.float32))
