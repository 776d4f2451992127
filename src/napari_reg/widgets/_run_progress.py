"""The Register panel's progress display: cost curve, progress bar and status line.

Events arrive in batches from the run's ticker; they are shown with the next live
frame or at most ``interval_s`` apart, because every repaint of the window costs a
full composition of the viewer (software OpenGL under Xvfb: ~15 ms idle, more under
load).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["RunProgressView"]


class RunProgressView:
    """Buffers progress events and shows them in ``plot``, ``bar`` and ``status``.

    ``plot`` is a :class:`~.cost_plot.CostPlot` (or a callable returning one, when the
    cost panel may be re-created), ``bar`` a magicgui ProgressBar, ``status`` a Label.
    """

    def __init__(self, plot: Any, bar: Any, status: Any, interval_s: float = 0.1):
        self._plot = plot
        self.bar = bar
        self.status = status
        self.interval_s = interval_s
        self.unshown: list = []  # progress events not yet shown in the panel
        self._updated = 0.0

    @property
    def plot(self) -> Any:
        return self._plot() if callable(self._plot) else self._plot

    def start(self, label: str) -> None:
        self.plot.start_run(label)
        self.unshown = []
        self.set_bar(0, 1)
        self.status.value = "Starting..."

    def add(self, events: list) -> None:
        self.unshown.extend(events)

    def maybe_show(self, frame_shown: bool) -> None:
        """Show the buffered events with a new frame, or when ``interval_s`` has passed."""
        if self.unshown and (frame_shown or time.perf_counter() - self._updated
                             >= self.interval_s):
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
        self.set_bar(int(last.iteration) + 1, int(last.max_iterations))
        where = f"{last.stage_name}, level {last.level + 1}/{last.n_levels}"
        self.status.value = (f"{where}, iteration {last.iteration}: cost {last.cost:.5g}"
                             if np.isfinite(last.cost) else
                             "Initialised; preparing the image pyramids..."
                             if last.kind == "initialised" else f"{where}: starting")

    def finish(self, text: str, complete: bool) -> None:
        self.show()
        if complete:
            self.bar.value = self.bar.max
        self.status.value = text

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
