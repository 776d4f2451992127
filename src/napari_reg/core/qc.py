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
* :func:`surface_level`: where to draw an image's iso-surface (Otsu's threshold).
* From :mod:`napari_reg.core.qc_deformation`: :func:`jacobian_determinant`,
  :func:`folding_fraction`, :func:`deformed_grid` (raster), :func:`grid_lines` (line
  segments in one viewed plane, optionally the deformation without the affine part).
* From :mod:`napari_reg.core.qc_multimodal`: :func:`local_ncc_map` and
  :func:`local_mismatch`, which read for two modalities (contrast is not misalignment).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ._qc_common import QCError, check_affine, normalize_intensity, same_shape, voxel_spacing
from .image import Volume
from .metrics import make_metric
from .qc_deformation import deformed_grid, folding_fraction, grid_lines, jacobian_determinant
from .qc_multimodal import local_mismatch, local_ncc_map
from .transforms.base import MatrixTransform, Transform

__all__ = ["QCError", "checkerboard", "checkerboard_parity", "normalize_intensity",
           "difference", "edge_map", "edges", "dice_per_label", "target_registration_error",
           "similarity", "jacobian_determinant", "folding_fraction", "deformed_grid",
           "grid_lines", "local_ncc_map", "local_mismatch", "surface_level"]


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
    affine = check_affine(tuple(shape), affine)
    total = np.zeros(shape, dtype=np.int64)
    for k in range(len(shape)):
        total += np.floor(_world_axis(tuple(shape), affine, k) / square_mm).astype(np.int64)
    return (total % 2).astype(bool)


def checkerboard(fixed_data: np.ndarray, warped_data: np.ndarray, square_mm: float,
                 affine: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Fixed where the world square index is even, warped where it is odd.

    ``fixed_data`` / ``warped_data`` share one grid with voxel->world ``affine`` (RAS mm);
    ``square_mm`` is the side of a square in world mm. With ``normalize`` both images
    are first scaled to [0, 1] (robust percentiles), so squares of two modalities are
    comparable; otherwise the raw values are copied (float32).
    """
    same_shape(fixed_data, warped_data)
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
    same_shape(fixed_data, warped_data)
    if normalize:
        return normalize_intensity(fixed_data) - normalize_intensity(warped_data)
    return (np.asarray(fixed_data, np.float32) - np.asarray(warped_data, np.float32))


def edge_map(data: np.ndarray, affine: np.ndarray, sigma_mm: float = 1.0) -> np.ndarray:
    """Gradient magnitude (intensity per mm) of ``data`` smoothed by a Gaussian of
    ``sigma_mm`` world mm (per axis converted to voxels through the affine). float32."""
    data = np.asarray(data, dtype=np.float32)
    affine = check_affine(data.shape, affine)
    spacing = voxel_spacing(affine)
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
    affine = check_affine(data.shape, affine)
    if not 0.0 < high_quantile < 1.0 or not 0.0 < low_ratio <= 1.0:
        raise QCError("edge thresholds: need 0 < high_quantile < 1 and 0 < low_ratio <= 1")
    spacing = voxel_spacing(affine)
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
    same_shape(a_data, b_data, "label maps")
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
    same_shape(fixed_data, warped_data)
    f = np.asarray(fixed_data, dtype=np.float64)
    w = np.asarray(warped_data, dtype=np.float64)
    if mask is None:
        mask = (f != 0) | (w != 0)
    else:
        same_shape(fixed_data, mask, "image and mask")
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


def surface_level(data: np.ndarray, bins: int = 256) -> float:
    """An intensity that separates an image's object from its background (Otsu's
    threshold over the non-zero voxels): where to draw an iso-surface of it."""
    values = np.asarray(data, dtype=np.float64)
    values = values[np.isfinite(values) & (values != 0)]
    if values.size == 0 or values.min() == values.max():
        raise QCError("the image is empty or constant: it has no surface to draw")
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)  # voxels below each candidate level
    mass = np.cumsum(counts * centres)
    total, total_mass = weight[-1], mass[-1]
    above = total - weight
    ok = (weight > 0) & (above > 0)
    mean_below = np.divide(mass, weight, out=np.zeros_like(mass), where=ok)
    mean_above = np.divide(total_mass - mass, above, out=np.zeros_like(mass), where=ok)
    between = np.where(ok, weight * above * (mean_below - mean_above) ** 2, -1.0)
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[int(np.median(best)) + 1])  # the middle of an empty gap
