"""BLAS runs single-threaded while the registration core works.

Why: the core's heavy work is in ``scipy.ndimage`` and ``scipy.sparse`` (not BLAS), while
its BLAS calls are many tiny ones: ``(N, 3) @ (3, 3)`` coordinate maps and the dot
products of L-BFGS. OpenBLAS wakes all its threads for each of them, which on the
2-core reference machine made a 1 mm B-spline registration 2.7x slower (18.8 s against
6.9 s with one BLAS thread; a 40 k-element dot product took ~1 ms instead of 5 us).

:func:`single_threaded_blas` limits every loaded BLAS library to one thread for the
duration of a call and restores the previous setting afterwards (``threadpoolctl``,
which finds OpenBLAS, MKL or BLIS whatever their symbol prefixes; writing that lookup
by hand is what it exists for). The limit is process-wide while it lasts: numpy calls
on other threads, e.g. napari's, also run single-threaded during a registration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["single_threaded_blas"]

P = ParamSpec("P")
R = TypeVar("R")


def single_threaded_blas(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``func`` with BLAS limited to one thread (restored afterwards)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper
