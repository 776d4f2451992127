"""The Register panel's progress display: cost curve, progress bars and status line.

Two bars: the current stage level's iterations, and the whole run with an estimate of
the time left. The whole-run fraction weighs each stage and each of its levels by what
it costs (``STAGE_WEIGHTS``, ``LEVEL_GROWTH``: measured on the 1 mm brain); the time
left extrapolates the elapsed time from that fraction. The whole-run bar never goes
back (a B-spline level may take a second pass the events could not announce).

Events arrive in batches from the run's ticker; they are shown with the next live
frame or at most ``interval_s`` apart, because every repaint of the window costs a
full composition of the viewer (software OpenGL under Xvfb: ~15 ms idle, more under
load). With a frame they are shown at once, before the event loop paints it, so the
frame and the panel's changes cost one window repaint (the live layer's redraw no longer
makes the layer list post a second one: ``overlay._redraw_pixels``). The
status line changes at most every ``STATUS_INTERVAL_S``: a new text re-lays out the
panel, which costs a second paint.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..core.engine.events import EventKind

__all__ = ["RunProgressView", "run_fraction", "STAGE_WEIGHTS", "LEVEL_GROWTH"]

# A stage's cost relative to a linear stage's (measured 2026-12-03: on the 1 mm brain
# affine 1.8 s with its pyramids, B-spline 13 s, SyN 74 s; on the demo pair affine 0.6 s,
# B-spline 9.4 s).
STAGE_WEIGHTS = {"bspline": 10.0, "syn": 30.0}
# Each finer level costs this many times the one before: SyN works on every voxel
# (1 mm brain: 0.1, 1.2, 10, 49 s per level); the B-spline on samples that grow with its
# control points from a floor (1 mm brain: 0.9, 1.2, 4.5 s per pass; demo pair: 0.24,
# 0.69, 2.7 s); linear stages on a fixed number of samples.
LEVEL_GROWTH = {"bspline": 3.0, "syn": 6.0}
STATUS_INTERVAL_S = 0.5
# after a live frame, the panel waits for the next frame this long before it updates on
# its own timer (frames come ~10 a second while the live view keeps up)
FRAME_WAIT_S = 0.3


def run_fraction(event: Any, stages: list[str]) -> float:
    """How much of the run is done at ``event`` (0..1), from its stage, level and
    iteration; ``stages`` are the run's stage names in order."""
    if event.kind == EventKind.DONE:
        return 1.0
    weights = [STAGE_WEIGHTS.get(s, 1.0) for s in stages] or [1.0]
    k = min(max(int(event.stage), 0), len(weights) - 1)
    within = 0.0
    if event.kind != EventKind.INITIALISED:
        level_part = 0.0 if event.kind == EventKind.LEVEL_START else min(
            1.0, (event.iteration + 1) / max(event.max_iterations, 1))
        if event.kind == EventKind.LEVEL_END:
            level_part = 1.0
        growth = LEVEL_GROWTH.get(event.stage_name, 1.0)
        levels = growth ** np.arange(max(int(event.n_levels), 1))
        level = min(max(int(event.level), 0), len(levels) - 1)
        within = (levels[:level].sum() + levels[level] * level_part) / levels.sum()
    return float((sum(weights[:k]) + weights[k] * min(within, 1.0)) / sum(weights))


