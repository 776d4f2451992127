"""What a stage is: one step of a registration, in the spirit of ITK v4's registration
method (each stage optimises one transform over its own pyramid, starting from where the
previous stage ended).

A stage takes the fixed and moving volumes (float32, checked), the transform so far
(fixed->moving, world RAS mm) and the run's :class:`~.context.RunContext`, and returns a
:class:`~.result.StageResult` whose ``transform`` is the whole map after it. It reports
progress only through ``ctx.report`` (level start, every iteration, level end), checks
``ctx.cancel`` at least once per cost evaluation, and draws random numbers only from
``ctx.rng`` (or a generator seeded from ``ctx.seed``) so runs replay exactly.

To add a stage: subclass :class:`Stage`, set ``name``, implement :meth:`Stage.run`, and
give ``register()`` a way to build it (``core/engine/register.py``, ``_build_stages``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..image import Volume
from ..transforms.base import Transform
from .context import RunContext
from .result import StageResult

__all__ = ["Stage"]


class Stage(ABC):
    """One registration stage (see the module docstring)."""

    name: str = ""  # e.g. "rigid", "affine", "bspline", "syn": events and records carry it

    def prepare(self, fixed: Volume, moving: Volume, ctx: RunContext) -> None:
        """Build what the stage needs before any stage optimises (e.g. the pyramids),
        so the run's timings separate set-up from optimisation. Optional."""
        return None

    @abstractmethod
    def run(self, fixed: Volume, moving: Volume, transform: Transform,
            ctx: RunContext) -> StageResult:
        """Optimise from ``transform`` (the whole fixed->moving map so far) and return the
        stage's result, ``result.transform`` being the whole map after this stage."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
