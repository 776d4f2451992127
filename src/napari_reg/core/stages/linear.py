"""The linear stage: one linear model (translation, rigid, similarity, affine) fitted
coarse to fine over the run's pyramid.

What makes it fast: each pyramid level draws a fixed set of random sample points from the
fixed image (inside its mask), keeps their fixed values and world positions, and the
optimiser (L-BFGS by default) moves the model's parameters; each evaluation maps the
points, interpolates the moving image and its gradient there, and chains the metric's
derivative to the parameters (:func:`~napari_reg.core.engine.objective.sampled_objective`).
Coarse levels use few points; the finest level uses more for accuracy.
"""

from __future__ import annotations

from typing import Any

from ..engine.context import RunContext
from ..engine.objective import optimise_level, sampled_objective
from ..engine.presets import LINEAR_MODELS
from ..engine.result import LevelRecord, StageResult
from ..engine.sampling import (
    draw_samples,
    keep_overlapping,
    mask_for_level,
    representative_values,
)
from ..engine.stage import Stage
from ..image import Volume
from ..metrics import make_metric
from ..transforms.base import MatrixTransform, Transform

__all__ = ["LinearStage"]


class LinearStage(Stage):
    """Fit ``model`` (a name of :data:`~napari_reg.core.engine.presets.LINEAR_MODELS`)
    over the run's level schedule (``ctx.schedule``), ``iterations`` and ``samples`` one
    per level; the model turns about the centre of the sampled region (``ctx.region``)."""

    def __init__(self, model: str, metric: str, metric_options: dict[str, Any] | None,
                 iterations: list[int], samples: list[int], optimizer: str = "lbfgs",
                 tolerance: float = 1e-7):
        self.name = model
        self.metric, self.metric_options = metric, dict(metric_options or {})
        self.iterations, self.samples = iterations, samples
        self.optimizer, self.tolerance = optimizer, tolerance

    def prepare(self, fixed: Volume, moving: Volume, ctx: RunContext) -> None:
        self._pyramids(fixed, moving, ctx)

    def run(self, fixed: Volume, moving: Volume, transform: Transform,
            ctx: RunContext) -> StageResult:
        schedule = ctx.schedule
        fixed_pyr, moving_pyr = self._pyramids(fixed, moving, ctx)
        center, radius = ctx.region(fixed)
        mask = ctx.sampling_mask(fixed)
        model = LINEAR_MODELS[self.name].from_matrix(transform.matrix,  # type: ignore[attr-defined]
                                                     center=center)
        model.radius = radius
        metric = make_metric(self.metric, **self.metric_options)
        n_start = ctx.reporter.total_iterations
        records: list[LevelRecord] = []
        cost = float("nan")
        for level in range(schedule.n_levels):
            level_fixed, level_moving = fixed_pyr[level], moving_pyr[level]
            level_mask = mask_for_level(mask, schedule.shrink_factors[level])
            points, fixed_values = draw_samples(level_fixed, level_mask, self.samples[level],
                                                ctx.rng)
            points, fixed_values = keep_overlapping(points, fixed_values, model, level_moving,
                                                    ctx.moving_mask)
            metric.setup(representative_values(level_fixed.data, ctx.rng),
                         representative_values(level_moving.data, ctx.rng))
            if hasattr(metric, "assign_regions"):  # conditional MI: regions of these samples
                metric.assign_regions(points)
            record = ctx.record(self.name, level, schedule, len(points))
            records.append(record)
            objective = sampled_objective(model, metric, level_moving, points, fixed_values,
                                          ctx.cancel)
            cost = optimise_level(model, objective, record, ctx, schedule.n_levels,
                                  lambda m=model: m, self.optimizer, self.iterations[level],
                                  self.tolerance)
        return StageResult(transform=MatrixTransform(model.matrix), levels=records,
                           final_cost=cost,
                           n_iterations=ctx.reporter.total_iterations - n_start)

    @staticmethod
    def _pyramids(fixed: Volume, moving: Volume, ctx: RunContext):
        # the moving image is smoothed like each level but never shrunk: it is only ever
        # interpolated, and full resolution keeps its gradient exact
        shrink, sigmas = ctx.schedule.shrink_factors, ctx.schedule.sigmas_mm
        fixed_pyr = ctx.pyramid(fixed, shrink, sigmas)
        ctx.cancel.raise_if_cancelled()  # each pyramid takes a while on big images
        moving_pyr = ctx.pyramid(moving, [[1] * fixed.ndim] * len(shrink), sigmas)
        ctx.cancel.raise_if_cancelled()
        return fixed_pyr, moving_pyr
