"""The view-mode control: single view, ortho views or side by side.

A combo box at the top of the napari-reg dock; choosing a mode docks
:class:`~napari_reg.widgets.ortho_views.OrthoViews` under the canvas (the side docks
keep the full window height meanwhile) and closing that dock returns to the single view.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from ._session import unwrap_viewer
from .ortho_views import _MODE_LABELS, DOCK_NAME, MODES, OrthoViews

__all__ = ["ViewModeControl"]


class ViewModeControl(QWidget):
    """A combo box choosing single view, ortho views or side by side (docks the views)."""

    def __init__(self, viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = unwrap_viewer(viewer)
        self.views: OrthoViews | None = None
        self._dock: Any = None
        self._corners: dict | None = None
        self.mode = QComboBox()
        for mode in MODES:
            self.mode.addItem(_MODE_LABELS[mode], mode)
        self.mode.setToolTip(
            "How the image is shown. Ortho: the main canvas is the axial slice and two views "
            "below show the coronal and sagittal slices through the same point (yellow "
            "crosshair; click to move it). Side by side: the moving image in its own view "
            "beside the fixed one, for placing landmarks.")
        self.mode.currentIndexChanged.connect(lambda _i: self.set_mode(self.mode.currentData()))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        label = QLabel("View:")
        label.setToolTip(self.mode.toolTip())
        row.addWidget(label)
        row.addWidget(self.mode, 1)

    def set_mode(self, mode: str) -> None:
        """Switch to ``mode`` (one of :data:`MODES`); the combo box follows."""
        if mode not in MODES:
            raise ValueError(f"unknown view mode {mode!r}: use one of {', '.join(MODES)}")
        if self.mode.currentData() != mode:
            self.mode.setCurrentIndex(MODES.index(mode))  # re-enters through the signal
            return
        self._close_views()
        if mode == "single":
            return
        self.views = OrthoViews(self.viewer, mode)
        window = getattr(self.viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            self._claim_corners(getattr(window, "_qt_window", None))
            self._dock = dock = window.add_dock_widget(self.views, name=DOCK_NAME,
                                                       area="bottom")
            # the dock's own close button: back to the single view, nothing left running
            dock.destroyed.connect(lambda *_args: self._dock_gone(dock))
            self.fit_views_height()
            QTimer.singleShot(0, self._settle)  # again once the window is laid out

    def _settle(self) -> None:
        """Fit the dock's height, then each view's camera to its final canvas size."""
        self.fit_views_height()
        if self.views is not None:
            for pane in self.views.panes.values():
                pane.model.reset_view()

    def _dock_gone(self, dock: Any) -> None:
        if dock is self._dock:
            self._dock = None
            try:
                self.set_mode("single")
            except RuntimeError:  # the window is closing: this control is deleted already
                if self.views is not None:
                    self.views.shutdown()
                self.views, self._corners = None, None

    def _claim_corners(self, qt_window: Any) -> None:
        """Let the side docks run the full window height, so the views sit under the
        canvas only and the panels keep their height (restored when the views close)."""
        if qt_window is None or self._corners is not None:
            return
        corners = (Qt.Corner.BottomLeftCorner, Qt.Corner.BottomRightCorner)
        self._corners = {c: qt_window.corner(c) for c in corners}
        qt_window.setCorner(corners[0], Qt.DockWidgetArea.LeftDockWidgetArea)
        qt_window.setCorner(corners[1], Qt.DockWidgetArea.RightDockWidgetArea)

    def _restore_corners(self) -> None:
        qt_window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if qt_window is not None and self._corners:
            try:
                for corner, area in self._corners.items():
                    qt_window.setCorner(corner, area)
            except RuntimeError:  # window already gone
                pass
        self._corners = None

    def fit_views_height(self) -> None:
        """Give the views' dock ~40 % of the window height (half for side by side), so
        each view is large enough to read; the user can drag the splitter."""
        window = getattr(self.viewer, "window", None)
        qt_window = getattr(window, "_qt_window", None)
        if self._dock is None or qt_window is None or self.views is None:
            return
        share = 0.4 if self.views.mode == "ortho" else 0.5
        try:
            qt_window.resizeDocks([self._dock], [int(qt_window.height() * share)],
                                  Qt.Orientation.Vertical)
        except RuntimeError:  # closed meanwhile
            pass

    def _close_views(self) -> None:
        if self.views is None:
            return
        self.views.shutdown()
        window = getattr(self.viewer, "window", None)
        if self._dock is not None and window is not None:
            try:
                window.remove_dock_widget(self._dock)
            except (LookupError, RuntimeError):  # the user closed the dock already
                pass
        self.views, self._dock = None, None
        self._restore_corners()
