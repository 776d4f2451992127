"""Worker-thread bodies the GUI runs through :class:`~.controller.RunController`."""

from __future__ import annotations

from typing import Any

from ..core.engine.register import register
from ..core.engine.result import RegistrationResult
from ..core.image import Volume
from ..core.warp_result import warp_result

__all__ = ["register_and_warp"]


def register_and_warp(fixed: Volume, moving: Volume, settings: dict[str, Any], *,
                      callback: Any, cancel: Any) -> tuple[RegistrationResult, Volume]:
    """``register()`` then the full-resolution warp on the fixed grid (worker thread).

    The warp of a 1 mm brain takes a few hundred ms; doing it here keeps the GUI
    thread free. Returns ``(result, warped)``; ``result.transform`` maps fixed world RAS
    mm -> moving world RAS mm.
    """
    result = register(fixed, moving, callback=callback, cancel=cancel, **settings)
    warped, _ = warp_result(moving, fixed, result, cancel=cancel,
                            name=f"{moving.name} warped")
    return result, warped
