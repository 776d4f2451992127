"""Sampling images at world points, and backward warping onto a reference grid.

Conventions: points are world RAS mm; a transform maps **fixed/reference** world points to
**moving** world points, and ``resample`` computes ``out(x) = moving(T(x))`` for every
voxel centre ``x`` of the reference grid (backward warping: no holes).

For :func:`sample_with_gradient` (the registration hot path) a point is *inside* an image
when its continuous voxel index lies in ``[0, n-1]`` on every axis (voxel centres at
integers; a tolerance of 1e-6 voxel absorbs round-off); outside points get value and
gradient 0. :func:`resample` (warping whole images: apply, export, overlays, the stages'
warped images) and :func:`sample` follow ITK, greedy and ANTs: a voxel covers
``[-0.5, 0.5]`` around its centre, so points up to half a voxel past the edge centres
take the edge value (the neighbours are clamped) and only points beyond get ``fill``.
Why: the same transform applied by ``napari-reg apply`` and by ``antsApplyTransforms``
then gives the same border.

``sample_with_gradient`` is the registration hot path (called at every optimiser
iteration with 5k-200k points): trilinear/bilinear interpolation written by hand in
numpy, reading the 2**d corners once for both the value and its analytic gradient.
It is fastest on float32 data stored C- or F-contiguous (no copy is made then).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .image import Volume, VolumeError
from .transforms.base import MatrixTransform, Transform
from .transforms.field import DisplacementField

__all__ = ["sample", "sample_with_gradient", "resample", "INTERPOLATIONS"]

INTERPOLATIONS = {"nearest": 0, "linear": 1, "cubic": 3}
_EPS = 1e-6  # voxels: round-off tolerance for the inside test
_SLAB_POINTS = 1 << 20  # points per slab when warping with a non-linear transform


def _check_points(volume: Volume, points_world: np.ndarray) -> np.ndarray:
    points = np.asarray(points_world, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != volume.ndim:
        raise ValueError(f"expected (N, {volume.ndim}) world points for a {volume.ndim}D image, "
                         f"got shape {points.shape}")
    return points


def _flat_float32(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 1D float32 view of the samples (copy only if needed) and element strides per axis."""
    if data.dtype != np.float32 or not (data.flags.c_contiguous or data.flags.f_contiguous):
        data = np.ascontiguousarray(data, dtype=np.float32)
    # ravel(order="K") follows memory order: a view for C and F layouts alike, so the
    # flat index is sum(i_a * stride_a) with strides counted in elements.
    return data.ravel(order="K"), np.asarray(data.strides, dtype=np.intp) // data.itemsize


_CHUNK = 16384  # points per pass: keeps every temporary in the CPU cache


