"""``napari-reg demo``: a napari viewer with the sample pair and the plugin's widgets.

The MNI T1 (fixed, grey) and the moved T2-like image (moving, magenta, additive) open in
world space (RAS mm) through the plugin's own sample-data contribution; the all-in-one
napari-reg dock (every panel as a section) is docked (a tab beside napari's layer
controls on a screen narrower than 1600 px, else on the right) and the ortho views
(axial on the main canvas, coronal and sagittal below, one crosshair) are on. The window
fills the screen (it fits 1280x800). The views start at the fixed image's centre, anterior
/ superior up and the subject's right on the right of the screen (neurological display).

``--screenshot OUT.png`` saves the whole window once the event loop has drawn it, closes
the viewer and returns 0: usable headless under ``xvfb-run -a``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PLUGIN = "napari-reg"
SAMPLE_KEY = "mni_pair"
# Milliseconds after the event loop starts before the screenshot: long enough for the
# first paint of the canvas and the docked widgets.
_SCREENSHOT_DELAY_MS = 600
MAIN_DOCK = "All panels"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo`` and its options."""
    parser = subparsers.add_parser(
        "demo",
        help="open napari with the sample pair and the plugin's widgets",
        description="Open a napari viewer with the shipped MNI152 sample pair in world "
        "space (RAS mm) and the napari-reg widgets docked.",
    )
    parser.add_argument("--screenshot", metavar="OUT.png", type=Path, default=None,
                        help="save a screenshot of the whole window to OUT.png and exit")
    parser.add_argument("--no-widgets", action="store_true",
                        help="do not dock the plugin's widgets")
    parser.add_argument("--view", choices=("single", "ortho", "side by side"), default="ortho",
                        help="single view, ortho views (axial + coronal + sagittal, default) "
                        "or fixed and moving side by side")
    parser.set_defaults(func=run)
    return parser


def _check_display() -> str | None:
    """A message when Qt would abort for lack of a display (Linux without X/Wayland)."""
    if not sys.platform.startswith("linux"):
        return None
    if os.environ.get("QT_QPA_PLATFORM") or os.environ.get("DISPLAY") \
            or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return ("no display found (DISPLAY is not set). napari needs one for OpenGL; "
            "run headless as: xvfb-run -a napari-reg demo --screenshot out.png")


def dock_plugin_widgets(viewer, plugin: str = PLUGIN) -> list[str]:
    """Dock the all-in-one napari-reg dock (every panel as a section); return its name.

    A dock that fails to build is reported on stderr, so the demo still opens the images.
    """
    try:
        viewer.window.add_plugin_dock_widget(plugin, widget_name=MAIN_DOCK)
    except Exception as exc:  # report, keep the demo usable
        print(f"napari-reg demo: widget {MAIN_DOCK!r} could not be docked: {exc}",
              file=sys.stderr)
        return []
    return [MAIN_DOCK]


def main_dock(viewer):
    """The docked RegistrationDock, or None."""
    from napari_reg.widgets.main_dock import RegistrationDock

    found = viewer.window._qt_window.findChildren(RegistrationDock)  # napari has no public
    return found[0] if found else None                                # lookup by class


def fit_window_to_screen(viewer) -> None:
    """Give the window the screen's available area (a 1280x800 laptop included)."""
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    if screen is None:
        return
    area = screen.availableGeometry()
    window = viewer.window._qt_window
    window.resize(area.width(), area.height())
    window.move(area.x(), area.y())


def setup_view(viewer, fixed_layer) -> None:
    """2D axial view through the middle of ``fixed_layer``: world z is sliced, y (anterior)
    points up and x (right) to the right."""
    import numpy as np

    viewer.dims.ndisplay = 2
    ndim = viewer.dims.ndim
    # World axes are (x, y, z) = (R, A, S) for 3D layers; the last three world axes.
    x_axis, y_axis, z_axis = ndim - 3, ndim - 2, ndim - 1
    order = [a for a in range(ndim) if a not in (x_axis, y_axis, z_axis)]
    viewer.dims.order = (*order, z_axis, y_axis, x_axis)
    # napari 0.9 moved the camera to viewer.scene.camera; older versions have viewer.camera.
    scene = getattr(viewer, "scene", None)
    camera = scene.camera if scene is not None else viewer.camera
    camera.orientation2d = ("up", "right")
    extent = np.asarray(fixed_layer.extent.world)  # (2, ndim) world min/max
    viewer.dims.set_point(z_axis, float(extent[:, -1].mean()))
    viewer.reset_view()
    viewer.layers.selection.active = fixed_layer


def _fit_view(viewer) -> None:
    """Fit the views to their canvases as they are now: docking widgets after
    ``reset_view`` narrows the canvas, so this runs again once the window is laid out."""
    from qtpy.QtWidgets import QApplication

    viewer.reset_view()
    dock = main_dock(viewer) if viewer.window is not None else None
    if dock is not None and dock.views.views is not None:
        dock.views.fit_views_height()
        QApplication.processEvents()
        for pane in dock.views.views.panes.values():
            pane.model.reset_view()


def _hide_toasts(viewer) -> None:
    """Hide napari's pop-up notifications (e.g. a Qt-backend deprecation warning) so they
    do not cover the canvas in a screenshot. Cosmetic only: uses a private napari class,
    and silently does nothing if that changes."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.hide()
    except Exception:  # napari internals moved: the screenshot just keeps the toast
        pass


def _schedule_screenshot(viewer, path: Path, result: dict) -> None:
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_reg.io.atomic import atomic_path

    def shoot() -> None:
        try:
            QApplication.processEvents()
            _fit_view(viewer)
            _hide_toasts(viewer)
            QApplication.processEvents()
            with atomic_path(path) as tmp:
                viewer.screenshot(str(tmp), canvas_only=False, flash=False)
            result["ok"] = True
        except Exception as exc:
            print(f"napari-reg demo: screenshot failed: {exc}", file=sys.stderr)
        finally:
            viewer.close()
            QApplication.instance().quit()

    QTimer.singleShot(_SCREENSHOT_DELAY_MS, shoot)


def run(args: argparse.Namespace) -> int:
    """Open the demo viewer; with ``--screenshot`` save it and exit. Returns the exit code."""
    problem = _check_display()
    if problem:
        print(f"napari-reg demo: {problem}", file=sys.stderr)
        return 1
    import napari

    viewer = napari.Viewer(title="napari-reg demo")
    fit_window_to_screen(viewer)
    layers = viewer.open_sample(PLUGIN, SAMPLE_KEY)
    setup_view(viewer, layers[0])
    if not args.no_widgets and dock_plugin_widgets(viewer):
        dock = main_dock(viewer)
        if dock is not None:
            dock.views.set_mode(args.view)

    if args.screenshot is None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, lambda: _fit_view(viewer))  # once the window is laid out
        napari.run()
        return 0
    result = {"ok": False}
    _schedule_screenshot(viewer, Path(args.screenshot), result)
    napari.run()
    if result["ok"]:
        print(f"napari-reg demo: screenshot written to {args.screenshot}")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    """Run ``demo`` alone (``python -m napari_reg.commands.demo``), without the other
    sub-commands' imports."""
    parser = argparse.ArgumentParser(prog="napari-reg")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