class RunProgressView:
    """Buffers progress events and shows them in ``plot``, ``bar`` and ``status``.

    ``plot`` is a :class:`~.cost_plot.CostPlot` (or a callable returning one, when the
    cost panel may be re-created), ``bar`` a magicgui ProgressBar, ``status`` a Label.
    """

    def __init__(self, plot: Any, bar: Any, status: Any, interval_s: float = 0.1,
                 overall: Any = None):
        self._plot = plot
        self.bar = bar
        self.overall = overall  # whole-run ProgressBar (0..1000), or None
        self.status = status
        self.stages: list[str] = []
        self.metrics: dict[str, str] = {}
        self.interval_s = interval_s
        self.unshown: list = []  # progress events not yet shown in the panel
        self._updated = 0.0
        self._status_at = -np.inf  # when the status line last changed
        self._frame_at = -np.inf  # when the last live frame was shown
        self._fraction = 0.0  # of the whole run shown so far

    @property
    def plot(self) -> Any:
        return self._plot() if callable(self._plot) else self._plot

    def start(self, label: str, metrics: dict[str, str] | None = None) -> None:
        """A run starts; ``metrics`` maps its stage names (in order) to their metrics."""
        self.metrics = dict(metrics or {})
        self.stages = list(self.metrics)
        self.plot.start_run(label, metrics)
        self.unshown = []
        self._status_at = self._frame_at = -np.inf
        self._fraction = 0.0
        self.set_bar(0, 1)
        self._set_overall(0.0, "")
        self.status.value = "Starting..."

    def add(self, events: list) -> None:
        self.unshown.extend(events)

    def maybe_show(self, frame_shown: bool) -> None:
        """Show the buffered events with a new frame (one repaint for both), or when
        ``interval_s`` has passed without frames."""
        now = time.perf_counter()
        if frame_shown:
            self._frame_at = now
            self.show()
        elif self.unshown and now - self._updated >= self.interval_s \
                and now - self._frame_at >= FRAME_WAIT_S:
            self.show()

    def show(self) -> None:
        if not self.unshown:
            return
        events, self.unshown = self.unshown, []
        self._updated = time.perf_counter()
        self.plot.add_events(events)
        last = events[-1]
        # The bar counts the iterations of the current stage's level (its maximum is
        # known from the event); the status line says which stage and level that is.
        fraction = self._fraction = max(self._fraction, run_fraction(last, self.stages))
        left = (last.elapsed * (1.0 - fraction) / fraction
                if fraction > 0.02 and last.elapsed > 0.5 else None)
        self._set_overall(fraction, f"~{left:.0f} s left" if left is not None else "")
        where = f"{last.stage_name}, level {last.level + 1}/{last.n_levels}"
        if last.kind == EventKind.DONE:  # the last stage's last level: the final warp runs
            self.set_bar(1, 1)
            self.status.value = f"Optimised ({where}); warping at full resolution..."
            return
        self.set_bar(int(last.iteration) + 1, int(last.max_iterations))
        if self._updated - self._status_at < STATUS_INTERVAL_S and \
                last.kind != EventKind.LEVEL_START:
            return
        self._status_at = self._updated
        # a level's start names the stage's metric too: a short stage may end before
        # the status line may change again
        metric = self.metrics.get(last.stage_name, "cost")
        self.status.value = (f"{where}, iteration {last.iteration}: {metric} {last.cost:.5g}"
                             if np.isfinite(last.cost) else
                             "Initialised; preparing the image pyramids..."
                             if last.kind == EventKind.INITIALISED else
                             f"{where}: starting ({metric})")

    def finish(self, text: str, complete: bool) -> None:
        self.show()
        if complete:
            self.bar.value = self.bar.max
            self._set_overall(1.0, "done")
        else:
            self._set_overall(None, "")
        self.status.value = text

    def _set_overall(self, fraction: float | None, text: str) -> None:
        if self.overall is None:
            return
        native = self.overall.native
        native.setUpdatesEnabled(False)
        try:
            if fraction is not None:
                self.overall.value = int(round(1000 * min(max(fraction, 0.0), 1.0)))
            native.setFormat(f"%p%  {text}" if text else "%p%")
        finally:
            native.setUpdatesEnabled(True)

    def set_bar(self, value: int, maximum: int) -> None:
        # QProgressBar.setValue repaints at once, i.e. one more composition of the whole
        # window; with updates off it joins the next coalesced repaint instead.
        native = self.bar.native
        native.setUpdatesEnabled(False)
        try:
            self.bar.max = max(maximum, 1)
            self.bar.value = min(value, self.bar.max)
        finally:
            native.setUpdatesEnabled(True)
