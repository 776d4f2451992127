"""One long computation in a worker process, with the interface of a thread run.

:class:`ProcessRun` does what :class:`~.background.BackgroundRun` does (progress events
in batches, cancel, exactly one of result / error / cancelled at the end), but the
target runs in a separate Python process (:mod:`.worker_main`): the registration then
never waits for the GUI thread's GIL while napari repaints (see that module). Inputs and
the target go over a local socket pickled; events come back thinned for display; the
result comes back whole.

Workers are kept warm in a small pool (:func:`warm_up`, one idle worker kept), so a run
starts without paying Python's and numpy's start-up. Faults lose nothing: a worker that
dies mid-run (killed, out of memory) ends the run FAILED with a message and is replaced;
a worker that does not stop within ``KILL_AFTER_S`` of a cancel is killed; when no
worker can be started at all the run falls back to a thread in this process.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .background import RunState

__all__ = ["ProcessRun", "WorkerPool", "warm_up", "WorkerLost", "KILL_AFTER_S"]

_log = logging.getLogger(__name__)
KEY_ENV = "NAPARI_REG_WORKER_KEY"  # the one-time key the worker proves itself with
KILL_AFTER_S = 5.0  # a cancelled job that has not ended by then: kill its worker
_START_TIMEOUT_S = 60.0  # a worker that has not connected and imported by then failed


class WorkerLost(RuntimeError):
    """The worker process ended in the middle of a run (killed, crashed, out of memory)."""


class _Worker:
    """One worker process and its connection (parent side)."""

    def __init__(self) -> None:
        key = secrets.token_bytes(32)
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            server.settimeout(0.2)
            env = dict(os.environ)
            env[KEY_ENV] = key.hex()
            # the worker imports what this process can (tests, a script's own modules)
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "napari_reg.runs.worker_main",
                 str(server.getsockname()[1])],
                env=env, stdin=subprocess.DEVNULL,
                start_new_session=sys.platform != "win32")  # Ctrl-C goes to the parent
            try:
                sock = self._accept(server)
                sock.settimeout(None)
                self.conn = Connection(sock.detach())
                if not self.conn.poll(_START_TIMEOUT_S) or \
                        not secrets.compare_digest(self.conn.recv_bytes(64), key):
                    raise OSError("the worker process did not identify itself")
                if not self.conn.poll(_START_TIMEOUT_S) or self.conn.recv() != ("ready",):
                    raise OSError("the worker process did not start")
            except BaseException:
                self.process.kill()
                raise
        finally:
            server.close()
        self.send_lock = threading.Lock()

    def _accept(self, server: socket.socket) -> socket.socket:
        """The worker's connection; OSError at once if the worker exits first (a
        ``sys.executable`` that is not Python, a broken install), or after a minute."""
        end_by = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < end_by:
            try:
                return server.accept()[0]
            except TimeoutError:
                code = self.process.poll()
                if code is not None:
                    raise OSError(f"the worker process exited at start (code {code})") \
                        from None
        raise OSError("the worker process did not connect")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: tuple) -> None:
        with self.send_lock:
            self.conn.send(message)

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            self.conn.close()
        except OSError:
            pass

    def close(self) -> None:
        """Ask an idle worker to exit (killed if it does not within a second)."""
        try:
            self.send(("exit",))
            self.process.wait(1)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


class WorkerPool:
    """Idle warm workers (at most ``keep``); busy ones belong to their run."""

    def __init__(self, keep: int = 1):
        self.keep = keep
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._starting: threading.Thread | None = None

    def warm_up(self) -> None:
        """Start a worker in the background if none is idle (returns at once)."""
        with self._lock:
            if self._idle or (self._starting is not None and self._starting.is_alive()):
                return
            self._starting = threading.Thread(target=self._start_one, daemon=True,
                                              name="napari-reg-worker-start")
            self._starting.start()

    def _start_one(self) -> None:
        try:
            worker = _Worker()
        except Exception as exc:  # noqa: BLE001 - acquire() tries again and reports
            _log.warning("could not start a registration worker process: %s", exc)
            return
        self.release(worker)

    def acquire(self) -> _Worker:
        """An idle worker, or a new one (OSError if none can be started)."""
        starting = self._starting
        if starting is not None:
            starting.join(_START_TIMEOUT_S)
        return self.try_acquire() or _Worker()

    def try_acquire(self) -> _Worker | None:
        """An idle worker if one is ready, else None at once."""
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
        return None

    def release(self, worker: _Worker) -> None:
        """A worker whose job has ended: keep it warm, or let it go."""
        if not worker.alive:
            return
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(worker)
                return
        worker.close()

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


_POOL = WorkerPool()
atexit.register(_POOL.shutdown)


def warm_up() -> None:
    """Have a worker process ready for the next run (call when a panel opens)."""
    _POOL.warm_up()


class ProcessRun(RunState):
    """Run ``target(callback=..., cancel=...)`` in a worker process.

    The same interface as :class:`~.background.BackgroundRun`: ``start``, ``cancel``,
    ``running``, ``join``, ``drain``, ``seconds``, ``n_events`` and, once ended, exactly
    one of ``result``, ``error`` (with ``error_traceback``) or ``cancelled``. ``target``
    and its bound arguments must pickle (a module-level function in a ``partial``).
    Progress events arrive as the worker sends them (:func:`.worker_main.display_event`:
    a transform only every ~1/50 s, otherwise ``None``).
    """

    def __init__(self, target: Callable[..., Any], name: str = "napari-reg-run",
                 pool: WorkerPool | None = None):
        super().__init__()
        self._target = target
        self._name = name
        self._pool = pool or _POOL
        self._worker: _Worker | None = None
        self._lock = threading.Lock()  # a cancel is never sent to a worker's next job
        self._cancel_sent_at: float | None = None
        self._job_sent = False

    # ------------------------------------------------------------------ owner side
    def start(self) -> None:
        """Start the run's thread: it takes a worker (waiting for one still starting)
        and sends the job, so the GUI thread never waits for either (pickling a 1 mm pair
        took 0.24 s); without a worker process it runs the target itself."""
        self.started_at = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{self._name}-reader")
        self._thread.start()

    def cancel(self) -> None:
        """Ask the run to stop; it ends at the core's next check (or its worker is killed
        ``KILL_AFTER_S`` later)."""
        self.token.cancel()
        with self._lock:
            worker = self._worker
            if worker is None or not self._job_sent or self._cancel_sent_at is not None:
                return  # (a job not sent yet is cancelled right after it is sent)
            self._cancel_sent_at = time.perf_counter()
            try:
                worker.send(("cancel",))
            except OSError:
                pass  # the reader sees the lost worker

    # ------------------------------------------------------------------ the run's thread
    def _run(self) -> None:
        try:
            worker = self._pool.acquire()
        except OSError as exc:
            _log.warning("no worker process (%s): the run uses a thread instead", exc)
            self._run_here(self._target)
            return
        with self._lock:
            self._worker = worker
        self._read(worker)

    def _read(self, worker: _Worker) -> None:
        keep_worker = False
        try:
            unsent = self._send_job(worker)
            keep_worker = self._read_until_end(worker) if unsent is None else unsent
        finally:
            self.ended_at = time.perf_counter()
            with self._lock:
                self._worker = None
            if keep_worker:
                self._pool.release(worker)
            else:
                worker.kill()

    def _send_job(self, worker: _Worker) -> bool | None:
        """Reader thread: hand the job over (then a Stop pressed meanwhile). None when
        sent; else the run has ended FAILED, and whether the worker can be kept (a target
        that does not pickle sends nothing)."""
        with self._lock:
            try:
                worker.send(("job", self._target))
            except (OSError, EOFError):
                self.error = WorkerLost("the registration process could not be reached; "
                                        "nothing was changed")
                return False
            except Exception as exc:  # noqa: BLE001 - pickling: the worker got nothing
                self.error, self.error_traceback = exc, traceback.format_exc()
                return True
            self._job_sent = True
            if self.token.cancelled:
                self._cancel_sent_at = time.perf_counter()
                worker.send(("cancel",))
        return None

    def _read_until_end(self, worker: _Worker) -> bool:
        """Read the job's messages; True when the worker can serve another job."""
        conn = worker.conn
        while True:
            try:
                if not conn.poll(0.2):
                    if self._overdue():
                        self.cancelled = True
                        return False
                    continue
                message = conn.recv()
            except (EOFError, OSError):
                if self.token.cancelled:
                    self.cancelled = True
                    return False
                try:  # the socket closes a moment before the process has ended
                    code = worker.process.wait(2)
                except subprocess.TimeoutExpired:
                    code = None
                self.error = WorkerLost(
                    "the registration process ended unexpectedly"
                    + (f" (exit code {code})" if code is not None else "")
                    + "; nothing was changed. Out of memory? Try fewer levels at full "
                      "resolution or a coarser image.")
                return False
            kind = message[0]
            if kind == "event":
                self._received(message[1])
                continue
            if kind == "result":
                self.result = message[1]
            elif kind == "error":
                self.error, self.error_traceback = message[1], message[2]
            elif kind == "cancelled":
                self.cancelled = True
            return True

    def _received(self, event: Any) -> None:
        """Reader thread: one progress event from the worker."""
        self._events.append(event)
        self.n_events += 1

    def _overdue(self) -> bool:
        sent = self._cancel_sent_at
        return sent is not None and time.perf_counter() - sent > KILL_AFTER_S
