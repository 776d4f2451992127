"""Manual alignment panel: translate (mm) and rotate (degrees) the moving image by hand.

What the sliders mean: the moving image, as shown, is moved by a rigid motion ``M`` of
the (fixed) world: ``M(z) = R (z - c) + c + t`` with ``t`` in world RAS mm, ``R = Rz Ry
Rx`` from the three angles in degrees (rotation about the world x, y, z axes, in that
order) and ``c`` the rotation centre (the moving image's centre as shown, or the cursor
position). The motion is applied on top of the alignment present when the panel last
took over (``T0``, e.g. a landmark fit), so the fixed->moving map is
``T(x) = T0(M^-1(x))``.

Changing the centre folds the current motion into ``T0`` and zeroes the sliders, so the
image never jumps. Every change is one step of undo (a slider drag counts once).
The alignment is shared (:mod:`._alignment`): it moves the moving layer (the Register
panel's "Current manual alignment") and drives the resampled overlay on the fixed grid,
right in every view including out-of-plane rotations.
"""

from __future__ import annotations

import time
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
)
from napari.utils.notifications import show_error, show_info

from ..core.image import apply_affine
from ._alignment import ALIGNMENT_LAYER_NAME, get_alignment, request_manual_init
from ._canvas_alignment import CanvasAlignment
from ._session import get_session, unwrap_viewer
from ._tooltips import apply_tooltips

__all__ = ["ManualWidget", "rigid_motion", "rotation_angles", "CENTRE_CHOICES"]

CENTRE_CHOICES = [("Moving image centre", "image"), ("Cursor position", "cursor")]
_GESTURE_SECONDS = 0.6  # slider changes closer together than this are one undo step


def rigid_motion(translation_mm: np.ndarray, angles_deg: np.ndarray,
                 center: np.ndarray) -> np.ndarray:
    """Homogeneous ``M(z) = R (z - c) + c + t`` (world mm); 3D: ``R = Rz Ry Rx`` from
    angles about x, y, z in degrees; 2D: one angle (the last)."""
    t = np.asarray(translation_mm, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    d = len(t)
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if d == 2:
        cz, sz = np.cos(a[-1]), np.sin(a[-1])
        rot = np.array([[cz, -sz], [sz, cz]])
    else:
        cx, sx, cy, sy, cz, sz = (np.cos(a[0]), np.sin(a[0]), np.cos(a[1]), np.sin(a[1]),
                                  np.cos(a[2]), np.sin(a[2]))
        rot = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
               @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
               @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    out = np.eye(d + 1)
    out[:d, :d] = rot
    out[:d, d] = c + t - rot @ c
    return out


def rotation_angles(rot: np.ndarray) -> np.ndarray:
    """Angles in degrees with ``rigid_motion``'s convention (3D: ``R = Rz Ry Rx``, angles
    about x, y, z; 2D: one angle)."""
    if rot.shape == (2, 2):
        return np.array([np.rad2deg(np.arctan2(rot[1, 0], rot[0, 0]))])
    y = np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0))
    x = np.arctan2(rot[2, 1], rot[2, 2])
    z = np.arctan2(rot[1, 0], rot[0, 0])
    return np.rad2deg(np.array([x, y, z]))


