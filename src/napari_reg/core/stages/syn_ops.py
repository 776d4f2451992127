"""Dense operations of the SyN stage on voxel grids: the half-way exponentials
``exp(+-v/2)``, linear warps, Gaussian smoothing of vector components, and the thread
pool they share on large grids. Arrays are ``(d, *shape)`` in voxel units of one grid."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..image import Volume
from ..resample import resample
from ..transforms.field import _pool
from ..transforms.velocity import exp_voxel

__all__ = ["half_maps", "upsample2", "warp_linear", "smooth_components", "parallel_map",
           "moving_mask_on", "moving_mask_mid", "PARALLEL_VOXELS"]

# Grids from this size up run their per-component / per-image work on two threads. A 2D
# slice (256 x 256: 65 k pixels, 16 k at half resolution) is well above it: its SyN
# iterations take a few ms, against ~0.1 ms to hand two tasks to the pool.
PARALLEL_VOXELS = 16_384


def half_maps(v_vox: np.ndarray, shrink: int, check) -> tuple[np.ndarray, np.ndarray]:
    """``exp(+v/2)`` and ``exp(-v/2)`` as voxel displacements on ``v_vox``'s grid.

    With ``shrink > 1`` the scaling and squaring runs on every ``shrink``-th voxel (a
    ``shrink**d`` times smaller grid) and the result is interpolated back (linear). Why:
    the exponentials are most of an iteration's cost, and ``v`` is smooth on the scale of
    the update's Gaussian (3 voxels), so the coarse grid carries it. Only the
    iterations' forces use these maps; the result's exponential is always exact.
    """
    shape = v_vox.shape[1:]
    if shrink <= 1 or min(shape) < 8 * shrink:
        return (exp_voxel(0.5 * v_vox, max_step_voxels=0.5, check=check),
                exp_voxel(-0.5 * v_vox, max_step_voxels=0.5, check=check))
    # coarse voxel j sits at fine voxel shrink * j: vectors shrink by the same factor
    coarse = v_vox[(slice(None),) + (slice(None, None, shrink),) * len(shape)]
    coarse = coarse * np.float32(0.5 / shrink)
    # linear zoom onto fine voxels 0, 1, ..., shrink * (n_c - 1) (grid_mode=False maps the
    # end samples onto each other exactly); the rest of an axis repeats its last value
    n_coarse = np.asarray(coarse.shape[1:])
    spanned = shrink * (n_coarse - 1) + 1
    zoom = tuple(float(f) for f in spanned / n_coarse)
    pad = [(0, 0)] + [(0, int(n - m)) for n, m in zip(shape, spanned, strict=True)]

    def one(sign: float) -> np.ndarray:
        u = exp_voxel(sign * coarse, max_step_voxels=0.5, check=check)
        fine = (np.stack([upsample2(c) for c in u]) if shrink == 2 else
                np.stack([ndimage.zoom(c, zoom, order=1, mode="nearest", grid_mode=False,
                                       prefilter=False, output=np.float32) for c in u]))
        fine *= np.float32(shrink)
        return np.pad(fine, pad, mode="edge") if any(p[1] for p in pad) else fine

    out = parallel_map(one, [1.0, -1.0], v_vox[0].size)
    return out[0], out[1]


def upsample2(coarse: np.ndarray) -> np.ndarray:
    """Linear interpolation of samples at fine voxels 0, 2, 4, ... onto 0, 1, 2, ...,
    2 (n - 1) along every axis: what ``ndimage.zoom(order=1, grid_mode=False)`` gives,
    by slicing (zoom took ~40 % of a full-resolution SyN iteration)."""
    out = np.asarray(coarse, np.float32)
    for axis in range(out.ndim):
        a = np.moveaxis(out, axis, 0)
        fine = np.empty((2 * a.shape[0] - 1,) + a.shape[1:], np.float32)
        fine[0::2] = a
        fine[1::2] = a[:-1]
        fine[1::2] += a[1:]
        fine[1::2] *= np.float32(0.5)
        out = np.moveaxis(fine, 0, axis)
    return np.ascontiguousarray(out)


def warp_linear(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation of an array at voxel coordinates ``(d, *shape)`` (edges: nearest)."""
    return ndimage.map_coordinates(image, coords, order=1, mode="nearest", prefilter=False,
                                   output=np.float32)


def smooth_components(components: np.ndarray, sigma_voxels: float,
                      spacing: np.ndarray) -> np.ndarray:
    """Gaussian smoothing of each vector component.

    ``sigma_voxels`` counts voxels of the finest axis; coarser axes of an anisotropic grid
    get proportionally fewer voxels, so the kernel is isotropic in mm.
    """
    if sigma_voxels <= 0:
        return components
    sigma = sigma_voxels * float(spacing.min()) / np.asarray(spacing, np.float64)
    return np.stack(parallel_map(lambda c: ndimage.gaussian_filter(
        c, sigma, mode="nearest", truncate=3.0), list(components), components[0].size))


def parallel_map(fn, items: list, size: int) -> list:
    """``[fn(x) for x in items]``, on the field module's thread pool for grids of
    :data:`PARALLEL_VOXELS` or more: scipy.ndimage and numpy's arithmetic release the
    GIL, so the two images' warps, the two half maps, the local NCC's box sums and the
    smoothing of each component run side by side (2 threads: ~1.7x on a 2 mm brain)."""
    if size < PARALLEL_VOXELS or len(items) < 2:
        return [fn(x) for x in items]
    return list(_pool().map(fn, items))


def moving_mask_on(mask: Volume | None, grid: Volume, matrix: np.ndarray) -> np.ndarray | None:
    """The moving-image mask (non-zero = use) pulled onto ``grid`` through the linear
    fixed->moving ``matrix``: float32 in [0, 1] (linear interpolation; 0 outside the
    moving grid), or None without a mask."""
    if mask is None:
        return None
    as_float = mask.with_data((np.asarray(mask.data) != 0).astype(np.float32))
    return resample(as_float, grid, matrix, "linear", fill=0.0).data.astype(np.float32,
                                                                             copy=False)


def moving_mask_mid(moving_in: np.ndarray, coords: np.ndarray, metric: str,
                    radius: int) -> np.ndarray:
    """Where the similarity may look (bool, mid-space grid): the linearly mapped moving
    mask warped like the moving image (``coords``, voxel units), eroded so that no
    term of the force reads a masked-out moving voxel: a local NCC window touching the
    hole gets no weight (``radius``), and the central-difference gradient at a window's
    edge reads one voxel further (+1); other metrics: the gradient's one voxel."""
    inside = (warp_linear(moving_in, coords) >= 0.5).astype(np.uint8)
    reach = int(radius) + 1 if metric.lower() in ("lncc", "cc") else 1
    return ndimage.minimum_filter(inside, size=2 * reach + 1, mode="nearest").astype(bool)
