"""Deformable registration: the result type, shared helpers and the B-spline FFD loop.

Both deformable stages take the linear result as a fixed->moving matrix ``M`` and find a
deformation ``D`` of the fixed space, so the whole map is

    T(x) = M D(x)      (fixed world RAS mm -> moving world RAS mm)

``D`` is a cubic B-spline FFD (:func:`register_bspline`, this module) or the exponential
of a stationary velocity field (:func:`napari_reg.core.syn.register_syn`, re-exported
here). :class:`DeformableResult` carries ``T``, ``D``, ``M`` and the per-level cost
histories; :meth:`DeformableResult.displacement_field` turns ``T`` into one dense field
on the fixed grid that maps fixed->moving on its own (what the field writer saves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .events import LevelRecord, ProgressEvent
from .image import Volume, VolumeError
from .metrics import make_metric
from .optimize import CancelToken, minimize
from .pyramid import default_schedule, gaussian_pyramid
from .resample import sample_with_gradient
from .transforms.base import CompositeTransform, MatrixTransform, Transform
from .transforms.bspline import BSplineTransform
from .transforms.field import DisplacementField
from .transforms.velocity import StationaryVelocityField

# register_syn (syn.py) is also importable from here, resolved lazily by __getattr__ below
__all__ = ["DeformableResult", "DeformableError", "register_bspline", "compose_linear"]

Callback = Callable[[ProgressEvent], None]


class DeformableError(ValueError):
    """Bad deformable-registration input (images, parameters, no overlap)."""


@dataclass
class DeformableResult:
    """Outcome of a deformable stage.

    ``transform`` maps fixed world RAS mm -> moving world RAS mm: the deformation
    ``deformation`` (fixed -> fixed) followed by ``linear_matrix`` (fixed -> moving).
    ``levels`` holds one :class:`LevelRecord` (cost history) per pyramid level.
    """

    transform: Transform
    deformation: Transform
    linear_matrix: np.ndarray
    levels: list[LevelRecord]
    final_cost: float
    parameters: dict[str, Any]
    timings: dict[str, float]
    fixed_shape: tuple[int, ...] = ()
    fixed_affine: np.ndarray | None = None
    n_iterations: int = 0  # iterations run by this stage (all levels)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def inverse_transform(self) -> Transform:
        """The moving->fixed map ``y -> D^-1(M^-1 y)`` (world RAS mm).

        Exact within the model for the SVF (``exp(-v)``); for a B-spline FFD the inverse
        is computed as a dense field on the fixed grid by fixed-point iteration.
        """
        deform = self.deformation
        if isinstance(deform, StationaryVelocityField | DisplacementField):
            inv = deform.inverse()
        elif isinstance(deform, BSplineTransform):
            if self.fixed_affine is None:
                raise DeformableError("no fixed grid recorded to invert the FFD on")
            inv = deform.to_field(self.fixed_shape, self.fixed_affine).inverse()
        else:
            inv = deform.inverse()
        return CompositeTransform([MatrixTransform(np.linalg.inv(self.linear_matrix)), inv])

    def displacement_field(self, reference: Volume | None = None) -> DisplacementField:
        """The whole fixed->moving map (linear part included) as one dense field.

        Sampled on ``reference``'s grid (default: the fixed image grid), world RAS mm:
        ``T(x) = x + u(x)``. Ready for
        :func:`napari_reg.io.displacement_fields.save_displacement_field`.
        """
        if reference is not None:
            shape, affine = reference.shape, reference.affine
        else:
            shape, affine = self.fixed_shape, self.fixed_affine
        if affine is None:
            raise DeformableError("no reference grid: pass the fixed image")
        deform = self.deformation
        if isinstance(deform, BSplineTransform):
            dfield = deform.to_field(shape, affine)
        elif isinstance(deform, StationaryVelocityField | DisplacementField):
            # dense models: interpolate the stored grid onto the reference grid in one
            # affine_transform per component (no per-point world conversions)
            dense = deform.exp() if isinstance(deform, StationaryVelocityField) else deform
            comps = regrid(dense.components, dense.affine, tuple(shape), affine)
            dfield = DisplacementField.from_components(comps, affine)
        else:
            dfield = DisplacementField.from_transform(deform, shape, affine)
        return compose_linear(dfield, self.linear_matrix)

    def cost_history(self) -> list[float]:
        return [c for level in self.levels for c in level.costs]


def compose_linear(dfield: DisplacementField, matrix: np.ndarray) -> DisplacementField:
    """Field of ``x -> M (x + u(x))`` on ``dfield``'s grid (vectorised, world mm)."""
    d = dfield.ndim
    m = np.asarray(matrix, np.float64)
    x = np.moveaxis(dfield.grid_points(), -1, 0).astype(np.float32)  # (d, *shape)
    y = x + dfield.components
    out = (np.tensordot(m[:d, :d].astype(np.float32), y, axes=1)
           + m[:d, d].astype(np.float32).reshape((d,) + (1,) * d) - x)
    return DisplacementField.from_components(out, dfield.affine)


