"""What the "warped (live)" layer shows during and after a registration run.

During a run it follows the optimiser through a :class:`~.overlay.LiveOverlay` (coarse
warps on a background thread, paced). When the run ends the layer shows:

* DONE: the run's exact full-resolution warp (computed on the worker thread);
* STOPPED / FAILED / an input removed: the *last valid result*, i.e. the session's kept
  outcome, which QC and Export use too; with no kept outcome, no live layer at all and
  the original moving image.

So the screen never shows a half-finished, half-resolution partial warp as if it were
a result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_error

from ..core.engine.events import EventKind
from ..core.image import Volume
from ..runs.service import warm_up_service
from ._live_planes import focus_index, sliced_axes
from ._register_settings import LIVE_LAYER_NAME
from .overlay import LiveOverlay

__all__ = ["LiveRunView", "FRAME_INTERVAL_S"]

# Live frames at most 13 a second: >= 10 refreshes/s with slack for the ticker's 40 ms
# steps, while every frame costs a repaint of the whole window (software OpenGL under
# Xvfb: ~50 ms CPU; benchmarks/bench_responsiveness).
FRAME_INTERVAL_S = 1.0 / 13.0


def warped_style(moving_layer: Any) -> dict[str, Any]:
    """Layer settings of the warped moving image: magenta over the fixed image."""
    return {"colormap": "magenta", "blending": "additive",
            "opacity": float(moving_layer.opacity),
            "contrast_limits": tuple(moving_layer.contrast_limits)}


class LiveRunView:
    """The live layer's life cycle for one Register panel (GUI thread only)."""

    def __init__(self, viewer: Any, session: Any):
        self._viewer = viewer
        self._session = session
        self.overlay: LiveOverlay | None = None
        self.after = True  # show the warped image (True) or the original moving (False)
        warm_up_service()  # the process live frames are drawn in (overlay.py)

    def existing_layer(self) -> Any:
        for lyr in self._viewer.layers:
            if lyr.name == LIVE_LAYER_NAME:
                return lyr
        return None

    # ------------------------------------------------------------------ during a run
    def begin(self, fixed: Volume, moving: Volume, moving_layer: Any, max_voxels: int,
              on_ready: Any) -> None:
        """A run starts with the live view on: prepare an overlay (its layer appears with
        the first frame, or reuses the previous run's layer)."""
        self.close()
        # in a 2D view the frames are the planes on screen at full resolution
        self.overlay = LiveOverlay(self._viewer, fixed, moving, name=LIVE_LAYER_NAME,
                                   max_voxels=max_voxels, layer_kwargs=warped_style(moving_layer),
                                   on_ready=on_ready, min_interval_s=FRAME_INTERVAL_S,
                                   focus=self._focus, frames_in_process=True)
        self.overlay.layer = existing = self.existing_layer()
        # another slice or 2D/3D: redraw the current state there at once (SyN's states
        # come ~2 s apart on a busy machine)
        for event in self._dims_events():
            event.connect(self._view_moved)
        if existing is not None:  # a previous run's layer: show this moving image's range
            existing.contrast_limits = tuple(moving_layer.contrast_limits)

    def _dims_events(self) -> list[Any]:
        """Another slice, 2D/3D, or another slicing axis: the planes on screen change."""
        dims = self._viewer.dims.events
        return [dims.current_step, dims.ndisplay, dims.order]

    def _view_moved(self, _event: Any = None) -> None:
        if self.overlay is not None:
            self.overlay.refocus()

    def _focus(self, grid: Volume) -> tuple[int | None, ...] | None:
        """The display-grid voxel of the planes on screen (None for an axis whose plane no
        view shows: one plane in a single 2D view, three with the ortho views)."""
        index = focus_index(self._viewer, grid.shape, grid.affine)
        if index is None or getattr(self._session, "ortho_views", False):
            return index
        shown = sliced_axes(self._viewer, grid.affine)
        return tuple(i if a in shown else None for a, i in enumerate(index))

    def request(self, events: list) -> None:
        """Draw the newest transform of a batch (cheap: the warp runs elsewhere)."""
        # "done" carries the final map, whose exact full-resolution warp arrives with the
        # end of the run anyway (and a deformable one has no cheap preview); a worker
        # process sends most events without a transform (runs/worker_main.py)
        newest = next((ev for ev in reversed(events)
                       if ev.kind != EventKind.DONE and ev.transform is not None), None)
        if self.overlay is not None and newest is not None:
            self.overlay.request(newest.transform)

    def poll(self) -> bool:
        """Show a finished overlay frame if there is one; True when the layer changed."""
        if self.overlay is None:
            return False
        try:
            if not self.overlay.poll():
                return False
            first = self._session.warped_layer is not self.overlay.layer
            self._session.warped_layer = self.overlay.layer
            if first:  # show the live result instead of the original moving image
                self.show_after(self.after)
            return True
        except Exception as exc:  # noqa: BLE001 - a failed preview must not stop the run
            show_error(f"Live overlay failed and is switched off: {exc}")
            self.close()
            return False

    # ------------------------------------------------------------------ after a run
    def show_result(self, warped: Volume, moving_layer: Any, fixed: Volume,
                    moving: Volume) -> None:
        """The run succeeded: its exact warp replaces the live frames."""
        overlay = self.overlay
        if overlay is None:
            overlay = LiveOverlay(self._viewer, fixed, moving, name=LIVE_LAYER_NAME,
                                  layer_kwargs=warped_style(moving_layer))
            overlay.layer = self.existing_layer()
        overlay.show_final(warped)
        self._session.warped_layer = overlay.layer
        if overlay is self.overlay:
            self.close()
        else:
            overlay.close()
        self.show_after(self.after)

    def show_last_valid(self) -> None:
        """The run did not succeed: show the kept outcome, or no live layer at all."""
        self.close()
        outcome, layer = self._session.outcome, self.existing_layer()
        if outcome is None:
            if layer is not None:
                self._viewer.layers.remove(layer)
            self._session.warped_layer = None
            moving = self._session.moving_layer
            if moving is not None and moving in self._viewer.layers:
                moving.visible = True
            return
        warped = outcome.warped
        if layer is None:
            style = (warped_style(self._session.moving_layer)
                     if self._session.moving_layer is not None else {})
            layer = self._viewer.add_image(np.asarray(warped.data, dtype=np.float32),
                                           name=LIVE_LAYER_NAME, affine=warped.affine, **style)
        elif layer.data is not warped.data:  # data first: old data never at a new place
            layer.data = np.asarray(warped.data, dtype=np.float32)
            layer.affine = warped.affine
        self._session.warped_layer = layer
        self.show_after(self.after)

    def show_after(self, after: bool) -> None:
        """Toggle between the warped (after) and the original moving image (before)."""
        self.after = bool(after)
        warped, moving = self._session.warped_layer, self._session.moving_layer
        if warped is None or warped not in self._viewer.layers:
            return
        warped.visible = self.after
        if moving is not None and moving in self._viewer.layers:
            moving.visible = not self.after

    def close(self) -> None:
        """Drop the overlay's background thread (pending frames are discarded)."""
        if self.overlay is not None:
            self.overlay.close()
            for event in self._dims_events():
                event.disconnect(self._view_moved)
        self.overlay = None
