"""Fit a panel into a narrow column: labels above fields, wrapped text, stacked rows.

The panels are built for a dock of their own (label beside field, buttons side by side:
330-680 px wide). In the all-in-one dock they share one ~300 px column, and a scroll
area without horizontal scrolling would cut off whatever is wider (e.g. "Click on moving"
beside "Click on fixed"). :func:`compact` rearranges the panel's Qt layouts in place,
without touching what the panels do:

* a labelled row (magicgui puts a QLabel and its field in a horizontal layout) shows
  the label above the field, which then gets the whole width;
* labels wrap their text, combo boxes stop sizing themselves to their longest item;
* a horizontal row still wider than the column (buttons side by side) is stacked, and a
  button whose text alone is wider shows it on two lines.

Only Qt's public layout API is used; magicgui's containers keep working (their values,
signals and widgets are the same objects).
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QBoxLayout,
    QComboBox,
    QLabel,
    QLayout,
    QPushButton,
    QSizePolicy,
    QWidget,
)

__all__ = ["compact", "widest_row"]

# A combo box shows at least this many characters of its current item (the rest is
# elided; the full text is in its list and tooltip).
_COMBO_CHARACTERS = 12


def _horizontal(layout: QBoxLayout) -> bool:
    return layout.direction() in (QBoxLayout.Direction.LeftToRight,
                                  QBoxLayout.Direction.RightToLeft)


def _is_labelled_row(layout: QBoxLayout) -> bool:
    """A label followed by its field (magicgui's labelled widget), nothing else."""
    if layout.count() != 2:
        return False
    first, second = layout.itemAt(0).widget(), layout.itemAt(1).widget()
    return isinstance(first, QLabel) and second is not None


def _stack(layout: QBoxLayout) -> None:
    layout.setDirection(QBoxLayout.Direction.TopToBottom)
    layout.setSpacing(2)


def _break_line(button: QAbstractButton, width: int) -> None:
    """A button text wider than ``width``: break it at the space nearest its middle
    (Qt buttons show a two-line text; nothing else about the button changes)."""
    text = button.text()
    if "\n" in text or " " not in text or button.minimumSizeHint().width() <= width:
        return
    middle = len(text) // 2
    cut = min((i for i, c in enumerate(text) if c == " "), key=lambda i: abs(i - middle))
    button.setText(text[:cut] + "\n" + text[cut + 1:])


def widest_row(widget: QWidget) -> int:
    """The panel's minimum width in pixels (what the column must offer)."""
    layout = widget.layout()
    if layout is not None:
        layout.activate()
    return widget.minimumSizeHint().width()


def compact(widget: QWidget, width: int) -> int:
    """Rearrange ``widget``'s layouts to fit ``width`` pixels; return its new minimum
    width (may still exceed ``width`` when a single control is wider).

    Call it again once the widget is in napari's window: napari's style sheet (fonts,
    paddings) changes the sizes; a second call only rearranges what still does not fit.
    """
    widget.ensurePolished()
    for label in widget.findChildren(QLabel):
        label.setWordWrap(True)
        label.setMinimumWidth(0)
        # a wrapped label may be narrower than its one-line size hint
        label.setSizePolicy(QSizePolicy.Policy.Preferred, label.sizePolicy().verticalPolicy())
    for button in widget.findChildren(QPushButton):
        _break_line(button, width)
    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(_COMBO_CHARACTERS)
        if not combo.toolTip():
            combo.setToolTip(combo.currentText())
    for area in widget.findChildren(QAbstractScrollArea):
        if area.minimumWidth() > width:
            area.setMinimumWidth(width)
    layouts = [lay for lay in widget.findChildren(QLayout) if isinstance(lay, QBoxLayout)]
    own = widget.layout()
    if isinstance(own, QBoxLayout) and own not in layouts:
        layouts.append(own)
    for layout in layouts:
        if _horizontal(layout) and _is_labelled_row(layout):
            _stack(layout)
    # innermost first: a row of rows shrinks once its members are stacked
    for layout in sorted(layouts, key=_depth, reverse=True):
        if _horizontal(layout):
            layout.invalidate()
            if layout.minimumSize().width() > width:
                _stack(layout)
    for child in widget.findChildren(QWidget):
        if child.minimumWidth() > width:  # a width the panel fixed for its own dock
            child.setMinimumWidth(width)
    return widest_row(widget)


def _depth(obj: QLayout) -> int:
    depth = 0
    parent = obj.parent()
    while parent is not None:
        depth += 1
        parent = parent.parent()
    return depth
