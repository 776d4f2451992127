"""``register()``: the one entry point, a short loop over stages.

One call serves the GUI, the command line and scripts::

    result = register(fixed, moving, transform="affine", metric="mi", init="com")
    warped = resample(moving, fixed, result.transform)

``result.transform`` maps FIXED world RAS mm -> MOVING world RAS mm (initialisation
included), so ``warped(x) = moving(T(x))`` on the fixed grid.

The run: check the pair (:mod:`.inputs`), compute the start transform, build the stages
(:mod:`napari_reg.core.stages`) and one :class:`~.context.RunContext`, then each stage
starts from the previous stage's transform (ITK v4's registration method, DIPY's
``affine_registration`` pipeline).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..image import Volume
from ..optimize import CancelToken
from ..stages.bspline import BSplineStage
from ..stages.linear import LinearStage
from ..stages.syn import SyNStage
from ..transforms.base import MatrixTransform, Transform
from .context import RunContext, level_schedule, per_level
from .errors import RegistrationError
from .events import Callback, EventKind, Reporter
from .inputs import (
    check_pair,
    initial_matrix,
    landmark_kind,
    mask_on_fixed,
    moving_mask_volume,
)
from .presets import (
    DEFAULT_BINS,
    DEFORMABLE_MODELS,
    FINEST_SIGMA_VOXELS,
    INIT_METHODS,
    LINEAR_MI_OPTIONS,
    LINEAR_MODELS,
    METRICS,
    PRESETS,
    TRANSFORMS,
    default_deformable_metric,
)
from .result import LevelRecord, RegistrationResult, StageResult
from .stage import Stage
from .threads import single_threaded_blas

__all__ = ["register", "RegistrationError", "PRESETS", "LINEAR_MODELS", "DEFORMABLE_MODELS",
           "TRANSFORMS", "INIT_METHODS", "METRICS"]


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
    callback: Callback | None = None,
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
    moving_mask: Volume | None = None,
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
        The deformable stage's metric (default: ``metric`` for ``bspline``; ``auto`` for
        ``syn``: local NCC as in ANTs' SyN when the pair shows one contrast, MI when it
        shows two; ``result.diagnostics["metric"]`` says which ran) and
        keyword options of :func:`~napari_reg.core.stages.bspline.register_bspline` (e.g.
        ``grid_spacing_mm``, ``bending_weight``) or
        :func:`~napari_reg.core.stages.syn.register_syn`
        (e.g. ``radius``, ``levels``, ``iterations``).
    metric_options
        Keyword options of the metric (``bins``, ``percentiles``; ``regions`` per axis for
        ``mi``). The linear stages' ``mi`` defaults to ``LINEAR_MI_OPTIONS``: MI
        conditioned on 3 x 3 x 3 regions of the fixed image, 64 bins, which a smooth
        intensity bias cannot smear (see ``presets.py``); ``nmi`` to 48 bins. The options
        given here also reach a B-spline stage with the same metric (48 bins otherwise).
    seed
        Seed of the sample draws: the same inputs and seed give the same result.
    moving_mask
        Optional mask of the moving image (any grid; non-zero = use): sample points that
        the map sends outside it leave the metric (cost-function masking, e.g. missing
        tissue or a lesion in a post-operative scan). Used by the linear stages and the
        B-spline stage, re-evaluated at each level's start; SyN warps it with the moving
        image every iteration and its similarity ignores what it leaves out.

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
    user_metric_options = dict(metric_options or {})
    if metric == "mi":
        metric_options = {**LINEAR_MI_OPTIONS, **user_metric_options}
    elif metric == "nmi":
        metric_options = {"bins": DEFAULT_BINS, **user_metric_options}
    fixed_f, moving_f = check_pair(fixed, moving)
    user_mask = mask_on_fixed(fixed_mask, fixed_f)
    user_moving_mask = moving_mask_volume(moving_mask, moving_f)
    schedule = level_schedule(fixed_f, levels, shrink_factors, sigmas_mm,
                              FINEST_SIGMA_VOXELS * float(fixed_f.spacing.min()))
    iterations_per_level = per_level(iterations, schedule.n_levels, "iterations")
    samples_per_level = per_level(samples, schedule.n_levels, "samples")
    ctx = RunContext(Reporter(callback, t_start), cancel, schedule, fixed_mask=user_mask,
                     sampling=sampling, seed=seed, moving_mask=user_moving_mask)
    run_stages = _build_stages(stage_names, metric, metric_options, user_metric_options,
                               iterations_per_level,
                               samples_per_level, optimizer, tolerance, deformable_metric,
                               deformable_options)

    # ---------------------------------------------------------------- the start
    init = "initial" if initial is not None else init.lower()
    start = initial_matrix(init, fixed_f, moving_f, initial, landmarks, user_mask,
                           landmark_fit or landmark_kind(stage_names[-1], landmarks))
    t_init = time.perf_counter()
    cancel.raise_if_cancelled()  # setup takes a while on big images: honour Stop here too
    if isinstance(run_stages[0], LinearStage):
        # The pyramids below take most of a short run (~0.6 s of ~1 s for an affine 1 mm
        # brain) and report nothing: hand over the initial alignment at once, so a live
        # view can show it (no cost evaluated yet, NaN; not an iteration).
        ctx.report(EventKind.INITIALISED, ctx.record(stage_names[0], 0, schedule, 0),
                   schedule.n_levels, 0, iterations_per_level[0], float("nan"),
                   MatrixTransform(start))
    for stage in run_stages:
        stage.prepare(fixed_f, moving_f, ctx)
    t_pyramid = time.perf_counter()

    # ---------------------------------------------------------------- the stages
    current: Transform = MatrixTransform(start)
    records: list[LevelRecord] = []
    outcome: StageResult | None = None
    for index, stage in enumerate(run_stages):
        ctx.stage_index = index
        outcome = stage.run(fixed_f, moving_f, current, ctx)
        records.extend(outcome.levels)
        current = outcome.transform
    assert outcome is not None
    deformable = outcome if stage_names[-1] in DEFORMABLE_MODELS else None
    linear_matrix = (np.asarray(deformable.linear_matrix) if deformable is not None
                     else np.asarray(current.matrix))  # type: ignore[attr-defined]
    t_end = time.perf_counter()
    parameters = {
        "transform": stage_names[-1],
        "stages": list(stage_names),
        "metric": metric,
        "init": init,
        "initial": np.asarray(start).tolist() if init == "initial" else None,
        "levels": schedule.n_levels,
        "shrink_factors": schedule.shrink_factors,
        "sigmas_mm": schedule.sigmas_mm,
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
    center, radius = ctx.region(fixed_f)
    result = RegistrationResult(
        transform=current,
        initial_transform=MatrixTransform(start),
        levels=records,
        parameters=parameters,
        timings={
            "initialisation_s": t_init - t_start,
            "pyramid_s": t_pyramid - t_init,
            "optimisation_s": t_end - t_pyramid,
            "total_s": t_end - t_start,
        },
        linear_matrix=linear_matrix,
        final_cost=outcome.final_cost,
        diagnostics={"center_mm": center.tolist(), "radius_mm": float(radius),
                     **({"deformable": deformable.parameters,
                         **deformable.diagnostics} if deformable else {})},
        deformable=deformable,
    )
    ctx.stage_index = len(stage_names) - 1
    n_last = _last_stage_levels(ctx, outcome, schedule.n_levels)
    ctx.report(EventKind.DONE, LevelRecord(len(stage_names) - 1, stage_names[-1],
                                           n_last - 1, [], 0.0, 0),
               n_last, 0, 0, outcome.final_cost, current)
    return result


def _last_stage_levels(ctx: RunContext, outcome: StageResult, run_levels: int) -> int:
    """How many pyramid levels the last stage had: what its own events said (a
    deformable stage has its own schedule, e.g. SyN's 3 or 4 levels after a 4-level
    affine stage), else what its records say, else the run's schedule."""
    position = ctx.reporter.position
    if position is not None and position[0].stage == ctx.stage_index:
        return int(position[1])
    if outcome.levels:
        return max(r.level for r in outcome.levels) + 1
    return run_levels


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


