"""Hand alignment in the canvas: drag to translate, Shift-drag to rotate about the point
pressed, arrow keys to nudge (PageUp / PageDown out of the viewed plane).

While it is on, the moving image layer is the active layer with panning off (a drag moves
the image, not the camera; the mouse wheel still zooms) and carries the key bindings; it
is hidden behind the alignment overlay, which is what moves on screen. Every motion is a
rigid motion ``D`` of the world applied to the moving image as shown (world RAS mm), handed
to ``apply(D, gesture_start)``; one drag or one key press is one undo step.

Directions: napari's world axes are RAS x, y, z here (layers carry voxel->RAS affines);
in a 2D view the horizontal screen axis is the last displayed world axis and the vertical
one the one before it (rows grow downwards), so "Up" moves the image up on screen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

__all__ = ["CanvasAlignment", "plane_rotation", "translation"]

_DEG_PER_PIXEL = 0.5  # Shift-drag: degrees of rotation per screen pixel moved sideways
_KEYS = ("Left", "Right", "Up", "Down", "PageUp", "PageDown")


def translation(delta: np.ndarray) -> np.ndarray:
    """Homogeneous translation by ``delta`` (world mm)."""
    d = len(delta)
    out = np.eye(d + 1)
    out[:d, d] = delta
    return out


def plane_rotation(ndim: int, axes: tuple[int, int], angle_deg: float,
                   centre: np.ndarray) -> np.ndarray:
    """Homogeneous rotation by ``angle_deg`` in the plane of world ``axes`` about
    ``centre`` (world mm); positive turns ``axes[0]`` towards ``axes[1]``."""
    a = np.deg2rad(angle_deg)
    rot = np.eye(ndim)
    i, j = axes
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    out = np.eye(ndim + 1)
    out[:ndim, :ndim] = rot
    out[:ndim, ndim] = centre - rot @ centre
    return out


class CanvasAlignment:
    """Mouse and key handling on the moving layer; ``apply(D, start)`` moves the image.

    ``apply(motion, start)``: ``motion`` (homogeneous, world mm) is the whole motion of the
    current gesture, ``start`` True at its first step (the caller pushes one undo state
    then and composes every later step onto the state at the gesture's start).
    """

    def __init__(self, viewer: Any, apply: Callable[[np.ndarray, bool], None],
                 step_mm: Callable[[], float], keep_active: tuple[str, ...] = (),
                 on_lost: Callable[[], None] | None = None):
        self._viewer = viewer
        self._apply = apply
        self._step_mm = step_mm
        # layers that may appear while moving (the alignment preview): they must not take
        # the mouse from the moving layer; choosing any other layer ends the canvas mode
        self._keep_active = keep_active
        self._on_lost = on_lost
        self.layer: Any = None
        self.last_press: np.ndarray | None = None  # world mm of the last drag's press

    @property
    def active(self) -> bool:
        return self.layer is not None

    def start(self, moving_layer: Any) -> None:
        """Take the canvas over on ``moving_layer`` (the session's moving image)."""
        self.stop()
        self.layer = moving_layer
        # on the viewer, not the layer: a drag goes on whichever layer becomes active
        self._viewer.mouse_drag_callbacks.append(self._on_drag)
        for key in _KEYS:
            moving_layer.bind_key(key, self._key_handler(key), overwrite=True)
        moving_layer.mouse_pan = False
        self._viewer.layers.selection.active = moving_layer
        self._viewer.layers.selection.events.active.connect(self._on_active)

    def stop(self) -> None:
        layer, self.layer = self.layer, None
        if layer is None:
            return
        self._viewer.layers.selection.events.active.disconnect(self._on_active)
        if self._on_drag in self._viewer.mouse_drag_callbacks:
            self._viewer.mouse_drag_callbacks.remove(self._on_drag)
        for key in _KEYS:
            layer.bind_key(key, None, overwrite=True)
        layer.mouse_pan = True

    def _on_active(self, event: Any) -> None:
        active = getattr(event, "value", None)
        if self.layer is None or active is self.layer or active is None:
            return
        if active.name in self._keep_active:
            # a new preview layer took the selection: give it back once napari is done
            QTimer.singleShot(0, self._reactivate)
        else:
            self.stop()
            if self._on_lost is not None:
                self._on_lost()

    def _reactivate(self) -> None:
        if self.layer is not None and self.layer in self._viewer.layers:
            self._viewer.layers.selection.active = self.layer

    # ------------------------------------------------------------------ gestures
    def _plane(self) -> tuple[list[int], int | None]:
        shown = list(self._viewer.dims.displayed)[-2:]
        ndim = self._viewer.dims.ndim
        normal = next((k for k in range(ndim) if k not in self._viewer.dims.displayed), None)
        return shown, normal

    def _on_drag(self, _viewer: Any, event: Any):
        if self._viewer.dims.ndisplay != 2:
            return  # 3D views rotate the camera; hand alignment is done on slices
        event.handled = True  # the camera does not pan
        shown, _ = self._plane()
        press_world = np.asarray(event.position, dtype=float)
        self.last_press = press_world
        press_px = np.asarray(event.pos, dtype=float)
        rotate = any(m == "Shift" or getattr(m, "name", None) == "Shift"
                     for m in getattr(event, "modifiers", ()))
        first = True
        yield
        while event.type == "mouse_move":
            now_world = np.asarray(event.position, dtype=float)
            if rotate:
                # vertical axis first: turning x (right) towards rows (down) is clockwise
                angle = _DEG_PER_PIXEL * float(np.asarray(event.pos)[0] - press_px[0])
                motion = plane_rotation(len(press_world), (shown[1], shown[0]), angle,
                                        press_world)
            else:
                delta = np.zeros(len(press_world))
                delta[shown] = (now_world - press_world)[shown]
                motion = translation(delta)
            self._apply(motion, first)
            first = False
            event.handled = True
            yield

    def _key_handler(self, key: str):
        def handler(_layer: Any) -> None:
            self.nudge(key)

        return handler

    def nudge(self, key: str) -> None:
        """Move the image one step (mm) as a key press does."""
        shown, normal = self._plane()
        ndim = self._viewer.dims.ndim
        delta = np.zeros(ndim)
        step = float(self._step_mm())
        axis, sign = {"Left": (shown[1], -1), "Right": (shown[1], 1), "Up": (shown[0], -1),
                      "Down": (shown[0], 1), "PageUp": (normal, 1),
                      "PageDown": (normal, -1)}[key]
        if axis is None:
            return  # a 2D image has no out-of-plane axis
        delta[axis] = sign * step
        self._apply(translation(delta), True)
