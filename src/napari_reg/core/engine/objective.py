"""The one sampled objective for parametric transforms, and one level's optimiser run.

At fixed sample points ``x_i`` (world mm, fixed per level) with fixed values ``f_i``:

    C(p) = metric(f_i, moving(y_i)) [+ weight * penalty(p)],   y_i = then(T_p(x_i))

and the chain rule ``dC/dp = sum_i dC/dm_i * grad moving(y_i) . dy_i/dp``: the metric
gives ``dC/dm_i``, the moving image its world gradient at ``y_i``, and the transform's
:meth:`~napari_reg.core.transforms.base.ParametricTransform.at_points` turns the per-point
forces into the parameter gradient (``transform.jacobian``, or a model's cheaper exact
form). Linear models and the B-spline FFD share this one objective.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..image import Volume
from ..metrics import Metric
from ..optimize import CancelToken, minimize
from ..transforms.base import ParametricTransform, Transform
from .context import RunContext
from .events import EventKind
from .result import LevelRecord
from .sampling import sample_clamped

__all__ = ["sampled_objective", "optimise_level", "Objective"]

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


def sampled_objective(model: ParametricTransform, metric: Metric, moving: Volume,
                      points: np.ndarray, fixed_values: np.ndarray,
                      cancel: CancelToken | None = None, *, then: np.ndarray | None = None,
                      penalty: Callable[[], tuple[float, np.ndarray]] | None = None,
                      penalty_weight: float = 0.0) -> Objective:
    """``p -> (cost, dcost/dp)`` of ``model`` at the fixed sample points (world mm).

    ``then``: a constant fixed->moving matrix applied after the model (a deformable
    stage's linear part ``M``: ``y = M T_p(x)``). ``penalty``: ``() -> (value,
    gradient)`` of a regulariser of the current parameters (e.g. the B-spline's bending
    energy), added with ``penalty_weight``. Points that drift out of the moving grid read
    its border (:func:`~.sampling.sample_clamped`), so the cost stays continuous for the
    line search; callers keep only points that start inside (``keep_overlapping``).
    """
    mapping = model.at_points(points, then)

    def evaluate(p: np.ndarray) -> tuple[float, np.ndarray]:
        if cancel is not None:
            cancel.raise_if_cancelled()
        model.parameters = p
        values, gradient = sample_clamped(moving, mapping.mapped())
        cost, dcost_dm = metric.value_and_derivative(fixed_values, values)
        grad = mapping.pull_back(dcost_dm[:, None] * gradient)
        if penalty is not None and penalty_weight > 0:
            energy, energy_gradient = penalty()
            cost += penalty_weight * energy
            grad = grad + penalty_weight * energy_gradient
        return float(cost), grad

    return evaluate


def optimise_level(model: ParametricTransform, objective: Objective, record: LevelRecord,
                   ctx: RunContext, n_levels: int, snapshot: Callable[[], Transform],
                   optimizer: str, max_iterations: int, tolerance: float) -> float:
    """Run the optimiser on one level in scaled parameters (``q = p * scales``, see
    ``parameter_scales``); report level start, every iteration and level end through the
    context with ``snapshot()`` (the current whole fixed->moving map); return the final
    cost. The model keeps the best parameters."""
    scales = model.parameter_scales()
    ctx.report(EventKind.LEVEL_START, record, n_levels, 0, max_iterations, float("nan"),
               snapshot)
    level_start = time.perf_counter()

    def scaled_objective(q: np.ndarray) -> tuple[float, np.ndarray]:
        cost, grad = objective(q / scales)
        return cost, grad / scales

    def on_iteration(iteration: int, value: float, q: np.ndarray) -> None:
        record.costs.append(float(value))
        model.parameters = q / scales
        ctx.report(EventKind.ITERATION, record, n_levels, iteration, max_iterations, value,
                   snapshot)

    outcome = minimize(scaled_objective, model.parameters * scales, method=optimizer,
                       max_iterations=max_iterations, tolerance=tolerance,
                       callback=on_iteration, cancel=ctx.cancel)
    model.parameters = outcome.x / scales
    record.stop_reason = outcome.stop_reason
    record.seconds = time.perf_counter() - level_start
    ctx.report(EventKind.LEVEL_END, record, n_levels, outcome.n_iterations, max_iterations,
               float(outcome.value), snapshot)
    return float(outcome.value)