# ----------------------------------------------------------------------------- helpers
def regrid(components: np.ndarray, affine_from: np.ndarray, shape_to: tuple[int, ...],
           affine_to: np.ndarray) -> np.ndarray:
    """A world-mm vector field ``(d, *shape)`` linearly interpolated onto another grid.

    The vectors themselves are kept (they are world mm, not voxels); outside the source
    grid the nearest border vector is used, as in :class:`DisplacementField`.
    """
    d = components.shape[0]
    vv = np.linalg.inv(affine_from) @ np.asarray(affine_to, np.float64)
    return np.stack([
        ndimage.affine_transform(c, vv[:d, :d], offset=vv[:d, d], output_shape=tuple(shape_to),
                                 order=1, mode="nearest", output=np.float32)
        for c in components])


def check_pair(fixed: Volume, moving: Volume, initial: np.ndarray | Transform | None
               ) -> tuple[Volume, Volume, np.ndarray]:
    """float32 copies of both images and the initial fixed->moving matrix (validated)."""
    if fixed.ndim != moving.ndim:
        raise DeformableError(f"fixed image is {fixed.ndim}D but moving image is {moving.ndim}D")
    d = fixed.ndim
    if initial is None:
        matrix = np.eye(d + 1)
    elif isinstance(initial, Transform):
        if not initial.is_linear:
            raise DeformableError("the initial transform of a deformable stage must be linear")
        matrix = np.asarray(initial.matrix, np.float64)  # type: ignore[attr-defined]
    else:
        matrix = np.asarray(initial, np.float64)
    if matrix.shape != (d + 1, d + 1) or not np.all(np.isfinite(matrix)):
        raise DeformableError(f"initial matrix must be a finite {(d + 1, d + 1)} homogeneous "
                              f"fixed->moving matrix, got shape {matrix.shape}")
    if abs(np.linalg.det(matrix[:d, :d])) < 1e-9:
        raise DeformableError("initial matrix is singular")
    try:
        return fixed.as_float(), moving.as_float(), matrix
    except VolumeError as exc:
        raise DeformableError(str(exc)) from exc


def level_schedule(fixed: Volume, levels: int, shrink_factors, sigmas_mm
                   ) -> tuple[list[list[int]], list[float]]:
    """Shrink factors and sigmas (mm) per level, coarse to fine (defaults: pyramid.py)."""
    d = fixed.ndim
    if shrink_factors is None or sigmas_mm is None:
        auto_shrink, auto_sigma = default_schedule(fixed, n_levels=levels)
        shrink_factors = shrink_factors if shrink_factors is not None else auto_shrink
        sigmas_mm = sigmas_mm if sigmas_mm is not None else auto_sigma
    shrink = [[int(f) for f in np.broadcast_to(s, (d,))] for s in shrink_factors]
    sigmas = [float(s) for s in sigmas_mm]
    if len(shrink) != len(sigmas) or not shrink:
        raise DeformableError("give one shrink factor and one sigma per level")
    return shrink, sigmas


def per_level(value: int | Sequence[int], n: int, what: str) -> list[int]:
    values = [int(value)] * n if np.ndim(value) == 0 else [int(v) for v in value]  # type: ignore
    if len(values) != n or min(values) < 0:
        raise DeformableError(f"{what}: need one non-negative value per level ({n}), got {value}")
    return values


class Emitter:
    """Builds and sends :class:`ProgressEvent` s for one stage (cheap when no callback)."""

    def __init__(self, callback: Callback | None, stage: int, stage_name: str,
                 n_levels: int, t_start: float, total_iterations: int):
        self.callback, self.stage, self.name = callback, stage, stage_name
        self.n_levels, self.t_start, self.total = n_levels, t_start, total_iterations

    def __call__(self, kind: str, level: int, iteration: int, max_iterations: int, cost: float,
                 make_transform: Callable[[], Transform]) -> None:
        if kind == "iteration":
            self.total += 1
        if self.callback is None:
            return
        self.callback(ProgressEvent(
            kind=kind, stage=self.stage, stage_name=self.name, level=level,
            n_levels=self.n_levels, iteration=iteration, max_iterations=max_iterations,
            cost=float(cost), transform=make_transform(),
            elapsed=time.perf_counter() - self.t_start, total_iterations=self.total))


