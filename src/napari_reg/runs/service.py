"""A stream of requests answered by a worker process: the newest one matters.

Why: a live view's frames (the moving image warped by the optimiser's newest state)
computed on a thread of the viewer process wait for the GIL while napari repaints its
window, which on a software-OpenGL screen holds the GIL for ~45 ms per repaint: a
B-spline run showed 7.6-8.4 of its 13-17 states a second (benchmarks/
bench_responsiveness.py). In a process of its own the warp runs while the window paints.

:class:`RemoteStream` hands a picklable ``handler`` (``handler(request) -> reply``) to a
warm worker (:mod:`.worker_main`; its own pool, so a worker whose priority was lowered
never runs a registration). Requests are forwarded as they come, the worker paces and
skips superseded ones, and answers come back on a reader thread. A worker that dies is
reported as :class:`~.process.WorkerLost` (the owner can fall back to computing
locally); a handler's exception is handed over as it is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .process import WorkerLost, WorkerPool, _Worker

__all__ = ["RemoteStream", "warm_up_service", "SERVICE_POOL"]

SERVICE_POOL = WorkerPool(keep=1)


def warm_up_service() -> None:
    """Have a service worker ready (returns at once; call when a panel opens)."""
    SERVICE_POOL.warm_up()


class RemoteStream:
    """``handler`` in a worker process for a stream of requests of which only the newest
    matters (a live view's frames): :meth:`submit` never waits, the worker starts a
    request at most every ``interval_s`` and skips those superseded before they started,
    and each answer goes to ``on_reply(number, value, error)`` on a reader thread of
    this process (``number``: which submitted request, counting from 1; ``error``: the
    handler's exception, or :class:`~.process.WorkerLost` when the worker is gone, after
    which the stream is closed).

    Why the worker paces: a thread of this process that waited out the pacing would then
    need the GIL to send the request, and napari holds it through every repaint.
    """

    def __init__(self, worker: _Worker, pool: WorkerPool,
                 on_reply: Callable[[int, Any, BaseException | None], None]):
        self._worker = worker
        self._pool = pool
        self._on_reply = on_reply
        self._changed = threading.Condition()  # guards the fields below
        self._unsent: Any = None  # the newest request not sent yet
        self._has_unsent = False
        self.submitted = 0  # requests submitted so far
        self._sent_numbers: list[int] = []  # the submitted number of each request sent
        self._answered = 0  # how many sent requests the worker has answered or skipped
        self._ending = False
        threading.Thread(target=self._send_loop, daemon=True,
                         name="napari-reg-stream-send").start()
        threading.Thread(target=self._read_loop, daemon=True,
                         name="napari-reg-stream-read").start()

    @classmethod
    def start(cls, handler: Any, interval_s: float,
              on_reply: Callable[[int, Any, BaseException | None], None], nice: int = 0,
              pool: WorkerPool | None = None, wait: bool = False) -> RemoteStream | None:
        """Send ``handler`` to an idle worker, at CPU priority ``nice`` below the worker's
        start (Linux/macOS). Without an idle worker: None at once, and one is started
        for a later try (``wait``: start one now and wait for it; OSError if none can
        start). A handler that does not pickle raises here (the worker is kept)."""
        pool = pool or SERVICE_POOL
        worker = pool.acquire() if wait else pool.try_acquire()
        if worker is None:
            pool.warm_up()
            return None
        try:
            worker.send(("stream", handler, int(nice), float(interval_s)))
        except (OSError, EOFError):
            worker.kill()
            return None
        except BaseException:
            pool.release(worker)
            raise
        return cls(worker, pool, on_reply)

    @property
    def closed(self) -> bool:
        with self._changed:
            return self._ending

    @property
    def idle(self) -> bool:
        """Every submitted request has been answered or skipped for a newer one."""
        with self._changed:
            return not self._has_unsent and self._answered >= len(self._sent_numbers)

    def submit(self, request: Any) -> int:
        """Queue ``request`` (replacing one not sent yet); its number. Never waits: the
        stream's sender thread pickles and sends it."""
        with self._changed:
            self.submitted += 1
            self._unsent, self._has_unsent = request, True
            self._changed.notify_all()
            return self.submitted

    def close(self) -> None:
        """End the stream without waiting: no answer is delivered after this, and the
        worker goes back to the pool once it has acknowledged the end."""
        with self._changed:
            self._ending = True
            self._unsent, self._has_unsent = None, False
            self._changed.notify_all()

    # ------------------------------------------------------------------ threads
    def _send_loop(self) -> None:
        worker = self._worker
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._has_unsent or self._ending)
                if self._ending:
                    break
                request, self._unsent, self._has_unsent = self._unsent, None, False
                self._sent_numbers.append(self.submitted)
            try:
                worker.send(("request", request))
            except (OSError, EOFError):
                return  # the reader sees the lost worker
            del request
        try:
            worker.send(("end",))
        except (OSError, EOFError):
            pass

    def _read_loop(self) -> None:
        worker = self._worker
        try:
            while True:
                if not worker.conn.poll(0.5):
                    if not worker.alive:
                        raise EOFError
                    continue
                message = worker.conn.recv()
                if message[0] == "ended":
                    break
                with self._changed:
                    self._answered = max(self._answered, int(message[1]))
                    number = self._sent_numbers[int(message[1]) - 1]
                    closed = self._ending
                    self._changed.notify_all()
                value, error = ((message[2], None) if message[0] == "reply"
                                else (None, message[2]))
                del message
                if not closed:
                    self._on_reply(number, value, error)
        except (EOFError, OSError):
            with self._changed:
                closed, self._ending = self._ending, True
            worker.kill()
            if not closed:
                self._on_reply(0, None, WorkerLost("the helper process ended unexpectedly"))
            return
        self._pool.release(worker)
