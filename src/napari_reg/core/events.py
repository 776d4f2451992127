"""What the registration driver reports while it runs and what it returns.

Both the GUI (live overlay, cost curve) and the command line (progress bar, run record)
consume these; neither needs anything else from the driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .transforms.base import MatrixTransform, Transform

__all__ = ["ProgressEvent", "LevelRecord", "RegistrationResult", "RegistrationError",
           "Reporter"]


class RegistrationError(ValueError):
    """A registration that cannot run or cannot go on, with the reason in words."""


@dataclass(frozen=True)
class ProgressEvent:
    """One optimiser iteration (or a stage/level boundary when ``kind`` says so).

    ``transform`` is the *current whole* fixed->moving map (world RAS mm), initial
    transform and earlier stages included, so a consumer can resample the moving
    image onto the fixed grid with it directly. It is a fresh object: safe to keep and
    to hand to another thread. Deformable stages may wrap it in a
    :class:`~napari_reg.core.preview.PreviewedTransform` that also carries a cheap
    approximation for live displays.
    """

    # "initialised" (once, the initial alignment before the pyramids are built; cost NaN,
    # not an iteration) | "iteration" | "level_start" | "level_end" | "done"
    kind: str
    stage: int  # 0-based stage index
    stage_name: str  # e.g. "rigid", "affine", "bspline", "syn"
    level: int  # 0-based pyramid level, 0 = coarsest
    n_levels: int
    iteration: int  # iteration within the level (0-based)
    max_iterations: int
    cost: float  # metric value (minimised), NaN before the first evaluation
    transform: Transform
    elapsed: float  # seconds since register() started
    total_iterations: int = 0  # iterations so far over all stages and levels


@dataclass
class LevelRecord:
    """The cost history of one pyramid level of one stage."""

    stage: int
    stage_name: str
    level: int
    shrink: list[int]
    sigma_mm: float
    n_samples: int
    costs: list[float] = field(default_factory=list)
    stop_reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "stage_name": self.stage_name,
            "level": self.level,
            "shrink": list(self.shrink),
            "sigma_mm": self.sigma_mm,
            "n_samples": self.n_samples,
            "costs": [float(c) for c in self.costs],
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
        }


@dataclass
class RegistrationResult:
    """The outcome of :func:`napari_reg.core.register.register`.

    ``transform`` maps fixed world RAS mm -> moving world RAS mm (initialisation
    included; for deformable runs it composes the linear part, ``linear_matrix``,
    with the deformation): ``warped(x) = moving(transform(x))`` on the fixed grid.
    ``parameters`` is a JSON-serialisable record of every setting used; passing it back
    as ``register(fixed, moving, **parameters)`` replays the same run.
    """

    transform: Transform
    initial_transform: Transform
    levels: list[LevelRecord]
    parameters: dict[str, Any]
    timings: dict[str, float]
    linear_matrix: np.ndarray | None = None
    final_cost: float = float("nan")
    diagnostics: dict[str, Any] = field(default_factory=dict)
    deformable: Any = None  # the deformable stage's DeformableResult, when there is one

    @property
    def matrix(self) -> np.ndarray:
        """The homogeneous fixed->moving matrix (RAS mm) of the linear part of the result.

        For a purely linear result this is the whole transform.
        """
        if self.linear_matrix is not None:
            return np.asarray(self.linear_matrix)
        return np.asarray(self.transform.matrix)  # type: ignore[attr-defined]

    def cost_history(self) -> list[float]:
        """All costs in run order (levels concatenated)."""
        return [c for level in self.levels for c in level.costs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "timings": self.timings,
            "final_cost": self.final_cost,
            "levels": [lv.to_dict() for lv in self.levels],
            "diagnostics": self.diagnostics,
        }


class Reporter:
    """Turns driver state into ProgressEvents for the caller's callback."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None, t_start: float,
                 n_levels: int) -> None:
        self.callback = callback
        self.t_start = t_start
        self.n_levels = n_levels
        self.total_iterations = 0

    def emit(self, kind: str, record: LevelRecord, iteration: int, max_iterations: int,
             cost: float, transform) -> None:
        if self.callback is None:
            return
        # A snapshot: the model keeps moving after the event is handed over. (Deformable
        # stages hand over fresh copies already.)
        snapshot = MatrixTransform(transform.matrix) if transform.is_linear else transform
        self.callback(ProgressEvent(
            kind=kind, stage=record.stage, stage_name=record.stage_name, level=record.level,
            n_levels=self.n_levels, iteration=iteration, max_iterations=max_iterations,
            cost=float(cost), transform=snapshot,
            elapsed=time.perf_counter() - self.t_start,
            total_iterations=self.total_iterations))
