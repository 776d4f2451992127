"""Optimisers for the registration driver: L-BFGS and regular-step gradient descent.

The driver hands :func:`minimize` a function ``fun_and_grad(x) -> (cost, gradient)`` of
the *scaled* transform parameters ``x`` (``q = p * parameter_scales()``, so one unit is
about one millimetre of motion at the edge of the region, see ARCHITECTURE.md). Step
lengths below (``initial_step``, ``max_step``, ``step``, ``min_step``) are therefore
lengths in that scaled space, roughly millimetres.

Cancellation: the :class:`CancelToken` is checked before and after every evaluation of
``fun_and_grad``; a cancelled run raises :class:`Cancelled` (no partial result). One
evaluation of a registration cost takes milliseconds, so a cancel stops the optimiser
well within a second.

Stop reasons (``OptimizeResult.stop_reason``): ``"max_iterations"``, ``"tolerance"``
(relative cost change below ``tolerance``), ``"gradient_tolerance"`` (largest gradient
component below ``gradient_tolerance``), ``"min_step"`` (gd: the step shrank below
``min_step``), ``"line_search_failed"`` (lbfgs: no step along the steepest descent
lowers the cost any more: a minimum up to numerical noise).
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .line_search import strong_wolfe_line_search

__all__ = ["Cancelled", "CancelToken", "OptimizeResult", "minimize", "METHODS"]

METHODS = ("lbfgs", "gd")

FunAndGrad = Callable[[np.ndarray], "tuple[float, np.ndarray]"]
IterationCallback = Callable[[int, float, np.ndarray], None]


class Cancelled(Exception):
    """Raised inside a run when its :class:`CancelToken` was cancelled."""


class CancelToken:
    """A thread-safe cancel flag (a :class:`threading.Event`): one thread cancels, the
    optimiser's thread notices at its next cost evaluation."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop (safe from any thread, idempotent)."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._event.is_set():
            raise Cancelled("the registration was cancelled")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass; True if cancelled."""
        return self._event.wait(timeout)


@dataclass
class OptimizeResult:
    """What :func:`minimize` returns.

    ``history`` holds the cost at ``x0`` followed by the cost after every iteration
    (``len(history) == n_iterations + 1``). ``n_evaluations`` counts calls of
    ``fun_and_grad`` (line-search trials included).
    """

    x: np.ndarray
    value: float
    n_iterations: int
    n_evaluations: int
    history: list[float] = field(default_factory=list)
    stop_reason: str = ""


class _Objective:
    """Counts evaluations, checks the cancel token, validates what the function returns."""

    def __init__(self, fun_and_grad: FunAndGrad, n: int, cancel):
        self.fun = fun_and_grad
        self.n = n
        self.cancel = cancel
        self.count = 0

    def _check_cancel(self) -> None:
        if self.cancel is None:
            return
        # A plain threading.Event works too (GUI code may already hold one).
        if isinstance(self.cancel, threading.Event):
            flag = self.cancel.is_set()
        else:
            flag = self.cancel.cancelled
        if flag:
            raise Cancelled("the registration was cancelled")

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self._check_cancel()
        value, grad = self.fun(x.copy())
        self.count += 1
        self._check_cancel()
        grad = np.asarray(grad, dtype=np.float64).reshape(-1)
        if grad.size != self.n:
            raise ValueError(
                f"fun_and_grad returned a gradient of {grad.size} values for {self.n} parameters"
            )
        value = float(value)
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            # e.g. no overlap left: treated as "too far" so that a line search backs off.
            return np.inf, np.zeros(self.n)
        return value, grad


def _relative_change(old: float, new: float) -> float:
    return abs(old - new) / max(abs(old), abs(new), 1e-300)


def _two_loop(g: np.ndarray, memory: deque) -> np.ndarray:
    """L-BFGS search direction ``-H g`` from the stored (s, y, 1/y's) pairs."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(memory):
        a = rho * (s @ q)
        q -= a * y
        alphas.append(a)
    s, y, _ = memory[-1]
    q *= (s @ y) / (y @ y)  # initial Hessian scaling gamma = s'y / y'y
    for (s, y, rho), a in zip(memory, reversed(alphas), strict=True):
        q += (a - rho * (y @ q)) * s
    return -q


def _lbfgs(
    obj,
    x,
    f,
    g,
    max_iterations,
    tolerance,
    gtol,
    report,
    *,
    memory=7,
    initial_step=1.0,
    max_step=None,
    max_line_search=20,
):
    if memory < 1 or initial_step <= 0 or (max_step is not None and max_step <= 0):
        raise ValueError("lbfgs needs memory >= 1 and positive initial_step / max_step")
    pairs: deque = deque(maxlen=int(memory))
    it = 0
    while it < max_iterations:
        d = _two_loop(g, pairs) if pairs else -g
        if float(g @ d) >= 0:  # not a descent direction (bad curvature): restart
            pairs.clear()
            d = -g
        dnorm = float(np.linalg.norm(d))
        alpha_max = np.inf if max_step is None else max_step / dnorm
        # Without curvature information the gradient's size means nothing: take a
        # first step of initial_step; afterwards the quasi-Newton step (alpha = 1).
        alpha = min(1.0 if pairs else initial_step / dnorm, alpha_max)
        found = strong_wolfe_line_search(obj, x, f, g, d, alpha, alpha_max, max_line_search)
        if found is None:
            if pairs:  # the memory may be stale: retry along the steepest descent
                pairs.clear()
                continue
            return x, f, it, "line_search_failed"
        a, f_new, g_new = found
        x_new = x + a * d
        s, y = x_new - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(y)):
            pairs.append((s, y, 1.0 / sy))
        f_old = f
        x, f, g = x_new, f_new, g_new
        report(it, f, x)
        it += 1
        if np.max(np.abs(g)) <= gtol:
            return x, f, it, "gradient_tolerance"
        if _relative_change(f_old, f) <= tolerance:
            return x, f, it, "tolerance"
    return x, f, it, "max_iterations"


