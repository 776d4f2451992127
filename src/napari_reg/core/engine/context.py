"""The run context every stage receives, and the one rule for per-level settings.

A :class:`RunContext` carries what all stages of one :func:`register` call share: the
one :class:`~.events.Reporter` (events and the iteration count over all stages), the
cancel token, the run's level schedule, the fixed-image mask and sampling choice, the
seeded random generator, and a cache so that stages sharing a pyramid or a mask build
it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..image import Volume
from ..optimize import CancelToken
from ..pyramid import default_schedule, gaussian_pyramid
from ..transforms.base import Transform
from .errors import RegistrationError
from .events import EventKind, Reporter
from .result import LevelRecord
from .sampling import foreground_mask, grown

__all__ = ["LevelSchedule", "level_schedule", "per_level", "RunContext", "SAMPLING"]

SAMPLING = ("foreground", "all")


@dataclass(frozen=True)
class LevelSchedule:
    """A Gaussian pyramid, coarse to fine: integer shrink factors per axis and smoothing
    sigmas (mm), one of each per level."""

    shrink_factors: list[list[int]]
    sigmas_mm: list[float]

    @property
    def n_levels(self) -> int:
        return len(self.shrink_factors)


def level_schedule(fixed: Volume, levels: int = 3,
                   shrink_factors: Sequence[Sequence[int] | int] | None = None,
                   sigmas_mm: Sequence[float] | None = None,
                   finest_sigma_mm: float = 0.0) -> LevelSchedule:
    """The schedule given, or the default of :func:`~napari_reg.core.pyramid.default_schedule`
    for ``levels`` levels whose finest sigma is raised to ``finest_sigma_mm``."""
    d = fixed.ndim
    if shrink_factors is None or sigmas_mm is None:
        try:
            auto_shrink, auto_sigmas = default_schedule(fixed, n_levels=levels)
        except ValueError as exc:
            raise RegistrationError(str(exc)) from None
        auto_sigmas = [*auto_sigmas[:-1], max(float(auto_sigmas[-1]), float(finest_sigma_mm))]
        shrink_factors = shrink_factors or auto_shrink
        sigmas_mm = sigmas_mm if sigmas_mm is not None else auto_sigmas
    shrink = [[int(f) for f in np.broadcast_to(s, (d,))] for s in shrink_factors]
    sigmas = [float(s) for s in sigmas_mm]
    if len(shrink) != len(sigmas) or not shrink:
        raise RegistrationError("shrink_factors and sigmas_mm need one entry per level")
    return LevelSchedule(shrink, sigmas)


def per_level(value: Sequence[int] | int, n_levels: int, what: str) -> list[int]:
    """One non-negative integer per level (coarse to fine), the one rule for every stage.

    A single number applies to every level. A list longer than the number of levels is
    used from its fine end; a shorter one repeats its first value on the extra (coarse)
    levels. An empty list or a negative value is an error.
    """
    values = ([int(value)] * n_levels if np.ndim(value) == 0  # type: ignore[arg-type]
              else [int(v) for v in value])  # type: ignore[union-attr]
    if not values:
        raise RegistrationError(f"{what} needs one value per level ({n_levels}), got none")
    if min(values) < 0:
        raise RegistrationError(f"{what} must be >= 0, got {value}")
    if len(values) > n_levels:  # fewer levels than the list: keep the finest
        return values[-n_levels:]
    return [values[0]] * (n_levels - len(values)) + values


@dataclass
class RunContext:
    """What every stage of one run shares (see the module docstring).

    ``fixed_mask``: the user's mask on the fixed grid (bool) or None; ``sampling``:
    where stages that sample draw points when there is no mask (``foreground`` or
    ``all``); ``moving_mask``: the user's moving-image mask (a Volume on its own grid) or
    None: sample points mapped outside it are left out (cost-function masking);
    ``rng``: the run's generator, seeded with ``seed``, shared by the linear
    stages in order. ``stage_index`` is set by the driver before each stage runs.
    """

    reporter: Reporter
    cancel: CancelToken
    schedule: LevelSchedule | None = None
    fixed_mask: np.ndarray | None = None
    sampling: str = "foreground"
    moving_mask: Volume | None = None
    seed: int = 0
    stage_index: int = 0
    rng: np.random.Generator = field(init=False)
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING:
            raise RegistrationError(f"unknown sampling '{self.sampling}'; choose foreground "
                                    "or all")
        self.rng = np.random.default_rng(self.seed)

    # ------------------------------------------------------------------ events
    def record(self, stage_name: str, level: int, schedule: LevelSchedule,
               n_samples: int) -> LevelRecord:
        """A fresh :class:`LevelRecord` for ``level`` of the running stage."""
        return LevelRecord(self.stage_index, stage_name, level, schedule.shrink_factors[level],
                           schedule.sigmas_mm[level], int(n_samples))

    def report(self, kind: EventKind, record: LevelRecord, n_levels: int, iteration: int,
               max_iterations: int, cost: float,
               transform: Transform | Callable[[], Transform]) -> None:
        """Send one progress event through the run's one reporter."""
        self.reporter.emit(kind, record, n_levels, iteration, max_iterations, cost, transform)

    # ------------------------------------------------------------------ shared data
    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per run for ``key``; later calls return the same object."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def pyramid(self, volume: Volume, shrink_factors: Sequence[Sequence[int]],
                sigmas_mm: Sequence[float]) -> list[Volume]:
        """The Gaussian pyramid of ``volume`` (built once per run for these settings)."""
        key = ("pyramid", id(volume), tuple(map(tuple, shrink_factors)), tuple(sigmas_mm))
        return self.cached(key, lambda: gaussian_pyramid(volume, shrink_factors, sigmas_mm))

    def release_pyramids(self) -> None:
        """Forget the pyramids built so far (a later request builds them again). A stage
        that uses none of the earlier stages' pyramids calls this first, so their memory
        goes before it allocates its own: after the linear stages on a 1 mm brain they
        hold ~200 MB (the moving image smoothed at full resolution for every level)."""
        for key in [k for k in self._cache if isinstance(k, tuple) and k[0] == "pyramid"]:
            del self._cache[key]

    def sampling_mask(self, fixed: Volume, margin_voxels: int = 0,
                      sampling: str | None = None) -> np.ndarray | None:
        """Where to draw fixed sample points: the user's mask; else, with ``sampling=
        "foreground"`` (default: the run's choice), the fixed image's foreground grown by
        ``margin_voxels``; else None (the whole box)."""
        if self.fixed_mask is not None:
            return self.fixed_mask
        if (sampling or self.sampling) != "foreground":
            return None
        return self.cached(("foreground", id(fixed), margin_voxels),
                           lambda: grown(foreground_mask(fixed.data), margin_voxels))

    def region(self, fixed: Volume) -> tuple[np.ndarray, float]:
        """Centre (world mm) and radius (mm) of the sampled region of the fixed image:
        the linear models turn about this centre and scale their parameters by it."""
        return self.cached(("region", id(fixed)),
                           lambda: _region(fixed, self.sampling_mask(fixed)))


def _region(fixed: Volume, mask: np.ndarray | None) -> tuple[np.ndarray, float]:
    if mask is None:
        center = fixed.center_world()
        corners = fixed.corners_world()
    else:
        ijk = np.argwhere(mask)
        center = fixed.voxel_to_world(ijk.mean(axis=0))
        corners = fixed.voxel_to_world(np.array([ijk.min(axis=0), ijk.max(axis=0)],
                                                dtype=float))
    # Root-mean-square distance of a box's points from its centre ~ half-diagonal/sqrt(3).
    half_extent = np.abs(corners - center).max(axis=0)
    return center, float(max(np.linalg.norm(half_extent) / np.sqrt(3.0), 1.0))
