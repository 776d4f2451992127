"""Notice every way a panel can be closed, so it can stop its run.

napari's dock title-bar "x" (``Window.remove_dock_widget``) only *unparents* the panel
and deletes the dock: the panel's QWidget lives on and its ``destroyed`` signal never
fires. The dock's own close (napari's "hide" button, ``QDockWidget.close()``) hides it.
Neither reaches the panel as an event of its own, so this watcher filters the events of
the panel and of all its ancestors (a panel may sit in a tab of a bigger dock):

* an ancestor (or the panel) loses its parent and the panel is no longer inside a main
  window or a floating dock -> closed;
* a ``Close`` event reaches a QDockWidget that holds the panel -> closed.

Hiding alone (a tab switched away, the window minimised) is not closing.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

__all__ = ["PanelCloseWatcher"]


def _in_a_window(widget: QWidget) -> bool:
    top = widget.window()
    return isinstance(top, QMainWindow | QDockWidget)


class PanelCloseWatcher(QObject):
    """Call ``on_close()`` (GUI thread) whenever ``widget`` is closed as a panel.

    It may be called more than once (closed, re-docked, closed again): ``on_close`` must
    be idempotent.
    """

    def __init__(self, widget: QWidget, on_close: Callable[[], None]):
        super().__init__(widget)
        self._widget = widget
        self._on_close = on_close
        self._watched: list[QWidget] = []
        self._was_docked = False
        self._rewire()

    def _rewire(self) -> None:
        for old in self._watched:
            try:
                old.removeEventFilter(self)
            except RuntimeError:  # already deleted by Qt
                pass
        chain, w = [], self._widget
        while w is not None:
            chain.append(w)
            w = w.parentWidget()
        for w in chain:
            w.installEventFilter(self)
        self._watched = chain
        docked = _in_a_window(self._widget)
        if self._was_docked and not docked:
            self._on_close()
        self._was_docked = docked

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        kind = event.type()
        if kind == QEvent.ParentChange:
            self._rewire()
        elif kind == QEvent.Close and isinstance(obj, QDockWidget):
            self._on_close()
        return False
