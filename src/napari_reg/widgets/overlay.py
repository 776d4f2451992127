"""The live warped overlay: moving(T(x)) resampled onto (a coarse copy of) the fixed grid.

Why resample instead of moving the layer: napari does not slice a layer whose affine
rotates out of the viewed plane (napari issue #7310), so setting the moving layer's
affine is only right for in-plane motion. The overlay layer lives on the FIXED grid, so
every view (axial, coronal, sagittal, 3D) shows the correct warped moving image.

Speed: during a run each frame is computed on a single background thread at a lower CPU
priority, at most ~12 times a second, and the GUI thread only swaps the finished frame in
(``poll``). In a 2D view a frame is the three orthogonal planes through the current
point at the display grid's full resolution (``focus``, :mod:`._live_planes`: ~130 k
voxels for a 1 mm brain); in 3D a coarser copy of the fixed grid (at most ``max_voxels``
voxels, ~1 M by default, about 30 ms for a linear map), whose affine lines it up with the
fixed image. When the run ends, :meth:`LiveOverlay.show_final` swaps in the
full-resolution warp on the fixed grid, computed by the worker thread right after the
optimiser (:func:`warp_volume`), so the GUI thread never warps a whole volume.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.image import Volume
from ..core.preview import preview_of
from ..core.transforms.base import Transform
from ..display_grid import axis_aligned_grid, display_copy
from ._final_warp import warp_volume
from ._grid_warp import LIVE_MAP_STEP, coarse_grid, warp_to_grid
from ._live_planes import PlaneCanvas, plane_grids, plane_map_step

__all__ = ["coarse_grid", "warp_to_grid", "warp_volume", "LiveOverlay", "LIVE_MAP_STEP"]

# CPU priority of the overlay's warp thread (Linux nice, higher = lower priority): on a
# busy machine the preview yields to the optimiser and to the GUI thread instead of
# slowing the run and the event loop (benchmarks/bench_responsiveness.py, 2 cores).
WARP_THREAD_NICE = 5


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


def _redraw_pixels(layer: Any) -> None:
    """Show new values of the array ``layer`` already holds (the plane canvas, written
    in place): a re-slice only. Setting ``layer.data`` would also recompute the viewer's
    dims and extent and the layer's thumbnail, ~20 ms of the GUI thread per frame."""
    try:
        layer.refresh(thumbnail=False, extent=False, highlight=False)
    except TypeError:  # napari without refresh flags
        layer.refresh()


@dataclass
class _Frame:
    """One finished live frame (warp thread -> GUI thread): a coarse whole volume
    ``data`` on the grid ``affine``, or ``planes`` ``(axis, index, plane)`` of the
    display grid (see :mod:`._live_planes`); ``seconds`` it took."""

    data: np.ndarray | None
    affine: np.ndarray
    seconds: float
    planes: list[tuple[int, int, np.ndarray]] | None = None


def _render(moving: Volume, transform: Transform, shape: tuple[int, ...],
            grid_affine: np.ndarray, focus: tuple[int | None, ...] | None = None) -> _Frame:
    """The frame of ``transform``: the coarse grid ``(shape, grid_affine)``, or with
    ``focus`` (a voxel of that grid, then the full display grid) its orthogonal planes."""
    start = time.perf_counter()
    if focus is None:
        data = warp_to_grid(moving, transform, shape, grid_affine, map_step=LIVE_MAP_STEP)
        return _Frame(data, grid_affine, time.perf_counter() - start)
    step = plane_map_step(grid_affine, LIVE_MAP_STEP)
    planes = [(axis, focus[axis], warp_to_grid(moving, transform, plane_shape, plane_affine,
                                               map_step=step))
              for axis, plane_shape, plane_affine in plane_grids(shape, grid_affine, focus)]
    return _Frame(None, grid_affine, time.perf_counter() - start, planes)


def _display_reference(fixed: Volume) -> Volume:
    """``fixed`` itself when napari shows it as is, else an empty volume on the
    axis-aligned grid it is shown on (:func:`napari_reg.display_grid.axis_aligned_grid`)."""
    shape, affine = axis_aligned_grid(fixed)
    if tuple(shape) == tuple(fixed.shape) and np.allclose(affine, fixed.affine):
        return fixed
    return Volume(np.broadcast_to(np.float32(0), shape), affine, "display grid")


