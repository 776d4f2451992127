"""Progress events: what the engine reports while it runs, and the one reporter.

The GUI (live overlay, cost curve) and the command line (progress bar) consume
:class:`ProgressEvent` s and nothing else from a running registration. Events are
immutable and carry a fresh transform, so they can be handed to another thread (safer
than handing out the optimiser). Kinds are an :class:`EventKind` (a ``str`` enum, like
DIPY's ``RegistrationStages``), so ``event.kind == "iteration"`` keeps working.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ..transforms.base import MatrixTransform, Transform

if TYPE_CHECKING:
    from .result import LevelRecord

__all__ = ["EventKind", "ProgressEvent", "Reporter", "Callback"]


class EventKind(StrEnum):
    """What an event marks, in the order a run sends them."""

    INITIALISED = "initialised"  # once, the start transform before any level (cost NaN)
    LEVEL_START = "level_start"  # a stage begins a pyramid level (cost NaN)
    ITERATION = "iteration"  # one optimiser iteration (counted in total_iterations)
    LEVEL_END = "level_end"  # a level ended (cost: its final cost)
    DONE = "done"  # once, the final transform of the whole run


@dataclass(frozen=True)
class ProgressEvent:
    """One optimiser iteration, or a stage/level boundary when ``kind`` says so.

    ``transform`` is the *current whole* fixed->moving map (world RAS mm), initial
    transform and earlier stages included, so a consumer can resample the moving
    image onto the fixed grid with it directly. It is a fresh object: safe to keep and
    to hand to another thread. Deformable stages may wrap it in a
    :class:`~napari_reg.core.preview.PreviewedTransform` that also carries a cheap
    approximation for live displays.
    """

    kind: EventKind
    stage: int  # 0-based stage index
    stage_name: str  # e.g. "rigid", "affine", "bspline", "syn"
    level: int  # 0-based pyramid level of the stage, 0 = coarsest
    n_levels: int  # levels of this stage
    iteration: int  # iteration within the level (0-based)
    max_iterations: int
    cost: float  # metric value (minimised), NaN before the first evaluation
    transform: Transform
    elapsed: float  # seconds since register() started
    total_iterations: int = 0  # iterations so far over all stages and levels


Callback = Callable[[ProgressEvent], None]


class Reporter:
    """The one event builder of a run: counts iterations over all stages and sends
    :class:`ProgressEvent` s to the caller's callback (cheap when there is none)."""

    def __init__(self, callback: Callback | None, t_start: float | None = None) -> None:
        self.callback = callback
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.total_iterations = 0
        # where the run is: the stage level of the last event sent (``(record, n_levels)``),
        # so that the final event names the last stage's own level count
        self.position: tuple[LevelRecord, int] | None = None

    def emit(self, kind: EventKind, record: LevelRecord, n_levels: int, iteration: int,
             max_iterations: int, cost: float,
             transform: Transform | Callable[[], Transform]) -> None:
        """Send one event for the level ``record`` (stage index, stage name, level).

        ``transform``: the current whole map, or a function making a fresh copy of it
        (called only when someone listens). A linear transform is copied here: the
        model keeps moving after the event is handed over.
        """
        if kind == EventKind.ITERATION:
            self.total_iterations += 1
        if kind != EventKind.DONE:
            self.position = (record, n_levels)
        if self.callback is None:
            return
        snapshot = transform() if callable(transform) and not isinstance(
            transform, Transform) else transform
        if snapshot.is_linear:
            snapshot = MatrixTransform(snapshot.matrix)  # type: ignore[attr-defined]
        self.callback(ProgressEvent(
            kind=kind, stage=record.stage, stage_name=record.stage_name, level=record.level,
            n_levels=n_levels, iteration=iteration, max_iterations=max_iterations,
            cost=float(cost), transform=snapshot,
            elapsed=time.perf_counter() - self.t_start,
            total_iterations=self.total_iterations))
