"""Start, stop, follow and finish one background run at a time; keep the last result.

Shared by the Register and Atlas panels (and usable from a script): the panels only
turn settings into a target callable and the controller's signals into widgets. No Qt:
the owner calls :meth:`RunController.poll` from its own thread (the GUI's timer), and
every signal is emitted from that thread, never from the worker.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psygnal import Signal

from .background import BackgroundRun

__all__ = ["RunController", "RunEnd", "RunStatus", "RunBusyError"]


class RunStatus(enum.Enum):
    """How a run ended."""

    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"


class RunBusyError(RuntimeError):
    """A run was started while another one is running."""


@dataclass
class RunEnd:
    """A finished run: its status, result (DONE) or error (FAILED), and wall time (s)."""

    run: BackgroundRun
    status: RunStatus
    result: Any = None
    error: BaseException | None = None
    seconds: float = 0.0
    context: Any = None  # whatever the starter attached (inputs, settings)


class RunController:
    """One run at a time on a background thread (or in a worker process: ``runner``).

    Signals (emitted from the thread that calls :meth:`poll`):
    ``started(BackgroundRun)``; ``progress(list)`` with every event since the last poll,
    oldest first (the cost curve needs all of them, a live view only the newest);
    ``finished(RunEnd)`` once, after the last progress batch.

    ``last`` is the most recent *successful* :class:`RunEnd` (a stopped or failed run
    never replaces it): what a live view, QC and export should show after any end.
    """

    started = Signal(object)
    progress = Signal(list)
    finished = Signal(object)

    def __init__(self, name: str = "napari-reg-run",
                 runner: Callable[[Callable[..., Any], str], Any] = BackgroundRun):
        self._name = name
        # BackgroundRun (a thread) or ProcessRun (a worker process: the target must pickle)
        self._runner = runner
        self.run: BackgroundRun | None = None
        self.context: Any = None
        self.last: RunEnd | None = None
        self._abandoned = False

    @property
    def running(self) -> bool:
        """True from :meth:`start` until ``finished`` has been emitted."""
        return self.run is not None

    def start(self, target: Callable[..., Any], context: Any = None) -> BackgroundRun:
        """Run ``target(callback=..., cancel=...)`` with the runner; RunBusyError if one
        is running. ``context`` comes back in the :class:`RunEnd`."""
        if self.run is not None:
            raise RunBusyError("a run is already in progress: wait for it or stop it")
        self.run, self.context, self._abandoned = self._runner(target, self._name), context, False
        self.run.start()
        self.started.emit(self.run)
        return self.run

    def stop(self) -> None:
        """Ask the run to stop at its next iteration (``finished`` follows with STOPPED)."""
        if self.run is not None:
            self.run.cancel()

    def abandon(self) -> None:
        """Stop the run and report it as STOPPED at once, without waiting for the worker.

        For owners that are going away (a closed panel): the thread ends at its next
        cancellation check in the background, and its result is never kept.
        """
        if self.run is None:
            return
        self.run.cancel()
        self._abandoned = True
        self._end()

    def poll(self) -> bool:
        """Hand over new events; end the run if its thread has ended. True while running."""
        run = self.run
        if run is None:
            return False
        ended = not run.running  # read before draining so no late event is lost
        events = run.drain()
        if events:
            self.progress.emit(events)
        if ended:
            self._end()
        return not ended

    def wait(self, timeout: float = 60.0, interval: float = 0.02) -> RunEnd | None:
        """Poll until the run ends (scripts and tests without an event loop)."""
        end_by = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > end_by:
                raise TimeoutError("the run did not end in time")
            time.sleep(interval)
        return self.last

    def _end(self) -> None:
        run, context = self.run, self.context
        if run is None:
            return
        self.run = self.context = None
        if run.cancelled or self._abandoned or run.token.cancelled:
            end = RunEnd(run, RunStatus.STOPPED, seconds=run.seconds, context=context)
        elif run.error is not None:
            end = RunEnd(run, RunStatus.FAILED, error=run.error, seconds=run.seconds,
                         context=context)
        else:
            end = RunEnd(run, RunStatus.DONE, result=run.result, seconds=run.seconds,
                         context=context)
            self.last = end
        self.finished.emit(end)