class LiveOverlay:
    """An Image layer showing the moving image warped by the latest transform.

    Only :meth:`request` and :meth:`poll` are called during a run, both from the GUI
    thread; the warp itself runs on a private single worker thread (scipy releases the
    GIL), and only the newest requested transform is ever computed, so a slow machine
    drops intermediate frames instead of queueing them.

    Adaptive resolution: when a warp takes longer than ``target_seconds`` (the optimiser
    shares the CPU), the coarse grid shrinks (never below ``min_voxels``) so the overlay
    keeps about ``1 / target_seconds`` updates per second rather than lagging.

    Pacing: a new warp starts at most every ``min_interval_s`` (default 1/15 s), so the
    overlay takes a bounded share of the CPU it shares with the optimiser, and
    ``on_ready`` (if given) is called from the warp thread as soon as a warp is done:
    the caller should then call :meth:`poll` on the GUI thread (e.g. through a queued
    Qt signal) instead of waiting for its next timer tick.
    """

    def __init__(self, viewer: Any, fixed: Volume, moving: Volume, name: str = "warped (live)",
                 max_voxels: int = 1_000_000, layer_kwargs: dict | None = None,
                 target_seconds: float = 0.07, min_voxels: int = 150_000,
                 min_interval_s: float = 1.0 / 15.0,
                 on_ready: Callable[[], None] | None = None,
                 focus: Callable[[Volume], tuple[int, ...] | None] | None = None):
        self.viewer = viewer
        self.fixed = fixed
        self.moving = moving
        self.name = name
        # frames go on the axis-aligned grid the fixed image is shown on: napari draws a
        # layer whose affine is oblique without its out-of-plane rotation (display_grid)
        self.display_reference = _display_reference(fixed)
        self.shape, self.grid_affine = coarse_grid(self.display_reference, max_voxels)
        self.target_seconds = target_seconds
        self.min_voxels = min(min_voxels, max_voxels)
        self._layer_kwargs = dict(layer_kwargs or {})
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-reg-warp",
                                            initializer=_background_priority)
        self._pending: Future | None = None
        self._latest: Transform | None = None
        self._requested: Transform | None = None  # the last transform asked for
        # ``focus(display_reference)``: the display-grid voxel on screen in a 2D view
        # (frames are then its planes at full resolution, see _live_planes) or None
        self._focus = focus
        self._latest_focus: tuple[int, ...] | None = None
        self._canvas: PlaneCanvas | None = None
        self.min_interval_s = float(min_interval_s)
        self._on_ready = on_ready
        self._last_start = -np.inf  # when the last warp started (warp thread)
        self._lock = threading.Lock()  # _latest is swapped by the GUI and the warp thread
        self.n_updates = 0  # arrays shown so far (tests and the status line read it)
        self.layer = None

    # ------------------------------------------------------------------ run-time API
    def request(self, transform: Transform) -> None:
        """Ask for the overlay to show ``transform`` (fixed->moving); cheap, non-blocking.

        A transform with a cheap display approximation (a SyN snapshot, see
        :mod:`napari_reg.core.preview`) is drawn through that approximation.
        """
        self._requested = transform
        focus = self._focus(self.display_reference) if self._focus is not None else None
        with self._lock:
            self._latest, self._latest_focus = preview_of(transform), focus
        if self._pending is None:
            self._submit()

    def refocus(self) -> None:
        """The view moved (another slice, 2D/3D): draw the last requested transform
        again for what is on screen now, without waiting for the optimiser's next state."""
        if self._requested is not None:
            self.request(self._requested)

    def _submit(self) -> None:
        """Queue one warp of the newest request; it waits out the pacing interval first."""
        if self._latest is None:
            return
        delay = self._last_start + self.min_interval_s - time.perf_counter()
        self._pending = future = Future()
        self._executor.submit(self._resolve, future, delay, self.shape, self.grid_affine)

    def _resolve(self, future: Future, delay: float, shape: tuple[int, ...],
                 grid_affine: np.ndarray) -> None:
        """Warp thread: settle ``future``, then call ``on_ready`` from this thread.

        Not ``add_done_callback``: when the warp finishes before the callback is added,
        that runs the callback on the GUI thread instead.
        """
        if not future.set_running_or_notify_cancel():
            return  # closed while queued
        try:
            future.set_result(self._warp_newest(delay, shape, grid_affine))
        except BaseException as exc:  # re-raised on the GUI thread by poll()
            future.set_exception(exc)
        if self._on_ready is not None:
            self._on_ready()

    def _warp_newest(self, delay: float, shape: tuple[int, ...], grid_affine: np.ndarray
                     ) -> _Frame | None:
        """Warp thread: wait ``delay`` s, then warp whatever transform is newest *now*
        (requests that arrive while waiting are not lost, older ones are skipped)."""
        if delay > 0:
            time.sleep(delay)
        with self._lock:
            transform, self._latest, focus = self._latest, None, self._latest_focus
        if transform is None:
            return None
        self._last_start = time.perf_counter()
        if focus is not None:  # planes of the full-resolution display grid
            reference = self.display_reference
            return _render(self.moving, transform, reference.shape, reference.affine, focus)
        return _render(self.moving, transform, shape, grid_affine)

    def poll(self) -> bool:
        """Show a finished warp if there is one (GUI thread). True when the layer changed.

        Call it on every timer tick and when ``on_ready`` fires.
        """
        if self._pending is None:
            self._submit()
            return False
        if not self._pending.done():
            return False
        future, self._pending = self._pending, None
        finished = future.result()  # re-raises a failed warp here
        if finished is None:
            self._submit()
            return False
        n = int(np.prod(self.shape))
        if finished.planes is None and finished.seconds > self.target_seconds and \
                n > self.min_voxels:
            budget = max(self.min_voxels, int(n * 0.8 * self.target_seconds / finished.seconds))
            self.shape, self.grid_affine = coarse_grid(self.display_reference, budget)
        # queue the next warp (if a newer transform waits) *before* this frame is put on
        # screen: the warp thread works while the GUI thread updates the layer and the
        # window repaints, instead of the two taking turns (frames/s on a busy machine)
        self._submit()
        self._show_frame(finished)
        return True

    def _show_frame(self, frame: _Frame) -> None:
        """Put a finished frame on screen (GUI thread): planes go into the canvas."""
        if frame.planes is None:
            self._show(frame.data, frame.affine)
            return
        if self._canvas is None:
            self._canvas = PlaneCanvas(self.display_reference.shape)
        self._show(self._canvas.write(frame.planes), frame.affine)

    def _show(self, data: np.ndarray, affine: np.ndarray) -> None:
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            kwargs = dict(self._layer_kwargs)
            kwargs.setdefault("colormap", "magenta")
            kwargs.setdefault("blending", "additive")
            self.layer = self.viewer.add_image(data, name=self.name, affine=affine, **kwargs)
        elif data.shape != layer.data.shape or not np.allclose(layer.affine.affine_matrix,
                                                                 affine):
            # new grid: data first so the layer never shows old data at a new place
            layer.data = data
            layer.affine = affine
        elif data is layer.data:
            _redraw_pixels(layer)
        else:
            layer.data = data
        self.n_updates += 1

    def show_final(self, warped: Volume) -> None:
        """Replace the coarse overlay with the full-resolution warp (on the fixed grid).

        ``warped`` is computed off the GUI thread (see :func:`warp_volume`); only the swap
        happens here, so the viewer does not freeze on a large image. On an oblique fixed
        grid it is shown resliced onto the axis-aligned display grid (one resample).
        """
        self._latest = None
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        shown = display_copy(warped)
        self._show(np.asarray(shown.data, dtype=np.float32), shown.affine)

    def close(self) -> None:
        """Stop the background thread (pending work is dropped)."""
        self._latest = self._requested = None
        self._executor.shutdown(wait=False, cancel_futures=True)
