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

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import QApplication, QDockWidget, QMainWindow, QWidget

__all__ = ["COMPACT_BELOW_WIDTH", "dock_widget_of", "keep_size", "place",
           "prefers_compact"]

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


class _KeepSize(QObject):
    """Event filter on a main window: when its layout pushes it bigger than it was (Qt
    grows a window to its layout's minimum size), the window goes back to its earlier
    size as soon as that minimum allows. A size set by the user or a program stays."""

    def __init__(self, window: QMainWindow):
        super().__init__(window)
        self._before: QSize | None = None  # the size before a growth by the layout
        self._asked: QSize | None = None  # the size this filter last gave the window
        self._seen = QSize()  # the window's size when the pending check was scheduled
        self._due = False  # a check is scheduled (many layout requests, one check)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt
        if not isinstance(watched, QMainWindow):
            return False
        if event.type() == QEvent.Type.Resize:
            old, new, minimum = event.oldSize(), event.size(), watched.minimumSize()
            if new == self._asked:  # this filter's own resize
                self._asked = None
            elif old.isValid() and (
                    (new.height() > old.height() and new.height() == minimum.height())
                    or (new.width() > old.width() and new.width() == minimum.width())):
                if self._before is None:
                    self._before = QSize(old)
            else:  # a size the user or a program chose: keep it
                self._before = None
        if self._before is not None and event.type() in (QEvent.Type.Resize,
                                                          QEvent.Type.LayoutRequest):
            self.restore_later(watched, self._before)
        return False

    def restore_later(self, window: QMainWindow, size: QSize) -> None:
        """Give ``window`` back ``size`` (or as close as its minimum allows) once the
        event loop runs."""
        self._before = QSize(size)
        if not self._due:
            self._due, self._seen = True, QSize(window.size())
            QTimer.singleShot(0, lambda: self._restore(window))

    def _restore(self, window: QMainWindow) -> None:
        self._due = False
        before = self._before
        if before is None:
            return
        try:
            if window.isMaximized() or window.isFullScreen() or (
                    window.size() != self._seen and window.size() != window.minimumSize()):
                self._before = None  # resized by someone else meanwhile: their size stays
                return
            minimum = window.minimumSize().expandedTo(window.minimumSizeHint())
            size = before.expandedTo(minimum)
            if size != window.size():
                self._asked = QSize(size)
                window.resize(size)
            if size == before:
                self._before = None
        except RuntimeError:  # the window is gone
            self._before = None


def keep_size(window: QMainWindow) -> None:
    """Keep ``window`` from being pushed bigger by its layout (see :class:`_KeepSize`).
    Why: while napari docks a widget it first stacks it in a column, and Qt grows the
    window to that column's minimum height (800 -> 820 px on a 1280x800 laptop screen,
    the bottom of the window off the screen) before the dock is moved into its tab."""
    if window.property("napari_reg_keep_size"):
        return
    window.setProperty("napari_reg_keep_size", True)
    guard = _KeepSize(window)
    window.installEventFilter(guard)
    # installed when the dock is placed, which may be after that first growth: a window
    # pushed past its screen's free area (it has its minimum size there) goes back
    screen = window.screen() or QApplication.primaryScreen()
    if screen is not None and not (window.isMaximized() or window.isFullScreen()):
        free, minimum = screen.availableGeometry().size(), window.minimumSize()
        if (free.width() < window.width() == minimum.width()
                or free.height() < window.height() == minimum.height()):
            guard.restore_later(window, window.size().boundedTo(free))


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
    keep_size(qt_window)
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