class ManualWidget(Container):
    """Sliders for a rigid hand alignment of the session's moving image."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self._session = get_session(viewer)
        self.alignment = get_alignment(viewer)
        self.translate = [FloatSlider(label=f"Translate {a} (mm)", min=-100.0, max=100.0,
                                      step=0.5, value=0.0) for a in "xyz"]
        self.rotate = [FloatSlider(label=f"Rotate about {a} (deg)", min=-180.0, max=180.0,
                                   step=0.5, value=0.0) for a in "xyz"]
        self.centre = ComboBox(label="Rotation centre", choices=CENTRE_CHOICES, value="image")
        self.centre_label = Label(value="")
        self.pick_centre = PushButton(text="Rotate about the cursor now",
                                      tooltip="Hover over the point to rotate about, then "
                                              "click here")
        self.reset_button = PushButton(text="Reset (images as loaded)")
        self.undo_button = PushButton(text="Undo")
        self.use_init = PushButton(text="Use as registration initialisation")
        self.status = Label(value="")
        self.in_canvas = CheckBox(text="Move in the canvas", value=False,
                                  tooltip="Drag: translate; Shift-drag: rotate about the "
                                          "point pressed; arrow keys: nudge; PageUp/Down: "
                                          "out of plane (2D views)")
        self.key_step = FloatSpinBox(label="Key step (mm)", min=0.1, max=20.0, step=0.5,
                                     value=1.0)
        self.extend([self.in_canvas, self.key_step, *self.translate, *self.rotate,
                     self.centre, self.centre_label, self.pick_centre,
                     Container(widgets=[self.reset_button, self.undo_button],
                               layout="horizontal", labels=False),
                     self.use_init, self.status])
        self.base = np.eye(4)
        self.center = np.zeros(3)
        self._undo: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._last_push = -np.inf
        self._updating = False
        self._pre_change = self._state()
        for w in (*self.translate, *self.rotate):
            w.changed.connect(self._on_slider)
        self.centre.changed.connect(self._on_centre)
        self.pick_centre.clicked.connect(self.centre_at_cursor)
        self.reset_button.clicked.connect(self.reset)
        self.undo_button.clicked.connect(self.undo)
        self.use_init.clicked.connect(self.use_as_initialisation)
        self.canvas = CanvasAlignment(viewer, self.apply_motion, lambda: self.key_step.value,
                                      keep_active=(ALIGNMENT_LAYER_NAME,),
                                      on_lost=lambda: setattr(self.in_canvas, "value", False))
        self.in_canvas.changed.connect(self._on_in_canvas)
        self._gesture_start: tuple[np.ndarray, np.ndarray] | None = None
        self.alignment.changed.connect(self._on_external)
        self._session.roles_changed.connect(self.take_over)
        self.native.destroyed.connect(self._shutdown)
        self.take_over()
        apply_tooltips(self)  # what each control does, in which units

    def _shutdown(self, *_args: Any) -> None:
        self.canvas.stop()
        self.alignment.changed.disconnect(self._on_external)
        self._session.roles_changed.disconnect(self.take_over)

    # ------------------------------------------------------------------ state
    @property
    def ndim(self) -> int:
        return self.base.shape[0] - 1

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """``(translation mm, angles deg)`` as set (2D: x, y and the angle about z)."""
        t = np.array([w.value for w in self.translate], dtype=np.float64)
        a = np.array([w.value for w in self.rotate], dtype=np.float64)
        return (t[:2], a[2:]) if self.ndim == 2 else (t, a)

    def _set_values(self, t: np.ndarray, a: np.ndarray) -> None:
        self._updating = True
        try:
            full_t = np.zeros(3)
            full_a = np.zeros(3)
            full_t[: len(t)] = t
            if self.ndim == 2:
                full_a[2] = a[-1]
            else:
                full_a[:] = a
            for w, v in zip((*self.translate, *self.rotate), (*full_t, *full_a), strict=True):
                w.value = float(v)
        finally:
            self._updating = False

    def matrix(self) -> np.ndarray:
        """The fixed->moving world matrix the panel describes: ``T0 @ M^-1``."""
        t, a = self.values()
        return self.base @ np.linalg.inv(rigid_motion(t, a, self.center))

    def _moving_centre(self) -> np.ndarray:
        """Where the moving image's centre is shown (world mm) under ``T0``."""
        from ._layer_volumes import layer_volume

        _, moving = self.alignment.layers()
        centre = layer_volume(moving, use_file_affine=True).center_world()
        return apply_affine(np.linalg.inv(self.base), centre)

    def take_over(self) -> None:
        """Start from the current alignment (sliders at zero)."""
        try:
            self.base = np.asarray(self.alignment.matrix, dtype=np.float64)
        except ValueError as exc:
            self.status.value = str(exc)
            return
        d = self.ndim
        for k, w in enumerate(self.translate):
            w.visible = k < d
        for k, w in enumerate(self.rotate):
            w.visible = d == 3 or k == 2
        self._set_values(np.zeros(d), np.zeros(d if d == 3 else 1))
        self._choose_centre()
        self.status.value = ""
        self._pre_change = self._state()

    def _choose_centre(self) -> None:
        d = self.ndim
        if self.centre.value == "cursor":
            pos = np.asarray(self._viewer.cursor.position, dtype=np.float64)[-d:]
            self.center = pos
        else:
            self.center = self._moving_centre()
        self.centre_label.value = "centre (mm): " + ", ".join(f"{v:.1f}" for v in self.center)

    # ------------------------------------------------------------------ changes
    def _apply(self) -> None:
        self._updating = True
        try:
            self.alignment.set(self.matrix())
        except ValueError as exc:
            show_error(str(exc))
        finally:
            self._updating = False

    def _on_slider(self, *_args: Any) -> None:
        if self._updating:
            return
        if not self._undo or time.monotonic() - self._last_push > _GESTURE_SECONDS:
            # the state *before* this gesture: undo the values just changed
            self._undo.append(self._pre_change)
            del self._undo[:-200]
        self._last_push = time.monotonic()
        self._apply()
        self._pre_change = self._state()

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t, a = self.values()
        return self.base.copy(), np.concatenate([t, a]), self.center.copy()

    def _on_centre(self, *_args: Any) -> None:
        """New centre: fold the current motion into T0 so nothing moves."""
        self._undo.append(self._state())
        self.base = self.matrix()
        self._set_values(np.zeros(self.ndim), np.zeros(3 if self.ndim == 3 else 1))
        self._choose_centre()
        self._pre_change = self._state()
        self._last_push = -np.inf

    def centre_at_cursor(self) -> None:
        """Rotate about the cursor's current world position from now on."""
        if self.centre.value != "cursor":
            self.centre.value = "cursor"  # _on_centre re-centres (nothing moves)
        else:
            self._on_centre()

    def _on_external(self, _transform: Any) -> None:
        if not self._updating:  # a landmark fit or another panel set the alignment
            self.take_over()

    def reset(self) -> None:
        """Back to the images as their files place them (undoable)."""
        self._undo.append(self._state())
        self._last_push = -np.inf
        try:
            self._updating = True
            self.alignment.reset()
        except ValueError as exc:
            show_error(str(exc))
            return
        finally:
            self._updating = False
        self.take_over()

    def undo(self) -> bool:
        """Go back one step (a slider gesture, a centre change or a reset)."""
        if not self._undo:
            show_info("Nothing to undo.")
            return False
        base, values, centre = self._undo.pop()
        self.base, self.center = base, centre
        d = self.ndim
        self._set_values(values[:d], values[d:])
        self.centre_label.value = "centre (mm): " + ", ".join(f"{v:.1f}" for v in self.center)
        self._apply()
        self._pre_change = self._state()
        self._last_push = -np.inf
        return True

    # ------------------------------------------------------------------ canvas
    def _on_in_canvas(self, on: bool) -> None:
        if not on:
            self.canvas.stop()
            return
        try:
            _, moving = self.alignment.layers()
        except ValueError as exc:
            show_error(str(exc))
            self.in_canvas.value = False
            return
        self.canvas.start(moving)

    def apply_motion(self, motion: np.ndarray, start: bool) -> None:
        """Move the shown moving image by the world motion ``motion`` (homogeneous, world
        RAS mm), composed onto the state at the start of the gesture; ``start`` begins a
        new gesture (one undo step). The sliders show the result."""
        d = self.ndim
        motion = np.asarray(motion, dtype=np.float64)
        if start or self._gesture_start is None:
            self._undo.append(self._state())
            del self._undo[:-200]
            t, a = self.values()
            self._gesture_start = (self.base.copy(), rigid_motion(t, a, self.center))
        base, shown = self._gesture_start
        moved = motion @ shown  # the moving image as shown: first M, then this gesture
        t = moved[:d, :d] @ self.center + moved[:d, d] - self.center
        angles = rotation_angles(moved[:d, :d])
        in_range = all(w.min <= v <= w.max for w, v in zip(self.translate, t, strict=False))
        self.base = base
        if not in_range:  # beyond the sliders: fold the motion into T0, sliders at zero
            self.base = base @ np.linalg.inv(moved)
            t, angles = np.zeros(d), np.zeros(len(angles))
        self._set_values(t, angles)
        self._apply()
        self._pre_change = self._state()
        self._last_push = time.monotonic()

    def use_as_initialisation(self) -> None:
        """Select "Current manual alignment" in the Register panel."""
        if request_manual_init(self._viewer):
            show_info("The Register panel now starts from the manual alignment.")
        else:
            show_info("Choose 'Current manual alignment' as initialisation in the Register "
                      "panel.")
