"""B-spline FFD registration: gradient-based, sampled metric + lambda * bending energy.

``T(x) = M (x + u(x))`` with ``u`` a cubic B-spline FFD over the fixed image box
(:class:`~napari_reg.core.transforms.bspline.BSplineTransform`) and ``M`` the linear
fixed->moving matrix. Per pyramid level a fixed set of random fixed-image voxels is
drawn (as elastix's random sampler, but fixed within a level so that L-BFGS sees a
deterministic objective); the FFD weights of those points are a sparse matrix computed
once per level, so one objective evaluation costs two sparse products, one sampling of
the moving image and the closed-form bending energy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .deformable import (
    Callback,
    DeformableError,
    DeformableResult,
    Emitter,
    check_pair,
    level_schedule,
    mask_at_level,
    per_level,
)
from .events import LevelRecord
from .image import Volume
from .metrics import make_metric
from .optimize import CancelToken, minimize
from .pyramid import gaussian_pyramid
from .resample import sample_with_gradient
from .sampling import draw_samples, foreground_mask, representative_values
from .threads import single_threaded_blas
from .transforms.base import CompositeTransform, MatrixTransform, Transform
from .transforms.bspline import BSplineTransform

__all__ = ["register_bspline", "bspline_objective", "inside_moving", "dilated_foreground"]

# Default sample count per control point (see register_bspline, samples).
SAMPLES_PER_CONTROL_POINT = 12
# Foreground sampling keeps this many voxels around the head (its edge is information).
FOREGROUND_MARGIN_VOXELS = 2


def dilated_foreground(data: np.ndarray) -> np.ndarray | None:
    """The fixed image's foreground grown by ``FOREGROUND_MARGIN_VOXELS`` (None: no region).

    Why: in a 1 mm head most of the box is air, where samples carry no information; on
    the MNI benchmark, foreground samples cut the B-spline's mean error 0.28 -> 0.16 mm
    for the same sample count.
    """
    mask = foreground_mask(data)
    if mask is None:
        return None
    return ndimage.binary_dilation(mask, iterations=FOREGROUND_MARGIN_VOXELS)


def bspline_objective(ffd: BSplineTransform, metric, moving: Volume, matrix: np.ndarray,
                      points: np.ndarray, fixed_values: np.ndarray, bending_weight: float,
                      cancel: CancelToken | None = None):
    """``p -> (cost, dcost/dp)`` for the FFD at fixed sample points (world mm).

    ``cost = metric(f_i, m(M (x_i + u(x_i)))) + bending_weight * E_bend``. The chain
    rule goes through the sparse weights: ``dC/dphi_c = W^T (dC/dm_i * (grad m_i A))_c``
    with ``A`` the linear part of ``M`` (``dT/du = A``).

    The sample set never changes within a level (so the cost is continuous for the
    line search): a point pushed out of the moving grid reads the nearest border value
    (and gets no force along the clamped direction). Callers keep only points that the
    initial map sends inside the moving image (:func:`inside_moving`).
    """
    weights = ffd.weight_matrix(points)
    d = points.shape[1]
    a = matrix[:d, :d]
    base = points @ a.T + matrix[:d, d]  # M x, computed once
    to_vox = moving.inverse_affine
    upper = np.asarray(moving.shape, np.float64) - 1.0 - 1e-6

    def evaluate(p: np.ndarray) -> tuple[float, np.ndarray]:
        if cancel is not None:
            cancel.raise_if_cancelled()
        ffd.parameters = p
        u = ffd.displacement_at(points, weights)
        vox = (base + u @ a.T) @ to_vox[:d, :d].T + to_vox[:d, d]
        clamped = np.clip(vox, 1e-6, upper)
        values, gradient, _ = sample_with_gradient(moving, moving.voxel_to_world(clamped))
        out = vox != clamped
        if out.any():
            # the derivative of the clamp: no force along a clamped voxel axis
            g_vox = gradient @ moving.affine[:d, :d]
            g_vox[out] = 0.0
            gradient = g_vox @ np.linalg.inv(moving.affine[:d, :d])
        cost, dm = metric.value_and_derivative(fixed_values, values)
        forces = (dm[:, None] * gradient) @ a
        grad = ffd.gradient_from_forces(weights, forces)
        if bending_weight > 0:
            e, ge = ffd.bending_energy_and_gradient()
            cost += bending_weight * e
            grad = grad + bending_weight * ge
        return float(cost), grad

    return evaluate


def inside_moving(points: np.ndarray, matrix: np.ndarray, moving: Volume) -> np.ndarray:
    """Boolean: fixed points (world mm) that ``matrix`` maps inside the moving voxel grid."""
    vox = moving.world_to_voxel(points @ matrix[:-1, :-1].T + matrix[:-1, -1])
    return moving.contains_voxel(vox)


@single_threaded_blas
def register_bspline(
    fixed: Volume,
    moving: Volume,
    initial: np.ndarray | Transform | None = None,
    *,
    grid_spacing_mm: float | Sequence[float] = 10.0,
    metric: str = "mi",
    metric_options: dict | None = None,
    bending_weight: float = 1.0,
    levels: int = 3,
    shrink_factors: Sequence[Sequence[int] | int] | None = None,
    sigmas_mm: Sequence[float] | None = None,
    iterations: int | Sequence[int] = 60,
    samples: int | Sequence[int] | None = None,
    optimizer: str = "lbfgs",
    fixed_mask: np.ndarray | Volume | None = None,
    sampling: str = "foreground",
    seed: int = 0,
    callback: Callback | None = None,
    cancel: CancelToken | None = None,
    stage: int = 0,
    t_start: float | None = None,
    total_iterations: int = 0,
) -> DeformableResult:
    """Cubic B-spline FFD registration, coarse to fine, fixed->moving after ``initial``.

    Parameters
    ----------
    fixed, moving
        Images in world RAS mm (any affines).
    initial
        Linear fixed->moving homogeneous matrix (or linear Transform) applied after the
        FFD: ``T(x) = M (x + u(x))``. Identity if omitted.
    grid_spacing_mm
        Control-point spacing (mm) at the finest level (default 10 mm: on the 1 mm MNI
        benchmark it cut the mean error from 0.70 mm at 20 mm to 0.28 mm, for ~1 s; 8 mm
        gained nothing); level ``l`` of ``L`` uses
        ``2**(L-1-l)`` times it, and the grid is subdivided exactly between levels.
        Smaller than a voxel of the fixed image is an error.
    metric, metric_options
        A sampled metric of :mod:`napari_reg.core.metrics` (``mi nmi ncc ssd sad``).
    bending_weight
        ``lambda`` of the seed's objective ``C_sim + lambda * C_smooth`` (bending energy,
        mm^-2, averaged over the fixed box).
    levels, shrink_factors, sigmas_mm
        Pyramid schedule (defaults from :func:`napari_reg.core.pyramid.default_schedule`).
    iterations, samples
        Per level (one value or one per level): optimiser iterations; random fixed voxels
        drawn once per level (the objective must be deterministic for L-BFGS). Default
        samples: ``max(20000, 12 x control points)`` per level (capped by the voxels).
    fixed_mask, sampling
        Samples are drawn inside ``fixed_mask`` (fixed grid) when given; otherwise, with
        ``sampling="foreground"`` (default), inside the fixed image's foreground
        (:func:`~napari_reg.core.sampling.foreground_mask`) dilated by
        ``FOREGROUND_MARGIN_VOXELS`` so that its edge is sampled on both sides, or, with
        ``"all"``, anywhere in the fixed box.
    callback, cancel
        ``callback(ProgressEvent)`` at every iteration with ``stage_name="bspline"``
        (plus ``level_start``/``level_end``); ``cancel`` a :class:`CancelToken` whose
        cancellation raises :class:`~napari_reg.core.optimize.Cancelled` within one
        objective evaluation.
    stage, t_start, total_iterations
        How the driver places this stage in a multi-stage run (event numbering/clock).
    """
    t0 = time.perf_counter() if t_start is None else t_start
    t_begin = time.perf_counter()
    fixed_f, moving_f, matrix = check_pair(fixed, moving, initial)
    d = fixed_f.ndim
    if not np.isfinite(bending_weight) or bending_weight < 0:
        raise DeformableError(f"bending_weight must be >= 0, got {bending_weight}")
    if sampling not in ("foreground", "all"):
        raise DeformableError(f"unknown sampling {sampling!r}; choose foreground or all")
    sampled_in = "mask" if fixed_mask is not None else sampling  # for the run record
    if fixed_mask is None and sampling == "foreground":
        fixed_mask = dilated_foreground(fixed_f.data)
    shrink, sigmas = level_schedule(fixed_f, levels, shrink_factors, sigmas_mm)
    n_levels = len(shrink)
    iters = per_level(iterations, n_levels, "iterations")
    n_samples = per_level(20000 if samples is None else samples, n_levels, "samples")
    final_spacing = np.broadcast_to(np.asarray(grid_spacing_mm, np.float64), (d,))
    try:
        BSplineTransform.over_volume(fixed_f, final_spacing)  # validates the final spacing
        ffd = BSplineTransform.over_volume(fixed_f, final_spacing * 2 ** (n_levels - 1))
    except ValueError as exc:
        raise DeformableError(str(exc)) from exc
    fixed_pyr = gaussian_pyramid(fixed_f, shrink, sigmas)
    moving_pyr = gaussian_pyramid(moving_f, [[1] * d] * n_levels, sigmas)
    rng = np.random.default_rng(seed)
    emit = Emitter(callback, stage, "bspline", n_levels, t0, total_iterations)
    metric_fn = make_metric(metric, **(metric_options or {}))
    records: list[LevelRecord] = []
    cost = float("nan")

    def snapshot() -> Transform:
        return CompositeTransform([ffd.copy(), MatrixTransform(matrix)])

    for level in range(n_levels):
        if level > 0:
            ffd = ffd.refine(2)
        lf, lm = fixed_pyr[level], moving_pyr[level]
        lmask = mask_at_level(fixed_mask, fixed_f, shrink[level])
        if samples is None:
            # a fixed sample set must over-determine the control points, or L-BFGS fits
            # the set's noise: on the 1 mm MNI benchmark (10 mm grid, 13 k control points)
            # 4 -> 12 samples per control point cut the mean error 0.16 -> 0.11 mm
            n_samples[level] = max(20000, SAMPLES_PER_CONTROL_POINT *
                                   int(np.prod(ffd.grid_shape)))
        points, fvals = draw_samples(lf, lmask, n_samples[level], rng)
        keep = inside_moving(points, matrix, lm)
        if np.count_nonzero(keep) < max(0.1 * len(points), 16):
            raise DeformableError(
                f"only {np.count_nonzero(keep)} of {len(points)} fixed samples map inside the "
                "moving image under the initial transform: the images do not overlap")
        points, fvals = points[keep], fvals[keep]
        metric_fn.setup(representative_values(lf.data, rng), representative_values(lm.data, rng))
        record = LevelRecord(stage, "bspline", level, shrink[level], sigmas[level], len(points))
        records.append(record)
        emit("level_start", level, 0, iters[level], cost, snapshot)
        t_level = time.perf_counter()
        objective = bspline_objective(ffd, metric_fn, lm, matrix, points, fvals,
                                      bending_weight, cancel)

        def on_iteration(iteration: int, value: float, x: np.ndarray,
                         _record=record, _level=level, _ffd=ffd) -> None:
            _record.costs.append(float(value))
            _ffd.parameters = x
            emit("iteration", _level, iteration, iters[_level], value, snapshot)

        outcome = minimize(objective, ffd.parameters, method=optimizer,
                           max_iterations=iters[level], callback=on_iteration,
                           cancel=cancel if cancel is not None else CancelToken())
        ffd.parameters = outcome.x
        cost = float(outcome.value)
        record.stop_reason = outcome.stop_reason
        record.seconds = time.perf_counter() - t_level
        emit("level_end", level, outcome.n_iterations, iters[level], cost, snapshot)

    parameters = {
        "grid_spacing_mm": final_spacing.tolist(), "metric": metric,
        "metric_options": dict(metric_options or {}), "bending_weight": float(bending_weight),
        "shrink_factors": shrink, "sigmas_mm": sigmas, "iterations": iters,
        "samples": n_samples, "optimizer": optimizer, "seed": int(seed),
        "sampling": sampled_in,
    }
    return DeformableResult(
        transform=CompositeTransform([ffd, MatrixTransform(matrix)]), deformation=ffd,
        linear_matrix=matrix, levels=records, final_cost=cost, parameters=parameters,
        timings={"bspline_s": time.perf_counter() - t_begin},
        fixed_shape=fixed_f.shape, fixed_affine=fixed_f.affine.copy(),
        n_iterations=emit.total - total_iterations,
        diagnostics={"control_grid": list(ffd.grid_shape),
                     "bending_energy": ffd.bending_energy()})
