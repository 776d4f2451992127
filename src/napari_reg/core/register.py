"""The registration driver: stages x pyramid levels x optimiser iterations.

One call serves the GUI, the command line and scripts::

    result = register(fixed, moving, transform="affine", metric="mi", init="com")
    warped = resample(moving, fixed, result.transform)

``result.transform`` maps FIXED world RAS mm -> MOVING world RAS mm (initialisation
included), so ``warped(x) = moving(T(x))`` on the fixed grid.

How a linear stage works (what makes it fast): each pyramid level draws a fixed set of
random sample points from the fixed image (inside its mask), keeps their fixed values
and world positions, and the optimiser (L-BFGS by default) moves the transform
parameters; each evaluation maps the points, interpolates the moving image and its
gradient there, and chains the metric's derivative to the parameters. Coarse levels use
few points; the finest level uses more for accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .events import LevelRecord, ProgressEvent, RegistrationResult
from .image import Volume, VolumeError
from .initialize import (
    fit_landmarks,
    init_center_of_mass,
    init_geometry,
    init_moments,
)
from .metrics import make_metric
from .optimize import CancelToken, minimize
from .pyramid import default_schedule, gaussian_pyramid
from .resample import resample, sample_with_gradient
from .transforms.base import MatrixTransform, ParametricTransform
from .transforms.linear import Affine, Rigid, Similarity, Translation

__all__ = ["register", "RegistrationError", "PRESETS", "LINEAR_MODELS", "INIT_METHODS", "METRICS"]

LINEAR_MODELS: dict[str, type[ParametricTransform]] = {
    "translation": Translation,
    "rigid": Rigid,
    "similarity": Similarity,
    "affine": Affine,
}
INIT_METHODS = ("none", "geometry", "com", "moments", "landmarks")
METRICS = ("ssd", "sad", "ncc", "mi", "nmi")

# Presets a user picks first (GUI and CLI); everything else keeps its default.
PRESETS: dict[str, dict[str, Any]] = {
    "Rigid": {"transform": "rigid", "metric": "mi", "init": "com"},
    "Affine": {"transform": "affine", "metric": "mi", "init": "com"},
}

# Fraction of sample points that must land inside the moving image.
MIN_OVERLAP = 0.05
FINEST_SIGMA_VOXELS = 0.5


class RegistrationError(ValueError):
    """A registration that cannot run or cannot go on, with the reason in words."""


def register(
    fixed: Volume,
    moving: Volume,
    transform: str = "affine",
    metric: str = "mi",
    init: str = "com",
    fixed_mask: Volume | None = None,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    initial: np.ndarray | Sequence[Sequence[float]] | None = None,
    callback: Callable[[ProgressEvent], None] | None = None,
    cancel: CancelToken | None = None,
    *,
    stages: Sequence[str] | None = None,
    levels: int = 3,
    shrink_factors: Sequence[Sequence[int]] | None = None,
    sigmas_mm: Sequence[float] | None = None,
    iterations: Sequence[int] | int = (200, 100, 50),
    samples: Sequence[int] | int = (3000, 10000, 50000),
    optimizer: str = "lbfgs",
    tolerance: float = 1e-7,
    sampling: str = "foreground",
    metric_options: dict[str, Any] | None = None,
    landmark_fit: str | None = None,
    seed: int = 0,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``; return the fixed->moving world transform.

    Parameters
    ----------
    fixed, moving
        Volumes with voxel->world (RAS mm) affines; both 2D or both 3D. Their grids may
        differ in shape, spacing and orientation: all geometry is in world mm.
    transform
        ``translation`` | ``rigid`` | ``similarity`` | ``affine``: the final model. Unless
        ``stages`` is given, this is the only stage.
    metric
        ``ssd`` | ``sad`` | ``ncc`` | ``mi`` | ``nmi``. MI suits mono- and multi-modal.
    init
        ``none`` | ``geometry`` (grid centres) | ``com`` (centres of intensity mass) |
        ``moments`` (principal axes) | ``landmarks`` (needs ``landmarks``). Ignored when
        ``initial`` is given.
    fixed_mask
        Optional mask; sample points are drawn only where it is non-zero. Resampled
        (nearest) onto the fixed grid when its grid differs.
    landmarks
        ``(fixed_points, moving_points)``, paired ``(N, d)`` world RAS mm arrays.
    initial
        A ``(d+1, d+1)`` fixed->moving world matrix to start from (e.g. a manual
        alignment or a transform file).
    callback
        Called on the caller's thread with a :class:`ProgressEvent` at every iteration.
    cancel
        A :class:`CancelToken`; when cancelled, :class:`~.optimize.Cancelled` is raised
        within one cost evaluation.
    stages
        Model names run in order, each starting where the previous ended, e.g.
        ``("rigid", "affine")``.
    levels, shrink_factors, sigmas_mm
        The Gaussian pyramid: number of levels, or explicit per-level integer shrink
        factors per axis and smoothing sigmas in mm (coarse to fine).
    iterations, samples
        Per level (coarse to fine) or one number for all: optimiser iterations and the
        number of random fixed-image sample points.
    tolerance
        A level ends when the relative change of the cost falls below this.
    optimizer
        ``lbfgs`` (deterministic samples per level) or ``gd`` (regular-step gradient
        descent).
    sampling
        Where sample points are drawn when no ``fixed_mask`` is given: ``foreground``
        (voxels above 5 % of the fixed image's robust intensity range: the air around a
        head carries no information, and sampling it only dilutes the metric) or ``all``.
    seed
        Seed of the sample draws: the same inputs and seed give the same result.
    """
    t_start = time.perf_counter()
    cancel = cancel or CancelToken()
    stage_names = _check_stages(stages, transform)
    metric = metric.lower()
    if metric not in METRICS:
        raise RegistrationError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    fixed_f, moving_f = _check_pair(fixed, moving)
    d = fixed_f.ndim
    if sampling not in ("foreground", "all"):
        raise RegistrationError(f"unknown sampling '{sampling}'; choose foreground or all")
    mask = _mask_on_fixed(fixed_mask, fixed_f)
    init_mask = mask  # initialisation uses the user's mask only
    if mask is None and sampling == "foreground":
        mask = _foreground(fixed_f.data)

    # ---------------------------------------------------------------- initialisation
    init = "initial" if initial is not None else init.lower()
    init_matrix = _initial_matrix(init, fixed_f, moving_f, initial, landmarks, init_mask,
                                  landmark_fit or _landmark_kind(stage_names[-1], landmarks))
    t_init = time.perf_counter()

    # ---------------------------------------------------------------- pyramid schedule
    if shrink_factors is None or sigmas_mm is None:
        auto_shrink, auto_sigmas = default_schedule(fixed_f, n_levels=levels)
        # Half a voxel of smoothing at the finest level: MI's interpolation artefact
        # (interpolated moving values are blurred, fixed voxel values are not) biased
        # affine results by ~0.01 mm on 1 mm brains without it (benchmarks/).
        auto_sigmas = list(auto_sigmas[:-1]) + [
            max(float(auto_sigmas[-1]), FINEST_SIGMA_VOXELS * float(fixed_f.spacing.min()))]
        shrink_factors = shrink_factors or auto_shrink
        sigmas_mm = sigmas_mm if sigmas_mm is not None else auto_sigmas
    shrink_factors = [[int(f) for f in np.broadcast_to(s, (d,))] for s in shrink_factors]
    sigmas_mm = [float(s) for s in sigmas_mm]
    n_levels = len(shrink_factors)
    if len(sigmas_mm) != n_levels:
        raise RegistrationError("shrink_factors and sigmas_mm need one entry per level")
    iterations_per_level = _per_level(iterations, n_levels, "iterations")
    samples_per_level = _per_level(samples, n_levels, "samples")

    fixed_pyr = gaussian_pyramid(fixed_f, shrink_factors, sigmas_mm)
    moving_pyr = gaussian_pyramid(moving_f, [[1] * d] * n_levels, sigmas_mm)
    t_pyramid = time.perf_counter()

    # ---------------------------------------------------------------- stages x levels
    rng = np.random.default_rng(seed)
    center = _region_center(fixed_f, mask)
    radius = _region_radius(fixed_f, mask, center)
    current = np.asarray(init_matrix, dtype=np.float64)
    records: list[LevelRecord] = []
    final_cost = float("nan")
    reporter = _Reporter(callback, t_start, n_levels)
    for stage_index, stage_name in enumerate(stage_names):
        model = LINEAR_MODELS[stage_name].from_matrix(current, center=center)
        model.radius = radius
        metric_fn = make_metric(metric, **(metric_options or {}))
        for level in range(n_levels):
            level_fixed, level_moving = fixed_pyr[level], moving_pyr[level]
            level_mask = _mask_for_level(mask, shrink_factors[level])
            points, fixed_values = _draw_samples(level_fixed, level_mask,
                                                 samples_per_level[level], rng)
            points, fixed_values = _keep_overlapping(points, fixed_values, model,
                                                     level_moving)
            metric_fn.setup(_representative(level_fixed.data, rng),
                            _representative(level_moving.data, rng))
            record = LevelRecord(stage_index, stage_name, level, shrink_factors[level],
                                 sigmas_mm[level], int(len(points)))
            records.append(record)
            objective = _linear_objective(model, metric_fn, level_moving, points,
                                          fixed_values, cancel)
            final_cost = _optimise_level(model, objective, record, reporter, optimizer,
                                         iterations_per_level[level], tolerance, cancel)
        current = model.matrix

    result_transform = MatrixTransform(current)
    t_end = time.perf_counter()
    parameters = {
        "transform": stage_names[-1],
        "stages": list(stage_names),
        "metric": metric,
        "init": init,
        "initial": np.asarray(init_matrix).tolist() if init == "initial" else None,
        "levels": n_levels,
        "shrink_factors": shrink_factors,
        "sigmas_mm": sigmas_mm,
        "iterations": iterations_per_level,
        "samples": samples_per_level,
        "optimizer": optimizer,
        "tolerance": tolerance,
        "sampling": sampling,
        "metric_options": dict(metric_options or {}),
        "landmark_fit": landmark_fit,
        "seed": int(seed),
    }
    result = RegistrationResult(
        transform=result_transform,
        initial_transform=MatrixTransform(init_matrix),
        levels=records,
        parameters=parameters,
        timings={
            "initialisation_s": t_init - t_start,
            "pyramid_s": t_pyramid - t_init,
            "optimisation_s": t_end - t_pyramid,
            "total_s": t_end - t_start,
        },
        linear_matrix=current,
        final_cost=final_cost,
        diagnostics={"center_mm": center.tolist(), "radius_mm": float(radius)},
    )
    reporter.emit("done", LevelRecord(len(stage_names) - 1, stage_names[-1], n_levels - 1,
                                      [], 0.0, 0), 0, 0, final_cost, result_transform)
    return result


