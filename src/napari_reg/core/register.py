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

from .events import LevelRecord, ProgressEvent, RegistrationError, RegistrationResult, Reporter
from .image import Volume, VolumeError
from .initialize import (
    fit_landmarks,
    init_center_of_mass,
    init_geometry,
    init_moments,
)
from .linear_stage import linear_objective, optimise_level
from .metrics import make_metric
from .optimize import CancelToken
from .pyramid import default_schedule, gaussian_pyramid
from .resample import resample
from .sampling import (
    draw_samples,
    foreground_mask,
    keep_overlapping,
    mask_for_level,
    representative_values,
)
from .threads import single_threaded_blas
from .transforms.base import MatrixTransform, ParametricTransform, Transform
from .transforms.linear import Affine, Rigid, Similarity, Translation

__all__ = ["register", "RegistrationError", "PRESETS", "LINEAR_MODELS", "DEFORMABLE_MODELS",
           "TRANSFORMS", "INIT_METHODS", "METRICS"]

LINEAR_MODELS: dict[str, type[ParametricTransform]] = {
    "translation": Translation,
    "rigid": Rigid,
    "similarity": Similarity,
    "affine": Affine,
}
# Deformable models run after the linear stages (core/ffd.py, core/syn.py).
DEFORMABLE_MODELS = ("bspline", "syn")
TRANSFORMS = (*LINEAR_MODELS, *DEFORMABLE_MODELS)
INIT_METHODS = ("none", "geometry", "com", "moments", "landmarks")
METRICS = ("ssd", "sad", "ncc", "mi", "nmi")

# Presets a user picks first (GUI and CLI); everything else keeps its default.
PRESETS: dict[str, dict[str, Any]] = {
    "Rigid": {"transform": "rigid", "metric": "mi", "init": "com"},
    "Affine": {"transform": "affine", "metric": "mi", "init": "com"},
    "Affine + B-spline": {"transform": "bspline", "metric": "mi", "init": "com"},
    "Affine + diffeomorphic": {"transform": "syn", "metric": "mi", "init": "com"},
}

FINEST_SIGMA_VOXELS = 0.5
DEFAULT_BINS = 48


