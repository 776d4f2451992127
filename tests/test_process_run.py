"""Runs in a worker process (napari_reg.runs.process): the Register panel's runner.

Same contract as the thread run (events in order, exactly one of result / error /
cancelled), plus what a process adds: the target really runs elsewhere, errors keep their
type, a dying worker ends the run FAILED with a message, a worker deaf to Stop is killed,
and a machine where no worker starts still runs (in a thread).
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np

import napari_reg.runs.process as process_module
import process_targets as targets
from napari_reg.runs import ProcessRun, RunController, RunStatus


def _finish(controller: RunController, timeout: float = 60.0) -> tuple[list, object]:
    events, ends = [], []
    controller.progress.connect(events.extend)
    controller.finished.connect(ends.append)
    end_by = time.monotonic() + timeout
    while controller.poll():
        assert time.monotonic() < end_by, "the run did not end"
        time.sleep(0.01)
    return events, ends[-1]


def test_events_in_order_and_the_result_from_another_process():
    controller = RunController(runner=ProcessRun)
    controller.start(functools.partial(targets.counting, 200))
    events, end = _finish(controller)
    assert end.status is RunStatus.DONE
    assert end.result["pid"] != os.getpid()  # really ran in the worker
    np.testing.assert_array_equal(end.result["data"], np.arange(1000.0))
    assert [e.iteration for e in events] == list(range(200))
    # transforms only as often as a display can use them, the first one always
    with_transform = [e for e in events if e.transform is not None]
    assert with_transform[0] is events[0] and len(with_transform) < len(events)
    np.testing.assert_array_equal(with_transform[0].transform.matrix[0, 3], 0.0)
    # the next run reuses the warm worker
    controller.start(functools.partial(targets.counting, 3))
    _, again = _finish(controller)
    assert again.status is RunStatus.DONE and again.result["pid"] == end.result["pid"]


def test_an_error_keeps_its_type_message_and_traceback():
    controller = RunController(runner=ProcessRun)
    controller.start(functools.partial(targets.failing, "no such stage"))
    _, end = _finish(controller)
    assert end.status is RunStatus.FAILED
    assert isinstance(end.error, KeyError) and "no such stage" in str(end.error)
    assert "process_targets.py" in end.run.error_traceback


def test_stop_ends_a_run_that_checks_its_token():
    controller = RunController(runner=ProcessRun)
    run = controller.start(targets.until_cancelled)
    while run.n_events == 0:
        controller.poll()
        time.sleep(0.01)
    controller.stop()
    _, end = _finish(controller, timeout=10)
    assert end.status is RunStatus.STOPPED and run.cancelled


def test_a_worker_deaf_to_stop_is_killed(monkeypatch):
    monkeypatch.setattr(process_module, "KILL_AFTER_S", 0.5)
    controller = RunController(runner=ProcessRun)
    run = controller.start(targets.deaf)
    while run.n_events == 0:
        controller.poll()
        time.sleep(0.01)
    worker = run._worker
    controller.stop()
    _, end = _finish(controller, timeout=10)
    assert end.status is RunStatus.STOPPED
    assert worker.process.poll() is not None  # killed, not left running for 10 minutes


def test_a_dying_worker_fails_the_run_with_a_message_and_is_replaced():
    controller = RunController(runner=ProcessRun)
    controller.start(targets.dying)
    _, end = _finish(controller)
    assert end.status is RunStatus.FAILED
    assert isinstance(end.error, process_module.WorkerLost)
    assert "exit code 3" in str(end.error) and "nothing was changed" in str(end.error)
    controller.start(functools.partial(targets.counting, 2))  # a new worker takes over
    _, end = _finish(controller)
    assert end.status is RunStatus.DONE


def test_without_a_worker_process_the_run_uses_a_thread(monkeypatch):
    """An interpreter that cannot start the worker (here: not Python at all): the run
    goes to a thread in this process and still ends right."""
    monkeypatch.setattr(process_module.sys, "executable", "/bin/false")
    fresh_pool = process_module.WorkerPool()  # no warm worker to fall back on
    controller = RunController(runner=functools.partial(ProcessRun, pool=fresh_pool))
    controller.start(functools.partial(targets.counting, 5))
    events, end = _finish(controller)
    assert end.status is RunStatus.DONE and end.result["pid"] == os.getpid()
    assert len(events) == 5


def test_a_late_stop_never_reaches_the_workers_next_job():
    """Stop pressed just as a run ends must not cancel the next run on the same worker."""
    controller = RunController(runner=ProcessRun)
    first = controller.start(functools.partial(targets.counting, 1))
    _finish(controller)
    first.cancel()  # too late: the run has ended and its worker is back in the pool
    controller.start(functools.partial(targets.counting, 20, 0.005))
    _, end = _finish(controller)
    assert end.status is RunStatus.DONE


def test_a_target_that_does_not_pickle_fails_with_its_error_and_the_worker_stays():
    controller = RunController(runner=ProcessRun)
    run = controller.start(lambda callback, cancel: None)  # a lambda cannot be sent
    _, end = _finish(controller)
    assert end.status is RunStatus.FAILED and "lambda" in str(end.error).lower()
    assert run.n_events == 0
    controller.start(functools.partial(targets.counting, 2))
    _, end = _finish(controller)
    assert end.status is RunStatus.DONE


def test_stop_pressed_before_the_job_is_sent_still_stops_it(monkeypatch):
    monkeypatch.setattr(process_module, "KILL_AFTER_S", 600.0)  # no kill: a real stop
    controller = RunController(runner=ProcessRun)
    run = controller.start(targets.until_cancelled)
    run.cancel()  # at once: the reader thread may not have sent the job yet
    _, end = _finish(controller, timeout=10)
    assert end.status is RunStatus.STOPPED
