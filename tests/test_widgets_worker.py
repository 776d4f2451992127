"""The run bridge: events reach the GUI thread in batches, Stop ends the run, errors kept.

The targets here are tiny stand-ins for ``register()`` with the same calling contract
(``callback=``, ``cancel=``), so the bridge is tested on its own; the GUI tests run the
real core.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_reg.core.engine.events import ProgressEvent
from napari_reg.core.optimize import Cancelled
from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.runs import BackgroundRun, RunController, RunStatus
from napari_reg.widgets._worker import POLL_INTERVAL_MS, GuiCall, RunTicker


def _event(i: int) -> ProgressEvent:
    m = np.eye(4)
    m[0, 3] = i
    return ProgressEvent(kind="iteration", stage=0, stage_name="affine", level=0, n_levels=1,
                         iteration=i, max_iterations=10**6, cost=-float(i),
                         transform=MatrixTransform(m), elapsed=0.0, total_iterations=i + 1)


def _counting_target(n: int, delay: float = 0.0):
    gui_thread = threading.get_ident()

    def target(callback, cancel):
        assert threading.get_ident() != gui_thread  # really on another thread
        for i in range(n):
            if delay:
                time.sleep(delay)
            callback(_event(i))
        return "result"

    return target


def test_all_events_arrive_in_order_in_few_batches(qtbot):
    controller = RunController()
    _ticker = RunTicker(controller)  # noqa: F841 - polls while it lives
    batches, finished = [], []
    controller.progress.connect(batches.append)
    controller.finished.connect(finished.append)
    start = time.perf_counter()
    job = controller.start(_counting_target(500, delay=0.0005))
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    elapsed = time.perf_counter() - start
    events = [e for b in batches for e in b]
    assert [e.iteration for e in events] == list(range(500))
    # throttled: at most one batch per timer tick, so many events per GUI update
    assert len(batches) <= elapsed / (POLL_INTERVAL_MS / 1000) + 1
    assert len(batches) < len(events)
    assert [end.run for end in finished] == [job] and finished[0].status is RunStatus.DONE
    assert job.result == "result" and job.error is None
    assert controller.last is finished[0] and controller.last.result == "result"


def test_cancel_stops_even_a_target_that_never_checks_the_token(qtbot):
    controller = RunController()
    _ticker = RunTicker(controller)  # noqa: F841 - polls while it lives
    finished = []
    controller.finished.connect(finished.append)
    job = controller.start(_counting_target(10**7, delay=0.001))
    qtbot.waitUntil(lambda: job.n_events > 5, timeout=5000)
    controller.stop()
    assert job.join(timeout=1.0)  # ends at its next progress event
    qtbot.waitUntil(lambda: bool(finished), timeout=2000)
    assert job.cancelled and job.result is None and job.error is None
    assert finished[0].status is RunStatus.STOPPED and controller.last is None


def test_target_errors_are_kept_for_the_gui():
    def target(callback, cancel):
        raise ValueError("fixed image is empty")

    job = BackgroundRun(target)
    job.start()
    assert job.join(timeout=5)
    assert isinstance(job.error, ValueError) and "empty" in str(job.error)
    assert "ValueError" in job.error_traceback
    assert not job.cancelled


def test_cancelled_raised_by_the_core_counts_as_cancelled():
    def target(callback, cancel):
        cancel.cancel()
        cancel.raise_if_cancelled()

    job = BackgroundRun(target)
    job.start()
    assert job.join(timeout=5)
    assert job.cancelled and job.error is None


def test_callback_raises_cancelled_after_cancel():
    job = BackgroundRun(lambda callback, cancel: None)
    job.cancel()
    with pytest.raises(Cancelled):
        job._callback(_event(0))


def test_gui_call_runs_the_function_on_the_gui_thread(qtbot):
    """A request from another thread (the overlay's warp thread) is served on the GUI thread."""
    ran_on = []
    call = GuiCall(lambda: ran_on.append(threading.current_thread()))
    thread = threading.Thread(target=call.request)
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: len(ran_on) == 1, timeout=2000)
    assert ran_on[0] is threading.main_thread()


def test_a_second_start_is_refused_and_abandon_reports_stopped_at_once():
    """Without an event loop: the controller polled by hand (a script's use)."""
    from napari_reg.runs import RunBusyError

    controller = RunController()
    ends = []
    controller.finished.connect(ends.append)
    run = controller.start(_counting_target(10**7, delay=0.001))
    with pytest.raises(RunBusyError):
        controller.start(_counting_target(1))
    controller.abandon()  # the owner goes away: STOPPED now, the thread ends by itself
    assert not controller.running and ends[0].status is RunStatus.STOPPED
    assert run.join(timeout=1.0) and run.cancelled
    controller.start(_counting_target(3))
    end = controller.wait(timeout=5)
    assert end.status is RunStatus.DONE and end.result == "result"


def test_a_failed_run_keeps_the_previous_result():
    def failing(callback, cancel):
        raise ValueError("no overlap")

    controller = RunController()
    controller.start(_counting_target(2))
    good = controller.wait(timeout=5)
    ends = []
    controller.finished.connect(ends.append)
    controller.start(failing)
    controller.wait(timeout=5)
    assert ends[0].status is RunStatus.FAILED and "overlap" in str(ends[0].error)
    assert controller.last is good
