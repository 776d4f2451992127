"""The B-spline stage: composed, fold-free cubic FFDs; metric-independent regularisation.

``T(x) = M D(x)`` with ``D = D_n o ... o D_1`` a chain of cubic B-spline FFDs over the
fixed image box (:class:`~napari_reg.core.transforms.bspline_chain.BSplineChain`) and
``M`` the linear fixed->moving matrix the stage starts from. What makes it hold on real
anatomy:

* **No folds.** Each ``D_k`` keeps every control-point displacement inside the
  injectivity bound of Choi & Lee (2000) (``|phi| < 0.95 spacing / K``, ``K = 2.05``
  in 2D, ``2.48`` in 3D) by a smooth change of variables
  (:class:`~napari_reg.core.transforms.bspline_bounded.BoundedBSpline`); compositions of
  injective maps are injective. One FFD per pyramid level, coarse to fine; where the
  bound limits a level (the similarity pulls a coefficient past half its bound), up to
  ``max_passes`` FFDs at that level, each composed on the last.
* **One regularisation for every metric.** The similarity is divided by its own
  curvature ``kappa`` (cost per mm^2 of sample displacement, a finite difference along
  random control-point directions at the start of each FFD), so ``C / kappa`` is in
  mm^2 whatever the metric's units (SSD in intensity^2, NCC and MI dimensionless), and
  ``bending_weight`` trades mm^2 of misfit against bending energy the same way for SSD,
  NCC and MI (on a 2D brain pair the Jacobian's spread differed by < 1.6x between the
  three, against ~5000x in curvature between SSD and NCC before).
* **Noise is not fitted.** A fixed sample set over noisy images lets the FFD fit the
  noise (2 % Gaussian noise in both: a T1 registered to itself moved 0.48 mm on
  average, up to 6 mm, at 0.9-0.99 of the bound). The images' noise, estimated outside
  the head and expressed in displacement units (``sigma_n^2 / mean |grad I|^2``, mm^2),
  raises the bending weight: ``lambda = bending_weight + noise_bending_mm2 * noise``,
  the MAP weighting of a misfit whose noise is that many mm^2.
* **Do no harm.** The result is kept only if the images' *edges* align better than
  under ``M`` alone in a clear majority of the blocks it moved (control-point cells, or
  half-size blocks for a small local correction) and it gains at least a set share of
  what its mirror ``-u`` loses (:mod:`napari_reg.core.structure_check`); otherwise the
  stage returns ``M`` unbent
  (``diagnostics["structure_check"]`` says why).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine.context import RunContext, level_schedule, per_level
from ..engine.errors import RegistrationError
from ..engine.objective import optimise_level, sampled_objective
from ..engine.result import LevelRecord
from ..engine.sampling import (
    draw_samples,
    keep_overlapping,
    mask_for_level,
    representative_values,
)
from ..engine.stage import Stage
from ..image import Volume
from ..metrics import make_metric
from ..transforms.base import CompositeTransform, MatrixTransform, Transform
from ..transforms.bspline import BSplineTransform
from ..transforms.bspline_bounded import BoundedBSpline
from ..transforms.bspline_chain import BSplineChain
from .bspline_support import (
    ScaledMetric,
    metric_curvature,
    noise_displacement_mm2,
    structure_verdict,
)
from .deformable_result import DeformableResult
from .standalone import run_alone

__all__ = ["BSplineStage", "register_bspline", "SAMPLES_PER_CONTROL_POINT",
           "FOREGROUND_MARGIN_VOXELS", "DEFAULT_BENDING_WEIGHT"]

# Default sample count per control point (see register_bspline, samples).
SAMPLES_PER_CONTROL_POINT = 12
# Foreground sampling keeps this many voxels around the head (its edge is information):
# in a 1 mm head most of the box is air, where samples carry no information; on the MNI
# benchmark, foreground samples cut the B-spline's mean error 0.28 -> 0.16 mm for the
# same sample count.
FOREGROUND_MARGIN_VOXELS = 2
# The L-BFGS stopping tolerance (relative cost change) of every level.
TOLERANCE = 1e-6
# lambda in mm^4: misfit C / kappa is in mm^2, the bending energy in mm^-2 (see module doc)
DEFAULT_BENDING_WEIGHT = 10.0
# Another FFD at the same level when the last one used more than this share of its bound.
PASS_USAGE = 0.5
# mm^2: the bending weight grows by this times the images' noise in displacement units
# (noise_displacement_mm2 of both images). 2 % Gaussian noise on both 2 mm MNI T1s is
# 0.13 mm^2 (lambda 10 -> 6400): the T1 registered to itself then moves 0.26 mm on
# average (max 2.5) instead of 0.48 (max 6.3), and a smooth 3 mm deformation under the
# same noise is recovered better (error 0.98 -> 0.40 mm, 0.62 without). 1e5 bought
# little more (0.24 mm) and recovered less (0.42 mm). Noise-free images (nothing but
# zeros outside the head: every real benchmark pair) keep lambda unchanged.
NOISE_BENDING_MM2 = 5e4


class BSplineStage(Stage):
    """Fold-free B-spline FFD chain after the linear map it starts from (options: see
    :func:`register_bspline`). ``seed``/``sampling`` default to the run's."""

    name = "bspline"

    def __init__(self, *, grid_spacing_mm: float | Sequence[float] = 10.0,
                 metric: str = "mi", metric_options: dict | None = None,
                 bending_weight: float = DEFAULT_BENDING_WEIGHT, levels: int = 3,
                 shrink_factors: Sequence[Sequence[int] | int] | None = None,
                 sigmas_mm: Sequence[float] | None = None,
                 iterations: int | Sequence[int] = 60,
                 samples: int | Sequence[int] | None = None, optimizer: str = "lbfgs",
                 sampling: str | None = None, seed: int | None = None,
                 max_passes: int = 2, structure_check: bool = True,
                 noise_bending_mm2: float = NOISE_BENDING_MM2):
        if not np.isfinite(bending_weight) or bending_weight < 0:
            raise RegistrationError(f"bending_weight must be >= 0, got {bending_weight}")
        if sampling not in (None, "foreground", "all"):
            raise RegistrationError(f"unknown sampling {sampling!r}; choose foreground or all")
        if int(max_passes) < 1:
            raise RegistrationError(f"max_passes must be >= 1, got {max_passes}")
        self.grid_spacing_mm, self.metric = grid_spacing_mm, metric
        self.metric_options = dict(metric_options or {})
        self.bending_weight = float(bending_weight)
        self.levels, self.shrink_factors, self.sigmas_mm = levels, shrink_factors, sigmas_mm
        self.iterations, self.samples, self.optimizer = iterations, samples, optimizer
        self.sampling, self.seed = sampling, seed
        self.max_passes, self.structure_check = int(max_passes), bool(structure_check)
        self.noise_bending_mm2 = float(noise_bending_mm2)

    def run(self, fixed: Volume, moving: Volume, transform: Transform,
            ctx: RunContext) -> DeformableResult:
        t_begin = time.perf_counter()
        d = fixed.ndim
        matrix = np.asarray(transform.matrix, np.float64)  # type: ignore[attr-defined]
        sampling = self.sampling or ctx.sampling
        seed = ctx.seed if self.seed is None else int(self.seed)
        schedule = level_schedule(fixed, self.levels, self.shrink_factors, self.sigmas_mm)
        n_levels = schedule.n_levels
        iters = per_level(self.iterations, n_levels, "iterations")
        n_samples = per_level(20000 if self.samples is None else self.samples, n_levels,
                              "samples")
        final_spacing = np.broadcast_to(np.asarray(self.grid_spacing_mm, np.float64), (d,))
        try:
            BSplineTransform.over_volume(fixed, final_spacing)  # validates the final spacing
        except ValueError as exc:
            raise RegistrationError(str(exc)) from exc
        mask = ctx.sampling_mask(fixed, FOREGROUND_MARGIN_VOXELS, sampling)
        sampled_in = "mask" if ctx.fixed_mask is not None else sampling  # for the record
        fixed_pyr = ctx.pyramid(fixed, schedule.shrink_factors, schedule.sigmas_mm)
        moving_pyr = ctx.pyramid(moving, [[1] * d] * n_levels, schedule.sigmas_mm)
        # its own generator: the samples do not depend on how many stages ran before
        rng = np.random.default_rng(seed)
        metric = make_metric(self.metric, **self.metric_options)
        noise_mm2 = (noise_displacement_mm2(fixed) + noise_displacement_mm2(moving)
                     if self.noise_bending_mm2 > 0 else 0.0)
        bending_weight = self.bending_weight + self.noise_bending_mm2 * noise_mm2
        n_start = ctx.reporter.total_iterations
        records: list[LevelRecord] = []
        chain = BSplineChain([], d)
        current: list[BoundedBSpline] = []
        cost = float("nan")
        curvatures: list[float] = []
        usages: list[float] = []

        def snapshot() -> Transform:
            ffds = chain.ffds + [b.ffd.copy() for b in current]
            return CompositeTransform([BSplineChain(ffds, d), MatrixTransform(matrix)])

        for level in range(n_levels):
            level_fixed, level_moving = fixed_pyr[level], moving_pyr[level]
            level_mask = mask_for_level(mask, schedule.shrink_factors[level])
            spacing = final_spacing * 2 ** (n_levels - 1 - level)
            if self.samples is None:
                # a fixed sample set must over-determine the control points, or L-BFGS
                # fits the set's noise: on the 1 mm MNI benchmark (10 mm grid, 13 k control
                # points) 4 -> 12 samples per control point cut the mean error
                # 0.16 -> 0.11 mm
                grid = BSplineTransform.over_volume(fixed, spacing).grid_shape
                n_samples[level] = max(20000, SAMPLES_PER_CONTROL_POINT * int(np.prod(grid)))
            points, fixed_values = draw_samples(level_fixed, level_mask, n_samples[level], rng)
            metric.setup(representative_values(level_fixed.data, rng),
                         representative_values(level_moving.data, rng))
            # each new FFD acts on the points the chain so far has moved them to
            warped = chain.transform_points(points)
            for _ in range(self.max_passes):
                model = BoundedBSpline(BSplineTransform.over_volume(fixed, spacing))
                current[:] = [model]
                level_points, level_values = keep_overlapping(
                    warped, fixed_values, MatrixTransform(matrix), level_moving,
                    moving_mask=ctx.moving_mask)
                record = ctx.record(self.name, level, schedule, len(level_points))
                records.append(record)
                scaled = ScaledMetric(metric, 1.0)
                objective = sampled_objective(
                    model, scaled, level_moving, level_points, level_values, ctx.cancel,
                    then=matrix, penalty=model.bending_energy_and_gradient,
                    penalty_weight=bending_weight)

                def similarity(p: np.ndarray, _objective=objective, _model=model) -> float:
                    value = _objective(p)[0]
                    return value - bending_weight * _model.bending_energy_and_gradient()[0]

                kappa = metric_curvature(similarity, model.n_parameters, d, rng,
                                         0.5 * float(level_fixed.spacing.min()))
                scaled.scale = 1.0 / kappa
                curvatures.append(kappa)
                cost = optimise_level(model, objective, record, ctx, n_levels, snapshot,
                                      self.optimizer, iters[level], TOLERANCE)
                current.clear()
                chain = BSplineChain(chain.ffds + [model.ffd], d)
                warped, fixed_values = model.moved_points(), level_values
                usages.append(model.usage())
                if model.usage() < PASS_USAGE:
                    break

        diagnostics: dict[str, Any] = {
            "ffds": len(chain.ffds), "bound_usage": [round(u, 3) for u in usages],
            "curvature": curvatures, "bending_energy": chain.bending_energy(),
            "noise_mm2": noise_mm2, "bending_weight_used": bending_weight}
        if self.structure_check:
            verdict = structure_verdict(fixed, moving, matrix, chain, mask,
                                        float(final_spacing.max()), ctx.cancel.raise_if_cancelled)
            diagnostics["structure_check"] = verdict.as_dict()
            if not verdict.accepted:
                # the deformation did not line up the edges: keep the linear map unbent
                chain = BSplineChain([], d)
        parameters: dict[str, Any] = {
            "grid_spacing_mm": final_spacing.tolist(), "metric": self.metric,
            "metric_options": dict(self.metric_options),
            "bending_weight": self.bending_weight,
            "shrink_factors": schedule.shrink_factors, "sigmas_mm": schedule.sigmas_mm,
            "iterations": iters, "samples": n_samples, "optimizer": self.optimizer,
            "seed": int(seed), "sampling": sampled_in, "max_passes": self.max_passes,
            "noise_bending_mm2": self.noise_bending_mm2,
            "structure_check": self.structure_check,
        }
        return DeformableResult(
            transform=CompositeTransform([chain, MatrixTransform(matrix)]), deformation=chain,
            linear_matrix=matrix, levels=records, final_cost=cost, parameters=parameters,
            timings={"bspline_s": time.perf_counter() - t_begin},
            fixed_shape=fixed.shape, fixed_affine=fixed.affine.copy(),
            n_iterations=ctx.reporter.total_iterations - n_start, diagnostics=diagnostics)


