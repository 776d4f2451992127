"""Ortho views (axial, coronal, sagittal with a shared crosshair) and a side-by-side view.

Medical viewers (ITK-SNAP, 3D Slicer) show three orthogonal 2D slices through one point,
marked by a crosshair in each. Here the main canvas shows the **axial** slice and a
bottom dock holds two extra napari views (the **coronal** and **sagittal** slices); each
extra view is a ``ViewerModel`` + ``QtViewer`` with copies of the main viewer's layers
(:class:`~napari_reg.widgets._mirror.LayerMirror`), so it shows the fixed image with the
warped overlay and follows every change of them. The three views share one world point
(RAS mm): scrolling the slice in one view moves the crosshair in the others, and a click
(without dragging) in any view moves the point there. World axes are (x, y, z) = (R, A, S);
every view is drawn with anatomical up and the subject's right on the right.

Side by side: the bottom dock shows the fixed image with the fixed landmarks beside the
moving image with the moving landmarks (axial), each navigated on its own (before
registration the same world point is not the same anatomy), so landmarks can be placed in
both; Points edited there go back to the original layers (the main canvas keeps showing
the overlay).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ._alignment import ALIGNMENT_LAYER_NAME
from ._mirror import LayerMirror
from ._session import get_session, unwrap_viewer

__all__ = ["MODES", "OrthoViews", "orient", "PLANES"]

# dims.order of the three world axes (x, y, z) = (0, 1, 2) for each plane: the last two
# are displayed as (rows, columns).
PLANES: dict[str, tuple[int, int, int]] = {
    "axial": (2, 1, 0),     # slice z; rows y (anterior up), columns x (right on right)
    "coronal": (1, 2, 0),   # slice y; rows z (superior up), columns x
    "sagittal": (0, 2, 1),  # slice x; rows z, columns y (anterior on the right)
}
MODES = ("single", "ortho", "side by side")
_MODE_LABELS = {
    "single": "Single view",
    "ortho": "Ortho: axial + coronal + sagittal",
    "side by side": "Side by side: fixed | moving",
}
_CROSS_COLOUR = (1.0, 0.85, 0.0, 0.9)
DOCK_NAME = "napari-reg views"


def _camera(model: Any) -> Any:
    scene = getattr(model, "scene", None)  # napari >= 0.9; older: model.camera
    return scene.camera if scene is not None else model.camera


def orient(model: Any, plane: str) -> None:
    """Show ``plane`` of the last three (world x, y, z) axes, anatomical up, right on right."""
    model.dims.ndisplay = 2
    ndim = model.dims.ndim
    if ndim < 3:
        return
    lead = tuple(range(ndim - 3))
    model.dims.order = (*lead, *(ndim - 3 + a for a in PLANES[plane]))
    _camera(model).orientation2d = ("up", "right")


class _Crosshair:
    """Two lines through the view's world point, drawn on top of the view's canvas."""

    def __init__(self, qt_viewer: Any, model: Any):
        from vispy.scene.visuals import Line

        self.model = model
        self.line = Line(pos=np.zeros((4, 2), np.float32), color=_CROSS_COLOUR,
                         connect="segments", width=1.0, parent=qt_viewer.canvas.view.scene)
        self.line.order = 10_000
        self.line.set_gl_state("translucent", depth_test=False)
        model.dims.events.point.connect(self.update)
        model.dims.events.order.connect(self.update)
        model.layers.events.inserted.connect(self.update)
        self.update()

    def update(self, _event: Any = None) -> None:
        dims = self.model.dims
        if dims.ndim < 2 or not len(self.model.layers):
            self.line.visible = False
            return
        rows, cols = dims.order[-2], dims.order[-1]
        extent = np.asarray(self.model.layers.extent.world, dtype=float)  # (2, ndim)
        point = np.asarray(dims.point, dtype=float)
        r0, r1 = extent[:, rows]
        c0, c1 = extent[:, cols]
        # vispy scene coordinates are (column, row) in world mm
        pos = np.array([[c0, point[rows]], [c1, point[rows]],
                        [point[cols], r0], [point[cols], r1]], dtype=np.float32)
        self.line.set_data(pos=pos)
        self.line.visible = True


def _click_sets_point(models: list[Any], only_when_panning: bool) -> Any:
    """A mouse-drag callback: a click without a drag sets every model's world point."""

    def callback(model: Any, event: Any):
        if only_when_panning:
            active = model.layers.selection.active
            if active is not None and getattr(active, "mode", "pan_zoom") != "pan_zoom":
                return
        press = np.asarray(event.position, dtype=float)
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if dragged:
            return
        for other in models:
            if other.dims.ndim == len(press):
                other.dims.point = tuple(press)

    return callback


