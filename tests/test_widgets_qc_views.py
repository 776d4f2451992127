"""QC views that read: flicker/fade visible with the live layer present, a multi-modal
mismatch map, views that replace each other, the deformed grid as vectors with and
without the affine part, 3D iso-surfaces. Screenshots: /tmp/napari_reg_qc_flicker.png,
/tmp/napari_reg_qc_grid.png, /tmp/napari_reg_qc_3d.png (1280 x 800)."""

from __future__ import annotations

import numpy as np

import test_widgets_qc as qc_tests
from napari_reg._sample_data import load_mni_pair
from napari_reg.core import qc
from napari_reg.core.image import Volume
from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.layers import volume_to_layer_data
from napari_reg.widgets._register_settings import LIVE_LAYER_NAME
from napari_reg.widgets._session import get_session
from napari_reg.widgets.qc_widget import QC_PREFIX, QCWidget

errors = qc_tests.errors
AFFINE, SHAPE, _outcome = qc_tests.AFFINE, qc_tests.SHAPE, qc_tests._outcome


def _blob(centre) -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return (100.0 * np.exp(-r2 / 18.0)).astype(np.float32)


def _mni_viewer(make_napari_viewer):
    pair = load_mni_pair()
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    layers = [(lambda data, kwargs: viewer.add_image(data, **kwargs))(
               *volume_to_layer_data(v, "image", **style)[:2])
              for v, style in ((pair.fixed, {"colormap": "gray"}),
                               (pair.moving, {"colormap": "magenta", "blending": "additive"}))]
    session = get_session(viewer)
    session.set_roles(*layers)
    return viewer, pair, layers, session


def test_flicker_and_fade_with_the_live_layer_present(make_napari_viewer, qtbot, errors):
    viewer, pair, layers, session = _mni_viewer(make_napari_viewer)
    truth = MatrixTransform(pair.true_fixed_to_moving)
    outcome = _outcome(pair.fixed, pair.moving, truth)
    session.set_outcome(outcome)
    live = viewer.add_image(outcome.warped.data, affine=outcome.warped.affine,
                            name=LIVE_LAYER_NAME, colormap="magenta", blending="additive")
    layers[1].visible = False
    widget = QCWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.dims.order = (2, 1, 0)
    widget.flicker_ms.value = 100
    widget.flicker.value = True
    shown = viewer.layers[QC_PREFIX + "warped"]
    # the live layer stepped aside and the flickering layer is the top one
    assert not live.visible and viewer.layers[-1] is shown
    flips: list[bool] = []
    shown.events.visible.connect(lambda e: flips.append(shown.visible))
    qtbot.waitUntil(lambda: len(flips) >= 2, timeout=3000)
    viewer.screenshot(path="/tmp/napari_reg_qc_flicker.png", canvas_only=False)
    widget.flicker.value = False
    assert live.visible and shown.visible  # the live layer is back
    widget.fade.value = 0.4
    assert not live.visible and shown.opacity == 0.4
    assert not errors, errors


def test_multimodal_mismatch_views_replace_each_other_and_grid(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    fixed = Volume(_blob((10, 9, 8)), AFFINE, "fixed")
    inverted = Volume(100.0 - _blob((10, 9, 8)), AFFINE, "inverted, aligned")
    shifted = Volume(100.0 - _blob((14, 9, 8)), AFFINE, "inverted, shifted")
    session = get_session(viewer)
    identity = MatrixTransform(np.eye(4))
    widget = QCWidget(viewer)
    means = []
    for warped in (inverted, shifted):
        session.set_outcome(_outcome(fixed, warped, identity, warped))
        layer = widget.local_mismatch()
        near = qc.normalize_intensity(fixed.data) > 0.3  # around the blob
        means.append(float(layer.data[near].mean()))
    # aligned but inverted contrast: little mismatch (the plain difference is large there)
    assert means[0] < 0.1 and means[1] > means[0] + 0.2, means
    assert np.abs(qc.difference(fixed.data, inverted.data))[near].mean() > max(0.3, 3 * means[0])
    # views replace each other: never more than the view and the warped layer for flicker
    widget.checkerboard()
    widget.difference()
    widget.edges()
    qc_layers = [lyr.name for lyr in viewer.layers if lyr.name.startswith(QC_PREFIX)]
    assert sorted(qc_layers) == [QC_PREFIX + "fixed edges", QC_PREFIX + "warped"], qc_layers

    # a deformable map: an affine part (scaling) and a local bump; the grid with and
    # without the affine part
    u = np.zeros(SHAPE + (3,), np.float32)
    world = np.moveaxis(np.tensordot(AFFINE[:3, :3], np.indices(SHAPE), 1), 0, -1)
    world += AFFINE[:3, 3]
    u[..., 0] = 0.1 * world[..., 0] + 3.0 * np.exp(-(world ** 2).sum(-1) / 50.0)
    field = DisplacementField(u, AFFINE)
    session.set_outcome(_outcome(fixed, fixed, field))
    outcome = session.outcome
    outcome.result.linear_matrix = np.diag([1.1, 1.0, 1.0, 1.0])
    widget.grid_mm.value = 4.0
    _, _, grid = widget.deformation()
    ends = grid.data[:, 0] + grid.data[:, 1]
    starts = grid.data[:, 0]
    normal = viewer.dims.not_displayed[0]
    assert np.allclose(starts[:, normal], viewer.dims.point[normal])
    # along x: lines moved by u (world x scaled by 1.1 plus the bump)
    assert np.ptp(ends[:, 0] - starts[:, 0]) > 0
    widget.grid_linear.value = True  # only the bump is left: far from it the grid is regular
    far = np.linalg.norm(widget._find("deformed grid").data[:, 0], axis=1) > 25
    assert far.any()
    g = widget._find("deformed grid").data
    regular = np.round(g[far, 0] / 4.0, 6) % 1 == 0  # one coordinate on a 4 mm tick
    assert regular.any(axis=1).all()
    qc_layers = [lyr.name for lyr in viewer.layers if lyr.name.startswith(QC_PREFIX)]
    assert len(qc_layers) <= 4, qc_layers
    assert not errors, errors


def test_grid_crisp_and_3d_surfaces_on_the_sample_pair(make_napari_viewer, qtbot, errors):
    viewer, pair, layers, session = _mni_viewer(make_napari_viewer)
    session.set_outcome(_outcome(pair.fixed, pair.moving,
                                 MatrixTransform(pair.true_fixed_to_moving)))
    widget = QCWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.dims.order = (2, 1, 0)
    fixed_s, warped_s = widget.surfaces_3d()
    assert viewer.dims.ndisplay == 3 and fixed_s.rendering == "iso"
    visible = [lyr for lyr in viewer.layers if lyr.visible]
    assert visible == [fixed_s, warped_s]
    viewer.camera.angles = (0.0, -60.0, 120.0)
    qtbot.wait(100)
    viewer.screenshot(path="/tmp/napari_reg_qc_3d.png", canvas_only=False)
    widget.difference()  # leaving 3D: the 2D view and the hidden layers come back
    assert viewer.dims.ndisplay == 2 and layers[0].visible
    assert not errors, errors