def register_bspline(fixed: Volume, moving: Volume,
                     initial: np.ndarray | Transform | None = None, *,
                     fixed_mask: np.ndarray | Volume | None = None,
                     moving_mask: np.ndarray | Volume | None = None,
                     sampling: str = "foreground", seed: int = 0, callback=None,
                     cancel=None, stage: int = 0, **options: Any) -> DeformableResult:
    """Cubic B-spline FFD registration, coarse to fine, fixed->moving after ``initial``,
    as a run of its own (``register(..., transform="bspline")`` runs it after an affine
    stage).

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
        gained nothing); level ``l`` of ``L`` uses ``2**(L-1-l)`` times it (one new FFD
        composed per level). Smaller than a voxel of the fixed image is an error.
    metric, metric_options
        A sampled metric of :mod:`napari_reg.core.metrics` (``mi nmi ncc ssd sad``).
    bending_weight
        ``lambda`` of the objective ``C_sim / kappa + lambda * C_smooth``: the
        similarity divided by its own curvature ``kappa`` (mm^2 of misfit, see the
        module docstring) plus the bending energy (mm^-2, averaged over the fixed box),
        so one value gives the same smoothness under every metric. Default
        ``DEFAULT_BENDING_WEIGHT``; the injectivity bound, not lambda, is what keeps the
        map from folding.
    noise_bending_mm2
        Added to ``bending_weight`` per mm^2 of the images' noise in displacement units
        (:func:`~napari_reg.core.stages.bspline_support.noise_displacement_mm2` of
        fixed and moving, 0 for images with nothing but zeros outside the head);
        ``diagnostics["noise_mm2"]`` and ``["bending_weight_used"]`` report both. 0 turns
        it off.
    max_passes
        FFDs composed per level at most (another one runs while the last used more than
        half its injectivity bound).
    structure_check
        Keep the deformation only if it aligns edges better than the linear map in a clear
        majority of the blocks it moved and beats its mirror ``-u``
        (:mod:`napari_reg.core.structure_check`); False keeps whatever the optimiser
        found.
    levels, shrink_factors, sigmas_mm
        Pyramid schedule (defaults from :func:`napari_reg.core.pyramid.default_schedule`).
    iterations, samples
        Per level (the engine's one per-level rule, ``per_level``): optimiser iterations;
        random fixed voxels drawn once per level (the objective must be deterministic for
        L-BFGS). Default samples: ``max(20000, 12 x control points)`` per level (capped
        by the voxels).
    moving_mask
        Samples whose mapped position falls outside this moving-image mask (any grid,
        non-zero = use) are left out, checked at the start of every FFD.
    fixed_mask, sampling
        Samples are drawn inside ``fixed_mask`` (fixed grid) when given; otherwise, with
        ``sampling="foreground"`` (default), inside the fixed image's foreground
        (:func:`~napari_reg.core.engine.sampling.foreground_mask`) dilated by
        ``FOREGROUND_MARGIN_VOXELS`` so that its edge is sampled on both sides, or, with
        ``"all"``, anywhere in the fixed box.
    callback, cancel
        ``callback(ProgressEvent)`` at every iteration with ``stage_name="bspline"``
        (plus ``level_start``/``level_end``); ``cancel`` a :class:`CancelToken` whose
        cancellation raises :class:`~napari_reg.core.optimize.Cancelled` within one
        objective evaluation.
    stage
        The stage index the events and level records carry.
    """
    return run_alone(BSplineStage(**options), fixed, moving, initial, fixed_mask=fixed_mask,
                     sampling=sampling, moving_mask=moving_mask, seed=seed, callback=callback,
                     cancel=cancel, stage_index=stage)
