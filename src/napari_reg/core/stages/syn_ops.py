"""Dense operations of the SyN stage on voxel grids: the half-way exponentials
``exp(+-v/2)``, linear warps, Gaussian smoothing of vector components, and the thread
pool they share on large grids. Arrays are ``(d, *shape)`` in voxel units of one grid."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from ..image import Volume
from ..metrics.dense import DenseMetric, symmetric_force
from ..resample import resample
from ..transforms.field import _pool, _to_voxel_vectors, in_pool
from ..transforms.velocity import exp_voxel

__all__ = ["symmetric_gradient", "intersect_masks", "half_maps", "upsample2", "warp_linear",
           "smooth_components", "parallel_map", "parallel_imap", "moving_mask_on",
           "moving_mask_mid", "PARALLEL_VOXELS"]

# Grids from this size up run their per-component / per-image work on two threads. A 2D
# slice (256 x 256: 65 k pixels, 16 k at half resolution) is well above it: its SyN
# iterations take a few ms, against ~0.1 ms to hand two tasks to the pool.
PARALLEL_VOXELS = 16_384


def symmetric_gradient(v: np.ndarray, grid_affine: np.ndarray, exp_shrink: int,
                       warped_lin: np.ndarray, fimg: np.ndarray, idx: np.ndarray,
                       mask: np.ndarray | None, moving_in: np.ndarray | None,
                       dense: DenseMetric, metric: str, radius: int, check
                       ) -> tuple[float, np.ndarray, np.ndarray]:
    """One SyN iteration's cost and its gradient with respect to the velocity ``v``.

    ``v``: ``(d, *shape)`` world mm on the grid ``grid_affine``; ``fimg`` the fixed image
    and ``warped_lin`` the moving one under the linear map, on that grid; ``idx`` its
    voxel index grid. Returns ``(cost, gradient, half)``: the gradient ``dC/dJ grad J -
    dC/dI grad I`` at the middle images (``(d, *shape)``, world mm^-1, a fresh array the
    caller may update in place) and the half map ``exp(v/2)`` (voxel units, fresh).
    Every other array of the iteration is freed on return (1 mm brain: each is 35-105 MB).
    """
    # exp(+-v/2) with steps of at most half a voxel: invertible, and cheap
    half, half_inv = half_maps(_to_voxel_vectors(v, grid_affine), exp_shrink, check)
    size = fimg.size
    j_mid, i_mid = parallel_map(lambda pair: warp_linear(pair[0], idx + pair[1]),
                                [(warped_lin, half), (fimg, half_inv)], size)
    del half_inv
    check()
    # the fixed mask stays on the fixed grid: the velocity lives there
    mid_mask = mask if moving_in is None else intersect_masks(mask, moving_mask_mid(
        moving_in, idx + half, metric, radius))
    cost, d_i, d_j = dense.value_and_derivatives(i_mid, j_mid, mid_mask, check=check)
    check()
    grad = symmetric_force(d_i, i_mid, d_j, j_mid, grid_affine,
                           lambda fn, items: parallel_map(fn, items, size))
    return cost, grad, half


def intersect_masks(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The intersection of two optional masks (None: no restriction)."""
    return b if a is None else a if b is None else a & b


