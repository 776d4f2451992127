"""Every input control of every napari-reg panel says what it does (and in which units)
in a tooltip: walk all QWidgets of the all-in-one dock, a real viewer under Xvfb."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QTabBar,
    QTableView,
    QWidget,
)

from napari_reg.widgets.main_dock import RegistrationDock

# What a user operates: buttons, check boxes, text fields, numbers, choices, sliders.
INPUTS = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QAbstractSlider,
          QTableView)


def _described(widget: QWidget, dock: QWidget) -> bool:
    """A tooltip on the control, or on the composite widget around it, at most two levels
    up (magicgui's FileEdit and FloatSlider, a collapsible's toggle button keep it there)."""
    for _level in range(3):
        if widget is None or widget is dock:
            return False
        if widget.toolTip().strip():
            return True
        widget = widget.parentWidget()
    return False


def _inputs_without_tooltip(dock: QWidget) -> list[str]:
    missing = []
    for widget in dock.findChildren(QWidget):
        if not isinstance(widget, INPUTS) or isinstance(widget, QTabBar):
            continue
        if type(widget).__name__ in ("QScrollBar", "QToolBoxButton") or \
                widget.objectName() == "qt_tableview_cornerbutton":
            continue  # scroll bars, a table's corner; section titles carry item tooltips
        if isinstance(widget.parentWidget(), (QAbstractSpinBox, QComboBox)):
            continue  # the line edit inside a spin box / combo box
        if not _described(widget, dock):
            text = widget.text() if isinstance(widget, (QAbstractButton, QLineEdit)) else ""
            missing.append(f"{type(widget).__name__} {widget.objectName()!r} {text!r} "
                           f"in {type(widget.window()).__name__}")
    return missing


def test_every_control_has_a_tooltip(make_napari_viewer):
    viewer = make_napari_viewer()
    dock = RegistrationDock(viewer)
    viewer.window.add_dock_widget(dock, name="napari-reg")
    missing = _inputs_without_tooltip(dock)
    assert not missing, f"{len(missing)} controls without a tooltip:\n" + "\n".join(missing)


def test_every_panel_on_its_own_has_its_tooltips(make_napari_viewer):
    """Each panel opened alone (Plugins menu) carries its tooltips too, not only in the
    all-in-one dock."""
    import importlib

    from napari_reg.widgets.cost_plot import CostPlotPanel
    from napari_reg.widgets.main_dock import SECTIONS

    viewer = make_napari_viewer()
    panels = [getattr(importlib.import_module(f"napari_reg.widgets.{module}"), cls)(viewer)
              for _title, module, cls in SECTIONS]
    missing = []
    for panel in [*panels, CostPlotPanel()]:
        native = getattr(panel, "native", panel)
        missing += [f"{type(panel).__name__}: {m}" for m in _inputs_without_tooltip(native)]
        native.deleteLater()
    assert not missing, f"{len(missing)} controls without a tooltip:\n" + "\n".join(missing)
