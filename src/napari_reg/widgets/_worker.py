"""Run ``register()`` on a background thread and hand its progress to the GUI thread.

The bridge is deliberately small:

* :class:`RegistrationJob` (no Qt) runs a callable on a daemon thread. The core's
  progress callback only appends the event to a ``collections.deque`` (thread-safe
  append/popleft) and checks the cancel token, so the worker never touches a widget or
  a layer.
* :class:`JobPoller` (a QObject living on the GUI thread) drains that deque with a
  ``QTimer`` at ~25 Hz: that is the throttle. Every tick emits at most one ``progress``
  signal with *all* events since the last tick (the cost curve needs every point, the
  overlay only the newest), and one ``finished`` signal when the thread has ended.

Stop: ``cancel()`` sets the :class:`~napari_reg.core.optimize.CancelToken`; the callback
also raises :class:`~napari_reg.core.optimize.Cancelled` at the next event, so the run
ends within one iteration even if a core loop forgot to check the token.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Qt, QTimer, Signal, Slot

from ..core.engine.events import ProgressEvent
from ..core.engine.register import register
from ..core.engine.result import RegistrationResult
from ..core.image import Volume
from ..core.optimize import Cancelled, CancelToken
from .overlay import warp_volume

__all__ = ["RegistrationJob", "JobPoller", "GuiCall", "POLL_INTERVAL_MS", "register_and_warp"]

POLL_INTERVAL_MS = 40  # 25 GUI updates per second at most


class RegistrationJob:
    """One registration run on a background thread.

    ``target`` is called as ``target(callback=..., cancel=...)`` (bind the images and
    settings with ``functools.partial``) and returns the result. State after the thread
    ends: exactly one of ``result`` (success), ``error`` (an exception) or
    ``cancelled`` (True) is set.
    """

    def __init__(self, target: Callable[..., Any]):
        self._target = target
        self.token = CancelToken()
        self._events: deque[ProgressEvent] = deque()
        self._thread = threading.Thread(target=self._run, name="napari-reg-register",
                                        daemon=True)
        self.result: Any = None
        self.error: BaseException | None = None
        self.error_traceback = ""
        self.cancelled = False
        self.started_at = 0.0
        self.ended_at = 0.0
        self.n_events = 0

    # ------------------------------------------------------------------ worker side
    def _callback(self, event: ProgressEvent) -> None:
        if self.token.cancelled:
            raise Cancelled("registration stopped by the user")
        self._events.append(event)
        self.n_events += 1

    def _run(self) -> None:
        try:
            self.result = self._target(callback=self._callback, cancel=self.token)
        except Cancelled:
            self.cancelled = True
        except BaseException as exc:  # noqa: BLE001 - reported to the user by the GUI
            if self.token.cancelled:
                self.cancelled = True
            else:
                self.error = exc
                self.error_traceback = traceback.format_exc()
        finally:
            self.ended_at = time.perf_counter()

    # ------------------------------------------------------------------ GUI side
    def start(self) -> None:
        self.started_at = time.perf_counter()
        self._thread.start()

    def cancel(self) -> None:
        """Ask the run to stop; it ends at the core's next iteration."""
        self.token.cancel()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def drain(self) -> list[ProgressEvent]:
        """All events reported since the last call, oldest first."""
        out = []
        while True:
            try:
                out.append(self._events.popleft())
            except IndexError:
                return out


class JobPoller(QObject):
    """Polls a :class:`RegistrationJob` from the GUI thread at a fixed rate.

    Signals: ``progress(list[ProgressEvent])`` (non-empty batches, oldest first),
    ``tick()`` (every poll, for consumers with their own pending work such as the live
    overlay) and ``finished(RegistrationJob)`` (once, after the last progress batch).
    """

    progress = Signal(object)
    tick = Signal()
    finished = Signal(object)

    def __init__(self, job: RegistrationJob, interval_ms: int = POLL_INTERVAL_MS,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.job = job
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._done = False

    def start(self) -> None:
        self.job.start()
        self._timer.start()

    def stop(self) -> None:
        """Stop polling (the job itself is cancelled separately)."""
        self._timer.stop()

    def _tick(self) -> None:
        ended = not self.job.running  # read before draining so no late event is lost
        events = self.job.drain()
        if events:
            self.progress.emit(events)
        self.tick.emit()
        if ended and not self._done:
            self._done = True
            self._timer.stop()
            self.finished.emit(self.job)


class GuiCall(QObject):
    """Run ``function()`` on the GUI thread whenever :meth:`request` is called, from any
    thread (a queued Qt signal to a QObject created on the GUI thread).

    The live overlay's warp thread uses it to have a finished frame shown at once rather
    than at the poller's next tick.
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


def register_and_warp(fixed: Volume, moving: Volume, settings: dict[str, Any], *,
                       callback: Any, cancel: Any) -> tuple[RegistrationResult, Volume]:
    """Worker-thread body: ``register()`` then the full-resolution warp on the fixed grid.

    The warp of a 1 mm brain takes a few hundred ms; doing it here keeps the GUI
    thread free. Returns ``(result, warped)``; ``result.transform`` maps fixed world RAS
    mm -> moving world RAS mm.
    """
    result = register(fixed, moving, callback=callback, cancel=cancel, **settings)
    cancel.raise_if_cancelled()
    # A deformable result is sampled once as a dense field on the fixed grid (seconds),
    # which resamples in one pass, instead of evaluating the model at every voxel.
    transform = (result.deformable.displacement_field(fixed) if result.deformable is not None
                 else result.transform)
    cancel.raise_if_cancelled()
    return result, warp_volume(moving, fixed, transform, cancel=cancel)
