"""Landmarks panel: paired points clicked on the fixed and moving images, fits, files.

Pairs are explicit: every point carries an id (``features['id']`` of its Points layer);
a fixed and a moving point with the same id form a pair, whatever the click order. A new
click gets the id of the pair selected in the table when this side lacks it, else the
first id the other side has and this side lacks (fixed 1, 2, 3 then moving 1, 2, 3 pair
up), else a new number. Points live in world mm where they are shown (no layer affine:
napari slices them right whatever the image's axes), are clicked on 2D slices of 3D
volumes and follow a hand-aligned moving image on screen (also ones restored from a
session); file world RAS mm positions come through ``original_affine`` (``_lm_model``).

Fits (fixed world RAS mm -> moving world RAS mm): rigid, similarity, affine
(:func:`napari_reg.core.initialize.fit_landmarks`) or a thin-plate spline
(:mod:`napari_reg.core.thin_plate`), with per-pair residuals in the table. A fit can be
previewed and handed to the Register panel as its initialisation (through the shared
"current alignment", :mod:`._alignment`).
"""

from __future__ import annotations

import functools
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton
from napari.layers import Points
from napari.utils.notifications import show_error, show_info, show_warning

from ..core.image import apply_affine
from ..core.transforms.base import Transform
from ._alignment import get_alignment, request_manual_init
from ._lm_clicks import record_ray, surface_point
from ._lm_file_actions import LandmarkFileActions
from ._lm_files import add_landmark_layer, follow_image, image_of, outside
from ._lm_model import Snapshot, UndoStack, fit_rows, fit_summary, ids_of, next_id, pair_rows
from ._lm_table import PairTable
from ._notify import guarded
from ._session import get_session, unwrap_viewer
from ._tooltips import apply_tooltips

__all__ = ["LandmarksWidget", "FIT_CHOICES"]

FIT_CHOICES = [("Rigid", "rigid"), ("Similarity", "similarity"), ("Affine", "affine"),
               ("Thin-plate spline (deformable)", "tps")]