def _build_stages(names: list[str], metric: str, metric_options: dict[str, Any] | None,
                  user_metric_options: dict[str, Any], iterations: list[int],
                  samples: list[int], optimizer: str, tolerance: float,
                  deformable_metric: str | None,
                  deformable_options: dict[str, Any] | None) -> list[Stage]:
    """The stage objects for the model names (a deformable model only last)."""
    stages: list[Stage] = [LinearStage(name, metric, metric_options, iterations, samples,
                                       optimizer, tolerance)
                           for name in names if name in LINEAR_MODELS]
    model = names[-1]
    if model in DEFORMABLE_MODELS:
        model_metric = (deformable_metric or default_deformable_metric(model, metric)).lower()
        if model_metric == "auto" and model == "bspline":  # only SyN chooses per pair
            model_metric = metric
        # the user's metric options (e.g. MI bins) also apply to the same metric here;
        # the linear stages' own MI defaults (regions) do not: the FFD keeps 48 bins
        model_metric_options = ({"bins": DEFAULT_BINS} if model_metric in ("mi", "nmi")
                                else {})
        if model_metric == metric:
            model_metric_options = {**model_metric_options, **user_metric_options}
        options = {"metric": model_metric, **dict(deformable_options or {})}
        if model == "bspline":
            options.setdefault("metric_options", model_metric_options)
        try:
            stages.append(BSplineStage(**options) if model == "bspline"
                          else SyNStage(**options))
        except TypeError as exc:  # an option the stage does not have
            raise RegistrationError(f"deformable_options for {model}: {exc}") from None
    return stages