def _make_qt_viewer(main_viewer: Any, model: Any) -> Any:
    """A QtViewer for ``model`` whose drag and drop opens files in the main viewer."""
    from napari.qt import QtViewer

    class _ForwardingQtViewer(QtViewer):
        def _qt_open(self, filenames, stack, *args, **kwargs):  # drop -> main viewer
            main_viewer.window._qt_viewer._qt_open(filenames, stack, *args, **kwargs)

    return _ForwardingQtViewer(model)


class _Pane(QWidget):
    """A titled extra view."""

    def __init__(self, main_viewer: Any, title: str):
        super().__init__()
        from napari.components.viewer_model import ViewerModel

        self.model = ViewerModel(title=title)
        self.qt_viewer = _make_qt_viewer(main_viewer, self.model)
        self.qt_viewer.setMinimumSize(120, 120)  # the window must still fit 1280x800
        self.setMinimumWidth(120)
        self.title = QLabel(title)
        self.title.setToolTip(f"The {title} view; a click (without dragging) moves the "
                              "crosshair there, the slider below moves its slice.")
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.title)
        column.addWidget(self.qt_viewer, 1)


def _on_side(session: Any, side: str) -> Any:
    """A layer filter: the session's ``side`` ("fixed"/"moving") image and that side's
    Points layers (marked by the landmark panel, else named so); on the moving side also
    the hand-alignment overlay, which shows the moving image (hidden meanwhile) where its
    landmarks are while an alignment is set."""

    def include(layer: Any) -> bool:
        image = session.fixed_layer if side == "fixed" else session.moving_layer
        if image is not None and layer is image:
            return True
        if side == "moving" and layer.name == ALIGNMENT_LAYER_NAME:
            return True
        marked = (getattr(layer, "metadata", None) or {}).get("napari_reg_side")
        return layer._type_string == "points" and (
            marked == side or (marked is None and side in layer.name.lower()))

    return include


class _CloseWatcher(QObject):
    """Shuts the extra views down when the main viewer's QtViewer closes (napari checks
    that no QtViewer outlives its window)."""

    def __init__(self, owner: OrthoViews):
        super().__init__(owner)
        self._owner = owner

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Close:
            self._owner.shutdown()
        return False


