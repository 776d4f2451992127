"""One pyramid level of a linear stage: the cost and its gradient, and the optimiser run.

The chain rule from the metric to the parameters is
``dC/dp = sum_i dC/dm_i * grad m(T(x_i)) . dT(x_i)/dp``, with the moving image's gradient
in world mm and the transform's Jacobian in world mm per parameter.
"""

from __future__ import annotations

import time

import numpy as np

from .events import LevelRecord, Reporter
from .image import Volume
from .optimize import CancelToken, minimize
from .sampling import sample_clamped
from .transforms.base import ParametricTransform

__all__ = ["linear_objective", "optimise_level"]


def linear_objective(model: ParametricTransform, metric, moving: Volume, points: np.ndarray,
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
        values, gradient = sample_clamped(moving, model.transform_points(points))
        cost, dcost_dm = metric.value_and_derivative(fixed_values, values)
        w = dcost_dm[:, None] * gradient
        sum_w = w.sum(axis=0)
        moment = w.T @ offsets  # (d, d): sum_i w_i (x_i - c)^T
        jac = model.jacobian(basis)  # (d+1, d, P)
        j0 = jac[0]
        grad = sum_w @ j0 + np.einsum("ak,kap->p", moment, jac[1:] - j0[None])
        return float(cost), grad

    return evaluate




def optimise_level(model: ParametricTransform, objective, record: LevelRecord,
                    reporter: Reporter, optimizer: str, max_iterations: int,
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
