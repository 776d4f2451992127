"""The registration worker process: runs the jobs a :class:`~.process.ProcessRun` sends.

Why a process: in napari the registration shared one GIL with the GUI thread, and
napari's main window handles its repaints inside a Python ``event()``, so every live
frame stopped the optimiser for the whole repaint (benchmarks/bench_responsiveness.py).
In its own process the core keeps its CPU while the viewer paints.

Started as ``python -m napari_reg.runs.worker_main PORT`` with the parent's ``sys.path``
in ``PYTHONPATH`` and a one-time key in ``NAPARI_REG_WORKER_KEY``; it connects to
``127.0.0.1:PORT``, proves the key, and serves jobs one at a time until the parent says
``exit`` or goes away. Messages are pickled tuples on a
:class:`multiprocessing.connection.Connection`:

* parent -> worker: ``("job", target)``, ``("cancel",)``, ``("exit",)``;
* worker -> parent: ``("ready",)`` once; per job any number of ``("event", event)``
  then exactly one of ``("result", value)``, ``("error", exception, traceback_text)``,
  ``("cancelled",)``.
* a stream (:class:`.service.RemoteStream`): ``("stream", handler, nice, interval_s)``,
  then ``("request", request)`` any number of times, of which only the newest is
  answered: the worker starts a request at most every ``interval_s`` and meanwhile keeps
  reading, so a request superseded before it started is dropped; ``nice``: how much
  lower than at its start the worker's CPU priority is from then on. Each answer is
  ``("reply", number, value)`` or ``("error", number, exception, traceback_text)``
  with the number (1, 2, ...) of the request it answers; ``("end",)`` is acknowledged
  with ``("ended",)``.

``target(callback=..., cancel=...)`` is the same callable a thread run takes. Progress
events are sent thinned for display (:func:`display_event`): every event (the cost curve
needs them all), but a transform only when a live view could draw it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import socket
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .process import KEY_ENV

__all__ = ["display_event", "serve", "TRANSFORM_INTERVAL_S"]

# A live view draws at most ~13 frames a second; a transform is sent at most every 1/50 s
# (and with every level boundary and the final event), so that a fresh one is waiting
# whenever the view may draw again: iterations come in bursts (a B-spline level's ~17/s
# arrive in pairs), and a longer interval dropped half the states the view could show.
# The other events go without one (an affine stage makes ~150 a second).
TRANSFORM_INTERVAL_S = 1.0 / 50.0
# A SyN state's half field goes at most this large (~3 mm for a 1 mm brain: 4 MB instead
# of ~100 MB); displays evaluate the map only every ~4 mm anyway.
DISPLAY_MAX_VOXELS = 1_000_000
# the CPU priority this worker started with (a service may only lower it from there)
_START_NICE = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0


def display_event(event: Any, with_transform: bool) -> Any:
    """``event`` as sent to the parent: its transform replaced by the cheap display
    approximation (:func:`napari_reg.core.preview.preview_of`; a SyN snapshot's exact map
    would cost a full exponential to evaluate), coarsened to ``DISPLAY_MAX_VOXELS``, or
    by ``None`` when not sent."""
    from ..core.preview import preview_of

    transform = preview_of(event.transform) if with_transform else None
    if hasattr(transform, "coarsened"):
        transform = transform.coarsened(DISPLAY_MAX_VOXELS)
    return dataclasses.replace(event, transform=transform)


class _RemoteCancel:
    """The job's cancel token: cancelled when the parent sends ``cancel`` (or ``exit``,
    or goes away). Any thread of the core may ask; reading the connection is locked."""

    def __init__(self, conn: Connection, lock: threading.Lock):
        self._conn, self._lock = conn, lock
        self._event = threading.Event()
        self.exit_requested = False

    def _read_pending(self) -> None:
        if self._event.is_set():
            return
        with self._lock:
            try:
                while self._conn.poll(0):
                    message = self._conn.recv()
                    if message[0] in ("cancel", "exit"):
                        self.exit_requested |= message[0] == "exit"
                        self._event.set()
            except (EOFError, OSError):  # the parent is gone: stop working for it
                self.exit_requested = True
                self._event.set()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        self._read_pending()
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        from ..core.optimize import Cancelled

        if self.cancelled:
            raise Cancelled("the registration was cancelled")

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.cancelled:
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True


def _picklable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (its type then reaches the GUI), else a
    RuntimeError with its type name and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _run_job(conn: Connection, send: Any, target: Any, recv_lock: threading.Lock) -> bool:
    """Run one job; False when the parent asked the worker to exit meanwhile."""
    from ..core.optimize import Cancelled

    token = _RemoteCancel(conn, recv_lock)
    last_sent = [-float("inf")]

    def callback(event: Any) -> None:
        if token.cancelled:
            raise Cancelled("run stopped by the user")
        now = time.perf_counter()
        with_transform = (event.kind != "iteration"
                          or now - last_sent[0] >= TRANSFORM_INTERVAL_S)
        if with_transform:
            last_sent[0] = now
        send(("event", display_event(event, with_transform)))

    try:
        value = target(callback=callback, cancel=token)
    except Cancelled:
        send(("cancelled",))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        if token.cancelled:
            send(("cancelled",))
        else:
            send(("error", _picklable_error(exc), traceback.format_exc()))
    else:
        try:
            send(("result", value))
        except Exception as exc:  # noqa: BLE001 - an unpicklable result
            send(("error", RuntimeError(f"the result could not be sent back: {exc}"),
                  traceback.format_exc()))
    return not token.exit_requested


def _lower_priority(nice: int) -> None:
    """This process's CPU priority at least ``nice`` below what it was at start (Linux:
    the calling thread's, which answers the service's requests)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        now = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(now, _START_NICE + nice))
    except OSError:  # not permitted here: serve at normal priority
        pass


