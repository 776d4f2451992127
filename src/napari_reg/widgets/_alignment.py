"""The "current alignment" shared by the manual and landmark panels (one per viewer).

Where it lives: beside the moving image layer, as the world->world motion it is shown
moved by (``metadata[SHOWN_MOTION_KEY]``, see
:func:`napari_reg.widgets._layer_volumes.placed_affine`), relative to where its file puts
it. The Register panel reads it for its "Current manual alignment" initialisation
(:func:`napari_reg.widgets._layer_volumes.manual_initial`): a fixed->moving world matrix
``T`` is stored as showing the moving image at ``S_f T^-1 A_file`` (``S_f`` = any
hand-made move of the fixed layer), so ``manual_initial(fixed, moving) == T`` and a
registration started from it begins exactly where the user left the images.

Why not in the layer's ``affine``, and why an overlay: napari does not slice a layer
whose affine rotates out of the viewed plane (napari #7310: it warns and draws the slice
in the wrong place), so the moving layer keeps its axis-aligned affine and is hidden
while the alignment is not the identity; the moving image resampled onto the fixed
image's axis-aligned display grid by :class:`napari_reg.widgets.overlay.LiveOverlay` is
shown instead: right in every view. Landmark layers follow on screen through
:func:`~napari_reg.widgets._layer_volumes.display_to_world`.

A non-linear alignment (a thin-plate spline from landmarks) is previewed through the
overlay; the moving layer (and a registration's initialisation) get its affine part.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..core.transforms.base import MatrixTransform, Transform
from ._layer_volumes import (
    SHOWN_MOTION_KEY,
    file_affine,
    layer_affine,
    layer_volume,
    manual_initial,
    placed_affine,
)
from ._session import get_session, unwrap_viewer
from .overlay import LiveOverlay

__all__ = ["Alignment", "get_alignment", "ALIGNMENT_LAYER_NAME", "request_manual_init"]

ALIGNMENT_LAYER_NAME = "warped (alignment)"
_POLL_MS = 40  # overlay refresh while the user drags: 25 Hz at most


def _is_identity(matrix: np.ndarray) -> bool:
    return bool(np.allclose(matrix, np.eye(matrix.shape[0]), atol=1e-9))


class Alignment:
    """The current fixed->moving alignment of the session's images, with its overlay.

    Signal ``changed(transform)`` after every :meth:`set` (the Transform maps fixed
    world RAS mm -> moving world RAS mm, file affines of both images).
    """

    changed = Signal(object)

    def __init__(self, viewer: Any):
        self._viewer_ref = weakref.ref(viewer)
        self.session = get_session(viewer)
        self._nonlinear: Transform | None = None  # a spline shown instead of the matrix
        self.overlay: LiveOverlay | None = None
        self._overlay_key: tuple | None = None
        self.show_overlay = True
        self._overlay_wanted = False  # False: a late warp must not re-show the overlay
        self.max_voxels = 1_000_000
        self._timer = QTimer()
        self._timer.setInterval(_POLL_MS)
        self._timer.timeout.connect(self.poll)
        self.session.roles_changed.connect(self._drop_overlay)
        self.session.result_changed.connect(self._on_result)

    # ------------------------------------------------------------------ state
    @property
    def viewer(self) -> Any:
        return self._viewer_ref()

    def layers(self) -> tuple[Any, Any]:
        """``(fixed_layer, moving_layer)``; ValueError with a user message if unset."""
        f, m = self.session.fixed_layer, self.session.moving_layer
        if f is None or m is None:
            raise ValueError("Choose a fixed and a moving image in the Load panel first.")
        if f is m:
            raise ValueError("The fixed and the moving image are the same layer.")
        if f.ndim != m.ndim:
            raise ValueError(f"The fixed image '{f.name}' is {f.ndim}D but the moving image "
                             f"'{m.name}' is {m.ndim}D; both must be 2D or both 3D.")
        return f, m

    @property
    def matrix(self) -> np.ndarray:
        """The linear alignment (fixed world -> moving world, homogeneous), read from the
        layers (identity when nothing was moved)."""
        f, m = self.layers()
        return manual_initial(f, m)

    @property
    def transform(self) -> Transform:
        """The whole current alignment (a spline if one is shown, else the matrix)."""
        return self._nonlinear if self._nonlinear is not None else MatrixTransform(self.matrix)

    def set(self, transform: Transform | np.ndarray) -> None:
        """Make ``transform`` (fixed world RAS mm -> moving world RAS mm) the alignment.

        Linear: stored in the moving layer's displayed affine. Non-linear (must expose an
        ``affine_matrix``): its affine part is stored there, the whole map is previewed.
        """
        if isinstance(transform, np.ndarray):
            transform = MatrixTransform(transform)
        if transform.is_linear:
            matrix, self._nonlinear = np.asarray(transform.matrix), None  # type: ignore[attr-defined]
        else:
            matrix, self._nonlinear = np.asarray(transform.affine_matrix), transform  # type: ignore[attr-defined]
        fixed_layer, moving_layer = self.layers()
        for layer in (fixed_layer, moving_layer):
            # a layer not read by our reader: its current placement becomes "the file's"
            layer.metadata.setdefault("original_affine", layer_affine(layer))
        s_fixed = placed_affine(fixed_layer) @ np.linalg.inv(file_affine(fixed_layer))
        shown = s_fixed @ np.linalg.inv(matrix) @ file_affine(moving_layer)
        motion = shown @ np.linalg.inv(layer_affine(moving_layer))
        if _is_identity(motion):
            moving_layer.metadata.pop(SHOWN_MOTION_KEY, None)
        else:  # kept beside the layer's affine: napari cannot slice a rotated layer
            moving_layer.metadata[SHOWN_MOTION_KEY] = motion
        self.refresh_overlay()
        self.changed.emit(self.transform)

    def reset(self) -> None:
        """Back to the images as their files place them (identity alignment)."""
        f, _ = self.layers()
        self.set(np.eye(layer_affine(f).shape[0]))

    # ------------------------------------------------------------------ overlay
    def _on_result(self, outcome: Any) -> None:
        """A registration finished: its own overlay shows the result, hide ours."""
        if outcome is not None and self.overlay is not None and self.overlay.layer is not None:
            self._overlay_wanted = False
            self.overlay.layer.visible = False

    def _drop_overlay(self) -> None:
        if self.overlay is not None:
            self.overlay.close()
        self.overlay, self._overlay_key = None, None

    def _ensure_overlay(self) -> LiveOverlay:
        f, m = self.layers()
        key = (id(f), id(m), id(f.data), id(m.data))
        if self.overlay is None or self._overlay_key != key:
            self._drop_overlay()
            fixed = layer_volume(f, use_file_affine=True)
            moving = layer_volume(m, use_file_affine=True)
            style = {"colormap": "magenta", "blending": "additive", "opacity": float(m.opacity),
                     "contrast_limits": tuple(m.contrast_limits)}
            self.overlay = LiveOverlay(self.viewer, fixed, moving, name=ALIGNMENT_LAYER_NAME,
                                       max_voxels=self.max_voxels, layer_kwargs=style)
            self.overlay.layer = next((lyr for lyr in self.viewer.layers
                                       if lyr.name == ALIGNMENT_LAYER_NAME), None)
            self._overlay_key = key
        return self.overlay

    def refresh_overlay(self) -> None:
        """Show the moving image warped by the current alignment (or the plain moving
        layer when the alignment is the identity or the overlay is switched off)."""
        _, moving_layer = self.layers()
        identity = self._nonlinear is None and _is_identity(self.matrix)
        use_overlay = self.show_overlay and not identity
        self._overlay_wanted = use_overlay
        if use_overlay:
            self._ensure_overlay().request(self.transform)
            self._timer.start()
        elif self.overlay is not None and self.overlay.layer is not None:
            self.overlay.layer.visible = False
        moving_layer.visible = not use_overlay

    def poll(self) -> bool:
        """Swap a finished overlay warp in (GUI thread); True when the layer changed."""
        overlay, viewer = self.overlay, self.viewer
        f, m = self.session.fixed_layer, self.session.moving_layer
        if overlay is None or viewer is None or f not in viewer.layers or m not in viewer.layers:
            # the images (or the viewer) went away: never add a layer to a closing viewer
            self._timer.stop()
            self._drop_overlay()
            return False
        changed = overlay.poll()
        if changed and overlay.layer is not None:
            overlay.layer.visible = self._overlay_wanted
        if not overlay.pending:  # idle: stop polling
            self._timer.stop()
        return changed

    def wait(self, timeout: float = 5.0) -> None:
        """Block until the pending overlay warp is shown (scripts and tests)."""
        import time

        end = time.monotonic() + timeout
        while self.overlay is not None and self.overlay.pending:
            if time.monotonic() > end:
                raise TimeoutError("the alignment overlay did not update in time")
            self.overlay.wait_frame(max(0.0, end - time.monotonic()))
            self.poll()


_ALIGNMENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_alignment(viewer: Any) -> Alignment:
    """The alignment of ``viewer`` (created on first use)."""
    viewer = unwrap_viewer(viewer)
    alignment = _ALIGNMENTS.get(viewer)
    if alignment is None:
        alignment = Alignment(viewer)
        _ALIGNMENTS[viewer] = alignment
    return alignment


def request_manual_init(viewer: Any) -> bool:
    """Ask the Register panel to start from "Current manual alignment" (through the
    session's ``init_requested`` signal). True if a Register panel is listening."""
    return get_session(viewer).request_init("manual")