# -------------------------------------------------------------------- checks
def _check_stages(stages: Sequence[str] | None, transform: str) -> list[str]:
    names = [s.lower() for s in (stages or [transform])]
    if not names:
        raise RegistrationError("at least one stage is needed")
    for name in names:
        if name not in LINEAR_MODELS:
            raise RegistrationError(
                f"unknown transform '{name}'; choose one of {', '.join(LINEAR_MODELS)}")
    return names


def _check_pair(fixed: Volume, moving: Volume) -> tuple[Volume, Volume]:
    if fixed.ndim != moving.ndim:
        raise RegistrationError(
            f"fixed image is {fixed.ndim}D but moving image is {moving.ndim}D; "
            "both must be 2D or both 3D")
    checked = []
    for role, volume in (("fixed", fixed), ("moving", moving)):
        try:
            as_float = volume.as_float()
        except VolumeError as exc:
            raise RegistrationError(f"{role} image: {exc}") from exc
        if min(as_float.shape) < 4:
            raise RegistrationError(
                f"{role} image is too small to register (shape {as_float.shape}); every axis "
                "needs at least 4 voxels")
        if float(np.ptp(as_float.data)) == 0.0:
            raise RegistrationError(
                f"{role} image is constant (every voxel is {float(as_float.data.flat[0])}); "
                "there is nothing to align")
        checked.append(as_float)
    return checked[0], checked[1]


