"""The live warped overlay: moving(T(x)) resampled onto (a coarse copy of) the fixed grid.

Why resample instead of moving the layer: napari does not slice a layer whose affine
rotates out of the viewed plane (napari issue #7310), so setting the moving layer's
affine is only right for in-plane motion. The overlay layer lives on the FIXED grid, so
every view (axial, coronal, sagittal, 3D) shows the correct warped moving image.

Speed: during a run each frame is computed off the GUI thread at a lower CPU priority
(in a frame process of its own for a registration run: :mod:`._frame_pump`), at most
~13 times a second, and the GUI thread only swaps the finished frame in (``poll``). In
a 2D view a frame is the three orthogonal planes through the current point at the
display grid's full resolution (``focus``, :mod:`._live_planes`: ~130 k
voxels for a 1 mm brain); in 3D a coarser copy of the fixed grid (at most ``max_voxels``
voxels, ~1 M by default, about 30 ms for a linear map), whose affine lines it up with the
fixed image. When the run ends, :meth:`LiveOverlay.show_final` swaps in the
full-resolution warp on the fixed grid, computed by the worker thread right after the
optimiser (:func:`warp_volume`), so the GUI thread never warps a whole volume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.image import Volume
from ..core.preview import preview_of
from ..core.transforms.base import Transform
from ..display_grid import axis_aligned_grid, display_copy
from ._final_warp import warp_volume
from ._frame_pump import FramePump
from ._frame_render import Frame, FrameRequest
from ._grid_warp import LIVE_MAP_STEP, coarse_grid, warp_to_grid
from ._live_planes import PlaneCanvas

__all__ = ["coarse_grid", "warp_to_grid", "warp_volume", "LiveOverlay", "LIVE_MAP_STEP"]


def _redraw_pixels(layer: Any) -> None:
    """Show new values of the array ``layer`` already holds (the plane canvas, written
    in place): a re-slice only. Setting ``layer.data`` would also recompute the viewer's
    dims and extent and the layer's thumbnail, ~20 ms of the GUI thread per frame.

    The layer list is not told: it repaints the layer's row, and with it the main
    window, on any event of a layer it relays (~20 ms of software OpenGL per frame,
    benchmarks/bench_responsiveness.py), and nothing it shows changed. The canvas
    listens to ``set_data`` itself and still gets it."""
    with layer.events.set_data.blocker(layer.events):  # the relay to the layer list
        try:
            layer.refresh(thumbnail=False, extent=False, highlight=False)
        except TypeError:  # napari without refresh flags
            layer.refresh()


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
    thread; frames are computed off the GUI thread (:class:`._frame_pump.FramePump`,
    with ``frames_in_process`` in a process of their own), and only the newest requested
    transform is ever drawn, so a slow machine drops intermediate frames instead of
    queueing them.

    Adaptive resolution: when a warp takes longer than ``target_seconds`` (the optimiser
    shares the CPU), the coarse grid shrinks (never below ``min_voxels``) so the overlay
    keeps about ``1 / target_seconds`` updates per second rather than lagging.

    Pacing: a new warp starts at most every ``min_interval_s`` (default 1/15 s), so the
    overlay takes a bounded share of the CPU it shares with the optimiser, and
    ``on_ready`` (if given) is called from the frame thread as soon as a warp is done:
    the caller should then call :meth:`poll` on the GUI thread (e.g. through a queued
    Qt signal) instead of waiting for its next timer tick.
    """

    def __init__(self, viewer: Any, fixed: Volume, moving: Volume, name: str = "warped (live)",
                 max_voxels: int = 1_000_000, layer_kwargs: dict | None = None,
                 target_seconds: float = 0.07, min_voxels: int = 150_000,
                 min_interval_s: float = 1.0 / 15.0,
                 on_ready: Callable[[], None] | None = None,
                 focus: Callable[[Volume], tuple[int, ...] | None] | None = None,
                 frames_in_process: bool = False):
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
        self._requested: Transform | None = None  # the last transform asked for
        # ``focus(display_reference)``: the display-grid voxel on screen in a 2D view
        # (frames are then its planes at full resolution, see _live_planes) or None
        self._focus = focus
        self._canvas: PlaneCanvas | None = None
        # frames computed off the GUI thread, in a process of their own when asked for
        # (no wait for the GIL while napari repaints: _frame_pump)
        self._pump = FramePump(moving, min_interval_s, on_ready, frames_in_process)
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
        if focus is not None:  # planes of the full-resolution display grid
            reference = self.display_reference
            request = FrameRequest(preview_of(transform), reference.shape, reference.affine,
                                   focus)
        else:
            request = FrameRequest(preview_of(transform), self.shape, self.grid_affine)
        self._pump.put(request)

    def refocus(self) -> None:
        """The view moved (another slice, 2D/3D): draw the last requested transform
        again for what is on screen now, without waiting for the optimiser's next state."""
        if self._requested is not None:
            self.request(self._requested)

    @property
    def pending(self) -> bool:
        """A requested frame is not on screen yet (it waits, is computed, or waits for
        :meth:`poll`)."""
        return self._pump.pending

    def wait_frame(self, timeout: float) -> bool:
        """Block until a finished frame waits for :meth:`poll` (True), or none will come,
        or ``timeout`` s passed (False). For scripts and tests; never the GUI thread."""
        return self._pump.wait(timeout)

    def poll(self) -> bool:
        """Show a finished frame if there is one (GUI thread). True when the layer changed.

        Call it on every timer tick and when ``on_ready`` fires.
        """
        finished = self._pump.take()  # re-raises a failed warp here
        if finished is None:
            return False
        n = int(np.prod(self.shape))
        if finished.planes is None and finished.seconds > self.target_seconds and \
                n > self.min_voxels:
            budget = max(self.min_voxels, int(n * 0.8 * self.target_seconds / finished.seconds))
            self.shape, self.grid_affine = coarse_grid(self.display_reference, budget)
        self._show_frame(finished)
        return True

    def _show_frame(self, frame: Frame) -> None:
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
        self._requested = None
        self._pump.discard()  # a frame in progress or unshown would undo the swap
        shown = display_copy(warped)
        self._show(np.asarray(shown.data, dtype=np.float32), shown.affine)

    def close(self) -> None:
        """Stop the frame thread and the frame process (pending work is dropped; the
        process goes back to its pool once a frame in progress is done)."""
        self._requested = None
        self._pump.close()
