"""Where independent pieces of work run: local processes, this process, or a Dask cluster.

Shared by batch registration (:mod:`napari_reg.batch`: one pair per task), template
building and motion correction (:mod:`napari_reg.motion`: one frame per task).

* local worker processes (``concurrent.futures.ProcessPoolExecutor`` with ``spawn``,
  default; each worker's BLAS/OpenMP threads capped so N workers share the CPUs);
* this process (``workers=0``, for debugging and small jobs);
* an existing Dask distributed cluster (``scheduler="tcp://host:8786"`` or a
  ``distributed`` cluster object; needs the optional ``distributed`` package, and every
  worker must see the same file paths).

Tasks are module-level functions of one picklable argument.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from .core.errors import NapariRegError

__all__ = ["RunnerError", "connect", "runner", "as_completed", "executor_mapper", "run_now"]


class RunnerError(NapariRegError):
    """Work that cannot start where it was asked to run (no ``distributed``, no scheduler)."""


def connect(scheduler: Any, timeout_s: float = 10.0):
    """A ``distributed.Client`` for an address or a cluster object, with clear errors."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise RunnerError("running on a Dask cluster needs the 'distributed' package: "
                          "pip install distributed (the optional 'batch' extra)") from exc
    try:
        return Client(scheduler, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise RunnerError(
            f"cannot reach the Dask scheduler at {scheduler}: {exc}. Start one with "
            "`dask scheduler` (and workers with `dask worker ADDRESS`), check the address, "
            "or leave out --scheduler to run on local processes") from exc


def run_now(fn: Callable, arg: Any) -> Future:
    """``submit`` for ``workers=0``: run at once in this process."""
    future: Future = Future()
    try:
        future.set_result(fn(arg))
    except Exception as exc:  # noqa: BLE001 - delivered through the future like a pool does
        future.set_exception(exc)
    return future


@contextlib.contextmanager
def runner(workers: int | None, scheduler: Any,
           connect_timeout_s: float = 10.0) -> Iterator[tuple[str, Any]]:
    """Yield ``(description, submit(fn, arg) -> future)``; shut everything down after.

    ``workers``: local processes (default: CPU count; 0 = this process). ``scheduler``: a
    Dask scheduler address or cluster object (then ``workers`` is ignored).
    """
    if scheduler is not None:
        client = connect(scheduler, connect_timeout_s)
        try:
            yield f"dask {client.scheduler.address}", \
                lambda fn, arg: client.submit(fn, arg, pure=False)
        finally:
            client.close()
        return
    if workers == 0:
        yield "in-process", run_now
        return
    n = workers or os.cpu_count() or 1
    # spawn: a fresh interpreter per worker, safe when the caller has threads (GUI, Dask).
    # Workers inherit the environment when they start (at the first submit), so the
    # BLAS/OpenMP thread caps must be in place for the whole pool's life.
    with thread_caps(max(1, (os.cpu_count() or 1) // n)):
        pool = ProcessPoolExecutor(max_workers=n,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=terminate_like_interrupt)
        try:
            yield f"{n} local process{'es' if n > 1 else ''}", pool.submit
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _unwind(_signum, _frame) -> None:
    # SystemExit, not KeyboardInterrupt: it unwinds the same way (finally blocks run), but
    # multiprocessing ends the process quietly instead of printing a traceback.
    raise SystemExit(143)


def terminate_like_interrupt() -> None:
    """Worker initializer: SIGTERM (forwarded by the CLI when it is terminated) unwinds
    the worker, so its output set removes its staging before the process ends."""
    signal.signal(signal.SIGTERM, _unwind)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def thread_caps(n_threads: int) -> Iterator[None]:
    """Cap each worker's BLAS/OpenMP threads so N workers do not oversubscribe the CPUs
    (as Dask's nannies do); a user's own settings win."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    for key in _THREAD_VARIABLES:
        os.environ.setdefault(key, str(n_threads))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def as_completed(futures: Iterable[Any]) -> Iterator[Any]:
    """Futures as they finish; works for concurrent.futures and Dask futures alike (both
    call ``add_done_callback`` hooks when done, from whatever thread)."""
    futures = list(futures)
    finished: queue.Queue = queue.Queue()
    for future in futures:
        future.add_done_callback(finished.put)
    for _ in range(len(futures)):
        # A timeout keeps the main thread responsive to Ctrl-C while it waits.
        while True:
            try:
                yield finished.get(timeout=0.2)
                break
            except queue.Empty:
                continue


@contextlib.contextmanager
def executor_mapper(workers: int | None = None,
                    scheduler: Any = None) -> Iterator[Callable[[Callable, Iterable], list]]:
    """A ``map(fn, items) -> results`` over local processes or a Dask cluster (in order).

    For :func:`napari_reg.core.atlas.template.build_template`'s ``mapper``: the registrations of
    one template iteration run in parallel.
    """
    with runner(workers, scheduler) as (_, submit):
        def mapper(fn: Callable, items: Iterable) -> list:
            futures = [submit(fn, item) for item in items]
            return [f.result() for f in futures]

        yield mapper
