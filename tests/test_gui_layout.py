"""The whole GUI on a laptop screen: one napari-reg dock, ortho views, oblique volumes.

A real napari viewer under Xvfb. The checks assume a screen of at least 1280x800 (run as
``xvfb-run -a -s "-screen 0 1280x800x24"``, or pytest-xvfb's default 1280x1024); the
window is sized to 1280x800 whatever the screen. Screenshots go to the test's tmp_path.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QApplication

from napari_reg.core.image import Volume
from napari_reg.layers import volume_to_layer_data
from napari_reg.widgets.main_dock import RegistrationDock
from napari_reg.widgets.view_mode import ViewModeControl
from phantoms import oblique_landmark_nifti


def _add_small_pair(viewer):
    """A small fixed / moving pair (2 mm voxels, the moving one shifted) with landmark
    layers named as the sample data names them: quick to build, same GUI."""
    z, y, x = np.ogrid[-1:1:40j, -1:1:48j, -1:1:36j]
    blob = (np.exp(-4 * (x**2 + y**2 + z**2)) * 100).transpose(2, 1, 0).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-36.0, -48.0, -40.0]
    moved = affine.copy()
    moved[:3, 3] += [6.0, -4.0, 2.0]
    for name, matrix, style in (("fixed (MNI T1)", affine, {"colormap": "gray"}),
                                ("moving (T2-like)", moved, {"colormap": "magenta",
                                                             "blending": "additive"})):
        data, meta, _ = volume_to_layer_data(Volume(blob, matrix, name), "image", **style)
        viewer.add_image(data, **meta)
    for name, shift in (("fixed landmarks", 0.0), ("moving landmarks", 3.0)):
        viewer.add_points(np.array([[0.0, 0.0, 0.0], [10.0, -5.0, 4.0]]) + shift, name=name,
                          size=4)


def _docked_demo(make_napari_viewer, size=(1280, 800), mode="ortho", compact=None):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    _add_small_pair(viewer)
    dock = RegistrationDock(viewer)
    viewer.window.add_dock_widget(dock, name="napari-reg", area="right")
    window.resize(*size)
    for _ in range(5):
        QApplication.processEvents()
    if compact is not None:
        dock.set_compact(compact)
    dock.views.set_mode(mode)
    for _ in range(5):
        QApplication.processEvents()
    return viewer, dock


def _canvas_width(viewer) -> int:
    return viewer.window._qt_viewer.canvas.native.width()


def _left_edge(widget, window) -> int:
    return widget.mapTo(window, widget.rect().topLeft()).x()


# (window size, compact placement): None = the default for the screen (compact on a
# screen narrower than 1600 px, as the 1280x800 Xvfb screen is)
@pytest.mark.parametrize(("size", "compact"), [((1280, 800), None), ((1920, 1080), False),
                                               ((1920, 1080), True)])
def test_window_fits_the_screen_and_the_canvas_gets_the_width(make_napari_viewer, size,
                                                               compact, tmp_path):
    viewer, dock = _docked_demo(make_napari_viewer, size, compact=compact)
    window = viewer.window._qt_window
    if compact is None:  # a small screen starts compact: the dock is napari's left tab
        assert dock.compact_box.isChecked()
        assert window.dockWidgetArea(dock.parentWidget()).name == "LeftDockWidgetArea"
    hint = window.minimumSizeHint()
    minimum = window.minimumSize().expandedTo(hint)
    assert minimum.width() <= 1280 and minimum.height() <= 800, (minimum.width(),
                                                                   minimum.height())
    assert (window.width(), window.height()) == size  # not pushed bigger by a panel
    dock.views.fit_views_height()
    for _ in range(5):
        QApplication.processEvents()
    share = _canvas_width(viewer) / window.width()
    panes = list(dock.views.views.panes.values())
    canvas = viewer.window._qt_viewer.canvas.native
    image_area = canvas.width() * canvas.height() + sum(
        p.qt_viewer.canvas.native.width() * p.qt_viewer.canvas.native.height() for p in panes)
    image_share = image_area / (window.width() * window.height())
    # the image column (main canvas, the ortho views under it) gets most of the width
    assert share >= 0.6 and image_share >= 0.45, (share, image_share)
    if dock.compact_box.isChecked():  # napari's left column only: ~74 % at 1280 px
        assert share >= 0.7, share
    for pane in panes:  # each ortho view large enough to read a brain slice
        assert min(pane.qt_viewer.canvas.native.width(),
                   pane.qt_viewer.canvas.native.height()) >= 0.3 * window.height()
        # the views sit under the canvas, not under the panels
        assert _left_edge(pane, window) >= _left_edge(canvas, window) - 20
    # the panels keep at least half the window's height beside the views
    assert dock.height() >= 0.5 * window.height()
    viewer.screenshot(str(tmp_path / f"window_{size[0]}x{size[1]}.png"), canvas_only=False)
    # readable section buttons, every panel built and fitting the column (nothing cut
    # off on the right: the scroll areas do not scroll sideways), the cost curve inside
    for button in dock.buttons:
        assert button.fontMetrics().horizontalAdvance(button.text()) < button.width(), (
            button.text())
    assert set(dock.panels) == {"LoadWidget", "RegisterWidget", "ManualWidget",
                                "LandmarksWidget", "QCWidget", "ExportWidget", "AtlasWidget",
                                "MotionWidget"}
    for index, name in enumerate(dock.panels):
        dock.buttons[index].click()
        QApplication.processEvents()
        assert dock.current_section() == name
        page = dock.pages.currentWidget()
        native = getattr(dock.panels[name], "native", dock.panels[name])
        assert native.minimumSizeHint().width() <= page.viewport().width(), name
    from napari_reg.widgets._session import get_session

    assert get_session(viewer).cost_panel is dock.cost_panel
    assert dock.isAncestorOf(dock.cost_panel)
    assert "Registration cost" not in viewer.window.dock_widgets


def test_compact_switch_moves_the_dock_and_back(make_napari_viewer):
    viewer, dock = _docked_demo(make_napari_viewer, mode="single")
    window = viewer.window._qt_window
    dock.compact_box.setChecked(False)  # a real toggle of the check box
    QApplication.processEvents()
    assert window.dockWidgetArea(dock.parentWidget()).name == "RightDockWidgetArea"
    right_share = _canvas_width(viewer) / window.width()
    dock.compact_box.setChecked(True)
    QApplication.processEvents()
    assert window.dockWidgetArea(dock.parentWidget()).name == "LeftDockWidgetArea"
    assert dock.isVisible()  # its tab is the one in front
    compact_share = _canvas_width(viewer) / window.width()
    assert compact_share > right_share + 0.15, (compact_share, right_share)
    # napari's layer controls closed by the user: compact is then the left column itself
    from qtpy.QtWidgets import QDockWidget

    controls = window.findChild(QDockWidget, "layer controls")
    dock.compact_box.setChecked(False)
    controls.hide()
    dock.compact_box.setChecked(True)
    QApplication.processEvents()
    assert window.dockWidgetArea(dock.parentWidget()).name == "LeftDockWidgetArea"
    assert dock.isVisible() and not window.tabifiedDockWidgets(dock.parentWidget())


def test_three_views_stay_linked_when_one_is_scrolled(make_napari_viewer, tmp_path):
    viewer, dock = _docked_demo(make_napari_viewer)
    views = dock.views.views
    coronal, sagittal = views.panes["coronal"], views.panes["sagittal"]
    assert viewer.dims.order[-2:] == (1, 0)  # axial: rows y, columns x
    assert coronal.model.dims.order[-2:] == (2, 0)
    assert sagittal.model.dims.order[-2:] == (2, 1)
    # scroll the coronal view's slice with its own slider (world axis y)
    slider = coronal.qt_viewer.dims.slider_widgets[1].slider
    slider.setValue(slider.value() + 12)
    QApplication.processEvents()
    y = coronal.model.dims.point[1]
    assert viewer.dims.point[1] == pytest.approx(y)
    assert sagittal.model.dims.point[1] == pytest.approx(y)
    # scroll the axial (main) view's slice: world z follows in both ortho views
    viewer.dims.set_point(2, viewer.dims.point[2] - 10.0)
    QApplication.processEvents()
    for pane in (coronal, sagittal):
        assert pane.model.dims.point == pytest.approx(viewer.dims.point)
    # the crosshair of the sagittal view goes through (y, z) of the shared point
    cross = views._crosshairs[1].line.pos
    assert cross[0, 1] == pytest.approx(viewer.dims.point[2])  # horizontal line at z
    assert cross[2, 0] == pytest.approx(viewer.dims.point[1])  # vertical line at y
    viewer.screenshot(str(tmp_path / "linked.png"), canvas_only=False)
    # the copies follow the main viewer's layers
    moving = viewer.layers["moving (T2-like)"]
    moving.opacity = 0.25
    moving.visible = False
    copy = coronal.model.layers["moving (T2-like)"]
    assert copy.opacity == 0.25 and not copy.visible
    viewer.add_image(np.zeros((4, 4, 4), np.float32), name="warped (live)")
    assert "warped (live)" in coronal.model.layers
    viewer.layers.remove("warped (live)")
    assert "warped (live)" not in coronal.model.layers
    dock.views.set_mode("single")
    assert dock.views.views is None and "napari-reg views" not in viewer.window.dock_widgets
    # closing the views' dock with its own button is the same as choosing "Single view"
    dock.views.set_mode("ortho")
    views_dock = dock.views._dock
    views_dock.destroyOnClose()  # what the dock's close button calls
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # its deleteLater
    QApplication.processEvents()
    assert dock.views.views is None and dock.views.mode.currentData() == "single"


def test_side_by_side_shows_moving_beside_fixed(make_napari_viewer, tmp_path):
    from napari_reg.widgets._session import get_session

    viewer, dock = _docked_demo(make_napari_viewer, mode="single")
    fixed, moving = viewer.layers["fixed (MNI T1)"], viewer.layers["moving (T2-like)"]
    get_session(viewer).set_roles(fixed, moving)
    dock.views.set_mode("side by side")
    QApplication.processEvents()
    panes = dock.views.views.panes
    assert [lyr.name for lyr in panes["fixed"].model.layers] == ["fixed (MNI T1)",
                                                                  "fixed landmarks"]
    assert [lyr.name for lyr in panes["moving"].model.layers] == ["moving (T2-like)",
                                                                   "moving landmarks"]
    left, right = (panes[s].mapTo(viewer.window._qt_window, panes[s].rect().topLeft())
                   for s in ("fixed", "moving"))
    assert left.x() < right.x() and abs(left.y() - right.y()) < 5  # beside, not above
    # a landmark clicked in the moving view reaches the original Points layer as an
    # addition, so the landmark panel gives it an id, which the view then shows
    panel = dock.panels["LandmarksWidget"]
    panel.fixed_points.value = viewer.layers["fixed landmarks"]
    panel.moving_points.value = original = viewer.layers["moving landmarks"]
    points = panes["moving"].model.layers["moving landmarks"]
    n = len(original.data)
    original.mode = "add"
    assert points.mode == "add"  # the view follows the panel's "Click on moving"
    points.add(np.asarray(points.data[0]) + 1.0)
    assert len(original.data) == n + 1
    new_id = original.features["id"].iloc[-1]
    assert isinstance(new_id, str) and new_id
    assert points.features["id"].iloc[-1] == new_id
    # a hand alignment (out-of-plane rotation): the moving view shows the aligned image
    # (the overlay; the moving layer is hidden) under the landmarks, which follow it
    from napari_reg.widgets._alignment import ALIGNMENT_LAYER_NAME, get_alignment
    from phantoms import homogeneous, rotation

    panel.create_layers()  # landmark layers of the panel's own: they follow the image
    made = panel.moving_points.value
    made.add(np.array([4.0, -2.0, 3.0]))
    alignment = get_alignment(viewer)
    alignment.set(homogeneous(rotation(0.1, 0.2, -0.15), [3.0, 1.0, -2.0], center=[0, 0, 0]))
    alignment.wait()
    QApplication.processEvents()
    names = [lyr.name for lyr in panes["moving"].model.layers]
    assert ALIGNMENT_LAYER_NAME in names and made.name in names, names
    assert panes["moving"].model.layers[ALIGNMENT_LAYER_NAME].visible
    assert not panes["moving"].model.layers["moving (T2-like)"].visible
    np.testing.assert_allclose(panes["moving"].model.layers[made.name].data, made.data)
    viewer.screenshot(str(tmp_path / "side_by_side.png"), canvas_only=False)


def _oblique_phantom(tmp_path):
    path = tmp_path / "oblique_landmark.nii.gz"
    return path, oblique_landmark_nifti(path)


def test_oblique_volume_shows_its_landmark_in_every_view(make_napari_viewer, tmp_path,
                                                          recwarn):
    path, landmark = _oblique_phantom(tmp_path)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    (layer,) = viewer.open(str(path), plugin="napari-reg")
    control = ViewModeControl(viewer)
    control.set_mode("ortho")
    viewer.dims.point = tuple(landmark)
    for _ in range(3):
        QApplication.processEvents()
    views = [viewer] + [p.model for p in control.views.panes.values()]
    for model in views:
        model.reset_view()
        (sliced,) = [lyr for lyr in model.layers]
        # the displayed 2D slice through the landmark: its brightest pixel is the landmark
        image = np.asarray(sliced._slice.image.view)
        peak = np.unravel_index(np.argmax(image), image.shape)
        displayed = list(model.dims.order[-2:])
        data_index = np.zeros(3)
        data_index[displayed] = peak
        data_index[model.dims.order[0]] = sliced.world_to_data(landmark)[model.dims.order[0]]
        world = np.asarray(sliced.data_to_world(data_index))
        spacing = np.diag(sliced.affine.affine_matrix)[:3]
        assert np.abs(world[displayed] - landmark[displayed]).max() <= 1.5 * spacing.max(), (
            model.dims.order, world, landmark)
    # on screen: in every view the crosshair crosses on the landmark block (the only
    # white pixels once the contrast shows the box dark grey)
    layer.contrast_limits = (0.0, 1000.0)
    qt_viewers = [viewer.window._qt_viewer] + [p.qt_viewer for p in control.views.panes.values()]
    for index, qt_viewer in enumerate(qt_viewers):
        rgb = np.asarray(qt_viewer.screenshot(flash=False))[..., :3].astype(int)
        from PIL import Image

        Image.fromarray(rgb.astype(np.uint8)).save(tmp_path / f"oblique_view{index}.png")
        white = (rgb.min(axis=2) > 200)
        yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 170) & (rgb[..., 2] < 90)
        assert white.sum() > 4 and yellow.sum() > 50, index
        rows, cols = np.nonzero(white)
        cross_col = np.argmax(yellow.sum(axis=0))  # the vertical line's column
        cross_row = np.argmax(yellow.sum(axis=1))  # the horizontal line's row
        half = max(np.ptp(rows), np.ptp(cols)) / 2 + 3
        assert abs(cross_col - cols.mean()) <= half and abs(cross_row - rows.mean()) <= half, (
            index, cross_row, cross_col, rows.mean(), cols.mean())
    viewer.screenshot(str(tmp_path / "oblique.png"), canvas_only=False)
    assert not [w for w in recwarn if "Non-orthogonal slicing" in str(w.message)]
    # registration still sees the file's voxels and affine
    from napari_reg.layers import volume_from_layer

    volume = volume_from_layer(layer)
    assert volume.shape == (40, 36, 32)
    np.testing.assert_allclose(volume.affine, nib.load(str(path)).affine, atol=1e-6)
    control.set_mode("single")



def test_closing_the_demo_window_with_the_views_open_raises_nothing(tmp_path):
    """napari's window close deletes the napari-reg dock (and its View box) before the
    views' dock reports that it is gone: that must end the views quietly. Before the fix
    a Qt slot raised and PyQt aborted the process (a real napari.Viewer, as the demo
    builds it, in its own process)."""
    import subprocess
    import sys

    script = tmp_path / "close_demo.py"
    script.write_text(
        "import napari\n"
        "from qtpy.QtWidgets import QApplication\n"
        "from napari_reg.commands import demo\n"
        "viewer = napari.Viewer(title='close test')\n"
        "layers = viewer.open_sample('napari-reg', 'mni_pair')\n"
        "demo.setup_view(viewer, layers[0])\n"
        "demo.dock_plugin_widgets(viewer)\n"
        "demo.main_dock(viewer).views.set_mode('ortho')\n"
        "QApplication.processEvents()\n"
        "viewer.close()\n"
        "QApplication.processEvents()\n"
        "print('closed cleanly')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0 and "closed cleanly" in done.stdout, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]

