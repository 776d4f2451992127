"""Warping a moving image onto a display grid: the fast approximate warps of live views.

``warp_to_grid`` computes ``moving(T(x))`` on any voxel grid (a coarse copy of the fixed
grid from :func:`coarse_grid`, one plane of the display grid, a QC grid); for smooth
non-linear maps the live preview evaluates ``T`` on every ``LIVE_MAP_STEP``-th voxel only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.image import Volume
from ..core.preview import affine_points
from ..core.resample import resample
from ..core.transforms.base import Transform

__all__ = ["coarse_grid", "warp_to_grid", "LIVE_MAP_STEP"]

# Live preview of a non-linear map: evaluate T on every 2nd coarse voxel per axis (1/8
# of the points in 3D) and interpolate; see _warp_sampled_map.
LIVE_MAP_STEP = 2


def coarse_grid(reference: Volume, max_voxels: int = 1_000_000) -> tuple[tuple[int, ...],
                                                                           np.ndarray]:
    """A grid covering ``reference``'s extent with at most ``max_voxels`` voxels.

    Returns ``(shape, affine)``: ``affine`` maps coarse voxel indices to world RAS mm.
    The first and last coarse voxel centres coincide with the reference's, so the
    coarse grid spans exactly the same box. The finest axes (smallest mm spacing) are
    coarsened first, so anisotropic volumes become closer to isotropic.
    """
    shape = np.asarray(reference.shape, dtype=int)
    spacing = reference.spacing
    factor = np.ones(len(shape))
    out = shape.copy()
    while np.prod(out) > max_voxels:
        # coarsen the axis whose coarse spacing is currently smallest
        axis = int(np.argmin(spacing * factor + (out <= 2) * 1e9))
        if out[axis] <= 2:
            break
        factor[axis] += 1
        out = np.maximum(np.ceil(shape / factor).astype(int), 2)
        out = np.minimum(out, shape)
    step = np.where(out > 1, (shape - 1) / np.maximum(out - 1, 1), 1.0)
    scale = np.eye(len(shape) + 1)
    scale[: len(shape), : len(shape)] = np.diag(step)
    return tuple(int(v) for v in out), reference.affine @ scale


def warp_to_grid(moving: Volume, transform: Transform, shape: tuple[int, ...],
                 grid_affine: np.ndarray, order: int = 1, map_step: int = 1) -> np.ndarray:
    """``moving(T(x))`` for every voxel centre x of the grid ``(shape, grid_affine)``.

    ``transform`` maps fixed world RAS mm -> moving world RAS mm. Linear maps go through
    one ``scipy.ndimage.affine_transform`` with the combined voxel matrix
    ``inv(A_moving) @ T @ A_grid`` (grid voxel -> moving voxel); others through
    :func:`napari_reg.core.resample.resample`, or, with ``map_step > 1`` (the live
    preview), through :func:`_warp_sampled_map`. Outside the moving image: 0. float32.
    """
    d = moving.ndim
    if transform.is_linear:
        m = np.linalg.inv(moving.affine) @ np.asarray(transform.matrix) @ grid_affine
        # Snap round-off (inv(A) @ A is not exactly I): a voxel centre computed as -1e-15
        # would fall "outside" and show as the fill value along the edges.
        nearest = np.round(m)
        m = np.where(np.abs(m - nearest) < 1e-9, nearest, m)
        # integer inputs work with a float32 output: no per-frame conversion copy
        data = moving.data if moving.data.dtype != bool else moving.data.view(np.uint8)
        return ndimage.affine_transform(data, m[:d, :d], offset=m[:d, d], output_shape=shape,
                                        order=order, mode="constant", cval=0.0,
                                        output=np.float32, prefilter=False)
    if map_step > 1 and max(shape) > 2 * map_step:
        return _warp_sampled_map(moving, transform, shape, grid_affine, order, map_step)

    reference = Volume(np.zeros(shape, dtype=np.uint8), grid_affine, "grid")
    out = resample(moving, reference, transform, interpolation="linear" if order else "nearest")
    return np.asarray(out.data, dtype=np.float32)


def _warp_sampled_map(moving: Volume, transform: Transform, shape: tuple[int, ...],
                      grid_affine: np.ndarray, order: int, step: int) -> np.ndarray:
    """A fast approximate warp for smooth non-linear maps (live preview only).

    Evaluating a B-spline or velocity-field map costs microseconds per point, so T is
    evaluated on every ``step``-th grid voxel only (from the first; the last sample may
    lie just past the grid), the resulting moving-voxel coordinates are interpolated
    (linearly, separably) to every voxel, and
    the moving image is sampled there once. Registration deformations are smooth on the
    scale of a few coarse voxels, so the preview differs from the exact warp only at
    sharp edges; the final result is always warped exactly.
    """
    d = len(shape)
    # samples at voxels 0, step, 2 step, ... (the last one may lie just past the grid:
    # T is defined everywhere), so the upsampling below is exact linear interpolation;
    # thin axes (a live plane is one voxel thick) are sampled at every voxel
    steps = [step if n > 2 * step else 1 for n in shape]
    counts = [n if s == 1 else max(2, int(np.ceil((n - 1) / s)) + 1)
              for n, s in zip(shape, steps, strict=True)]
    axes = [np.arange(m, dtype=np.float64) * s for m, s in zip(counts, steps, strict=True)]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)
    mapped = transform.transform_points(affine_points(grid_affine, ijk))
    # moving voxel coordinates in float32 (ample for sampling; half the memory traffic)
    coords = affine_points(np.linalg.inv(moving.affine), mapped).astype(np.float32)
    coords = np.moveaxis(coords.reshape(*counts, d), -1, 0)
    for axis, n in enumerate(shape):
        if steps[axis] > 1:
            coords = _upsample_axis(coords, steps[axis], n, axis + 1)
    data = moving.data if moving.data.dtype != bool else moving.data.view(np.uint8)
    return ndimage.map_coordinates(data, coords, order=order, mode="constant", cval=0.0,
                                   output=np.float32, prefilter=False)


def _upsample_axis(values: np.ndarray, step: int, n: int, axis: int) -> np.ndarray:
    """Linear interpolation by an integer ``step`` along ``axis`` (samples at 0, step,
    2 step, ...), cropped to ``n``: separable and exact, cheaper than ``ndimage.zoom``."""
    a = np.moveaxis(values, axis, 0)
    out = np.empty((step * (a.shape[0] - 1) + 1,) + a.shape[1:], dtype=a.dtype)
    out[0::step] = a
    delta = a[1:] - a[:-1]
    for r in range(1, step):
        out[r::step] = a[:-1] + np.float32(r / step) * delta
    return np.moveaxis(out[:n], 0, axis)
