"""Visual and numeric quality control of a registration (numpy/scipy only).

Every image function works on two arrays on ONE grid, the fixed image's: ``fixed_data``
and ``warped_data = moving(T(x))`` (backward warping, T fixed -> moving), with that
grid's voxel->world ``affine`` (RAS mm). Sizes (checkerboard squares, edge smoothing,
grid spacing) are in world millimetres, never voxels, so anisotropic and oblique grids
look right.

* :func:`checkerboard`: squares (cubes in 3D) of side ``square_mm`` in world space,
  alternating fixed and warped.
* :func:`difference`: fixed - warped after putting both on a common intensity scale.
* :func:`edge_map` / :func:`edges`: gradient magnitude (per mm) of the smoothed fixed
  image and a thin edge mask (non-maximum suppression + hysteresis: Canny-like).
* :func:`dice_per_label`, :func:`target_registration_error`, :func:`similarity` (NCC / MI
  through :mod:`napari_reg.core.metrics`).
* :func:`jacobian_determinant`, :func:`folding_fraction`: reuse
  :func:`napari_reg.core.transforms.field.jacobian_determinant_map`.
* :func:`deformed_grid`: planes at regular moving-space positions pulled back onto the
  fixed grid, showing how T bends space; :func:`grid_lines`: the same idea as line
  segments (vectors, crisp at any zoom) for one viewed plane, optionally without T's
  linear part.
* :func:`local_ncc_map`: windowed correlation, which also reads for two modalities
  (inverted contrast gives -1, not a "difference").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .image import Volume, apply_affine
from .metrics import make_metric
from .transforms.base import MatrixTransform, Transform
from .transforms.field import DisplacementField, jacobian_determinant_map

__all__ = ["QCError", "checkerboard", "checkerboard_parity", "normalize_intensity",
           "difference", "edge_map", "edges", "dice_per_label", "target_registration_error",
           "similarity", "jacobian_determinant", "folding_fraction", "deformed_grid",
           "grid_lines", "local_ncc_map"]


class QCError(ValueError):
    """Inputs a QC view cannot be built from (the message says which and why)."""


def _same_shape(a: np.ndarray, b: np.ndarray, what: str = "fixed and warped images") -> None:
    if np.shape(a) != np.shape(b):
        raise QCError(f"{what} must be on the same grid: shapes {np.shape(a)} and "
                      f"{np.shape(b)} differ (resample the moving image onto the fixed grid)")


def _check_affine(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    d = len(shape)
    affine = np.asarray(affine, dtype=np.float64)
    if d not in (2, 3) or affine.shape != (d + 1, d + 1):
        raise QCError(f"expected a 2D or 3D image with a {(d + 1, d + 1)} voxel->world affine, "
                      f"got shape {shape} and affine {affine.shape}")
    return affine


def _world_axis(shape: tuple[int, ...], affine: np.ndarray, k: int) -> np.ndarray:
    """World coordinate ``k`` (mm) of every voxel, built from broadcast 1D ramps."""
    d = len(shape)
    out = np.full(shape, affine[k, d], dtype=np.float64)
    for j, n in enumerate(shape):
        ramp = np.arange(n, dtype=np.float64) * affine[k, j]
        out += ramp.reshape([n if a == j else 1 for a in range(d)])
    return out


def checkerboard_parity(shape: tuple[int, ...], affine: np.ndarray,
                        square_mm: float) -> np.ndarray:
    """Boolean map: True where the world square index ``sum_k floor(x_k / s)`` is odd.

    Squares are aligned to the world origin, side ``square_mm`` along each world axis.
    """
    if not np.isfinite(square_mm) or square_mm <= 0:
        raise QCError(f"checkerboard square size must be a positive number of mm, got "
                      f"{square_mm}")
    affine = _check_affine(tuple(shape), affine)
    total = np.zeros(shape, dtype=np.int64)
    for k in range(len(shape)):
        total += np.floor(_world_axis(tuple(shape), affine, k) / square_mm).astype(np.int64)
    return (total % 2).astype(bool)


def normalize_intensity(data: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0),
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Map robust ``percentiles`` of ``data`` (inside ``mask``) to 0 and 1 (float32, clipped).

    Two modalities (T1 vs T2) then share one display scale; a constant image maps to 0.
    """
    values = np.asarray(data, dtype=np.float32)
    sample = values[mask.astype(bool)] if mask is not None else values
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros(values.shape, np.float32)
    lo, hi = np.percentile(sample, percentiles)
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def checkerboard(fixed_data: np.ndarray, warped_data: np.ndarray, square_mm: float,
                 affine: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Fixed where the world square index is even, warped where it is odd.

    ``fixed_data`` / ``warped_data`` share one grid with voxel->world ``affine`` (RAS mm);
    ``square_mm`` is the side of a square in world mm. With ``normalize`` both images
    are first scaled to [0, 1] (robust percentiles), so squares of two modalities are
    comparable; otherwise the raw values are copied (float32).
    """
    _same_shape(fixed_data, warped_data)
    odd = checkerboard_parity(np.shape(fixed_data), affine, square_mm)
    if normalize:
        f, w = normalize_intensity(fixed_data), normalize_intensity(warped_data)
    else:
        f = np.asarray(fixed_data, np.float32)
        w = np.asarray(warped_data, np.float32)
    return np.where(odd, w, f).astype(np.float32)


def difference(fixed_data: np.ndarray, warped_data: np.ndarray,
               normalize: bool = True) -> np.ndarray:
    """``fixed - warped`` (float32); with ``normalize`` both scaled to [0, 1] first.

    For one modality, 0 means agreement; for two, only the structure of the map matters.
    """
    _same_shape(fixed_data, warped_data)
    if normalize:
        return normalize_intensity(fixed_data) - normalize_intensity(warped_data)
    return (np.asarray(fixed_data, np.float32) - np.asarray(warped_data, np.float32))


def _spacing(affine: np.ndarray) -> np.ndarray:
    d = affine.shape[0] - 1
    return np.linalg.norm(affine[:d, :d], axis=0)


def edge_map(data: np.ndarray, affine: np.ndarray, sigma_mm: float = 1.0) -> np.ndarray:
    """Gradient magnitude (intensity per mm) of ``data`` smoothed by a Gaussian of
    ``sigma_mm`` world mm (per axis converted to voxels through the affine). float32."""
    data = np.asarray(data, dtype=np.float32)
    affine = _check_affine(data.shape, affine)
    spacing = _spacing(affine)
    if sigma_mm < 0 or not np.isfinite(sigma_mm):
        raise QCError(f"edge smoothing must be >= 0 mm, got {sigma_mm}")
    smooth = ndimage.gaussian_filter(data, sigma_mm / spacing) if sigma_mm > 0 else data
    grads = np.gradient(smooth, *spacing)
    return np.sqrt(sum(g.astype(np.float32) ** 2 for g in grads)).astype(np.float32)


def edges(data: np.ndarray, affine: np.ndarray, sigma_mm: float = 1.0,
          high_quantile: float = 0.9, low_ratio: float = 0.5) -> np.ndarray:
    """Thin edges of ``data`` (bool), Canny-like.

    1. :func:`edge_map` (smoothing ``sigma_mm``); 2. non-maximum suppression: a voxel is
    kept only where its magnitude is not smaller than both neighbours along the
    gradient direction (rounded to the nearest voxel step); 3. hysteresis: strong edges
    are above the ``high_quantile`` of the non-zero magnitudes, weak ones above
    ``low_ratio`` times that; weak edges survive only when connected to strong ones.
    """
    data = np.asarray(data, dtype=np.float32)
    affine = _check_affine(data.shape, affine)
    if not 0.0 < high_quantile < 1.0 or not 0.0 < low_ratio <= 1.0:
        raise QCError("edge thresholds: need 0 < high_quantile < 1 and 0 < low_ratio <= 1")
    spacing = _spacing(affine)
    smooth = (ndimage.gaussian_filter(data, sigma_mm / spacing) if sigma_mm > 0 else data)
    grads = np.gradient(smooth, *spacing)
    mag = np.sqrt(sum(g ** 2 for g in grads))
    nz = mag[mag > 0]
    if nz.size == 0:
        return np.zeros(data.shape, bool)
    # unit gradient direction in voxel steps (the larger components give the step)
    steps = [np.rint(np.divide(g, mag, out=np.zeros_like(g), where=mag > 0)).astype(np.int64)
             for g in grads]
    idx = np.indices(data.shape)
    keep = np.ones(data.shape, bool)
    for sign in (1, -1):
        nb = tuple(np.clip(idx[a] + sign * steps[a], 0, data.shape[a] - 1)
                   for a in range(data.ndim))
        keep &= mag >= mag[nb]
    high = float(np.quantile(nz, high_quantile))
    strong = keep & (mag >= high)
    weak = keep & (mag >= low_ratio * high)
    labels, _ = ndimage.label(weak, structure=np.ones((3,) * data.ndim))
    good = np.unique(labels[strong])
    return np.isin(labels, good[good > 0])


def dice_per_label(a: Volume | np.ndarray, b: Volume | np.ndarray,
                   labels: Sequence[int] | None = None,
                   include_background: bool = False) -> dict[int, float]:
    """Dice ``2 |A n B| / (|A| + |B|)`` per label value (voxel counts on one grid).

    ``a``, ``b``: label maps on the same grid (same shape; two Volumes must also share
    their voxel->world affine), e.g. the fixed labels and the warped moving labels, or a
    segmentation and its ground truth. ``labels`` defaults to every value found in
    either; background 0 is left out unless ``include_background``. A label absent from
    both gets NaN (undefined, not perfect).
    """
    a_data = a.data if isinstance(a, Volume) else np.asarray(a)
    b_data = b.data if isinstance(b, Volume) else np.asarray(b)
    _same_shape(a_data, b_data, "label maps")
    if isinstance(a, Volume) and isinstance(b, Volume) and not a.same_grid(b, atol=1e-3):
        raise QCError("label maps must be on the same grid: their voxel->world affines "
                      "differ (resample one onto the other's grid, nearest, first)")
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(a_data), np.unique(b_data))]
    out: dict[int, float] = {}
    for value in labels:
        if value == 0 and not include_background:
            continue
        in_a, in_b = a_data == value, b_data == value
        total = int(np.count_nonzero(in_a)) + int(np.count_nonzero(in_b))
        out[int(value)] = (2.0 * float(np.count_nonzero(in_a & in_b)) / total
                           if total else float("nan"))
    return out


def target_registration_error(transform: Transform | np.ndarray, fixed_points: np.ndarray,
                              moving_points: np.ndarray) -> np.ndarray:
    """``|T(fixed_i) - moving_i|`` in mm for each landmark pair (world RAS mm), ``(N,)``.

    ``transform`` maps fixed world mm -> moving world mm (a Transform or a matrix).
    """
    f = np.asarray(fixed_points, dtype=np.float64)
    m = np.asarray(moving_points, dtype=np.float64)
    if f.shape != m.shape or f.ndim != 2:
        raise QCError(f"TRE needs paired (N, d) landmarks, got {f.shape} and {m.shape}")
    if isinstance(transform, np.ndarray):
        transform = MatrixTransform(transform)
    if len(f) == 0:
        return np.zeros(0)
    return np.linalg.norm(transform.transform_points(f) - m, axis=1)


def similarity(fixed_data: np.ndarray, warped_data: np.ndarray, metric: str = "ncc",
               mask: np.ndarray | None = None, max_samples: int = 500_000,
               seed: int = 0) -> float:
    """Similarity of two images on one grid over ``mask`` (default: where either is non-zero).

    ``metric``: ``ncc`` (Pearson correlation, 1 = perfect) or ``mi`` / ``nmi`` (mutual
    information in nats / normalised MI), computed by :mod:`napari_reg.core.metrics`
    (sign flipped back: higher is better). At most ``max_samples`` voxels (random, fixed
    ``seed``) are used, enough for 3 significant digits.
    """
    _same_shape(fixed_data, warped_data)
    f = np.asarray(fixed_data, dtype=np.float64)
    w = np.asarray(warped_data, dtype=np.float64)
    if mask is None:
        mask = (f != 0) | (w != 0)
    else:
        _same_shape(fixed_data, mask, "image and mask")
    sel = np.flatnonzero(np.asarray(mask, bool).ravel() & np.isfinite(f).ravel()
                         & np.isfinite(w).ravel())
    if sel.size < 10:
        raise QCError("fewer than 10 voxels inside the mask: no similarity to compute")
    if sel.size > max_samples:
        sel = np.random.default_rng(seed).choice(sel, max_samples, replace=False)
    fs, ws = f.ravel()[sel], w.ravel()[sel]
    m = make_metric(metric)
    try:
        return -m.value(fs, ws)
    except ValueError as exc:  # a constant image inside the mask
        raise QCError(f"{metric.upper()} is undefined here: {exc}") from None


def _transform_field(transform: Transform, shape: tuple[int, ...],
                     affine: np.ndarray) -> DisplacementField:
    if isinstance(transform, DisplacementField) and transform.same_grid(shape, affine):
        return transform
    return DisplacementField.from_transform(transform, shape, affine)


def jacobian_determinant(transform: Transform, shape: tuple[int, ...],
                         affine: np.ndarray) -> np.ndarray:
    """``det(dT/dx)`` of a fixed->moving transform at the voxel centres of a grid.

    ``(shape, affine)`` is the grid (voxel->world RAS mm), usually the fixed image's or a
    coarser copy. 1 = volume kept, < 1 shrinks, <= 0 folds. float64 ``shape`` array.
    """
    affine = _check_affine(tuple(shape), affine)
    field = _transform_field(transform, tuple(shape), affine)
    return jacobian_determinant_map(field.components, field.affine)


def folding_fraction(jacobian: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of (masked) voxels whose Jacobian determinant is <= 0 (folded)."""
    jac = np.asarray(jacobian)
    if mask is not None:
        _same_shape(jac, mask, "Jacobian map and mask")
        jac = jac[np.asarray(mask, bool)]
    return float(np.mean(jac <= 0.0)) if jac.size else 0.0


def deformed_grid(transform: Transform, shape: tuple[int, ...], affine: np.ndarray,
                  spacing_mm: float = 10.0, line_mm: float | None = None) -> np.ndarray:
    """Grid planes of the moving space seen on the fixed grid (float32 0/1 image).

    A voxel at fixed world ``x`` is 1 when ``T(x)`` lies within ``line_mm / 2`` of a
    plane ``y_k = n * spacing_mm`` (any world axis k). For the identity this is a
    regular grid; a deformation bends its lines, a fold makes them cross.
    ``line_mm`` defaults to the largest voxel size of the grid (lines stay visible).
    """
    affine = _check_affine(tuple(shape), affine)
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise QCError(f"grid spacing must be a positive number of mm, got {spacing_mm}")
    if line_mm is None:
        line_mm = float(_spacing(affine).max())
    n = int(np.prod(shape))
    out = np.zeros(n, dtype=np.float32)
    flat_shape = tuple(shape)
    chunk = 262144
    for s in range(0, n, chunk):
        vox = np.stack(np.unravel_index(np.arange(s, min(n, s + chunk)), flat_shape), axis=-1)
        y = transform.transform_points(apply_affine(affine, vox))
        dist = np.abs(y / spacing_mm - np.rint(y / spacing_mm)) * spacing_mm
        out[s:s + chunk] = np.any(dist <= line_mm / 2.0, axis=1)
    return out.reshape(flat_shape)


def local_ncc_map(fixed_data: np.ndarray, warped_data: np.ndarray, affine: np.ndarray,
                  radius_mm: float = 4.0) -> np.ndarray:
    """Normalised cross-correlation in a box of half-width ``radius_mm`` (world mm) around
    every voxel (float32 in [-1, 1]).

    Aligned structures give |NCC| near 1 whatever the contrasts (a T1 against a T2 gives
    -1 where edges coincide); misalignment and noise give values near 0. Windows where
    either image is flat (variance < 1e-6 of the image's) are 0: no evidence either way.
    """
    _same_shape(fixed_data, warped_data)
    affine = _check_affine(fixed_data.shape, affine)
    size = [2 * max(1, int(round(radius_mm / s))) + 1 for s in _spacing(affine)]
    f = np.asarray(fixed_data, np.float32)
    w = np.asarray(warped_data, np.float32)

    def mean(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(a, size=size, mode="nearest")

    mf, mw = mean(f), mean(w)
    vf = np.maximum(mean(f * f) - mf * mf, 0.0)
    vw = np.maximum(mean(w * w) - mw * mw, 0.0)
    cov = mean(f * w) - mf * mw
    ok = (vf > 1e-6 * (float(f.var()) or 1.0)) & (vw > 1e-6 * (float(w.var()) or 1.0))
    out = np.zeros(f.shape, np.float32)
    out[ok] = np.clip(cov[ok] / np.sqrt(vf[ok] * vw[ok]), -1.0, 1.0)
    return out


def grid_lines(transform: Transform, shape: tuple[int, ...], affine: np.ndarray,
               spacing_mm: float, normal_axis: int, position_mm: float,
               without: np.ndarray | None = None, step_mm: float | None = None) -> np.ndarray:
    """A regular grid in the world plane ``x[normal_axis] = position_mm`` over the box of
    the grid ``(shape, affine)``, each point x moved by T's displacement ``T(x) - x``
    (or ``T(x) - L x`` with ``without = L``, a homogeneous matrix: only what is not
    linear). Returns line segments as napari vectors ``(N, 2, d)``: start and step, world
    mm, flattened onto the plane (a 2D view shows in-plane motion). 3D only.
    """
    affine = _check_affine(tuple(shape), affine)
    d = len(shape)
    if d != 3 or not 0 <= normal_axis < 3:
        raise QCError("grid lines are drawn for 3D images, in one of the three world planes")
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise QCError(f"grid spacing must be a positive number of mm, got {spacing_mm}")
    corners = apply_affine(affine, np.array(np.meshgrid(*[[0, n - 1] for n in shape],
                                                        indexing="ij")).reshape(d, -1).T)
    lo, hi = corners.min(0), corners.max(0)
    step = step_mm or spacing_mm / 4.0
    a, b = [k for k in range(3) if k != normal_axis]
    starts, steps = [], []
    for along, across in ((a, b), (b, a)):
        ticks = np.arange(np.ceil(lo[across] / spacing_mm), np.floor(hi[across] / spacing_mm)
                          + 1) * spacing_mm
        t = np.arange(lo[along], hi[along] + step / 2, step)
        if len(ticks) == 0 or len(t) < 2:
            continue
        pts = np.zeros((len(ticks), len(t), 3))
        pts[..., normal_axis] = position_mm
        pts[..., across] = ticks[:, None]
        pts[..., along] = t[None, :]
        flat = pts.reshape(-1, 3)
        moved = transform.transform_points(flat)
        if without is not None:
            moved = flat + (moved - apply_affine(np.asarray(without), flat))
        moved[:, normal_axis] = position_mm
        moved = moved.reshape(pts.shape)
        starts.append(moved[:, :-1].reshape(-1, 3))
        steps.append((moved[:, 1:] - moved[:, :-1]).reshape(-1, 3))
    if not starts:
        return np.zeros((0, 2, 3))
    return np.stack([np.concatenate(starts), np.concatenate(steps)], axis=1)