def mask_at_level(mask: np.ndarray | Volume | None, fixed: Volume, shrink: Sequence[int]
                  ) -> np.ndarray | None:
    """Boolean fixed-grid mask subsampled like the pyramid level (every f-th voxel)."""
    if mask is None:
        return None
    data = mask.data if isinstance(mask, Volume) else np.asarray(mask)
    if data.shape != fixed.shape:
        raise DeformableError(f"fixed mask shape {data.shape} does not match the fixed image "
                              f"{fixed.shape}")
    data = np.asarray(data) > 0
    if not data.any():
        raise DeformableError("the fixed mask is empty")
    return data[tuple(slice(None, None, int(f)) for f in shrink)]


# ----------------------------------------------------------------------------- B-spline
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


def register_bspline(
    fixed: Volume,
    moving: Volume,
    initial: np.ndarray | Transform | None = None,
    *,
    grid_spacing_mm: float | Sequence[float] = 20.0,
    metric: str = "mi",
    metric_options: dict | None = None,
    bending_weight: float = 0.1,
    levels: int = 3,
    shrink_factors: Sequence[Sequence[int] | int] | None = None,
    sigmas_mm: Sequence[float] | None = None,
    iterations: int | Sequence[int] = 60,
    samples: int | Sequence[int] = 20000,
    optimizer: str = "lbfgs",
    fixed_mask: np.ndarray | Volume | None = None,
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
        Control-point spacing (mm) at the finest level; level ``l`` of ``L`` uses
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
        drawn once per level (the objective must be deterministic for L-BFGS).
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
    shrink, sigmas = level_schedule(fixed_f, levels, shrink_factors, sigmas_mm)
    n_levels = len(shrink)
    iters = per_level(iterations, n_levels, "iterations")
    n_samples = per_level(samples, n_levels, "samples")
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
        points, fvals = _draw(lf, lmask, n_samples[level], rng)
        keep = inside_moving(points, matrix, lm)
        if np.count_nonzero(keep) < max(0.1 * len(points), 16):
            raise DeformableError(
                f"only {np.count_nonzero(keep)} of {len(points)} fixed samples map inside the "
                "moving image under the initial transform: the images do not overlap")
        points, fvals = points[keep], fvals[keep]
        metric_fn.setup(_subset(lf.data, rng), _subset(lm.data, rng))
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
    }
    return DeformableResult(
        transform=CompositeTransform([ffd, MatrixTransform(matrix)]), deformation=ffd,
        linear_matrix=matrix, levels=records, final_cost=cost, parameters=parameters,
        timings={"bspline_s": time.perf_counter() - t_begin},
        fixed_shape=fixed_f.shape, fixed_affine=fixed_f.affine.copy(),
        n_iterations=emit.total - total_iterations,
        diagnostics={"control_grid": list(ffd.grid_shape),
                     "bending_energy": ffd.bending_energy()})


def _draw(volume: Volume, mask: np.ndarray | None, n: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random voxel centres of ``volume`` (inside ``mask``): world points, values."""
    flat = volume.data.reshape(-1)
    cand = np.flatnonzero(mask.reshape(-1)) if mask is not None else np.arange(flat.size)
    if cand.size == 0:
        raise DeformableError("no fixed voxel to sample at this level (mask too small)")
    chosen = np.sort(cand if n >= cand.size else rng.choice(cand, size=n, replace=False))
    ijk = np.stack(np.unravel_index(chosen, volume.shape), axis=-1).astype(np.float64)
    return volume.voxel_to_world(ijk), flat[chosen].astype(np.float64)


def _subset(data: np.ndarray, rng: np.random.Generator, n: int = 200_000) -> np.ndarray:
    flat = data.reshape(-1)
    return flat if flat.size <= n else flat[rng.integers(0, flat.size, n)]


def __getattr__(name: str):
    # register_syn lives in syn.py, which imports this module's helpers: resolve lazily
    # so that either module can be imported first.
    if name == "register_syn":
        from .syn import register_syn

        return register_syn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