def _linear_interp(volume: Volume, points: np.ndarray, want_gradient: bool):
    """Linear interpolation at world points, in cache-sized chunks.

    Returns values (N,) float64, world gradient (N, d) float64 or None, and inside (N,).
    """
    flat, strides = _flat_float32(volume.data)
    inv = volume.inverse_affine
    n, d = points.shape
    values = np.empty(n, dtype=np.float64)
    gradient = np.empty((n, d), dtype=np.float64) if want_gradient else None
    inside = np.empty(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        # world -> voxel by columns: a tiny (N,3)@(3,3) matmul goes through BLAS, which
        # is several times slower here than three fused column updates
        pts = points[start:stop]
        vox = [pts[:, 0] * inv[a, 0] + inv[a, d] for a in range(d)]
        for a in range(d):
            for b in range(1, d):
                vox[a] += pts[:, b] * inv[a, b]
        v, g, ins = _interp_chunk(flat, strides, volume.shape, vox, want_gradient)
        values[start:stop] = v
        inside[start:stop] = ins
        if want_gradient:
            # chain rule: d v / d x_world = (d v / d vox) @ (d vox / d x_world)
            for b in range(d):
                col = g[0] * inv[0, b]
                for a in range(1, d):
                    col += g[a] * inv[a, b]
                gradient[start:stop, b] = col
    return values, gradient, inside


def _interp_chunk(flat: np.ndarray, strides: np.ndarray, shape: tuple[int, ...],
                  vox: list[np.ndarray], want_gradient: bool):
    """Values, voxel gradients (list per axis, float32) and inside mask for one chunk."""
    d, n = len(vox), len(vox[0])
    inside = np.ones(n, dtype=bool)
    base = np.zeros(n, dtype=np.intp)
    fracs, steps = [], []
    for a in range(d):
        va = vox[a]
        inside &= (va >= -_EPS) & (va <= shape[a] - 1 + _EPS)
        if shape[a] == 1:  # a single slice: no neighbour, the step reads the same voxel
            fracs.append(np.zeros(n, dtype=np.float32))
            steps.append(0)
            continue
        i0 = np.floor(va)
        # clip so that outside points still read valid memory (their result is zeroed)
        # and a point exactly on the last voxel uses the last cell with fraction 1
        np.clip(i0, 0, shape[a] - 2, out=i0)
        fracs.append((va - i0).astype(np.float32))
        base += i0.astype(np.intp) * strides[a]
        steps.append(int(strides[a]))

    # corner b has bit a set when it is the +1 neighbour along axis a
    vals = []
    for b in range(1 << d):
        offset = sum(steps[a] for a in range(d) if (b >> a) & 1)
        vals.append(flat.take(base + offset) if offset else flat.take(base))

    # reduce the highest axis first: each step halves the corner list, carrying the
    # derivatives of the axes already reduced (a lerp of the two halves' derivatives)
    grads: dict[int, list[np.ndarray]] = {}
    for a in range(d - 1, -1, -1):
        half = 1 << a
        f = fracs[a]
        lo, hi = vals[:half], vals[half:]
        diffs = [h - l for l, h in zip(lo, hi, strict=True)]
        if want_gradient:
            for k in grads:
                g = grads[k]
                grads[k] = [g[i] + f * (g[half + i] - g[i]) for i in range(half)]
            grads[a] = diffs
        vals = [l + f * df for l, df in zip(lo, diffs, strict=True)]
    outside = ~inside
    values = vals[0]
    values[outside] = 0.0
    if not want_gradient:
        return values, None, inside
    grad = [grads[a][0] for a in range(d)]
    for g in grad:
        g[outside] = 0.0
    return values, grad, inside


def sample_with_gradient(volume: Volume, points_world: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linearly interpolated values and their world gradient at world points.

    Parameters
    ----------
    volume
        The image to read (fastest with float32 data, C- or F-contiguous).
    points_world
        ``(N, d)`` world RAS mm.

    Returns
    -------
    values : (N,) float64
    gradient_world : (N, d) float64, d value / d world mm (``grad_voxel @ inv(A_lin)``)
    inside : (N,) bool, False where the point is outside the voxel grid; those points
        have value 0 and gradient 0.
    """
    points = _check_points(volume, points_world)
    return _linear_interp(volume, points, want_gradient=True)


def sample(volume: Volume, points_world: np.ndarray, order: int = 1,
           fill: float = 0.0) -> np.ndarray:
    """Values of ``volume`` at ``(N, d)`` world points (mm), as :func:`resample` reads it:
    up to half a voxel past the edge centres the edge value, beyond that ``fill``.

    ``order`` 0 (nearest), 1 (linear) or 3 (cubic B-spline, prefiltered on every call: a
    full pass over the image). Returns float64 values. (The registration hot path is
    :func:`sample_with_gradient`, which counts only ``[0, n-1]`` as inside.)
    """
    points = _check_points(volume, points_world)
    if order not in (0, 1, 3):
        raise ValueError(f"interpolation order must be 0, 1 or 3, got {order}")
    vox = volume.world_to_voxel(points)
    data = _spline_coefficients(volume.data) if order == 3 else volume.data
    if data.dtype == bool:
        data = data.astype(np.uint8)
    values = ndimage.map_coordinates(data, vox.T, order=order, mode=_edge_mode(order),
                                     prefilter=False, output=np.float64)
    values[~_inside_voxels(vox, volume.shape)] = fill
    return values


def _spline_coefficients(data: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients (float64), computed once per image."""
    return ndimage.spline_filter(np.asarray(data, dtype=np.float64), order=3, mode="mirror")


def _snap(matrix: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Round entries within ``tol`` of an integer.

    Why: ``inv(A) @ A`` is the identity only up to round-off, and scipy treats a voxel at
    ``n - 1 + 1e-13`` as outside; snapping keeps the edge voxels of identical, flipped or
    integer-shifted grids instead of filling them.
    """
    rounded = np.round(matrix)
    return np.where(np.abs(matrix - rounded) < tol, rounded, matrix)


def resample(moving: Volume, reference: Volume, transform: Transform | np.ndarray,
             interpolation: str = "linear", fill: float = 0.0,
             check: Callable[[], None] | None = None) -> Volume:
    """Warp ``moving`` onto the grid of ``reference``: ``out(x) = moving(T(x))``.

    Parameters
    ----------
    moving
        The image to warp.
    reference
        Supplies the output grid (shape and voxel->world affine), usually the fixed image.
    transform
        Fixed/reference world mm -> moving world mm (a Transform, or a homogeneous matrix).
    interpolation
        ``"nearest"`` keeps the dtype (label maps keep their exact values); ``"linear"``
        and ``"cubic"`` (B-spline order 3, prefiltered) return float32.
    fill
        Value for reference voxels that map outside the moving grid.
    check
        A cancellation hook (e.g. ``CancelToken.raise_if_cancelled``), called before each
        slab of a non-linear warp (a 1 mm brain is warped in a dozen slabs).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation '{interpolation}': use one of "
                         f"{', '.join(INTERPOLATIONS)}")
    if isinstance(transform, np.ndarray):
        transform = MatrixTransform(transform)
    d = reference.ndim
    if moving.ndim != d or transform.ndim != d:
        raise VolumeError(f"cannot resample a {moving.ndim}D image onto a {d}D grid with a "
                          f"{transform.ndim}D transform")
    order = INTERPOLATIONS[interpolation]

    data = moving.data
    out_dtype = data.dtype if order == 0 else np.dtype(np.float32)
    if data.dtype == bool:
        data = data.astype(np.uint8)
        out_dtype = np.dtype(bool) if order == 0 else out_dtype
    work_dtype = data.dtype if order == 0 else np.dtype(np.float32)
    if order == 3:
        data = _spline_coefficients(data)
    out = np.empty(reference.shape, dtype=work_dtype)

    if transform.is_linear:
        # one voxel->voxel map: reference voxel -> reference world -> moving world -> voxel
        vv = _snap(moving.inverse_affine @ transform.matrix @ reference.affine)
        ndimage.affine_transform(data, vv[:d, :d], offset=vv[:d, d], output_shape=reference.shape,
                                 output=out, order=order, mode=_edge_mode(order),
                                 prefilter=False)
        out[~_inside_linear(vv, reference.shape, moving.shape)] = fill
    else:
        _resample_slabs(data, moving, reference, transform, order, fill, out, check)
    if out.dtype != out_dtype:
        out = out.astype(out_dtype)
    return Volume(out, reference.affine.copy(), moving.name,
                  {"resampled_from": moving.name, "interpolation": interpolation})


def _resample_slabs(data: np.ndarray, moving: Volume, reference: Volume, transform: Transform,
                    order: int, fill: float, out: np.ndarray,
                    check: Callable[[], None] | None = None) -> None:
    """Map the reference grid through a general transform slab by slab (bounded memory)."""
    shape = reference.shape
    field = transform if isinstance(transform, DisplacementField) else None
    on_grid = field is not None and field.same_grid(shape, reference.affine)
    per_row = int(np.prod(shape[1:]))
    rows = max(1, _SLAB_POINTS // per_row)
    other_axes = [np.arange(n, dtype=np.float64) for n in shape[1:]]
    for start in range(0, shape[0], rows):
        if check is not None:
            check()
        stop = min(shape[0], start + rows)
        grid = np.meshgrid(np.arange(start, stop, dtype=np.float64), *other_axes, indexing="ij")
        ijk = np.stack([g.ravel() for g in grid], axis=1)
        world = reference.voxel_to_world(ijk)
        if on_grid:
            # A field stored on this very grid: add its vectors, no interpolation needed.
            world += field.components[(slice(None), slice(start, stop))].reshape(
                len(shape), -1).T
        else:
            world = transform.transform_points(world)
        vox = moving.world_to_voxel(world)
        values = ndimage.map_coordinates(data, vox.T, order=order, mode=_edge_mode(order),
                                         prefilter=False, output=out.dtype)
        values[~_inside_voxels(vox, moving.shape)] = fill
        out[start:stop] = values.reshape((stop - start, *shape[1:]))


def _edge_mode(order: int) -> str:
    """How scipy extends the image past its edge for the half-voxel border: the edge value
    repeated for nearest/linear; for cubic the mirror the coefficients were computed with
    (:func:`_spline_coefficients`; another mode would change values inside the grid)."""
    return "mirror" if order == 3 else "nearest"


def _inside_voxels(vox: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(N,)`` True where continuous voxel indices ``vox (N, d)`` lie within half a
    voxel of the grid's edge centres (ITK's buffer test)."""
    upper = np.asarray(shape, dtype=np.float64) - 0.5 + _EPS
    return np.all((vox >= -0.5 - _EPS) & (vox <= upper), axis=1)


def _inside_linear(vv: np.ndarray, out_shape: tuple[int, ...], in_shape: tuple[int, ...]
                   ) -> np.ndarray:
    """Boolean mask on the output grid of :func:`_inside_voxels` for the affine voxel map
    ``vv`` (output index -> input index), without forming every coordinate: along the
    last output axis each input coordinate is linear, so the inside part of every row is
    one interval, found per row."""
    d = len(out_shape)
    lead = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in out_shape[:-1]],
                       indexing="ij")
    lo = np.full(out_shape[:-1], -np.inf)
    hi = np.full(out_shape[:-1], np.inf)
    for a in range(d):
        base = vv[a, d] + sum(vv[a, b] * lead[b] for b in range(d - 1))
        low, high = -0.5 - _EPS - base, in_shape[a] - 0.5 + _EPS - base  # step*k in here
        step = vv[a, d - 1]
        if abs(step) < 1e-12:
            lo = np.where((low <= 0) & (high >= 0), lo, np.inf)
        else:
            lo = np.maximum(lo, np.minimum(low / step, high / step))
            hi = np.minimum(hi, np.maximum(low / step, high / step))
    k = np.arange(out_shape[-1], dtype=np.float64)
    return (k >= lo[..., None]) & (k <= hi[..., None])