class OrthoViews(QWidget):
    """The bottom dock's content for ``mode`` "ortho" (coronal | sagittal, linked to the
    main axial view) or "side by side" (the moving image, navigated on its own)."""

    def __init__(self, viewer: Any, mode: str = "ortho"):
        super().__init__()
        if mode not in ("ortho", "side by side"):
            raise ValueError(f"mode must be 'ortho' or 'side by side', not {mode!r}")
        self.viewer, self.mode = unwrap_viewer(viewer), mode
        self.panes: dict[str, _Pane] = {}
        self.mirrors: list[LayerMirror] = []
        splitter = QSplitter(Qt.Orientation.Horizontal)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        if mode == "ortho":
            self._build_ortho(splitter)
        else:
            self._build_side_by_side(splitter)
        self._main_qt = getattr(getattr(self.viewer, "window", None), "_qt_viewer", None)
        self._watcher = _CloseWatcher(self)
        if self._main_qt is not None:
            self._main_qt.installEventFilter(self._watcher)

    # ----------------------------------------------------------------------- ortho
    def _build_ortho(self, splitter: QSplitter) -> None:
        get_session(self.viewer).ortho_views = True
        orient(self.viewer, "axial")
        for plane in ("coronal", "sagittal"):
            pane = _Pane(self.viewer, plane.capitalize())
            self.panes[plane] = pane
            splitter.addWidget(pane)
            self.mirrors.append(LayerMirror(self.viewer, pane.model))
            orient(pane.model, plane)
            pane.model.dims.point = self.viewer.dims.point
            pane.model.reset_view()
        models = [self.viewer] + [p.model for p in self.panes.values()]
        for model in models:
            model.dims.events.point.connect(self._share_point)
            model.mouse_drag_callbacks.append(
                _click_sets_point(models, only_when_panning=model is self.viewer))
        self.viewer.layers.events.inserted.connect(self._reorient)
        self._crosshairs = [_Crosshair(p.qt_viewer, p.model) for p in self.panes.values()]
        main_qt = getattr(self.viewer.window, "_qt_viewer", None)  # private in napari 0.9
        if main_qt is not None:
            self._crosshairs.append(_Crosshair(main_qt, self.viewer))

    def _share_point(self, event: Any) -> None:
        point = tuple(event.value)
        for model in [self.viewer] + [p.model for p in self.panes.values()]:
            if model.dims is not event.source and model.dims.ndim == len(point) \
                    and tuple(model.dims.point) != point:
                model.dims.point = point

    def _reorient(self, _event: Any = None) -> None:
        """A new layer can change the number of dims: keep each view on its plane."""
        orient(self.viewer, "axial")
        for plane, pane in self.panes.items():
            orient(pane.model, plane)

    # ---------------------------------------------------------------- side by side
    def _build_side_by_side(self, splitter: QSplitter) -> None:
        orient(self.viewer, "axial")
        session = get_session(self.viewer)
        for side in ("fixed", "moving"):
            pane = _Pane(self.viewer, f"{side.capitalize()} image and {side} landmarks")
            self.panes[side] = pane
            splitter.addWidget(pane)
            self.mirrors.append(LayerMirror(self.viewer, pane.model,
                                            include=_on_side(session, side)))
            orient(pane.model, "axial")
            pane.model.reset_view()

    def close_views(self) -> None:
        """Disconnect from the main viewer and show again what side by side hid."""
        if self.mode == "ortho":
            get_session(self.viewer).ortho_views = False
        for mirror in self.mirrors:
            mirror.close()
        try:
            self.viewer.dims.events.point.disconnect(self._share_point)
            self.viewer.layers.events.inserted.disconnect(self._reorient)
        except Exception:  # noqa: S110 - never connected (side-by-side mode)
            pass
        self.viewer.mouse_drag_callbacks[:] = [
            cb for cb in self.viewer.mouse_drag_callbacks
            if getattr(cb, "__qualname__", "").split(".")[0] != "_click_sets_point"]
        for crosshair in getattr(self, "_crosshairs", []):
            crosshair.line.parent = None
        self._crosshairs = []

    def shutdown(self) -> None:
        """:meth:`close_views` and close the extra views' QtViewers (idempotent)."""
        if getattr(self, "_shut", False):
            return
        self._shut = True
        if self._main_qt is not None:
            try:
                self._main_qt.removeEventFilter(self._watcher)
            except RuntimeError:  # already deleted by Qt
                pass
        self.close_views()
        for pane in self.panes.values():
            try:
                pane.qt_viewer.close()
                pane.model.layers.clear()
            except RuntimeError:  # already deleted by Qt
                pass
        # drop every Python reference to the extra QtViewers: the panels keep this widget
        # alive through the viewer's events, and a QtViewer must not outlive its window
        self.panes = {}
        self.mirrors = []
        self._main_qt = None
