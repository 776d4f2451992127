"""The Register panel's choices and the parsing of its text fields (no Qt here)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ..core.engine.register import register
from ..core.stages.bspline import BSplineStage
from ..core.stages.syn import SyNStage

__all__ = ["METRIC_CHOICES", "INIT_CHOICES", "LIVE_LAYER_NAME", "REGISTER_DEFAULTS",
           "BSPLINE_DEFAULTS", "SYN_DEFAULTS", "int_list", "as_text", "stage_metrics"]

METRIC_CHOICES = [("MI (mutual information)", "mi"), ("NMI (normalised MI)", "nmi"),
                  ("NCC (correlation)", "ncc"), ("SSD (squared differences)", "ssd"),
                  ("SAD (absolute differences)", "sad")]
INIT_CHOICES = [("Centres of mass", "com"), ("Image centres", "geometry"),
                ("Moments (principal axes)", "moments"), ("Landmarks", "landmarks"),
                ("Current manual alignment", "manual"), ("None (identity)", "none")]
LIVE_LAYER_NAME = "warped (live)"


def _defaults(func: Any) -> dict[str, Any]:
    return {k: v.default for k, v in inspect.signature(func).parameters.items()}


# The panel starts from the core's own defaults, so a GUI run equals a scripted one.
REGISTER_DEFAULTS = _defaults(register)
BSPLINE_DEFAULTS = _defaults(BSplineStage)
SYN_DEFAULTS = _defaults(SyNStage)


def int_list(text: str, what: str) -> int | list[int]:
    """'200, 100, 50' -> [200, 100, 50]; '100' -> 100 (same for every level)."""
    try:
        values = [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what}: expected whole numbers separated by commas, got "
                         f"'{text}'") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what}: expected positive whole numbers, got '{text}'")
    return values[0] if len(values) == 1 else values


def as_text(value: Any) -> str:
    return ", ".join(str(v) for v in np.atleast_1d(value))


def stage_metrics(settings: dict[str, Any]) -> dict[str, str]:
    """The metric each stage of a run minimises, by stage name (``register()``'s rules:
    linear stages use ``metric``; the deformable stage ``deformable_metric``, or for SyN
    "lncc/mi" (it picks local NCC or MI after the affine stage, by the pair's contrasts)
    and ``metric`` for a B-spline)."""
    transform = str(settings.get("transform", "affine")).lower()
    stages = [s.lower() for s in settings.get("stages") or ()] or (
        ["affine", transform] if transform in ("bspline", "syn") else [transform])
    metric = str(settings.get("metric", "mi")).lower()
    out = {name: metric for name in stages}
    last = stages[-1]
    if last in ("bspline", "syn"):
        chosen = str(settings.get("deformable_metric") or "auto").lower()
        out[last] = (chosen if chosen != "auto" else "lncc/mi" if last == "syn" else metric)
    return out