class LandmarksWidget(LandmarkFileActions, Container):
    """Click, pair, edit, fit, save and load landmarks on the session's images."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self._session = get_session(viewer)
        self.alignment = get_alignment(viewer)
        self.fixed_points = ComboBox(label="Fixed points", choices=self._points, nullable=True)
        self.moving_points = ComboBox(label="Moving points", choices=self._points, nullable=True)
        self.new_layers = PushButton(text="New landmark layers on fixed / moving")
        self.click_fixed = PushButton(text="Click on fixed")
        self.click_moving = PushButton(text="Click on moving")
        self.select_mode = PushButton(text="Select / move")
        self.delete = PushButton(text="Delete pair")
        self.undo_button = PushButton(text="Undo")
        self.kind = ComboBox(label="Fit", choices=FIT_CHOICES, value="rigid")
        self.smoothing = FloatSpinBox(label="Spline smoothing (mm)", min=0.0, max=1e4,
                                      step=0.5, value=0.0, visible=False)
        self.fit_button = PushButton(text="Fit")
        self.preview = PushButton(text="Preview fit")
        self.use_init = PushButton(text="Use fit as registration initialisation")
        self.summary = Label(value="")
        self.load_side = ComboBox(label="Load into", choices=["fixed", "moving"])
        self.load_button = PushButton(text="Load file...")
        self.save_button = PushButton(text="Save both...")

        def row(*widgets: Any) -> Container:  # buttons side by side
            return Container(widgets=list(widgets), layout="horizontal", labels=False)
        self.extend([self.fixed_points, self.moving_points, self.new_layers,
                     row(self.click_fixed, self.click_moving, self.select_mode),
                     row(self.delete, self.undo_button)])
        self.table = PairTable()
        self.native.layout().addWidget(self.table)
        self.extend([self.kind, self.smoothing, self.fit_button, self.summary, self.preview,
                     self.use_init, self.load_side, row(self.load_button, self.save_button)])

        self.undo_stack = UndoStack()
        self.fit: Transform | None = None
        self._fit_kind = ""
        self._busy = False  # our own edits: no undo snapshot, no id assignment
        self._follow: dict[int, Any] = {}  # id(points layer) -> image layer it sits on
        self._connected: list[Any] = []
        self._rays: dict[int, Any] = {}  # id(points layer) -> the ray of its last 3D press
        self.new_layers.clicked.connect(guarded(self.create_layers))
        self.click_fixed.clicked.connect(lambda: self.start_clicking("fixed"))
        self.click_moving.clicked.connect(lambda: self.start_clicking("moving"))
        self.select_mode.clicked.connect(lambda: self.start_clicking(None))
        self.delete.clicked.connect(guarded(self.delete_selected))
        self.undo_button.clicked.connect(self.undo)
        self.kind.changed.connect(lambda v: setattr(self.smoothing, "visible", v == "tps"))
        self.fit_button.clicked.connect(guarded(self.run_fit))
        self.preview.clicked.connect(guarded(self.preview_fit))
        self.use_init.clicked.connect(guarded(self.use_as_initialisation))
        self.load_button.clicked.connect(guarded(self._load_dialog))
        self.save_button.clicked.connect(guarded(self._save_dialog))
        self.fixed_points.changed.connect(self._on_layers_chosen)
        self.moving_points.changed.connect(self._on_layers_chosen)
        self.table.row_chosen.connect(self.go_to)
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self.reset_choices)
        self.alignment.changed.connect(self._follow_moving)  # points follow on screen
        self.native.destroyed.connect(self._shutdown)
        self._on_inserted()
        self._on_layers_chosen()
        apply_tooltips(self)  # what each control does, in which units

    def _shutdown(self, *_args: Any) -> None:
        self._disconnect()
        events = self._viewer.layers.events
        events.inserted.disconnect(self._on_inserted)
        events.removed.disconnect(self.reset_choices)
        self.alignment.changed.disconnect(self._follow_moving)

    def _points(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Points)]

    def _on_inserted(self, *_args: Any) -> None:
        """Refresh the layer choices; adopt Points layers named 'fixed ...' / 'moving ...'
        (e.g. the sample data's landmarks) when none are chosen yet."""
        self.reset_choices()
        if self.fixed_points.value is None and self.moving_points.value is None:
            named = {side: next((lyr for _, lyr in self._points()
                                 if side in lyr.name.lower()), None)
                     for side in ("fixed", "moving")}
            if named["fixed"] is not None and named["moving"] is not None:
                self.fixed_points.value, self.moving_points.value = (named["fixed"],
                                                                     named["moving"])

    # ------------------------------------------------------------------ layers
    def create_layers(self) -> tuple[Points, Points]:
        """Empty Points layers on the session's fixed and moving images (their affines)."""
        fixed_img, moving_img = self.alignment.layers()
        made = [add_landmark_layer(self._viewer, image, side, colour)
                for side, image, colour in (("fixed", fixed_img, "yellow"),
                                            ("moving", moving_img, "cyan"))]
        for layer, image in zip(made, (fixed_img, moving_img), strict=True):
            self._follow[id(layer)] = image
        self.reset_choices()
        self.fixed_points.value, self.moving_points.value = made
        return made[0], made[1]

    def _layers(self) -> tuple[Any, Any]:
        return self.fixed_points.value, self.moving_points.value

    def _disconnect(self) -> None:
        for layer, cb in self._connected:
            try:
                if cb in layer.mouse_drag_callbacks:
                    layer.mouse_drag_callbacks.remove(cb)
                    continue
                (layer.events.affine if cb == self._follow_moving else layer.events.data
                 ).disconnect(cb)
            except (RuntimeError, TypeError, ValueError):
                pass
        self._connected = []

    def _on_layers_chosen(self, *_args: Any) -> None:
        self._disconnect()
        if self.fixed_points.value is not None and (self.fixed_points.value
                                                    is self.moving_points.value):
            show_error("Fixed and moving landmarks must be two different Points layers.")
            self.moving_points.value = None  # re-enters this method with a valid choice
            return
        for side, layer in zip(("fixed", "moving"), self._layers(), strict=True):
            if layer is None:
                continue
            ids = ids_of(layer)
            if "id" not in layer.features.columns or any(
                    not isinstance(v, str) for v in layer.features["id"]):
                self._write(layer, np.asarray(layer.data), ids)  # string ids on both sides
            cb = functools.partial(self._on_data, side)
            layer.events.data.connect(cb)
            self._connected.append((layer, cb))
            # a 3D click's ray, recorded before napari's add mode places the point
            recorder = record_ray(self._rays, id(layer))
            layer.mouse_drag_callbacks.insert(0, recorder)
            self._connected.append((layer, recorder))
            # Ctrl+Z while the Points layer is active undoes the last landmark edit
            layer.bind_key("Control-Z", self._undo_key, overwrite=True)
        moving_img = self._session.moving_layer
        for layer in self._layers():  # our layers made elsewhere (a restored session)
            self._follow.setdefault(id(layer), image_of(layer, self._session))
        if moving_img is not None:
            moving_img.events.affine.connect(self._follow_moving)
            self._connected.append((moving_img, self._follow_moving))
        self._session.landmark_layers = self._layers()  # for saved sessions
        self.fit = None
        self.refresh()

    def _follow_moving(self, *_args: Any) -> None:
        """Keep points we placed on the moving image on it when the image is moved: the
        same world points, shown where the image now is (data, never a layer affine)."""
        for layer in self._layers():
            image = self._follow.get(id(layer)) if layer is not None else None
            if image is not None and image is self._session.moving_layer:
                change = follow_image(layer, image)
                if change is not None:
                    self._write(layer, apply_affine(change, np.asarray(layer.data)),
                                ids_of(layer))
                    self.undo_stack.move_moving(change)

    # ------------------------------------------------------------------ editing
    def snapshot(self) -> Snapshot:
        f, m = self._layers()
        nd = (f or m).ndim if (f or m) is not None else 3
        return Snapshot(np.array(f.data) if f is not None else np.zeros((0, nd)), ids_of(f),
                        np.array(m.data) if m is not None else np.zeros((0, nd)), ids_of(m))

    def _write(self, layer: Any, data: np.ndarray, ids: list[str]) -> None:
        self._busy = True
        try:
            layer.data = np.asarray(data, dtype=np.float64).reshape(-1, layer.ndim)
            layer.features = {"id": np.array(ids, dtype=object)}
        finally:
            self._busy = False

    def _on_data(self, side: str, event: Any) -> None:
        if self._busy:
            return
        action = str(getattr(event, "action", ""))
        if action in ("adding", "removing", "changing"):
            self.undo_stack.push(self.snapshot())
            return
        layer = self._layers()[0 if side == "fixed" else 1]
        if action == "added":
            self._assign_ids(side, layer, event)
        self.refresh()

    def _assign_ids(self, side: str, layer: Any, event: Any) -> None:
        """Give new points their ids; refuse points outside the image they sit on."""
        n = len(layer.data)
        new = sorted({int(i) % n for i in (event.data_indices or ())}) or [n - 1]
        data, ids = np.array(layer.data), ids_of(layer)
        image = self._follow.get(id(layer))
        ray, refused = self._rays.pop(id(layer), None), ""
        shown = image or (self._session.fixed_layer if side == "fixed"
                          else self._session.moving_layer)
        overlay = self.alignment.overlay  # an aligned moving image is shown resampled
        if side == "moving" and overlay is not None and getattr(overlay.layer, "visible", 0):
            shown = overlay.layer
        if ray is not None and shown is not None:  # a 3D click: onto what is shown
            point, refused = surface_point(shown, ray)
            if point is not None:  # image voxel -> world -> this layer's coordinates
                data[new] = layer.world_to_data(shown.data_to_world(point))
        bad = (set(new) if refused else
               {int(k) for k in outside(data[new], [str(k) for k in new], image)}
               if image is not None else set())
        if bad:
            keep = [k for k in range(n) if k not in bad]
            self._write(layer, data[keep], [ids[k] for k in keep])
            self.undo_stack.pop()
            show_warning(refused or f"That click is outside the {side} image "
                         f"'{image.name}'; no landmark was added.")
            return
        other = self._layers()[1 if side == "fixed" else 0]
        others = ids_of(other)
        mine = [ids[j] for j in range(n) if j not in new]
        chosen = self.table.selected_id()  # a pair picked in the table gets the click
        for k in new:
            ids[k] = chosen if chosen and chosen not in mine else next_id(mine, others)
            mine.append(ids[k])
        self._write(layer, data, ids)

    def start_clicking(self, side: str | None) -> None:
        """Put the fixed or moving Points layer in add mode (None: select/move mode);
        the other image is hidden meanwhile so the click lands on what is seen."""
        fixed, moving = self._layers()
        if side is not None and (fixed is None or moving is None):
            try:
                fixed, moving = self.create_layers()
            except ValueError as exc:
                show_error(str(exc))
                return
        target = {"fixed": fixed, "moving": moving}.get(side or "")
        for layer in (fixed, moving):
            if layer is not None:
                layer.mode = "add" if layer is target else "select"
        if target is not None:
            self._viewer.layers.selection.active = target
        images = {"fixed": self._session.fixed_layer, "moving": self._session.moving_layer}
        overlay = self.alignment.overlay.layer if self.alignment.overlay is not None else None
        for name, image in images.items():
            if image is not None and image in self._viewer.layers:
                image.visible = side is None or name == side
        if side in (None, "moving"):  # a hand-aligned moving image: clicked where shown
            self.alignment.refresh_overlay()
        elif overlay is not None and overlay in self._viewer.layers:
            overlay.visible = False

    def delete_selected(self) -> None:
        """Delete the selected pair (both points) from the table."""
        row = self.table.selected_row()
        if row is None:
            raise ValueError("Select a landmark pair in the table first.")
        self.undo_stack.push(self.snapshot())
        for layer, index in zip(self._layers(), (row.fixed_index, row.moving_index),
                                strict=True):
            if layer is not None and index is not None:
                keep = [k for k in range(len(layer.data)) if k != index]
                ids = ids_of(layer)
                self._write(layer, np.asarray(layer.data)[keep], [ids[k] for k in keep])
        self.refresh()

    def _undo_key(self, _layer: Any) -> None:
        self.undo()

    def undo(self) -> bool:
        """Restore both layers to before the last add, move, delete or load."""
        snap = self.undo_stack.pop()
        fixed, moving = self._layers()
        if snap is None:
            show_info("Nothing to undo.")
            return False
        if fixed is not None:
            self._write(fixed, snap.fixed_data, snap.fixed_ids)
        if moving is not None:
            self._write(moving, snap.moving_data, snap.moving_ids)
        self.refresh()
        return True

    # ------------------------------------------------------------------ table
    def refresh(self) -> None:
        """Rebuild the table; re-fit quietly when a fit is shown (live residuals)."""
        rows = pair_rows(*self._layers())
        if self.fit is not None:
            try:
                self._fit_rows(rows)
            except ValueError:
                self.fit = None
                self.summary.value = "Fit cleared: the current pairs no longer support it."
        self.table.set_rows(rows)
        paired = {r.id for r in rows if r.paired}
        for layer in self._layers():  # on the canvas: a ring = still waiting for a partner
            if layer is not None and len(layer.data):
                layer.symbol = ["disc" if i in paired else "ring" for i in ids_of(layer)]

    def go_to(self, row_index: int, side: str = "fixed") -> None:
        """Move the viewer to a pair: the slider position and the camera centre."""
        row = self.table.rows[row_index]
        index = row.fixed_index if side == "fixed" else row.moving_index
        layer = self._layers()[0 if side == "fixed" else 1]
        if index is None:  # an unpaired row: go to the point that exists
            side = "moving" if side == "fixed" else "fixed"
            index = row.fixed_index if side == "fixed" else row.moving_index
            layer = self._layers()[0 if side == "fixed" else 1]
        shown = layer.data_to_world(np.asarray(layer.data[index]))
        dims = self._viewer.dims
        offset = dims.ndim - len(shown)
        dims.point = tuple(dims.point[:offset]) + tuple(float(v) for v in shown)
        self._viewer.camera.center = tuple(float(shown[a - offset]) for a in dims.displayed
                                           if a >= offset)
        layer.selected_data = {index}

    # ------------------------------------------------------------------ fitting
    def _fit_rows(self, rows: list, kind: str | None = None) -> Transform:
        kind = kind or self._fit_kind
        result = fit_rows(rows, kind, float(self.smoothing.value))
        self.fit, self._fit_kind = result.transform, kind
        self.summary.value = fit_summary(result, dict((v, k) for k, v in FIT_CHOICES)[kind])
        return result.transform

    def run_fit(self) -> Transform:
        """Fit the chosen model to the current pairs; residuals go to the table."""
        rows = pair_rows(*self._layers())
        fit = self._fit_rows(rows, self.kind.value)
        self.table.set_rows(rows)
        unpaired = [r.id for r in rows if not r.paired]
        if unpaired:
            show_warning(f"Landmarks without a partner were left out of the fit: "
                         f"{', '.join(unpaired)}")
        return fit

    def _require_fit(self) -> Transform:
        if self.fit is None or self._fit_kind != self.kind.value:
            return self.run_fit()
        return self.fit

    def preview_fit(self) -> None:
        """Show the moving image warped by the fit (overlay on the fixed grid)."""
        self.alignment.set(self._require_fit())

    def use_as_initialisation(self) -> None:
        """Make the fit the current alignment and select it in the Register panel."""
        fit = self._require_fit()
        self.alignment.set(fit)
        docked = request_manual_init(self._viewer)
        where = ("The Register panel now starts from it." if docked else
                 "Choose 'Current manual alignment' as initialisation in the Register panel.")
        extra = (" A registration starts from the spline's affine part (registration "
                 "initialisations are linear)." if not fit.is_linear else "")
        show_info(f"Landmark fit set as the current alignment. {where}{extra}")
