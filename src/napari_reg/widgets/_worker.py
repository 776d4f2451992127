"""The Qt side of a background run: poll a :class:`~napari_reg.runs.RunController` from
the GUI thread, and let other threads ask for a call on the GUI thread.

* :class:`RunTicker` (a QObject living on the GUI thread) polls the controller with a
  ``QTimer`` at ~25 Hz while a run is on: that is the throttle. Every poll hands *all*
  events since the last one to the controller's ``progress`` signal at once, and the
  ticker's own ``tick`` signal serves consumers with pending work of their own (the
  live overlay).
* :class:`GuiCall` runs a function on the GUI thread when any thread requests it (the
  live view's frame threads: "a frame is ready").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Qt, QTimer, Signal, Slot

from ..runs import RunController

__all__ = ["RunTicker", "GuiCall", "POLL_INTERVAL_MS"]

POLL_INTERVAL_MS = 40  # 25 GUI updates per second at most


class RunTicker(QObject):
    """Polls ``controller`` from the GUI thread while it runs.

    Signal ``tick()`` after every poll (including the one that ends the run).
    """

    tick = Signal()

    def __init__(self, controller: RunController, interval_ms: int = POLL_INTERVAL_MS,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.controller = controller
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll_now)
        controller.started.connect(self._on_started)
        controller.finished.connect(self._on_finished)

    def _on_started(self, _run: Any) -> None:
        self._timer.start()

    def _on_finished(self, _end: Any) -> None:
        self._timer.stop()

    def stop(self) -> None:
        """Stop polling (the owner is going away)."""
        try:
            self._timer.stop()
        except RuntimeError:  # Qt already deleted the timer (application teardown)
            pass
        self.controller.started.disconnect(self._on_started)
        self.controller.finished.disconnect(self._on_finished)

    def poll_now(self) -> None:
        """Poll the run and signal ``tick`` now (the timer does it every interval)."""
        self.controller.poll()
        self.tick.emit()


class GuiCall(QObject):
    """Run ``function()`` on the GUI thread whenever :meth:`request` is called, from any
    thread (a queued Qt signal to a QObject created on the GUI thread).

    The live view's frame threads use it to have a finished frame shown at once rather
    than at the ticker's next poll.
    """

    _requested = Signal()

    def __init__(self, function: Callable[[], Any], parent: QObject | None = None):
        super().__init__(parent)
        self._function = function
        self._requested.connect(self._call, Qt.QueuedConnection)

    def request(self) -> None:
        """Thread-safe: queue one call of ``function`` on the GUI thread."""
        try:
            self._requested.emit()
        except RuntimeError:  # the Qt object is gone (panel closed): nothing to update
            pass

    @Slot()
    def _call(self) -> None:
        self._function()
