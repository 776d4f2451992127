"""The L-BFGS optimiser's line search: strong Wolfe conditions, cubic interpolation."""

from __future__ import annotations

import numpy as np

__all__ = ["strong_wolfe_line_search"]


def _cubic_min(a1, f1, d1, a2, f2, d2):
    """Minimiser of the cubic through two points with slopes; None if it has none."""
    if a1 == a2 or not (np.isfinite(f1) and np.isfinite(f2)):
        return None
    t1 = d1 + d2 - 3.0 * (f1 - f2) / (a1 - a2)
    disc = t1 * t1 - d1 * d2
    if disc < 0:
        return None
    t2 = np.copysign(np.sqrt(disc), a2 - a1)
    denom = d2 - d1 + 2.0 * t2
    if denom == 0:
        return None
    a = a2 - (a2 - a1) * (d2 + t2 - t1) / denom
    return float(a) if np.isfinite(a) else None


def strong_wolfe_line_search(obj, x, f0, g0, d, alpha, alpha_max, max_evals, c1=1e-4, c2=0.9):
    """Strong-Wolfe line search (Nocedal & Wright alg. 3.5/3.6, cubic interpolation).

    Returns ``(alpha, f, g)`` of an accepted point (strong Wolfe, or failing that the
    lowest point with sufficient decrease), or None if no trial lowered the cost enough.
    Non-finite costs count as "too far" and shrink the step.
    """
    slope0 = float(g0 @ d)
    best = None  # lowest trial satisfying sufficient decrease

    def evaluate(a):
        nonlocal best
        f, g = obj(x + a * d)
        slope = float(g @ d)
        if np.isfinite(f) and f <= f0 + c1 * a * slope0 and (best is None or f < best[1]):
            best = (a, f, g)
        return f, g, slope

    prev = (0.0, f0, slope0)
    lo = hi = None
    evals = 0
    while evals < max_evals:
        f, g, slope = evaluate(alpha)
        evals += 1
        if not np.isfinite(f) or f > f0 + c1 * alpha * slope0 or (evals > 1 and f >= prev[1]):
            lo, hi = prev, (alpha, f, slope)
            break
        if abs(slope) <= -c2 * slope0:
            return alpha, f, g
        if slope >= 0:
            lo, hi = (alpha, f, slope), prev
            break
        if alpha >= alpha_max:
            return best
        prev = (alpha, f, slope)
        alpha = min(4.0 * alpha, alpha_max)
    else:
        return best

    # Zoom: lo has sufficient decrease and the lowest cost so far; the minimum lies
    # between lo and hi.
    while evals < max_evals:
        a_lo, a_hi = lo[0], hi[0]
        width = abs(a_hi - a_lo)
        if width <= 1e-12 * max(abs(a_lo), abs(a_hi), 1e-300):
            break
        trial = _cubic_min(*lo, *hi)
        left, right = min(a_lo, a_hi), max(a_lo, a_hi)
        if trial is None or not (left + 0.1 * width <= trial <= right - 0.1 * width):
            trial = 0.5 * (a_lo + a_hi)
        f, g, slope = evaluate(trial)
        evals += 1
        if not np.isfinite(f) or f > f0 + c1 * trial * slope0 or f >= lo[1]:
            hi = (trial, f, slope)
            continue
        if abs(slope) <= -c2 * slope0:
            return trial, f, g
        if slope * (a_hi - a_lo) >= 0:
            hi = lo
        lo = (trial, f, slope)
    return best
