"""Picklable stand-ins for ``register_and_warp`` that run in the worker process
(napari_reg.runs.process): same contract, ``callback=`` and ``cancel=``. Kept light
(numpy and the core's events only) because the worker imports this module."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from napari_reg.core.engine.events import ProgressEvent
from napari_reg.core.optimize import Cancelled
from napari_reg.core.transforms.base import MatrixTransform


def event(i: int, kind: str = "iteration") -> ProgressEvent:
    m = np.eye(4)
    m[0, 3] = i
    return ProgressEvent(kind=kind, stage=0, stage_name="affine", level=0, n_levels=1,
                         iteration=i, max_iterations=10**6, cost=-float(i),
                         transform=MatrixTransform(m), elapsed=0.0, total_iterations=i + 1)


def counting(n: int, delay: float = 0.0, *, callback: Any, cancel: Any) -> dict:
    """``n`` iteration events, then a result naming the process it ran in."""
    for i in range(n):
        if delay:
            time.sleep(delay)
        callback(event(i))
    return {"pid": os.getpid(), "data": np.arange(1000.0)}


def failing(message: str, *, callback: Any, cancel: Any) -> None:
    callback(event(0))
    raise KeyError(message)


def until_cancelled(*, callback: Any, cancel: Any) -> None:
    """Polls the token only (sends no events after the first)."""
    callback(event(0))
    while not cancel.cancelled:
        time.sleep(0.01)
    raise Cancelled("stopped")


def deaf(*, callback: Any, cancel: Any) -> None:
    """Never looks at the token again: a core loop that forgot to check."""
    callback(event(0))
    time.sleep(600)


def dying(*, callback: Any, cancel: Any) -> None:
    """The worker process dies in the middle of the run (as if killed)."""
    callback(event(0))
    os._exit(3)


class Handler:
    """A service handler (napari_reg.runs.service): ``("echo", x)`` -> ``(pid, x)``,
    ``("sleep", s)`` waits ``s`` s first, ``("fail", msg)`` raises KeyError, ``("die",)``
    ends the process, ``("nice",)`` -> its CPU priority."""

    def __init__(self, tag: str = ""):
        self.tag = tag

    def __call__(self, request: tuple) -> Any:
        kind = request[0]
        if kind == "sleep":
            time.sleep(request[1])
            return (self.tag, "slept")
        if kind == "fail":
            raise KeyError(request[1])
        if kind == "die":
            os._exit(3)
        if kind == "nice":
            return os.getpriority(os.PRIO_PROCESS, 0)
        return (self.tag, os.getpid(), request[1])
