"""Manual alignment panel: sliders move the resampled overlay (checked voxel for voxel
against the core), centre changes keep the image still, undo / reset, and the Register
panel's "Current manual alignment" sees the same matrix. Screenshot:
/tmp/napari_reg_manual.png (sample MNI pair, out-of-plane rotation, axial view)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg._sample_data import load_mni_pair
from napari_reg.core.image import Volume
from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.layers import volume_to_layer_data
from napari_reg.widgets._layer_volumes import layer_volume, manual_initial
from napari_reg.widgets._session import get_session
from napari_reg.widgets.manual_widget import ManualWidget, rigid_motion
from napari_reg.widgets.overlay import warp_to_grid
from napari_reg.widgets.register_widget import RegisterWidget

# napari's "Non-orthogonal slicing ... not fully supported" warning means a layer we made
# would be drawn in the wrong place (napari #7310): an error in these tests.
pytestmark = pytest.mark.filterwarnings("error:Non-orthogonal slicing:UserWarning")


def _down(volume: Volume, step: int = 3) -> Volume:
    scale = np.diag([step] * 3 + [1.0])
    return Volume(volume.data[::step, ::step, ::step].copy(), volume.affine @ scale, volume.name)


@pytest.fixture(scope="module")
def pair():
    sample = load_mni_pair()
    return _down(sample.fixed), _down(sample.moving)


@pytest.fixture
def panel(make_napari_viewer, pair):
    viewer = make_napari_viewer()
    fixed, moving = pair
    layers = []
    for vol, style in ((fixed, {"colormap": "gray"}),
                       (moving, {"colormap": "magenta", "blending": "additive"})):
        data, kwargs, _ = volume_to_layer_data(vol, "image", **style)
        layers.append(viewer.add_image(data, **kwargs))
    get_session(viewer).set_roles(*layers)
    widget = ManualWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _expected_overlay(widget) -> np.ndarray:
    overlay = widget.alignment.overlay
    return warp_to_grid(overlay.moving, MatrixTransform(widget.matrix()), overlay.shape,
                        overlay.grid_affine)


def test_sliders_drive_the_overlay_and_the_register_initialisation(panel) -> None:
    viewer, widget = panel
    session = get_session(viewer)
    register = RegisterWidget(viewer)
    viewer.window.add_dock_widget(register)
    widget.translate[0].value = 10.0
    widget.alignment.wait()
    expected = np.eye(4)
    expected[0, 3] = -10.0  # the moving image shown 10 mm to the right: T(x) = x - 10 e_x
    np.testing.assert_allclose(widget.matrix(), expected, atol=1e-12)
    np.testing.assert_allclose(manual_initial(session.fixed_layer, session.moving_layer),
                               expected, atol=1e-9)
    overlay = widget.alignment.overlay.layer
    assert overlay.visible and not session.moving_layer.visible
    np.testing.assert_allclose(overlay.data, _expected_overlay(widget), atol=1e-5)
    first = np.array(overlay.data)

    # an out-of-plane rotation about the moving image's centre: the overlay follows
    widget.rotate[0].value = 20.0
    widget.rotate[2].value = -15.0
    widget.alignment.wait()
    centre = layer_volume(session.moving_layer, use_file_affine=True).center_world()
    motion = rigid_motion([10.0, 0, 0], [20.0, 0, -15.0], centre)
    np.testing.assert_allclose(widget.matrix(), np.linalg.inv(motion), atol=1e-12)
    assert not np.allclose(overlay.data, first)
    np.testing.assert_allclose(overlay.data, _expected_overlay(widget), atol=1e-5)
    np.testing.assert_allclose(manual_initial(session.fixed_layer, session.moving_layer),
                               widget.matrix(), atol=1e-9)

    # the Register panel starts from exactly this matrix
    widget.use_as_initialisation()
    assert register.init.value == "manual"
    viewer.dims.order = (0, 1, 2)  # sagittal slices: the x rotation is in-plane... and
    viewer.dims.order = (2, 1, 0)  # ...axial: it is out of plane; the overlay is right
    viewer.reset_view()
    viewer.screenshot(path="/tmp/napari_reg_manual.png", canvas_only=False)


def test_centre_change_undo_and_reset(panel) -> None:
    viewer, widget = panel
    session = get_session(viewer)
    widget.rotate[2].value = 30.0
    widget.alignment.wait()
    before = widget.matrix()
    viewer.cursor.position = (5.0, -20.0, 10.0)
    widget.centre.value = "cursor"  # nothing moves; the sliders restart from zero
    np.testing.assert_allclose(widget.center, [5.0, -20.0, 10.0])
    np.testing.assert_allclose(widget.matrix(), before, atol=1e-12)
    assert widget.rotate[2].value == 0.0
    widget.rotate[2].value = 10.0  # 10 degrees about the cursor, after the first 30
    widget.alignment.wait()
    about_cursor = rigid_motion([0, 0, 0], [0, 0, 10.0], [5.0, -20.0, 10.0])
    np.testing.assert_allclose(widget.matrix(), before @ np.linalg.inv(about_cursor),
                               atol=1e-12)
    viewer.cursor.position = (0.0, 0.0, 0.0)
    widget.pick_centre.clicked.emit()  # a new centre, picked again: still nothing moves
    np.testing.assert_allclose(widget.center, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(widget.matrix(), before @ np.linalg.inv(about_cursor),
                               atol=1e-12)
    assert widget.undo()  # back to before the re-pick
    assert widget.undo()  # back to before the 10 degrees
    np.testing.assert_allclose(widget.matrix(), before, atol=1e-12)
    assert widget.undo()  # back to before the centre change: 30 degrees on the slider
    assert widget.rotate[2].value == 30.0 and widget.centre.value == "cursor"
    np.testing.assert_allclose(widget.matrix(), before, atol=1e-12)
    widget.reset()
    widget.alignment.wait()
    np.testing.assert_allclose(manual_initial(session.fixed_layer, session.moving_layer),
                               np.eye(4), atol=1e-9)
    assert session.moving_layer.visible and not widget.alignment.overlay.layer.visible
    assert widget.undo()  # the reset is undoable too
    np.testing.assert_allclose(manual_initial(session.fixed_layer, session.moving_layer),
                               before, atol=1e-9)
    widget.alignment.wait()


def test_without_images_the_panel_says_so(make_napari_viewer, monkeypatch) -> None:
    errors: list[str] = []
    monkeypatch.setattr("napari_reg.widgets.manual_widget.show_error", errors.append)
    viewer = make_napari_viewer()
    widget = ManualWidget(viewer)
    assert "Load panel" in widget.status.value
    widget.translate[1].value = 3.0
    assert errors and "Load panel" in errors[-1]


def test_two_dimensional_images(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[0:40, 0:30]
    image = np.exp(-((yy - 15.0) ** 2 + (xx - 10.0) ** 2) / 20.0).astype(np.float32)
    affine = np.array([[1.5, 0, -20.0], [0, 1.0, -15.0], [0, 0, 1]])
    layers = []
    for name in ("fixed 2d", "moving 2d"):
        data, kwargs, _ = volume_to_layer_data(Volume(image, affine, name), "image")
        layers.append(viewer.add_image(data, **kwargs))
    get_session(viewer).set_roles(*layers)
    widget = ManualWidget(viewer)
    assert not widget.translate[2].visible and not widget.rotate[0].visible
    widget.rotate[2].value = 90.0
    widget.translate[1].value = 5.0
    widget.alignment.wait()
    centre = layer_volume(layers[1], use_file_affine=True).center_world()
    motion = rigid_motion([0.0, 5.0], [90.0], centre)
    np.testing.assert_allclose(widget.matrix(), np.linalg.inv(motion), atol=1e-12)
    np.testing.assert_allclose(widget.alignment.overlay.layer.data, _expected_overlay(widget),
                               atol=1e-5)


def _mouse(canvas, kind, pos, buttons, modifiers):
    from qtpy.QtCore import QEvent, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    button = Qt.LeftButton if kind != QEvent.MouseMove else Qt.NoButton
    event = QMouseEvent(kind, QPointF(*pos), QPointF(canvas.mapToGlobal(
        canvas.rect().topLeft())) + QPointF(*pos), button, buttons, modifiers)
    QApplication.sendEvent(canvas, event)


def _drag(qtbot, canvas, start, end, modifiers=None, steps=6):
    from qtpy.QtCore import QEvent, Qt

    modifiers = modifiers if modifiers is not None else Qt.NoModifier
    _mouse(canvas, QEvent.MouseButtonPress, start, Qt.LeftButton, modifiers)
    for k in range(1, steps + 1):
        pos = [s + (e - s) * k / steps for s, e in zip(start, end, strict=True)]
        _mouse(canvas, QEvent.MouseMove, pos, Qt.LeftButton, modifiers)
        qtbot.wait(40)
    _mouse(canvas, QEvent.MouseButtonRelease, end, Qt.NoButton, modifiers)
    qtbot.wait(20)


def test_drag_shift_drag_and_keys_in_the_canvas(panel, qtbot) -> None:
    """A real drag, Shift-drag and arrow / PageUp keys on the viewer's canvas move the
    image (live overlay, sliders, undo) by exactly the world motion the mouse made."""
    from qtpy.QtCore import Qt

    from napari_reg.widgets._canvas_alignment import plane_rotation, translation

    viewer, widget = panel
    viewer.window._qt_window.resize(1280, 800)
    viewer.window._qt_window.show()
    viewer.dims.order = (2, 1, 0)  # axial slices: x horizontal (axis 0), y vertical (1)
    viewer.camera.zoom = 3.0  # 3 screen pixels per mm
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.wait(50)
    before = widget.matrix()
    widget.in_canvas.value = True
    shown = list(viewer.dims.displayed)
    centre_px = (canvas.width() / 2, canvas.height() / 2)

    # drag 30 px right and 15 px down: 10 mm and 5 mm along the shown axes, none across
    _drag(qtbot, canvas, centre_px, (centre_px[0] + 30, centre_px[1] + 15))
    moved = np.linalg.inv(widget.matrix()) @ before  # T = T0 M^-1 -> M = T^-1 T0
    delta = moved[:3, 3]
    np.testing.assert_allclose(moved[:3, :3], np.eye(3), atol=1e-9)
    np.testing.assert_allclose(delta[shown[1]], 10.0, atol=0.7)
    np.testing.assert_allclose(delta[shown[0]], 5.0, atol=0.7)
    assert abs(delta[viewer.dims.not_displayed[0]]) < 1e-9
    assert widget.translate[shown[1]].value == pytest.approx(delta[shown[1]])
    widget.alignment.wait()
    np.testing.assert_allclose(widget.alignment.overlay.layer.data, _expected_overlay(widget),
                               atol=1e-4)
    viewer.screenshot(path="/tmp/napari_reg_manual_drag.png", canvas_only=False)

    assert widget.in_canvas.value and viewer.layers.selection.active is widget.canvas.layer
    # Shift-drag 40 px sideways: 20 degrees in the viewed plane about the pressed point
    after_drag = widget.matrix()
    press_world = np.array(viewer.cursor.position, dtype=float)
    _drag(qtbot, canvas, centre_px, (centre_px[0] + 40, centre_px[1]), Qt.ShiftModifier)
    press_world = np.array(widget.canvas.last_press, dtype=float)
    expected = after_drag @ np.linalg.inv(plane_rotation(3, (shown[1], shown[0]), 20.0,
                                                         press_world))
    np.testing.assert_allclose(widget.matrix(), expected, atol=1e-6)

    # arrow keys nudge by the key step; PageUp moves out of the viewed plane
    widget.key_step.value = 2.0
    start = widget.matrix()
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key_Right)
    qtbot.keyClick(canvas, Qt.Key_PageUp)
    nudge = np.zeros(3)
    nudge[shown[1]] = 2.0
    nudge[viewer.dims.not_displayed[0]] = 2.0
    np.testing.assert_allclose(widget.matrix(), start @ np.linalg.inv(translation(nudge)),
                               atol=1e-5)
    # each gesture and key press is one undo step
    for _ in range(2):
        widget.undo()
    np.testing.assert_allclose(widget.matrix(), start, atol=1e-5)
    widget.undo()
    np.testing.assert_allclose(widget.matrix(), after_drag, atol=1e-5)
    widget.undo()
    np.testing.assert_allclose(widget.matrix(), before, atol=1e-5)
    widget.in_canvas.value = False  # the camera pans again
    assert get_session(viewer).moving_layer.mouse_pan
