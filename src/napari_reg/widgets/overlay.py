"""The live warped overlay: moving(T(x)) resampled onto (a coarse copy of) the fixed grid.

Why resample instead of moving the layer: napari does not slice a layer whose affine
rotates out of the viewed plane (napari issue #7310), so setting the moving layer's
affine is only right for in-plane motion. The overlay layer lives on the FIXED grid, so
every view (axial, coronal, sagittal, 3D) shows the correct warped moving image.

Speed: during a run the warp goes to a coarser copy of the fixed grid (at most
``max_voxels`` voxels, ~1 M by default, about 30 ms for a linear map) computed on a
single background thread at a lower CPU priority, at most ~15 times a second; the GUI
thread only swaps the finished array in (``poll``).
The layer's affine is the coarse grid's voxel->world affine, so it lines up with the
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
from typing import Any

import numpy as np
from scipy import ndimage

from ..core.image import Volume
from ..core.preview import affine_points, preview_of
from ..core.resample import resample
from ..core.transforms.base import Transform
from ..core.transforms.field import DisplacementField
from ..display_grid import axis_aligned_grid, display_copy

__all__ = ["coarse_grid", "warp_to_grid", "warp_volume", "LiveOverlay", "LIVE_MAP_STEP"]

# Live preview of a non-linear map: evaluate T on every 2nd coarse voxel per axis (1/8
# of the points in 3D) and interpolate; see _warp_sampled_map.
LIVE_MAP_STEP = 2


def coarse_grid(reference: Volume, max_voxels: int = 1_000_000) -> tuple[tuple[int, ...],
                                                                           np.ndarray]:
    """A grid covering ``reference``'s extent with at most ``max_voxels`` voxels.

    Returns ``(shape, affine)``: ``affine`` maps coarse voxel indices to world RAS mm.
    The first and last coarse voxel centres coincide with the reference's, so the
    coarse grid spans exactly the same box. The finest axes (smallest mm spacing) are
    coarsened first, so anisotropic volumes become closer to isotropic.
    """
    shape = np.asarray(reference.shape, dtype=int)
    spacing = reference.spacing
    factor = np.ones(len(shape))
    out = shape.copy()
    while np.prod(out) > max_voxels:
        # coarsen the axis whose coarse spacing is currently smallest
        axis = int(np.argmin(spacing * factor + (out <= 2) * 1e9))
        if out[axis] <= 2:
            break
        factor[axis] += 1
        out = np.maximum(np.ceil(shape / factor).astype(int), 2)
        out = np.minimum(out, shape)
    step = np.where(out > 1, (shape - 1) / np.maximum(out - 1, 1), 1.0)
    scale = np.eye(len(shape) + 1)
    scale[: len(shape), : len(shape)] = np.diag(step)
    return tuple(int(v) for v in out), reference.affine @ scale


def warp_to_grid(moving: Volume, transform: Transform, shape: tuple[int, ...],
                 grid_affine: np.ndarray, order: int = 1, map_step: int = 1) -> np.ndarray:
    """``moving(T(x))`` for every voxel centre x of the grid ``(shape, grid_affine)``.

    ``transform`` maps fixed world RAS mm -> moving world RAS mm. Linear maps go through
    one ``scipy.ndimage.affine_transform`` with the combined voxel matrix
    ``inv(A_moving) @ T @ A_grid`` (grid voxel -> moving voxel); others through
    :func:`napari_reg.core.resample.resample`, or, with ``map_step > 1`` (the live
    preview), through :func:`_warp_sampled_map`. Outside the moving image: 0. float32.
    """
    d = moving.ndim
    if transform.is_linear:
        m = np.linalg.inv(moving.affine) @ np.asarray(transform.matrix) @ grid_affine
        # Snap round-off (inv(A) @ A is not exactly I): a voxel centre computed as -1e-15
        # would fall "outside" and show as the fill value along the edges.
        nearest = np.round(m)
        m = np.where(np.abs(m - nearest) < 1e-9, nearest, m)
        # integer inputs work with a float32 output: no per-frame conversion copy
        data = moving.data if moving.data.dtype != bool else moving.data.view(np.uint8)
        return ndimage.affine_transform(data, m[:d, :d], offset=m[:d, d], output_shape=shape,
                                        order=order, mode="constant", cval=0.0,
                                        output=np.float32, prefilter=False)
    if map_step > 1 and min(shape) > 2 * map_step:
        return _warp_sampled_map(moving, transform, shape, grid_affine, order, map_step)
    from ..core.resample import resample

    reference = Volume(np.zeros(shape, dtype=np.uint8), grid_affine, "grid")
    out = resample(moving, reference, transform, interpolation="linear" if order else "nearest")
    return np.asarray(out.data, dtype=np.float32)


def _warp_sampled_map(moving: Volume, transform: Transform, shape: tuple[int, ...],
                      grid_affine: np.ndarray, order: int, step: int) -> np.ndarray:
    """A fast approximate warp for smooth non-linear maps (live preview only).

    Evaluating a B-spline or velocity-field map costs microseconds per point, so T is
    evaluated on every ``step``-th grid voxel only (from the first; the last sample may
    lie just past the grid), the resulting moving-voxel coordinates are interpolated
    (linearly, separably) to every voxel, and
    the moving image is sampled there once. Registration deformations are smooth on the
    scale of a few coarse voxels, so the preview differs from the exact warp only at
    sharp edges; the final result is always warped exactly.
    """
    d = len(shape)
    # samples at voxels 0, step, 2 step, ... (the last one may lie just past the grid:
    # T is defined everywhere), so the upsampling below is exact linear interpolation
    counts = [max(2, int(np.ceil((n - 1) / step)) + 1) for n in shape]
    axes = [np.arange(m, dtype=np.float64) * step for m in counts]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)
    mapped = transform.transform_points(affine_points(grid_affine, ijk))
    # moving voxel coordinates in float32 (ample for sampling; half the memory traffic)
    coords = affine_points(np.linalg.inv(moving.affine), mapped).astype(np.float32)
    coords = np.moveaxis(coords.reshape(*counts, d), -1, 0)
    for axis, n in enumerate(shape):
        coords = _upsample_axis(coords, step, n, axis + 1)
    data = moving.data if moving.data.dtype != bool else moving.data.view(np.uint8)
    return ndimage.map_coordinates(data, coords, order=order, mode="constant", cval=0.0,
                                   output=np.float32, prefilter=False)


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


def _upsample_axis(values: np.ndarray, step: int, n: int, axis: int) -> np.ndarray:
    """Linear interpolation by an integer ``step`` along ``axis`` (samples at 0, step,
    2 step, ...), cropped to ``n``: separable and exact, cheaper than ``ndimage.zoom``."""
    a = np.moveaxis(values, axis, 0)
    out = np.empty((step * (a.shape[0] - 1) + 1,) + a.shape[1:], dtype=a.dtype)
    out[0::step] = a
    delta = a[1:] - a[:-1]
    for r in range(1, step):
        out[r::step] = a[:-1] + np.float32(r / step) * delta
    return np.moveaxis(out[:n], 0, axis)


def _timed_warp(moving: Volume, transform: Transform, shape: tuple[int, ...],
                grid_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    start = time.perf_counter()
    data = warp_to_grid(moving, transform, shape, grid_affine, map_step=LIVE_MAP_STEP)
    return data, grid_affine, time.perf_counter() - start


def warp_volume(moving: Volume, fixed: Volume, transform: Transform,
                cancel: Any = None, slab_voxels: int = 1_000_000) -> Volume:
    """The exact full-resolution warped image ``moving(T(x))`` on the fixed grid (float32).

    Safe to call on a worker thread (numpy/scipy only). A non-linear map is warped in
    slabs along the first voxel axis so that ``cancel`` (a CancelToken) is honoured
    between slabs: exact B-spline warps of a 1 mm brain take many seconds.
    """
    if cancel is not None:
        cancel.raise_if_cancelled()
    if transform.is_linear:
        data = warp_to_grid(moving, transform, fixed.shape, fixed.affine)
    elif isinstance(transform, DisplacementField) and transform.same_grid(fixed.shape,
                                                                           fixed.affine):
        # Vectors stored on the fixed grid: one resampling pass, no model evaluation.
        data = resample(moving, fixed, transform).data.astype(np.float32, copy=False)
    else:
        data = np.empty(fixed.shape, dtype=np.float32)
        per_slice = int(np.prod(fixed.shape[1:]))
        rows = max(1, slab_voxels // per_slice)
        for start in range(0, fixed.shape[0], rows):
            if cancel is not None:
                cancel.raise_if_cancelled()
            stop = min(start + rows, fixed.shape[0])
            shift = np.eye(fixed.ndim + 1)
            shift[0, fixed.ndim] = start  # slab voxel (0, j, k) is fixed voxel (start, j, k)
            data[start:stop] = warp_to_grid(moving, transform, (stop - start,) +
                                            fixed.shape[1:], fixed.affine @ shift)
    return Volume(data, fixed.affine.copy(), f"{moving.name} warped")


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
                 on_ready: Callable[[], None] | None = None):
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
        with self._lock:
            self._latest = preview_of(transform)
        if self._pending is None:
            self._submit()

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
                     ) -> tuple[np.ndarray, np.ndarray, float] | None:
        """Warp thread: wait ``delay`` s, then warp whatever transform is newest *now*
        (requests that arrive while waiting are not lost, older ones are skipped)."""
        if delay > 0:
            time.sleep(delay)
        with self._lock:
            transform, self._latest = self._latest, None
        if transform is None:
            return None
        self._last_start = time.perf_counter()
        return _timed_warp(self.moving, transform, shape, grid_affine)

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
        data, affine, seconds = finished
        self._show(data, affine)
        n = int(np.prod(self.shape))
        if seconds > self.target_seconds and n > self.min_voxels:
            budget = max(self.min_voxels, int(n * 0.8 * self.target_seconds / seconds))
            self.shape, self.grid_affine = coarse_grid(self.display_reference, budget)
        self._submit()  # queue the next one at once if a newer transform is waiting
        return True

    def _show(self, data: np.ndarray, affine: np.ndarray) -> None:
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            kwargs = dict(self._layer_kwargs)
            kwargs.setdefault("colormap", "magenta")
            kwargs.setdefault("blending", "additive")
            self.layer = self.viewer.add_image(data, name=self.name, affine=affine, **kwargs)
        else:
            if data.shape != layer.data.shape or not np.allclose(layer.affine.affine_matrix,
                                                                 affine):
                # new grid: data first so the layer never shows old data at a new place
                layer.data = data
                layer.affine = affine
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
        self._latest = None
        self._executor.shutdown(wait=False, cancel_futures=True)