def _regular_step_gd(
    obj,
    x,
    f,
    g,
    max_iterations,
    tolerance,
    gtol,
    report,
    *,
    step=1.0,
    min_step=1e-3,
    relaxation=0.5,
    window=10,
):
    """ITK RegularStepGradientDescent: fixed-length steps along -g/|g|, the length
    multiplied by ``relaxation`` whenever the gradient turns by more than 90 degrees.

    One evaluation per iteration and no line search, so it tolerates stochastic costs
    (samples re-drawn at every call). The cost-change test compares the mean cost of the
    last ``window`` iterations with the ``window`` before (single noisy costs, or an
    overshoot landing at an equal cost, must not stop it).
    """
    if not (step > 0 and min_step > 0 and 0 < relaxation < 1 and window >= 1):
        raise ValueError("gd needs step > 0, min_step > 0, 0 < relaxation < 1, window >= 1")
    values = [f]
    it = 0
    while it < max_iterations:
        gnorm = float(np.linalg.norm(g))
        if np.max(np.abs(g)) <= gtol or gnorm == 0:
            return x, f, it, "gradient_tolerance"
        x_new = x - (step / gnorm) * g
        f_new, g_new = obj(x_new)
        if not np.isfinite(f_new):  # stepped out of the overlap: shorter step, stay
            step *= relaxation
        else:
            if float(g_new @ g) < 0:
                step *= relaxation
            x, f, g = x_new, f_new, g_new
        values.append(f)
        report(it, f, x)
        it += 1
        if step < min_step:
            return x, f, it, "min_step"
        if len(values) >= 2 * window + 1:
            recent = float(np.mean(values[-window:]))
            before = float(np.mean(values[-2 * window : -window]))
            if _relative_change(before, recent) <= tolerance:
                return x, f, it, "tolerance"
    return x, f, it, "max_iterations"


def minimize(
    fun_and_grad: FunAndGrad,
    x0: np.ndarray,
    method: str = "lbfgs",
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    gradient_tolerance: float = 1e-8,
    callback: IterationCallback | None = None,
    cancel: CancelToken | threading.Event | None = None,
    **options,
) -> OptimizeResult:
    """Minimise ``fun_and_grad`` from ``x0``.

    Parameters
    ----------
    fun_and_grad
        ``x -> (cost, gradient)``; may be stochastic for ``method="gd"``. Non-finite
        costs (e.g. no overlap left) are treated as "step too long".
    x0
        Start, scaled parameters (see the module docstring).
    method
        ``"lbfgs"``: limited-memory BFGS with a strong-Wolfe line search; options
        ``memory=7``, ``initial_step=1.0`` (length of the first step), ``max_step=None``
        (cap on any step length), ``max_line_search=20`` (evaluations per line search).
        ``"gd"``: regular-step gradient descent; options ``step=1.0`` (initial = largest
        step length), ``min_step=1e-3``, ``relaxation=0.5``, ``window=10``.
    max_iterations, tolerance, gradient_tolerance
        Stop after this many iterations, when the relative cost change drops to
        ``tolerance``, or when every gradient component is within ``gradient_tolerance``.
    callback
        ``callback(iteration, value, x)`` once per iteration (0-based), after the step,
        with the new cost and a copy of the new ``x`` (not per line-search trial).
    cancel
        A :class:`CancelToken` (or a :class:`threading.Event`), checked before and after
        every evaluation; once set, :class:`Cancelled` is raised.
    """
    key = str(method).strip().lower()
    if key not in METHODS:
        raise ValueError(f"unknown optimiser {method!r}; valid methods are: {', '.join(METHODS)}")
    if max_iterations < 0 or tolerance < 0 or gradient_tolerance < 0:
        raise ValueError("max_iterations, tolerance and gradient_tolerance must be >= 0")
    x = np.array(x0, dtype=np.float64).reshape(-1)
    obj = _Objective(fun_and_grad, x.size, cancel)
    f, g = obj(x)
    if not np.isfinite(f):
        raise ValueError(
            "the cost at the starting parameters is not finite (do the images overlap "
            "under the initial transform?)"
        )
    history = [f]
    run = _lbfgs if key == "lbfgs" else _regular_step_gd
    allowed = [
        name
        for name, prm in inspect.signature(run).parameters.items()
        if prm.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"invalid option(s) {unknown} for method {key!r}; valid: {', '.join(allowed)}"
        )
    if np.max(np.abs(g), initial=0.0) <= gradient_tolerance:
        return OptimizeResult(x, f, 0, obj.count, history, "gradient_tolerance")

    def report(iteration: int, value: float, xk: np.ndarray) -> None:
        history.append(float(value))
        if callback is not None:
            callback(iteration, float(value), xk.copy())

    x, f, n_it, reason = run(
        obj, x, f, g, int(max_iterations), tolerance, gradient_tolerance, report, **options
    )
    return OptimizeResult(
        x=x.copy(),
        value=float(f),
        n_iterations=n_it,
        n_evaluations=obj.count,
        history=history,
        stop_reason=reason,
    )