@single_threaded_blas
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
    levels: int = 4,
    shrink_factors: Sequence[Sequence[int]] | None = None,
    sigmas_mm: Sequence[float] | None = None,
    iterations: Sequence[int] | int = (200, 200, 100, 50),
    samples: Sequence[int] | int = (2000, 3000, 10000, 50000),
    optimizer: str = "lbfgs",
    tolerance: float = 1e-7,
    deformable_metric: str | None = None,
    deformable_options: dict[str, Any] | None = None,
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
        ``translation`` | ``rigid`` | ``similarity`` | ``affine``: the final linear model,
        the only stage unless ``stages`` is given; or ``bspline`` (cubic B-spline FFD with
        a bending-energy penalty) | ``syn`` (symmetric diffeomorphic, stationary velocity
        field): an affine stage first, then the deformable one.
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
        ``("rigid", "affine")`` or ``("syn",)`` (no linear stage). A deformable model can
        only be the last stage.
    levels, shrink_factors, sigmas_mm
        The Gaussian pyramid: number of levels, or explicit per-level integer shrink
        factors per axis and smoothing sigmas in mm (coarse to fine).
    iterations, samples
        Per level (coarse to fine) or one number for all: optimiser iterations and the
        number of random fixed-image sample points. A list longer than the number of
        levels is used from its fine end; a shorter one repeats its first value.
    tolerance
        A level ends when the relative change of the cost falls below this.
    optimizer
        ``lbfgs`` (deterministic samples per level) or ``gd`` (regular-step gradient
        descent).
    sampling
        Where sample points are drawn when no ``fixed_mask`` is given, in the linear
        stages and the B-spline stage: ``foreground`` (voxels above 5 % of the fixed
        image's robust intensity range, grown by 2 voxels for the B-spline: the air
        around a head carries no information, and sampling it only dilutes the metric)
        or ``all``.
    deformable_metric, deformable_options
        The deformable stage's metric (default: ``metric`` for ``bspline``; local NCC,
        ``lncc``, for ``syn`` as in ANTs' SyN — pass ``mi`` for multi-modal pairs) and
        keyword options of :func:`~napari_reg.core.ffd.register_bspline` (e.g.
        ``grid_spacing_mm``, ``bending_weight``) or :func:`~napari_reg.core.syn.register_syn`
        (e.g. ``radius``, ``levels``, ``iterations``).
    seed
        Seed of the sample draws: the same inputs and seed give the same result.

    For deformable runs ``result.transform`` is the whole fixed->moving map (the linear
    part ``result.linear_matrix`` after the deformation) and ``result.deformable`` holds
    the deformable stage's own result (dense field export, inverse).
    """
    t_start = time.perf_counter()
    cancel = cancel or CancelToken()
    cancel.raise_if_cancelled()
    stage_names = _check_stages(stages, transform)
    metric = metric.lower()
    if metric not in METRICS:
        raise RegistrationError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    if metric in ("mi", "nmi"):
        # 48 bins: on 1 mm MNI pairs 32 bins left T1-T1 at 2x ANTs' error, 64 bins cost
        # accuracy on T1-T2 (benchmarks/); 48 matched ANTs on both.
        metric_options = {"bins": DEFAULT_BINS, **(metric_options or {})}
    fixed_f, moving_f = _check_pair(fixed, moving)
    d = fixed_f.ndim
    if sampling not in ("foreground", "all"):
        raise RegistrationError(f"unknown sampling '{sampling}'; choose foreground or all")
    mask = _mask_on_fixed(fixed_mask, fixed_f)
    init_mask = mask  # initialisation uses the user's mask only
    if mask is None and sampling == "foreground":
        mask = foreground_mask(fixed_f.data)

    # ---------------------------------------------------------------- initialisation
    init = "initial" if initial is not None else init.lower()
    init_matrix = _initial_matrix(init, fixed_f, moving_f, initial, landmarks, init_mask,
                                  landmark_fit or _landmark_kind(stage_names[-1], landmarks))
    t_init = time.perf_counter()
    cancel.raise_if_cancelled()  # setup takes a while on big images: honour Stop here too

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
    reporter = Reporter(callback, t_start, n_levels)
    if stage_names[0] in LINEAR_MODELS:
        # The pyramids below take most of a short run (~0.6 s of ~1 s for an affine 1 mm
        # brain) and report nothing: hand over the initial alignment at once, so a live
        # view can show it ("initialised": no cost evaluated yet, NaN; not an iteration).
        reporter.emit("initialised", LevelRecord(0, stage_names[0], 0, shrink_factors[0],
                                                 sigmas_mm[0], 0),
                      0, iterations_per_level[0], float("nan"), MatrixTransform(init_matrix))

    fixed_pyr = gaussian_pyramid(fixed_f, shrink_factors, sigmas_mm)
    cancel.raise_if_cancelled()
    moving_pyr = gaussian_pyramid(moving_f, [[1] * d] * n_levels, sigmas_mm)
    cancel.raise_if_cancelled()
    t_pyramid = time.perf_counter()

    # ---------------------------------------------------------------- stages x levels
    rng = np.random.default_rng(seed)
    center = _region_center(fixed_f, mask)
    radius = _region_radius(fixed_f, mask, center)
    current = np.asarray(init_matrix, dtype=np.float64)
    records: list[LevelRecord] = []
    final_cost = float("nan")
    linear_names = [n for n in stage_names if n in LINEAR_MODELS]
    for stage_index, stage_name in enumerate(linear_names):
        model = LINEAR_MODELS[stage_name].from_matrix(current, center=center)
        model.radius = radius
        metric_fn = make_metric(metric, **(metric_options or {}))
        for level in range(n_levels):
            level_fixed, level_moving = fixed_pyr[level], moving_pyr[level]
            level_mask = mask_for_level(mask, shrink_factors[level])
            points, fixed_values = draw_samples(level_fixed, level_mask,
                                                 samples_per_level[level], rng)
            points, fixed_values = keep_overlapping(points, fixed_values, model,
                                                     level_moving)
            metric_fn.setup(representative_values(level_fixed.data, rng),
                            representative_values(level_moving.data, rng))
            record = LevelRecord(stage_index, stage_name, level, shrink_factors[level],
                                 sigmas_mm[level], int(len(points)))
            records.append(record)
            objective = linear_objective(model, metric_fn, level_moving, points,
                                          fixed_values, cancel)
            final_cost = optimise_level(model, objective, record, reporter, optimizer,
                                         iterations_per_level[level], tolerance, cancel)
        current = model.matrix

    result_transform: Transform = MatrixTransform(current)
    deformable = None
    if stage_names[-1] in DEFORMABLE_MODELS:
        model_metric = (deformable_metric or
                        _default_deformable_metric(stage_names[-1], metric)).lower()
        # the linear metric's options (e.g. MI bins) only apply to the same metric
        model_metric_options = (metric_options if model_metric == metric else
                                {"bins": DEFAULT_BINS} if model_metric in ("mi", "nmi") else None)
        deformable = _run_deformable(
            stage_names[-1], len(stage_names) - 1, fixed_f, moving_f, current, model_metric,
            deformable_options or {}, model_metric_options, fixed_mask, sampling, seed,
            callback, cancel, t_start, reporter)
        records.extend(deformable.levels)
        result_transform = deformable.transform
        final_cost = deformable.final_cost
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
        "deformable_metric": deformable_metric,
        "deformable_options": dict(deformable_options or {}),
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
        diagnostics={"center_mm": center.tolist(), "radius_mm": float(radius),
                     **({"deformable": deformable.parameters,
                         **deformable.diagnostics} if deformable else {})},
        deformable=deformable,
    )
    reporter.emit("done", LevelRecord(len(stage_names) - 1, stage_names[-1], n_levels - 1,
                                      [], 0.0, 0), 0, 0, final_cost, result_transform)
    return result


# -------------------------------------------------------------------- checks
def _check_stages(stages: Sequence[str] | None, transform: str) -> list[str]:
    if stages:
        names = [s.lower() for s in stages]
    elif transform.lower() in DEFORMABLE_MODELS:
        names = ["affine", transform.lower()]
    else:
        names = [transform.lower()]
    if not names:
        raise RegistrationError("at least one stage is needed")
    for name in names:
        if name not in TRANSFORMS:
            raise RegistrationError(
                f"unknown transform '{name}'; choose one of {', '.join(TRANSFORMS)}")
    if any(n in DEFORMABLE_MODELS for n in names[:-1]):
        raise RegistrationError("a deformable model (bspline, syn) can only be the last stage")
    return names


def _default_deformable_metric(model: str, metric: str) -> str:
    return "lncc" if model == "syn" else metric


def _run_deformable(model: str, stage_index: int, fixed: Volume, moving: Volume,
                    linear: np.ndarray, metric: str, options: dict[str, Any],
                    metric_options: dict[str, Any] | None, fixed_mask: Volume | None,
                    sampling: str, seed: int, callback, cancel: CancelToken, t_start: float,
                    reporter: Reporter):
    """The deformable stage after the linear ones; its events continue the run's count."""
    from .ffd import register_bspline
    from .syn import register_syn

    common = {"metric": metric, "fixed_mask": fixed_mask, "callback": callback,
              "cancel": cancel, "stage": stage_index, "t_start": t_start,
              "total_iterations": reporter.total_iterations}
    options = dict(options)
    if model == "bspline":
        options.setdefault("metric_options", metric_options)
        options.setdefault("seed", seed)
        options.setdefault("sampling", sampling)
        result = register_bspline(fixed, moving, linear, **common, **options)
    else:
        result = register_syn(fixed, moving, linear, **common, **options)
    reporter.total_iterations += result.n_iterations
    return result


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
    if not values:
        raise RegistrationError(f"{what} needs one value per level ({n_levels}), got none")
    if len(values) > n_levels:  # fewer levels than the list: keep the finest
        return values[-n_levels:]
    # more levels than the list: the extra (coarsest) levels repeat its first value
    return [values[0]] * (n_levels - len(values)) + values


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


