"""QC views that read, driven by clicks in a real viewer at 1280 x 800: flicker and fade
visible with the live overlay present (and the user's layers as they were afterwards),
the multi-modal mismatch beside the plain difference, views replacing each other, the
deformed grid as line segments in the viewed plane with and without the affine part,
3D iso-surfaces, and QC layers on the axis-aligned display grid of an oblique fixed image.
Screenshots of each view: /tmp/qc_shots/*.png."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

import test_widgets_qc as qc_tests
from napari_reg import _reader
from napari_reg._sample_data import load_mni_pair
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.display_grid import is_axis_aligned
from napari_reg.layers import volume_to_layer_data
from napari_reg.widgets._layer_volumes import layer_volume
from napari_reg.widgets._register_settings import LIVE_LAYER_NAME
from napari_reg.widgets._session import get_session
from napari_reg.widgets.main_dock import RegistrationDock
from napari_reg.widgets.qc_widget import QC_PREFIX, QCWidget

errors = qc_tests.errors
_outcome = qc_tests._outcome
SHOTS = Path("/tmp/qc_shots")


def _click(qtbot, button) -> None:
    """A left click on the control (a check box's box sits at its left end)."""
    native = button.native
    qtbot.mouseClick(native, Qt.MouseButton.LeftButton, pos=QPoint(8, native.height() // 2))


def _shot(viewer, name: str) -> np.ndarray:
    SHOTS.mkdir(exist_ok=True)
    return viewer.screenshot(path=str(SHOTS / f"{name}.png"), canvas_only=False)


def _canvas(viewer) -> np.ndarray:
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)


def _mni_viewer(make_napari_viewer, qtbot, mode: str = "single"):
    """The sample pair as the demo shows it (fixed grey, moving magenta) with napari-reg's
    dock open at its QC section, in a 1280 x 800 window, axial view."""
    pair = load_mni_pair()
    viewer = make_napari_viewer(show=True)
    layers = []
    for volume, style in ((pair.fixed, {"colormap": "gray"}),
                          (pair.moving, {"colormap": "magenta", "blending": "additive"})):
        data, kwargs, _ = volume_to_layer_data(volume, "image", **style)
        layers.append(viewer.add_image(data, **kwargs))
    session = get_session(viewer)
    session.set_roles(*layers)
    dock = RegistrationDock(viewer)
    viewer.window.add_dock_widget(dock, name="napari-reg", area="right")
    viewer.window._qt_window.resize(1280, 800)
    dock.views.set_mode(mode)
    dock.open_section("QCWidget")
    widget = dock.panels["QCWidget"]
    viewer.dims.order = (2, 1, 0)
    qtbot.wait(50)
    return viewer, pair, layers, session, widget


def _deformable_truth(pair) -> tuple[CompositeTransform, np.ndarray]:
    """The pair's true affine A after a smooth 6 mm bump W: ``T(x) = A(W(x))``."""
    fixed = pair.fixed
    shape = tuple(max(2, n // 3) for n in fixed.shape)
    grid = fixed.affine @ np.diag([3.0, 3.0, 3.0, 1.0])
    world = np.moveaxis(np.tensordot(grid[:3, :3], np.indices(shape), 1), 0, -1) + grid[:3, 3]
    centre = np.array([20.0, -20.0, 10.0])
    u = np.zeros(shape + (3,), np.float32)
    u[..., 1] = 6.0 * np.exp(-((world - centre) ** 2).sum(-1) / (2 * 15.0 ** 2))
    truth = np.asarray(pair.true_fixed_to_moving)
    return CompositeTransform([DisplacementField(u, grid), MatrixTransform(truth)]), truth


def test_flicker_and_fade_show_over_the_live_layer(make_napari_viewer, qtbot, errors):
    viewer, pair, layers, session, widget = _mni_viewer(make_napari_viewer, qtbot)
    outcome = _outcome(pair.fixed, pair.moving, MatrixTransform(pair.true_fixed_to_moving))
    session.set_outcome(outcome)
    # the state a run leaves: the live overlay (magenta, additive) on top, moving visible
    live = viewer.add_image(outcome.warped.data, affine=outcome.warped.affine,
                            name=LIVE_LAYER_NAME, colormap="magenta", blending="additive")
    before = [(lyr.name, lyr.visible, lyr.opacity, lyr.blending) for lyr in viewer.layers]
    widget.flicker_ms.value = 300
    _click(qtbot, widget.flicker)
    assert widget.flicker.value
    warped = viewer.layers[QC_PREFIX + "warped"]
    # fixed and warped (grey) are drawn above every image, the live layer included
    names = [lyr.name for lyr in viewer.layers]
    assert names.index(QC_PREFIX + "warped") > names.index(LIVE_LAYER_NAME)
    flips: list[bool] = []
    warped.events.visible.connect(lambda _e: flips.append(warped.visible))
    qtbot.waitUntil(lambda: len(flips) >= 2, timeout=5000)
    _shot(viewer, "flicker")
    _click(qtbot, widget.flicker)  # off: the warped image stays shown
    assert not widget.flicker.value and warped.visible
    shown_warped = _canvas(viewer)
    warped.visible = False  # what flicker's other phase shows: the fixed image
    shown_fixed = _canvas(viewer)
    warped.visible = True
    for picture in (shown_warped, shown_fixed):  # grey: no magenta from the live layer
        assert np.abs(picture[..., 0] - picture[..., 1]).max() <= 3
    assert np.abs(shown_warped - shown_fixed).mean() > 5  # the flicker is visible
    widget.fade.value = 0.5  # fade: half of each
    assert warped.opacity == pytest.approx(0.5)
    faded = _canvas(viewer)
    assert np.abs(faded[..., 0] - faded[..., 1]).max() <= 3
    _shot(viewer, "fade")
    _click(qtbot, widget.clear_button)
    after = [(lyr.name, lyr.visible, lyr.opacity, lyr.blending) for lyr in viewer.layers]
    assert after == before and live.visible  # the user's layers as they were
    assert not errors, errors


def test_mismatch_difference_and_views_replacing_each_other(make_napari_viewer, qtbot,
                                                            errors):
    viewer, pair, layers, session, widget = _mni_viewer(make_napari_viewer, qtbot)
    brain = pair.fixed.data > np.percentile(pair.fixed.data, 60)
    truth = np.asarray(pair.true_fixed_to_moving)
    shifted = truth.copy()
    shifted[:3, 3] += [5.0, 0.0, 0.0]  # 5 mm off along x
    means = {}
    for name, matrix in (("aligned", truth), ("5 mm off", shifted)):
        session.set_outcome(_outcome(pair.fixed, pair.moving, MatrixTransform(matrix)))
        _click(qtbot, widget.show_local)
        mismatch = viewer.layers[QC_PREFIX + "local mismatch"].data
        _click(qtbot, widget.show_difference)
        diff = viewer.layers[QC_PREFIX + "difference"].data
        means[name] = (float(mismatch[brain].mean()), float(np.abs(diff[brain]).mean()))
        _shot(viewer, "difference_" + name.replace(" ", "_"))
        _click(qtbot, widget.show_local)
        _shot(viewer, "mismatch_" + name.replace(" ", "_"))
    # T1 vs T2-like: the plain difference is large even when aligned (contrast); the
    # mismatch is low when aligned and rises with a 5 mm error
    (mis_ok, diff_ok), (mis_off, diff_off) = means["aligned"], means["5 mm off"]
    assert mis_off > 2.0 * mis_ok and mis_off - mis_ok > 0.1, means
    assert diff_ok > 0.6 * diff_off, means

    # each view replaces the previous one; running one twice leaves one layer of its kind
    session.set_outcome(_outcome(pair.fixed, pair.moving, MatrixTransform(truth)))
    expected = {widget.show_checker: ["checkerboard"], widget.show_difference: ["difference"],
                widget.show_local: ["local mismatch"],
                widget.show_edges: ["warped", "fixed edges"]}
    for button, kinds in expected.items():
        for _ in range(2):
            _click(qtbot, button)
            qc_names = [lyr.name for lyr in viewer.layers if lyr.name.startswith(QC_PREFIX)]
            assert qc_names == [QC_PREFIX + k for k in kinds], qc_names
        _shot(viewer, kinds[-1].replace(" ", "_"))
    assert len(viewer.layers) == 2 + 2  # fixed, moving and the edges view
    assert not layers[0].visible and not layers[1].visible  # set aside meanwhile
    for name in qc_names:  # the user deletes the view's layers: theirs come back
        viewer.layers.remove(name)
    assert layers[0].visible and layers[1].visible and widget.qc_layers.view is None
    assert not errors, errors


def test_deformed_grid_with_and_without_the_affine_part(make_napari_viewer, qtbot, errors):
    viewer, pair, layers, session, widget = _mni_viewer(make_napari_viewer, qtbot)
    transform, affine_part = _deformable_truth(pair)
    outcome = _outcome(pair.fixed, pair.moving, transform)
    outcome.result.linear_matrix = affine_part
    session.set_outcome(outcome)
    layers[1].visible = False
    widget.grid_mm.value = 10.0
    _click(qtbot, widget.show_deformation)
    grid = viewer.layers[QC_PREFIX + "deformed grid"]
    assert grid._type_string == "vectors"
    # the axial plane shown: every segment lies in it
    z = viewer.dims.point[2]
    assert np.allclose(grid.data[:, 0, 2], z)
    _shot(viewer, "grid_whole_map")
    viewer.dims.set_point(2, 10.0)  # another slice: the grid follows
    assert np.allclose(grid.data[:, 0, 2], viewer.dims.point[2]) and viewer.dims.point[2] != z
    jac = viewer.layers[QC_PREFIX + "Jacobian determinant"]
    det_a = float(np.linalg.det(affine_part[:3, :3]))
    assert abs(np.median(jac.data) - det_a) < 0.01  # the whole map: the affine's volume
    _click(qtbot, widget.grid_linear)  # the deformation alone: the 6 mm bump along y
    assert abs(np.median(jac.data) - 1.0) < 0.01 and "alone" in widget.status.value
    starts, steps = grid.data[:, 0], grid.data[:, 1]
    along_y = np.abs(steps[:, 1]) > np.abs(steps[:, 0])
    x_ticks = np.round(starts[along_y, 0] / 10.0, 6)
    far = np.linalg.norm(starts[:, :2] - [20.0, -20.0], axis=1) > 60
    assert np.all(x_ticks % 1 == 0)  # the bump moves along y only: lines along y stay put
    near_x = np.abs(starts[~along_y, 0] - 20.0) < 3
    shift_y = starts[~along_y, 1] - np.round(starts[~along_y, 1] / 10.0) * 10.0
    assert np.abs(shift_y[near_x]).max() > 3.0  # the bump's centre: lines moved ~6 mm
    assert np.abs(starts[far & ~along_y, 1] / 10.0 - np.round(starts[far & ~along_y, 1] / 10.0)
                  ).max() < 0.02  # far from it: the regular 10 mm grid
    _shot(viewer, "grid_deformation_only")
    viewer.camera.zoom = viewer.camera.zoom * 6
    viewer.camera.center = (0.0, -20.0, 20.0)  # (z, y, x) world mm: the bump
    _shot(viewer, "grid_deformation_only_zoomed")
    names = [lyr.name for lyr in viewer.layers if lyr.name.startswith(QC_PREFIX)]
    assert names == [QC_PREFIX + k for k in ("fixed", "Jacobian determinant", "folds",
                                             "deformed grid")]
    # with the ortho views the coronal and sagittal panes get their planes' grids too
    session.ortho_views = True
    viewer.dims.set_point(2, 4.0)
    point = viewer.dims.point
    on_plane = [np.isclose(grid.data[:, 0, a], point[a]) for a in range(3)]
    for a in range(3):  # segments in each of the three planes through the point
        assert np.any(on_plane[a] & ~on_plane[(a + 1) % 3] & ~on_plane[(a + 2) % 3])
    assert np.all(on_plane[0] | on_plane[1] | on_plane[2])
    session.ortho_views = False
    viewer.dims.set_point(2, 10.0)
    assert np.allclose(grid.data[:, 0, 2], viewer.dims.point[2])  # single view: one plane
    viewer.layers.remove(grid)  # removed by the user: a slice change does not bring it back
    viewer.dims.set_point(2, 0.0)
    assert QC_PREFIX + "deformed grid" not in viewer.layers
    assert not errors, errors


def test_3d_surfaces_and_back(make_napari_viewer, qtbot, errors):
    viewer, pair, layers, session, widget = _mni_viewer(make_napari_viewer, qtbot)
    shifted = np.asarray(pair.true_fixed_to_moving).copy()
    shifted[:3, 3] += [6.0, 0.0, 0.0]
    session.set_outcome(_outcome(pair.fixed, pair.moving, MatrixTransform(shifted)))
    visible_before = [lyr.visible for lyr in viewer.layers]
    _click(qtbot, widget.show_3d)
    fixed_s = viewer.layers[QC_PREFIX + "3D fixed"]
    warped_s = viewer.layers[QC_PREFIX + "3D warped"]
    assert viewer.dims.ndisplay == 3 and fixed_s.rendering == "iso"
    assert [lyr for lyr in viewer.layers if lyr.visible] == [fixed_s, warped_s]
    viewer.camera.angles = (0.0, 20.0, 90.0)
    qtbot.wait(100)
    picture = _canvas(viewer)
    cyan = (picture[..., 1] > 100) & (picture[..., 2] > 100) & (picture[..., 0] < 80)
    orange = (picture[..., 0] > 150) & (picture[..., 2] < 80)
    assert cyan.sum() > 500 and orange.sum() > 500  # both surfaces show, 6 mm apart
    _shot(viewer, "surfaces_3d")
    _click(qtbot, widget.show_difference)  # another view: back to 2D
    assert viewer.dims.ndisplay == 2 and not layers[0].visible  # set aside for the view
    _click(qtbot, widget.clear_button)  # the user's layers as they were
    assert [lyr.visible for lyr in viewer.layers if not lyr.name.startswith(QC_PREFIX)] == \
        visible_before
    assert not errors, errors


def test_qc_layers_of_an_oblique_fixed_image_are_axis_aligned(make_napari_viewer, qtbot,
                                                              oblique_file, errors):
    path, _data, _affine = oblique_file
    viewer = make_napari_viewer(show=True)
    (data, meta, kind), = _reader.read_volumes(str(path))
    fixed_layer = viewer.add_image(data, **meta)
    fixed = layer_volume(fixed_layer, use_file_affine=True)
    assert not is_axis_aligned(fixed.affine)
    u = np.zeros(fixed.shape + (3,), np.float32)
    u[..., 0] = 1.5
    session = get_session(viewer)
    session.set_outcome(_outcome(fixed, fixed, DisplacementField(u, fixed.affine)))
    widget = QCWidget(viewer)
    viewer.window.add_dock_widget(widget)
    buttons = [widget.show_checker, widget.show_difference, widget.show_local,
               widget.show_edges, widget.show_deformation, widget.flicker, widget.flicker]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for button in buttons:
            _click(qtbot, button)
            for z in (-2.0, 3.0):
                viewer.dims.set_point(2, z)
            qtbot.wait(10)
            for layer in viewer.layers:
                if layer.name.startswith(QC_PREFIX) and layer._type_string != "vectors":
                    assert is_axis_aligned(layer.affine.affine_matrix), layer.name
    oblique = [str(w.message) for w in caught if "Non-orthogonal" in str(w.message)]
    assert not oblique, oblique[:1]
    # the control: a layer on the fixed image's own oblique grid does warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer.add_image(np.zeros(fixed.shape, np.float32), affine=fixed.affine, name="c")
        viewer.dims.set_point(2, 1.0)
    assert [w for w in caught if "Non-orthogonal" in str(w.message)]
    assert not errors, errors