def _stream_requests(conn: Connection, send: Any, handler: Any, nice: int,
                     interval_s: float) -> bool:
    """Answer the newest of a stream's requests, paced; False when asked to exit."""
    _lower_priority(nice)
    number, last_start = 0, -float("inf")
    newest: tuple[int, Any] | None = None
    while True:
        # wait for a request (blocking), then until the pacing allows a start, taking
        # every newer request that comes meanwhile
        timeout = None if newest is None else max(0.0, last_start + interval_s
                                                  - time.perf_counter())
        if timeout is None or timeout > 0 or conn.poll(0):
            if conn.poll(timeout):
                message = conn.recv()
                if message[0] == "exit":
                    return False
                if message[0] == "end":  # nothing of this stream follows the ack
                    send(("ended",))
                    return True
                if message[0] == "request":
                    number += 1
                    newest = (number, message[1])
                del message
                continue
        if newest is None:
            continue
        (answered, request), newest = newest, None
        last_start = time.perf_counter()
        try:
            reply = ("reply", answered, handler(request))
        except Exception as exc:  # noqa: BLE001 - re-raised in the parent
            reply = ("error", answered, _picklable_error(exc), traceback.format_exc())
        del request
        try:
            send(reply)
        except (OSError, EOFError):
            raise  # the parent is gone: serve() ends
        except Exception as exc:  # noqa: BLE001 - a reply that does not pickle
            send(("error", answered, RuntimeError(f"the reply could not be sent back: {exc}"),
                  ""))


def serve(conn: Connection) -> None:
    """Answer jobs on ``conn`` until ``exit`` or the parent goes away."""
    send_lock, recv_lock = threading.Lock(), threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    # the core's heavy imports now, so that the first job starts at once
    import napari_reg.core.engine.register  # noqa: F401
    import napari_reg.runs.tasks  # noqa: F401

    send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "exit":
            return
        try:
            if message[0] == "job" and not _run_job(conn, send, message[1], recv_lock):
                return
            if message[0] == "stream" and not _stream_requests(conn, send, *message[1:]):
                return
        except (EOFError, OSError):  # the parent went away mid-job: nobody to answer
            return
        del message  # an idle worker keeps no images (a CT pair can be a gigabyte)
        # a "cancel" between jobs (the job had already ended) needs nothing


def _connect(port: int, key: bytes) -> Connection:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.settimeout(None)
    conn = Connection(sock.detach())
    conn.send_bytes(key)  # the parent accepts only its own worker
    return conn


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    key = bytes.fromhex(os.environ.pop(KEY_ENV, ""))
    conn = _connect(int(args[0]), key)
    try:
        serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