def _per_level(value: Sequence[int] | int, n_levels: int, what: str) -> list[int]:
    if np.isscalar(value):
        return [int(value)] * n_levels  # type: ignore[arg-type]
    values = [int(v) for v in value]  # type: ignore[union-attr]
    if len(values) == n_levels:
        return values
    if len(values) > n_levels:  # fewer levels than the default list: keep the finest
        return values[-n_levels:]
    raise RegistrationError(f"{what} needs one value per level ({n_levels}), got {values}")


def _mask_on_fixed(mask: Volume | None, fixed: Volume) -> np.ndarray | None:
    if mask is None:
        return None
    if mask.ndim != fixed.ndim:
        raise RegistrationError(f"mask is {mask.ndim}D but the fixed image is {fixed.ndim}D")
    if not mask.same_grid(fixed):
        mask = resample(mask, fixed, MatrixTransform(np.eye(fixed.ndim + 1)),
                        interpolation="nearest")
    values = np.asarray(mask.data) != 0
    if not values.any():
        raise RegistrationError("the fixed mask is empty (no non-zero voxel on the fixed grid)")
    return values


def _foreground(data: np.ndarray) -> np.ndarray | None:
    """Voxels above 5 % of the robust intensity range; None when that is not a region."""
    flat = data.reshape(-1)
    probe = flat[:: max(1, flat.size // 200_000)]
    lo, hi = np.percentile(probe, [1.0, 99.0])
    if hi <= lo:
        return None
    mask = data > lo + 0.05 * (hi - lo)
    fraction = float(np.count_nonzero(mask)) / mask.size
    return mask if 0.02 < fraction < 0.98 else None


def _mask_for_level(mask: np.ndarray | None, shrink: Sequence[int]) -> np.ndarray | None:
    if mask is None:
        return None
    return mask[tuple(slice(None, None, f) for f in shrink)]


# -------------------------------------------------------------------- initialisation
def _landmark_kind(model: str, landmarks: tuple[np.ndarray, np.ndarray] | None) -> str:
    # An affine fit needs d+1 well-spread pairs; with fewer a similarity is the best
    # honest start, and the intensity stages add the rest.
    if model != "affine" or landmarks is None:
        return model
    n, d = np.asarray(landmarks[0]).shape
    return "affine" if n >= 2 * (d + 1) else "similarity"


def _initial_matrix(init: str, fixed: Volume, moving: Volume, initial: Any,
                    landmarks: tuple[np.ndarray, np.ndarray] | None,
                    mask: np.ndarray | None, landmark_kind: str) -> np.ndarray:
    d = fixed.ndim
    if init == "initial":
        matrix = np.asarray(initial, dtype=np.float64)
        if matrix.shape != (d + 1, d + 1) or not np.all(np.isfinite(matrix)):
            raise RegistrationError(
                f"the initial transform must be a finite {d + 1}x{d + 1} matrix, "
                f"got shape {matrix.shape}")
        return matrix
    if init == "none":
        return np.eye(d + 1)
    if init == "geometry":
        return init_geometry(fixed, moving)
    if init == "com":
        mask_volume = None if mask is None else fixed.with_data(mask.astype(np.uint8))
        return init_center_of_mass(fixed, moving, fixed_mask=mask_volume)
    if init == "moments":
        return init_moments(fixed, moving)
    if init == "landmarks":
        if landmarks is None:
            raise RegistrationError("init='landmarks' needs landmark pairs (fixed, moving)")
        fixed_points, moving_points = (np.asarray(p, dtype=np.float64) for p in landmarks)
        return fit_landmarks(fixed_points, moving_points, kind=landmark_kind)
    raise RegistrationError(f"unknown init '{init}'; choose one of {', '.join(INIT_METHODS)}")


def _region_center(fixed: Volume, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return fixed.center_world()
    ijk = np.argwhere(mask).mean(axis=0)
    return fixed.voxel_to_world(ijk)


def _region_radius(fixed: Volume, mask: np.ndarray | None, center: np.ndarray) -> float:
    corners = fixed.corners_world() if mask is None else fixed.voxel_to_world(
        np.array([np.argwhere(mask).min(axis=0), np.argwhere(mask).max(axis=0)], dtype=float))
    # Root-mean-square distance of a box's points from its centre ~ half-diagonal/sqrt(3).
    half_extent = np.abs(corners - center).max(axis=0)
    return float(max(np.linalg.norm(half_extent) / np.sqrt(3.0), 1.0))


# -------------------------------------------------------------------- sampling
def _draw_samples(volume: Volume, mask: np.ndarray | None, n: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random points near voxel centres of ``volume`` (inside ``mask``): world, values."""
    candidates = np.flatnonzero(mask.reshape(-1)) if mask is not None else None
    total = volume.data.size if candidates is None else candidates.size
    if total == 0:
        raise RegistrationError("no fixed-image voxel to sample (mask empty at this level)")
    if n >= total:
        chosen = np.arange(total)
    else:
        chosen = rng.choice(total, size=n, replace=False)
    chosen.sort()  # memory-friendly gathers
    index = chosen if candidates is None else candidates[chosen]
    ijk = np.stack(np.unravel_index(index, volume.shape), axis=-1).astype(np.float64)
    # Jitter the points off the voxel centres and interpolate the fixed image there too,
    # so fixed and moving values carry the same interpolation blur: it halved the MI
    # bias on 1 mm brains (0.10 -> 0.05 mm TRE) against exact voxel-centre values.
    upper = np.asarray(volume.shape, dtype=np.float64) - 1.0
    ijk = np.clip(ijk + rng.uniform(-0.5, 0.5, size=ijk.shape), 0.0, upper)
    points = volume.voxel_to_world(ijk)
    values, _, _ = sample_with_gradient(volume, points)
    return points, values


def _keep_overlapping(points: np.ndarray, fixed_values: np.ndarray, model: ParametricTransform,
                      moving: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Keep the sample points that the current transform maps inside the moving grid."""
    inside = moving.contains_voxel(moving.world_to_voxel(model.transform_points(points)))
    n_inside, n_total = int(np.count_nonzero(inside)), len(points)
    if n_inside < max(MIN_OVERLAP * n_total, 8):
        raise RegistrationError(
            f"the images do not overlap: only {n_inside} of {n_total} fixed sample points map "
            "inside the moving image (check the initialisation and the images' world "
            "positions)")
    return points[inside], fixed_values[inside]


def _sample_clamped(moving: Volume, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moving values and world gradients, points outside clamped onto the grid's border.

    Counting only the points that fall inside makes the sampled cost jump whenever one
    crosses the border, which defeats a line search; the samples are therefore fixed
    per level (all inside at its start) and a point that drifts out reads the border
    value, with a zero derivative along the clamped voxel axes. The cost stays
    continuous and its gradient exact.
    """
    voxels = moving.world_to_voxel(points_world)
    upper = np.asarray(moving.shape, dtype=np.float64) - 1.0
    clamped = np.clip(voxels, 0.0, upper)
    outside = clamped != voxels
    if not outside.any():
        values, gradient, _ = sample_with_gradient(moving, points_world)
        return values, gradient
    values, gradient, _ = sample_with_gradient(moving, moving.voxel_to_world(clamped))
    linear = moving.affine[:-1, :-1]
    gradient_voxel = gradient @ linear  # d value / d voxel index
    gradient_voxel[outside] = 0.0
    return values, gradient_voxel @ np.linalg.inv(linear)


def _representative(data: np.ndarray, rng: np.random.Generator, n: int = 200_000) -> np.ndarray:
    flat = data.reshape(-1)
    if flat.size <= n:
        return flat
    return flat[rng.integers(0, flat.size, size=n)]


# -------------------------------------------------------------------- objective
def _linear_objective(model: ParametricTransform, metric, moving: Volume, points: np.ndarray,
                      fixed_values: np.ndarray, cancel: CancelToken):
    """Cost and gradient w.r.t. the model parameters at the fixed sample points.

    The chain rule is ``dC/dp = sum_i w_i . dT(x_i)/dp`` with ``w_i = dC/dm_i * grad m``.
    For a linear model dT(x)/dp is affine in x, so the sum needs only ``sum_i w_i`` and
    ``sum_i w_i (x_i - c)^T``, and the Jacobian at d+1 points: cheap at any sample count.
    """
    d = points.shape[1]
    center = np.asarray(model.center, dtype=np.float64)
    offsets = points - center
    basis = np.vstack([center, center + np.eye(d)])

    def evaluate(p: np.ndarray) -> tuple[float, np.ndarray]:
        cancel.raise_if_cancelled()
        model.parameters = p
        values, gradient = _sample_clamped(moving, model.transform_points(points))
        cost, dcost_dm = metric.value_and_derivative(fixed_values, values)
        w = dcost_dm[:, None] * gradient
        sum_w = w.sum(axis=0)
        moment = w.T @ offsets  # (d, d): sum_i w_i (x_i - c)^T
        jac = model.jacobian(basis)  # (d+1, d, P)
        j0 = jac[0]
        grad = sum_w @ j0 + np.einsum("ak,kap->p", moment, jac[1:] - j0[None])
        return float(cost), grad

    return evaluate




def _optimise_level(model: ParametricTransform, objective, record: LevelRecord,
                    reporter: _Reporter, optimizer: str, max_iterations: int,
                    tolerance: float, cancel: CancelToken) -> float:
    """Run the optimiser on one level in scaled parameters; return the final cost."""
    scales = model.parameter_scales()
    reporter.emit("level_start", record, 0, max_iterations, float("nan"), model)
    level_start = time.perf_counter()

    def scaled_objective(q: np.ndarray) -> tuple[float, np.ndarray]:
        cost, grad = objective(q / scales)
        return cost, grad / scales

    def on_iteration(iteration: int, value: float, q: np.ndarray) -> None:
        record.costs.append(float(value))
        model.parameters = q / scales
        reporter.total_iterations += 1
        reporter.emit("iteration", record, iteration, max_iterations, value, model)

    outcome = minimize(scaled_objective, model.parameters * scales, method=optimizer,
                       max_iterations=max_iterations, tolerance=tolerance,
                       callback=on_iteration, cancel=cancel)
    model.parameters = outcome.x / scales
    record.stop_reason = outcome.stop_reason
    record.seconds = time.perf_counter() - level_start
    reporter.emit("level_end", record, outcome.n_iterations, max_iterations,
                  float(outcome.value), model)
    return float(outcome.value)


class _Reporter:
    """Turns driver state into ProgressEvents for the caller's callback."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None, t_start: float,
                 n_levels: int) -> None:
        self.callback = callback
        self.t_start = t_start
        self.n_levels = n_levels
        self.total_iterations = 0

    def emit(self, kind: str, record: LevelRecord, iteration: int, max_iterations: int,
             cost: float, transform) -> None:
        if self.callback is None:
            return
        # A snapshot: the model keeps moving after the event is handed over.
        snapshot = MatrixTransform(transform.matrix)
        self.callback(ProgressEvent(
            kind=kind, stage=record.stage, stage_name=record.stage_name, level=record.level,
            n_levels=self.n_levels, iteration=iteration, max_iterations=max_iterations,
            cost=float(cost), transform=snapshot,
            elapsed=time.perf_counter() - self.t_start,
            total_iterations=self.total_iterations))
