"""What the engine returns: per level, per stage, per run.

Both the GUI and the command line (run record, ``run.json``) read these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..transforms.base import Transform

__all__ = ["LevelRecord", "StageResult", "RegistrationResult"]


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


@dataclass(kw_only=True)
class StageResult:
    """What one stage returns.

    ``transform`` is the whole fixed->moving map (world RAS mm) after this stage, the
    transform it started from included: the next stage starts from it. ``parameters``
    records the stage's own settings (empty for the linear stages, whose settings are
    the run's), ``diagnostics`` what it measured, ``n_iterations`` the optimiser
    iterations it ran over all its levels.
    """

    transform: Transform
    levels: list[LevelRecord]
    final_cost: float = float("nan")
    n_iterations: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def cost_history(self) -> list[float]:
        """All costs in run order (levels concatenated)."""
        return [c for level in self.levels for c in level.costs]


@dataclass
class RegistrationResult:
    """The outcome of :func:`napari_reg.register`.

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
