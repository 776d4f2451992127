"""Optimisers: convergence, callbacks, history, stop reasons, cancellation, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy import ndimage

from napari_reg.core.metrics import make_metric
from napari_reg.core.optimize import Cancelled, CancelToken, OptimizeResult, minimize

A = np.diag([1.0, 10.0, 100.0])
A[0, 1] = A[1, 0] = 2.0
B = np.array([1.0, -2.0, 3.0])


def quadratic(x):
    r = x - B
    return 0.5 * float(r @ A @ r), A @ r


def rosenbrock(x):
    f = 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2
    g = np.array(
        [-400.0 * x[0] * (x[1] - x[0] ** 2) - 2.0 * (1.0 - x[0]), 200.0 * (x[1] - x[0] ** 2)]
    )
    return float(f), g


@pytest.mark.parametrize("method", ["lbfgs", "gd"])
def test_quadratic_convergence(method):
    options = {"min_step": 1e-7} if method == "gd" else {}
    res = minimize(quadratic, np.zeros(3), method=method, max_iterations=2000, **options)
    assert isinstance(res, OptimizeResult)
    np.testing.assert_allclose(res.x, B, atol=1e-4 if method == "gd" else 1e-7)
    assert res.value == pytest.approx(quadratic(res.x)[0])
    assert res.value < 1e-7
    if method == "lbfgs":
        assert res.stop_reason == "gradient_tolerance"
        assert res.n_iterations < 30
    else:
        assert res.stop_reason == "min_step"


def test_lbfgs_rosenbrock():
    res = minimize(rosenbrock, np.array([-1.2, 1.0]), max_iterations=200)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-6)
    assert res.stop_reason in ("gradient_tolerance", "tolerance")
    # Monotone: every accepted L-BFGS step satisfies sufficient decrease.
    assert np.all(np.diff(res.history) <= 0)
    assert res.n_evaluations < 3 * res.n_iterations


def test_gd_rosenbrock():
    # Regular-step descent zig-zags in the curved valley (its step halves at every
    # reversal) but still reaches the minimum given a small enough minimum step.
    res = minimize(
        rosenbrock, np.array([-1.2, 1.0]), method="gd", max_iterations=20000, min_step=1e-7
    )
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=0.02)
    assert res.value < 1e-3
    assert res.n_evaluations == res.n_iterations + 1  # one evaluation per iteration


def test_gd_step_halves_and_stops_at_min_step():
    f = lambda x: (float(x @ x), 2.0 * x)  # noqa: E731
    steps = []
    res = minimize(
        f,
        np.array([0.3]),
        method="gd",
        step=1.0,
        min_step=0.1,
        callback=lambda i, v, x: steps.append(float(x[0])),
    )
    # 0.3 -> -0.7 (reversal: step 0.5) -> -0.2 -> 0.3 (reversal: 0.25) -> 0.05 -> -0.2
    # (reversal: 0.125) -> -0.075 -> 0.05 (reversal: 0.0625 < min_step).
    np.testing.assert_allclose(steps, [-0.7, -0.2, 0.3, 0.05, -0.2, -0.075, 0.05])
    assert res.stop_reason == "min_step"
    assert res.n_iterations == 7


def test_gd_with_stochastic_gradient():
    # Re-drawn samples make cost and gradient noisy. With comparable parameter scales
    # (what the driver's scaling provides), the step still shrinks onto the minimum.
    rng = np.random.default_rng(0)
    a = np.diag([1.0, 2.0, 4.0])

    def noisy(x):
        r = x - B
        f = 0.5 * float(r @ a @ r)
        return f * (1 + 0.05 * rng.normal()), a @ r + rng.normal(scale=0.1, size=3)

    res = minimize(noisy, np.zeros(3), method="gd", max_iterations=3000, step=1.0, min_step=1e-4)
    np.testing.assert_allclose(res.x, B, atol=0.1)
    assert res.stop_reason in ("min_step", "tolerance")


@pytest.mark.parametrize("method", ["lbfgs", "gd"])
def test_callback_once_per_iteration_and_history(method):
    calls = []
    res = minimize(
        rosenbrock,
        np.array([-1.2, 1.0]),
        method=method,
        max_iterations=15,
        callback=lambda i, v, x: calls.append((i, v, x)),
    )
    assert res.stop_reason == "max_iterations"
    assert res.n_iterations == 15
    assert [c[0] for c in calls] == list(range(15))
    assert len(res.history) == res.n_iterations + 1
    assert res.history[0] == pytest.approx(rosenbrock(np.array([-1.2, 1.0]))[0])
    assert [c[1] for c in calls] == res.history[1:]
    for _, v, x in calls:
        assert v == pytest.approx(rosenbrock(x)[0])
    np.testing.assert_array_equal(calls[-1][2], res.x)
    # x handed to the callback is a copy: mutating it does not affect the run.
    calls[-1][2][:] = 99.0
    assert not np.any(res.x == 99.0)
    if method == "lbfgs":
        assert res.n_evaluations >= res.n_iterations + 1  # line-search trials counted


def test_tolerance_stop_reason():
    res = minimize(rosenbrock, np.array([-1.2, 1.0]), tolerance=1e-2, gradient_tolerance=0)
    assert res.stop_reason == "tolerance"
    assert res.n_iterations < 40


def test_gradient_tolerance_at_start():
    res = minimize(quadratic, B.copy())
    assert res.stop_reason == "gradient_tolerance"
    assert res.n_iterations == 0 and res.n_evaluations == 1
    assert res.history == [0.0]


def test_line_search_failure_is_a_clean_stop():
    # A gradient that lies (points uphill): no step lowers the cost.
    def liar(x):
        return float(x @ x), -2.0 * x

    res = minimize(liar, np.array([1.0, 1.0]), max_iterations=50)
    assert res.stop_reason == "line_search_failed"
    np.testing.assert_array_equal(res.x, [1.0, 1.0])


def test_non_finite_cost_backs_off():
    # Infinite cost beyond |x| > 2 (like losing the overlap): L-BFGS must shrink its
    # step, not stop or return the infinite point.
    def fenced(x):
        if np.abs(x).max() > 2:
            return np.inf, np.zeros_like(x)
        return float((x[0] - 1.5) ** 2), np.array([2.0 * (x[0] - 1.5)])

    res = minimize(fenced, np.array([-1.9]), initial_step=50.0)
    assert res.x[0] == pytest.approx(1.5, abs=1e-6)
    res = minimize(fenced, np.array([-1.9]), method="gd", step=10.0, min_step=1e-6)
    assert res.x[0] == pytest.approx(1.5, abs=1e-5)
    with pytest.raises(ValueError, match="not finite"):
        minimize(fenced, np.array([5.0]))


def test_max_step_caps_lbfgs_steps():
    xs = []
    minimize(
        quadratic,
        np.zeros(3),
        max_step=0.5,
        max_iterations=5,
        callback=lambda i, v, x: xs.append(x),
    )
    path = np.vstack([np.zeros(3), *xs])
    assert np.all(np.linalg.norm(np.diff(path, axis=0), axis=1) <= 0.5 + 1e-12)


@pytest.mark.parametrize("method", ["lbfgs", "gd"])
def test_cancel_from_another_thread(method):
    token = CancelToken()
    evaluations = []

    def slow(x):
        # A cost that decreases forever: the run never stops on its own.
        evaluations.append(1)
        time.sleep(0.002)
        return -float(x.sum()), -np.ones_like(x)

    cancelled_at = []

    def canceller():
        time.sleep(0.2)
        cancelled_at.append(time.perf_counter())
        token.cancel()

    thread = threading.Thread(target=canceller)
    thread.start()
    options = {"min_step": 1e-300} if method == "gd" else {}
    with pytest.raises(Cancelled):
        minimize(
            slow,
            np.ones(4),
            method=method,
            max_iterations=10**9,
            tolerance=0,
            gradient_tolerance=0,
            cancel=token,
            **options,
        )
    stopped = time.perf_counter()
    thread.join()
    assert token.cancelled
    assert len(evaluations) > 1
    assert stopped - cancelled_at[0] < 1.0


def test_cancel_token_basics():
    token = CancelToken()
    assert not token.cancelled
    token.raise_if_cancelled()
    assert token.wait(0.0) is False
    token.cancel()
    token.cancel()
    assert token.cancelled and token.wait(0.0)
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()
    # A token cancelled before the run stops it before the first evaluation.
    calls = []
    with pytest.raises(Cancelled):
        minimize(lambda x: calls.append(1) or quadratic(x), np.zeros(3), cancel=token)
    assert calls == []
    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        minimize(quadratic, np.zeros(3), cancel=event)


def test_errors():
    with pytest.raises(ValueError, match="valid methods are: lbfgs, gd"):
        minimize(quadratic, np.zeros(3), method="newton")
    with pytest.raises(ValueError, match="invalid option"):
        minimize(quadratic, np.zeros(3), method="lbfgs", min_step=0.1)
    with pytest.raises(ValueError, match="gradient of 2 values for 3"):
        minimize(lambda x: (0.0, np.zeros(2)), np.zeros(3))
    with pytest.raises(ValueError, match="relaxation"):
        minimize(quadratic, np.zeros(3), method="gd", relaxation=1.5)
    assert minimize(quadratic, np.zeros(3), method="GD", max_iterations=0).stop_reason == (
        "max_iterations"
    )


@pytest.mark.parametrize(("metric", "method"), [("mi", "lbfgs"), ("ncc", "lbfgs"), ("nmi", "gd")])
def test_metric_and_optimiser_recover_a_2d_shift(metric, method):
    # A miniature registration: the moving image is the fixed one shifted by (2.3, -1.7)
    # pixels with an inverted contrast for MI/NMI; sample gradients by the chain rule
    # dC/dt = sum_i dC/dm_i * grad moving(x_i + t).
    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    fixed = ndimage.gaussian_filter(
        ((xx - 30) ** 2 / 200 + (yy - 34) ** 2 / 90 < 1) * 1.0 + (np.abs(xx - 20) < 4) * 0.5, 2.0
    )
    shift = np.array([2.3, -1.7])
    moving = ndimage.shift(fixed, shift, order=1)
    if metric != "ncc":
        moving = 2.0 - moving**0.7
    rng = np.random.default_rng(1)
    points = rng.uniform(8, 56, size=(4000, 2))
    f = ndimage.map_coordinates(fixed, points.T, order=1)
    gy, gx = np.gradient(moving)
    m_metric = make_metric(metric)
    m_metric.setup(fixed, moving)

    def fun(t):
        p = (points + t).T
        m = ndimage.map_coordinates(moving, p, order=1)
        grad_m = np.stack([ndimage.map_coordinates(g, p, order=1) for g in (gy, gx)], axis=1)
        cost, dm = m_metric.value_and_derivative(f, m)
        return cost, dm @ grad_m

    options = {"step": 1.0, "min_step": 1e-3} if method == "gd" else {}
    res = minimize(fun, np.zeros(2), method=method, max_iterations=200, **options)
    np.testing.assert_allclose(res.x, shift, atol=0.1)
