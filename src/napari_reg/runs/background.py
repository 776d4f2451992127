"""One long computation on a background thread, its progress handed over in batches.

No Qt here: the worker thread only appends progress events to a ``collections.deque``
(thread-safe append/popleft) and checks the cancel token; whoever owns the run drains
the deque from its own thread (the GUI's timer, a script's loop).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from ..core.optimize import Cancelled, CancelToken

__all__ = ["BackgroundRun", "RunState"]


class RunState:
    """What every run reports, wherever its target runs: a cancel ``token``, progress
    events handed over in batches (:meth:`drain`), the start and end times, and once it
    has ended exactly one of ``result``, ``error`` (with ``error_traceback``) or
    ``cancelled``. :meth:`_run_here` runs a target on the calling thread and records
    that; ``_thread`` is the thread whose end is the run's end."""

    def __init__(self) -> None:
        self.token = CancelToken()
        self._events: deque[Any] = deque()
        self.result: Any = None
        self.error: BaseException | None = None
        self.error_traceback = ""
        self.cancelled = False
        self.started_at = 0.0
        self.ended_at = 0.0
        self.n_events = 0  # events reported so far
        self._thread: threading.Thread | None = None  # the thread the run's end is on

    def drain(self) -> list[Any]:
        """All events reported since the last call, oldest first."""
        out = []
        while True:
            try:
                out.append(self._events.popleft())
            except IndexError:
                return out

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def seconds(self) -> float:
        """Wall time from start to end (so far, while running)."""
        end = self.ended_at if not self.running and self.ended_at else time.perf_counter()
        return end - self.started_at

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run's thread; True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # ------------------------------------------------------------------ run side
    def _callback(self, event: Any) -> None:
        if self.token.cancelled:
            raise Cancelled("run stopped by the user")
        self._events.append(event)
        self.n_events += 1

    def _run_here(self, target: Callable[..., Any]) -> None:
        """Call ``target(callback=..., cancel=...)`` on the calling thread; record how
        it ended."""
        try:
            self.result = target(callback=self._callback, cancel=self.token)
        except Cancelled:
            self.cancelled = True
        except BaseException as exc:  # noqa: BLE001 - reported to the user by the owner
            if self.token.cancelled:
                self.cancelled = True
            else:
                self.error = exc
                self.error_traceback = traceback.format_exc()
        finally:
            self.ended_at = time.perf_counter()


class BackgroundRun(RunState):
    """Call ``target(callback=..., cancel=...)`` on a daemon thread.

    Bind the images and settings with ``functools.partial``; ``target`` returns the
    result. State after the thread ends: exactly one of ``result`` (success), ``error``
    (an exception) or ``cancelled`` (True) is set.

    Stop: :meth:`cancel` sets the :class:`~napari_reg.core.optimize.CancelToken`; the
    callback also raises :class:`~napari_reg.core.optimize.Cancelled` at the next event,
    so the run ends within one iteration even if a core loop forgot to check the token.
    """

    def __init__(self, target: Callable[..., Any], name: str = "napari-reg-run"):
        super().__init__()
        self._target = target
        self._thread = threading.Thread(target=self._run_here, args=(target,), name=name,
                                        daemon=True)

    def start(self) -> None:
        self.started_at = time.perf_counter()
        self._thread.start()

    def cancel(self) -> None:
        """Ask the run to stop; it ends at the core's next iteration."""
        self.token.cancel()
