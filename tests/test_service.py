"""A stream of requests answered by a worker process (napari_reg.runs.service): the live
view's frames are computed there so that they never wait for the GUI thread's GIL."""

from __future__ import annotations

import os
import queue
import sys
import time

import numpy as np
import pytest

from napari_reg.runs.process import WorkerLost, WorkerPool
from napari_reg.runs.service import RemoteStream
from process_targets import Handler


@pytest.fixture
def pool():
    own = WorkerPool(keep=1)
    yield own
    own.shutdown()


def _stream(pool, tag="", interval_s=0.0, nice=0):
    replies: queue.Queue = queue.Queue()
    stream = RemoteStream.start(Handler(tag), interval_s,
                                lambda n, value, error: replies.put((n, value, error)),
                                nice=nice, pool=pool, wait=True)
    return stream, replies


def test_answers_come_from_another_process_and_errors_keep_their_type(pool):
    stream, replies = _stream(pool, "a")
    try:
        assert stream.submit(("echo", np.arange(5.0))) == 1
        number, (tag, pid, value), error = replies.get(timeout=30)
        assert (number, tag, error) == (1, "a", None) and pid != os.getpid()
        np.testing.assert_array_equal(value, np.arange(5.0))
        stream.submit(("fail", "boom"))
        number, value, error = replies.get(timeout=30)
        assert number == 2 and value is None and isinstance(error, KeyError)
        stream.submit(("echo", 7))  # still answering after an error
        assert replies.get(timeout=30)[1][2] == 7
        deadline = time.monotonic() + 10
        while not stream.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.idle
    finally:
        stream.close()


def test_requests_superseded_before_they_start_are_skipped(pool):
    stream, replies = _stream(pool)
    try:
        stream.submit(("sleep", 0.5))
        time.sleep(0.2)  # the worker is busy with the first
        for i in range(5):
            stream.submit(("echo", i))
        assert replies.get(timeout=30)[:2] == (1, ("", "slept"))
        number, value, _ = replies.get(timeout=30)
        assert number == 6 and value[2] == 4  # the newest; 2-5 never ran
        time.sleep(0.3)
        assert replies.empty() and stream.idle
    finally:
        stream.close()


def test_the_worker_paces_the_starts(pool):
    stream, replies = _stream(pool, interval_s=0.4)
    try:
        stream.submit(("echo", 1))
        replies.get(timeout=30)
        sent = time.perf_counter()
        stream.submit(("echo", 2))
        replies.get(timeout=30)
        assert time.perf_counter() - sent >= 0.3  # waited for the interval (a lower bound)
    finally:
        stream.close()


def test_without_an_idle_worker_start_returns_none_and_warms_one_up(pool):
    def start():
        return RemoteStream.start(Handler(), 0.0, lambda *a: None, pool=pool)

    assert start() is None
    deadline = time.monotonic() + 60
    stream = None
    while stream is None and time.monotonic() < deadline:
        time.sleep(0.1)
        stream = start()
    assert stream is not None
    stream.close()


def test_a_dying_worker_is_reported_as_lost_and_closes_the_stream(pool):
    stream, replies = _stream(pool)
    stream.submit(("die",))
    number, value, error = replies.get(timeout=30)
    assert isinstance(error, WorkerLost) and stream.closed


def test_close_never_delivers_a_late_answer_nor_hands_it_to_the_next_stream(pool):
    """The worker returns to the pool only after acknowledging the end, so the next
    stream on that worker gets its own answers."""
    first, first_replies = _stream(pool, "first")
    first.submit(("sleep", 0.5))
    time.sleep(0.2)
    started = time.perf_counter()
    first.close()  # returns at once although a request is in progress
    assert time.perf_counter() - started < 0.2
    second_replies: queue.Queue = queue.Queue()
    deadline = time.monotonic() + 10
    second = None
    while second is None and time.monotonic() < deadline:  # back in the pool
        time.sleep(0.05)
        second = RemoteStream.start(Handler("second"), 0.0,
                                    lambda n, v, e: second_replies.put((n, v, e)), pool=pool)
    assert second is not None
    try:
        second.submit(("echo", 1))
        number, value, _ = second_replies.get(timeout=30)
        assert number == 1 and value[0] == "second"
        assert first_replies.empty()
    finally:
        second.close()


# os.setpriority on one thread (the worker's) only exists on Linux; elsewhere the
# stream runs at normal priority by design. CI is Linux, so it runs there.
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread priorities")
def test_a_stream_runs_at_the_lower_priority_it_asks_for(pool):
    stream, replies = _stream(pool, nice=5)
    try:
        stream.submit(("nice",))
        assert replies.get(timeout=30)[1] == min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)
    finally:
        stream.close()


def test_live_frames_come_from_the_frame_process_then_from_the_viewer_when_it_died(
        pool, monkeypatch):
    """FramePump (the live view's frame producer): with a frame process ready, frames are
    drawn there and equal the viewer's own; a request the process had not drawn when it
    died is drawn in the viewer, and so are the following ones."""
    import napari_reg.runs.service as service
    from napari_reg.core.transforms.base import MatrixTransform
    from napari_reg.widgets._frame_pump import FramePump
    from napari_reg.widgets._frame_render import FrameRequest, render_frame
    from phantoms import phantom_volume

    monkeypatch.setattr(service, "SERVICE_POOL", pool)
    pool.release(pool.acquire())  # a frame process is ready
    moving = phantom_volume((20, 22, 18), (2.0, 2.0, 2.0), name="moving")

    def request(shift):
        matrix = np.eye(4)
        matrix[:3, 3] = (shift, -1.0, 0.5)
        return FrameRequest(MatrixTransform(matrix), moving.shape, moving.affine)

    def assert_next_frame_draws(pump, shift):
        assert pump.wait(30)
        np.testing.assert_allclose(pump.take().data,
                                   render_frame(moving, request(shift)).data, atol=1e-6)

    pump = FramePump(moving, 1.0, in_process=True)  # frames start 1 s apart at most
    try:
        pump.put(request(1.0))
        assert_next_frame_draws(pump, 1.0)
        assert pump._stream is not None  # drawn by the frame process
        pump.put(request(2.0))  # the process holds it until 1 s after the first start
        pump._stream._worker.kill()  # and dies meanwhile
        assert_next_frame_draws(pump, 2.0)
        assert pump._stream is None  # from now on the viewer draws
        pump.put(request(3.0))
        assert_next_frame_draws(pump, 3.0)
    finally:
        pump.close()
