"""Where the all-in-one napari-reg dock sits in napari's window: compact or on the right.

napari's own left column (layer controls above the layer list) is at least 320 px wide.
With a plugin column of the same width on the right, a 1280 px wide laptop screen keeps
only ~44 % of its width for the image. **Compact** puts the napari-reg dock in napari's
left column instead, as a tab beside the layer controls (the layer list stays visible
below), so the image gets ~74 % of a 1280 px window. Not compact: the dock is a column
of its own on the right (the usual place of plugin docks). Compact is the default on
screens narrower than :data:`COMPACT_BELOW_WIDTH` pixels; the dock's check box switches.

napari does not expose its docks publicly: the layer controls' and the layer list's
QDockWidgets are found by their Qt object names in the main window holding this dock
(napari 0.9); when they are not found, the dock stays where napari put it.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication, QDockWidget, QMainWindow, QWidget

__all__ = ["COMPACT_BELOW_WIDTH", "dock_widget_of", "place", "prefers_compact"]

# Screens narrower than this (pixels) start with the compact placement.
COMPACT_BELOW_WIDTH = 1600
# Share of the left column's height the napari-reg / layer-controls tabs get in compact
# placement; the layer list keeps the rest (about five layer rows on an 800 px screen).
_TABS_SHARE = 0.66


def dock_widget_of(widget: QWidget) -> QDockWidget | None:
    """The QDockWidget holding ``widget`` (napari wraps every dock in one), or None."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def prefers_compact(widget: QWidget) -> bool:
    """True on a screen narrower than :data:`COMPACT_BELOW_WIDTH` (the screen showing
    ``widget``, else the primary one)."""
    screen = widget.screen() if hasattr(widget, "screen") else None
    screen = screen or QApplication.primaryScreen()
    if screen is None:
        return False
    return screen.availableGeometry().width() < COMPACT_BELOW_WIDTH


def _napari_docks(dock: QDockWidget) -> tuple[Any, Any, Any]:
    """``(main window, layer controls dock, layer list dock)`` of the window holding
    ``dock``; None where not found. Through Qt only: napari names its docks "layer
    controls" and "layer list" (their object names) and warns when a plugin reads its
    private window attributes."""
    qt_window = dock.parentWidget()
    if not isinstance(qt_window, QMainWindow):
        return None, None, None
    found = {d.objectName(): d for d in qt_window.findChildren(QDockWidget)}
    return qt_window, found.get("layer controls"), found.get("layer list")


def place(widget: QWidget, compact: bool, width: int) -> bool:
    """Put the dock holding ``widget`` in napari's left column as a tab beside the layer
    controls (``compact``), or on the right ``width`` px wide. True if it was moved."""
    dock = dock_widget_of(widget)
    if dock is None:
        return False
    qt_window, controls, layer_list = _napari_docks(dock)
    if qt_window is None:
        return False
    try:
        if compact and controls is not None and controls.parentWidget() is qt_window \
                and not controls.isFloating() and not controls.isHidden():
            if dock.isFloating():
                dock.setFloating(False)
            qt_window.tabifyDockWidget(controls, dock)
            dock.show()
            dock.raise_()  # its tab in front: the panels, not the layer controls
            height = max(qt_window.height() - 60, 200)
            if layer_list is not None and layer_list.isVisible():
                qt_window.resizeDocks([dock, layer_list],
                                      [int(height * _TABS_SHARE),
                                       int(height * (1 - _TABS_SHARE))],
                                      Qt.Orientation.Vertical)
            qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
            return True
        if compact:  # napari's layer controls are closed or floating: the left column
            qt_window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
            dock.show()
            return True
        qt_window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        dock.show()
        qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
        return True
    except RuntimeError:  # the window is closing
        return False