def half_maps(v_vox: np.ndarray, shrink: int, check,
              signs: tuple[float, ...] = (1.0, -1.0)) -> list[np.ndarray]:
    """``exp(+v/2)`` and ``exp(-v/2)`` as voxel displacements on ``v_vox``'s grid (one
    float32 ``(d, *shape)`` array per entry of ``signs``).

    With ``shrink > 1`` the scaling and squaring runs on every ``shrink``-th voxel (a
    ``shrink**d`` times smaller grid) and the result is interpolated back (linear). Why:
    the exponentials are most of an iteration's cost, and ``v`` is smooth on the scale of
    the update's Gaussian (3 voxels), so the coarse grid carries it. Only the
    iterations' forces use these maps; the result's exponential is always exact.
    """
    shape = v_vox.shape[1:]
    if shrink <= 1 or min(shape) < 8 * shrink:
        return [exp_voxel(np.float32(0.5 * sign) * v_vox, max_step_voxels=0.5, check=check)
                for sign in signs]
    # coarse voxel j sits at fine voxel shrink * j: vectors shrink by the same factor
    coarse = v_vox[(slice(None),) + (slice(None, None, shrink),) * len(shape)]
    coarse = coarse * np.float32(0.5 / shrink)
    # linear zoom onto fine voxels 0, 1, ..., shrink * (n_c - 1) (grid_mode=False maps the
    # end samples onto each other exactly); the rest of an axis repeats its last value
    n_coarse = np.asarray(coarse.shape[1:])
    spanned = tuple(int(m) for m in shrink * (n_coarse - 1) + 1)
    zoom = tuple(float(f) for f in np.asarray(spanned) / n_coarse)
    inner = tuple(slice(0, m) for m in spanned)

    def one(sign: float) -> np.ndarray:
        u = exp_voxel(np.float32(sign) * coarse, max_step_voxels=0.5, check=check)
        fine = np.empty(v_vox.shape, np.float32)  # written in place: no stack, no pad
        for c, fine_c in zip(u, fine, strict=True):
            if shrink == 2:
                fine_c[inner] = upsample2(c)
            else:
                ndimage.zoom(c, zoom, order=1, mode="nearest", grid_mode=False,
                             prefilter=False, output=fine_c[inner])
            _repeat_edges(fine_c, spanned)
        fine *= np.float32(shrink)
        return fine

    return parallel_map(one, list(signs), v_vox[0].size)


def _repeat_edges(a: np.ndarray, filled: tuple[int, ...]) -> None:
    """Fill ``a`` beyond ``a[:filled[0], :filled[1], ...]`` with the last filled value
    along each axis (numpy's ``pad(mode="edge")``, in place)."""
    for axis, m in enumerate(filled):
        if m < a.shape[axis]:
            view = np.moveaxis(a, axis, 0)
            view[m:] = view[m - 1]


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
                      spacing: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Gaussian smoothing of each vector component (``in_place``: into ``components``,
    exact, as scipy's 1D passes buffer each line).

    ``sigma_voxels`` counts voxels of the finest axis; coarser axes of an anisotropic grid
    get proportionally fewer voxels, so the kernel is isotropic in mm.
    """
    if sigma_voxels <= 0:
        return components
    sigma = sigma_voxels * float(spacing.min()) / np.asarray(spacing, np.float64)
    out = components if in_place else np.empty_like(components)
    parallel_map(lambda k: ndimage.gaussian_filter(
        components[k], sigma, mode="nearest", truncate=3.0, output=out[k]),
        list(range(len(components))), components[0].size)
    return out


def parallel_imap(fn, items: list, size: int) -> Iterator:
    """:func:`parallel_map` as an iterator, in order: each result is handed over when it
    is done and can be freed once used. At most one task per pool thread runs ahead of
    the consumer (an executor's ``map`` would run all of them, and on a 1 mm brain each
    finished box sum waiting to be used holds 35 MB); serially, each is computed only
    when asked for."""
    if size < PARALLEL_VOXELS or len(items) < 2 or in_pool():
        return (fn(x) for x in items)
    return _windowed(fn, items)


def _windowed(fn, items: list) -> Iterator:
    pool = _pool()
    pending: deque = deque()
    rest = iter(items)
    try:
        for x in itertools.islice(rest, pool._max_workers):
            pending.append(pool.submit(fn, x))
        while pending:
            result = pending.popleft().result()
            for x in itertools.islice(rest, 1):
                pending.append(pool.submit(fn, x))
            yield result
            del result
    finally:  # the consumer stopped early (an error, a cancel): start nothing more
        for future in pending:
            future.cancel()


def parallel_map(fn, items: list, size: int) -> list:
    """``[fn(x) for x in items]``, on the field module's thread pool for grids of
    :data:`PARALLEL_VOXELS` or more: scipy.ndimage and numpy's arithmetic release the
    GIL, so the two images' warps, the two half maps, the local NCC's box sums and the
    smoothing of each component run side by side (2 threads: ~1.7x on a 2 mm brain)."""
    if size < PARALLEL_VOXELS or len(items) < 2 or in_pool():  # never wait on the pool
        return [fn(x) for x in items]                           # from inside it
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
