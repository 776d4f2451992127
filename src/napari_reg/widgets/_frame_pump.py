"""The live view's frame producer: the newest request drawn, paced, off the GUI thread.

Only the newest :class:`~._frame_render.FrameRequest` matters: one that was superseded
before its frame started is dropped, and a finished frame nobody took yet is replaced by
a newer one. Frames start at most every ``min_interval_s``; the GUI thread only takes
finished frames (:meth:`FramePump.take`) and puts them on screen.

Where a frame is computed: in a frame process of its own when asked for
(:class:`napari_reg.runs.service.RemoteStream`): the process paces itself and keeps
reading newer requests while it waits, so this process only forwards requests and
receives frames, on threads that wait without the GIL. That matters because napari
holds the GIL through every repaint of its window (~45 ms under software OpenGL): a
frame thread here that waits out the pacing and then warps needs the GIL twice per
frame and waited for the repaint both times (a B-spline run showed 8.4 of its 17
states a second). Until the process is ready, if it cannot start, or after it died,
frames are computed on this module's frame thread instead.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from ..core.image import Volume
from ..runs.process import WorkerLost
from ..runs.service import RemoteStream
from ._frame_render import Frame, FrameRenderer, FrameRequest, render_frame

__all__ = ["FramePump", "WARP_THREAD_NICE", "FRAME_PROCESS_MAX_BYTES"]

_log = logging.getLogger(__name__)
# CPU priority of the frame thread and the frame process (Linux nice, higher = lower
# priority): on a busy machine the preview yields to the optimiser and to the GUI thread
# instead of slowing the run and the event loop (benchmarks/bench_responsiveness.py).
WARP_THREAD_NICE = 5
# A moving image larger than this is not copied to a frame process (memory before
# speed: a run already holds it in the viewer and in the registration worker).
FRAME_PROCESS_MAX_BYTES = 512 * 2**20


def _background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux only: there ``setpriority`` on a
    thread id affects that thread alone; elsewhere it would renice the whole process)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid)
                       + WARP_THREAD_NICE)
    except OSError:  # not permitted in this sandbox: run at normal priority
        pass


class FramePump:
    """Frames of ``moving`` for the newest request (see the module docstring).

    ``on_ready`` is called from a background thread whenever a frame is finished: the
    owner should then call :meth:`take` on its own thread (e.g. through a queued Qt
    signal).
    """

    def __init__(self, moving: Volume, min_interval_s: float,
                 on_ready: Callable[[], None] | None = None, in_process: bool = False):
        self.moving = moving
        self.min_interval_s = float(min_interval_s)
        self._on_ready = on_ready
        self._in_process = bool(in_process) and moving.data.nbytes <= FRAME_PROCESS_MAX_BYTES
        self._changed = threading.Condition()  # guards every field below
        self._stream: RemoteStream | None = None  # the frame process, once it is ready
        self._newest: FrameRequest | None = None  # the newest request put (re-drawn here
        # if the frame process dies)
        self._request: FrameRequest | None = None  # for the frame thread, not started
        self._finished: Frame | BaseException | None = None  # not taken yet
        self._working = False  # the frame thread is computing a frame
        self._generation = 0  # discard() count: a local frame started before is dropped
        self._dropped_upto = 0  # stream requests up to this number were discarded
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_start = -np.inf  # when the frame thread last started a frame

    # ------------------------------------------------------------------ owner side
    def put(self, request: FrameRequest) -> None:
        """Draw ``request`` next (a request not started yet is dropped). Never waits."""
        with self._changed:
            if self._closed:
                return
            self._newest = request
            stream = self._stream
            if stream is None:
                self._request = request
                self._changed.notify_all()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, daemon=True,
                                                    name="napari-reg-frames")
                    self._thread.start()
        if stream is not None:
            stream.submit(request)

    def take(self) -> Frame | None:
        """The newest finished frame not taken yet, or None; a failed frame's error is
        raised here."""
        with self._changed:
            finished, self._finished = self._finished, None
            self._changed.notify_all()
        if isinstance(finished, BaseException):
            raise finished
        return finished

    @property
    def pending(self) -> bool:
        """A requested frame waits, is being computed, or is finished but not taken."""
        with self._changed:
            return self._pending()

    def _pending(self) -> bool:
        stream = self._stream
        return (self._request is not None or self._working or self._finished is not None
                or (stream is not None and not stream.idle))

    def wait(self, timeout: float) -> bool:
        """Block until a finished frame waits for :meth:`take` (True), or nothing is
        left to compute, or ``timeout`` s passed (False). For scripts and tests."""
        with self._changed:
            self._changed.wait_for(lambda: self._finished is not None or self._closed
                                   or not self._pending(), timeout)
            return self._finished is not None

    def discard(self) -> None:
        """Forget the waiting request and the unshown frame; a frame in progress is
        dropped when it ends (its request predates this call)."""
        with self._changed:
            self._request = self._finished = self._newest = None
            self._generation += 1
            if self._stream is not None:
                self._dropped_upto = self._stream.submitted
            self._changed.notify_all()

    def close(self) -> None:
        """Stop; a frame in progress is dropped (the frame process goes back to its pool
        once it is done)."""
        with self._changed:
            self._closed = True
            self._request = self._finished = self._newest = None
            stream, self._stream = self._stream, None
            self._changed.notify_all()
        if stream is not None:
            stream.close()

    # ------------------------------------------------------------------ frame process
    def _start_stream(self, request: FrameRequest) -> bool:
        """Frame thread: hand ``request`` (and all later ones) to a frame process if one
        is ready; False when this thread is to draw it."""
        try:
            stream = RemoteStream.start(FrameRenderer(self.moving), self.min_interval_s,
                                        self._stream_reply, nice=WARP_THREAD_NICE)
        except Exception as exc:  # noqa: BLE001 - e.g. a moving image that does not pickle
            _log.warning("live frames are drawn in the viewer: %s", exc)
            self._in_process = False
            return False
        if stream is None:  # none idle yet: one is starting for the next frames
            return False
        with self._changed:
            if self._closed:
                stream.close()
                return True
            self._stream = stream
            newest = self._request or request  # put() went on to the frame thread meanwhile
            self._request = None
        stream.submit(newest)
        return True

    def _stream_reply(self, number: int, frame: Frame | None,
                      error: BaseException | None) -> None:
        """Reader thread of the frame process: a frame (or the error drawing it)."""
        if isinstance(error, WorkerLost):
            _log.warning("live frames are drawn in the viewer from now on: %s", error)
            with self._changed:
                stream, self._stream, self._in_process = self._stream, None, False
                newest, closed = self._newest, self._closed
            if newest is not None and not closed and stream is not None and not stream.idle:
                self.put(newest)  # the process died before it drew it: draw it here
            return
        with self._changed:
            if self._closed or number <= self._dropped_upto:
                return
            self._finished = error if error is not None else frame
            self._changed.notify_all()
        if self._on_ready is not None:
            self._on_ready()

    # ------------------------------------------------------------------ frame thread
    def _loop(self) -> None:
        _background_priority()
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._request is not None or self._closed)
                if self._closed:
                    return
            delay = self._last_start + self.min_interval_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # requests arriving meanwhile replace this one
            with self._changed:
                request, self._request = self._request, None
                if self._closed or request is None:
                    continue
                self._working, generation = True, self._generation
            if self._in_process and self._start_stream(request):
                with self._changed:
                    self._working = False
                    self._changed.notify_all()
                continue
            self._last_start = time.perf_counter()
            try:
                finished: Frame | BaseException = render_frame(self.moving, request)
            except BaseException as exc:  # noqa: BLE001 - raised on the owner's thread
                finished = exc
            with self._changed:
                self._working = False
                if self._closed:
                    return
                if generation == self._generation:
                    self._finished = finished
                self._changed.notify_all()
            if self._on_ready is not None:
                self._on_ready()
