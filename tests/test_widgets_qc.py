"""QC panel on known pairs: every view checked against expected pixels, flicker / fade,
before/after numbers, deformable views. Screenshot: /tmp/napari_reg_qc.png (the shipped
MNI pair registered by its ground truth: checkerboard)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg._sample_data import load_mni_pair
from napari_reg.core import qc
from napari_reg.core.engine.result import RegistrationResult
from napari_reg.core.image import Volume
from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.layers import volume_to_layer_data
from napari_reg.widgets._alignment import get_alignment
from napari_reg.widgets._session import RunOutcome, get_session
from napari_reg.widgets.overlay import warp_volume
from napari_reg.widgets.qc_widget import QC_PREFIX, QCWidget

AFFINE = np.array([[2.0, 0, 0, -20], [0, 2.0, 0, -18], [0, 0, 2.0, -14], [0, 0, 0, 1]])
SHAPE = (22, 20, 16)


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    got: list[str] = []
    monkeypatch.setattr("napari_reg.widgets.qc_widget.show_error", got.append)
    monkeypatch.setattr("napari_reg.widgets._notify.show_error", got.append)
    return got


def _outcome(fixed: Volume, moving: Volume, transform, warped: Volume | None = None):
    result = RegistrationResult(transform=transform, initial_transform=transform, levels=[],
                                parameters={}, timings={})
    warped = warped if warped is not None else warp_volume(moving, fixed, transform)
    return RunOutcome(result, fixed, moving, warped, fixed.name, moving.name)


def _ramp() -> np.ndarray:
    i, j, k = np.indices(SHAPE)
    return (i + 2.0 * j + 3.0 * k).astype(np.float32)


def _layer(viewer, volume: Volume, kind: str = "image"):
    data, kwargs, _ = volume_to_layer_data(volume, kind)
    return (viewer.add_labels if kind == "labels" else viewer.add_image)(data, **kwargs)


def test_checkerboard_difference_flicker_fade_edges(make_napari_viewer, qtbot, errors) -> None:
    viewer = make_napari_viewer()
    fixed = Volume(_ramp(), AFFINE, "fixed")
    warped = Volume(100.0 - fixed.data, AFFINE, "warped")  # scaled 0-1: exactly 1 - fixed
    moving = Volume(np.zeros(SHAPE, np.float32), AFFINE, "moving")
    get_session(viewer).set_outcome(_outcome(fixed, moving, MatrixTransform(np.eye(4)), warped))
    widget = QCWidget(viewer)
    viewer.window.add_dock_widget(widget)

    widget.square.value = 6.0
    widget.show_checker.clicked.emit()
    board = viewer.layers[QC_PREFIX + "checkerboard"]
    lo, hi = np.percentile(fixed.data, [1, 99])
    nf = np.clip((fixed.data - lo) / (hi - lo), 0, 1)
    world = [AFFINE[a, 3] + 2.0 * np.indices(SHAPE)[a] for a in range(3)]
    odd = sum(np.floor(w / 6.0) for w in world) % 2 == 1
    np.testing.assert_allclose(board.data, np.where(odd, 1 - nf, nf), atol=1e-5)
    np.testing.assert_allclose(board.affine.affine_matrix, AFFINE)
    # neighbouring squares along x come from different sources: x = -20 .. -14 is one
    # square (floor(x / 6) = -4 for x in [-24, -18)), x = -18 starts the next one
    assert odd[0, 0, 0] != odd[1, 0, 0] and odd[1, 0, 0] == odd[3, 0, 0] != odd[4, 0, 0]
    widget.square.value = 12.0  # the shown board follows the square size
    assert not np.allclose(board.data, np.where(odd, 1 - nf, nf))

    widget.show_difference.clicked.emit()
    diff = viewer.layers[QC_PREFIX + "difference"]
    np.testing.assert_allclose(diff.data, 2 * nf - 1, atol=1e-5)

    widget.fade.value = 0.3
    shown = viewer.layers[QC_PREFIX + "warped"]
    assert shown.opacity == pytest.approx(0.3)
    # fixed and warped in grey (each scaled 0-1), warped on top: fade shows one through
    # the other, flicker toggles the warped one
    np.testing.assert_allclose(shown.data, qc.normalize_intensity(warped.data, (0.5, 99.5)))
    names = [lyr.name for lyr in viewer.layers]
    assert names[-2:] == [QC_PREFIX + "fixed", QC_PREFIX + "warped"], names
    flips: list[bool] = []
    shown.events.visible.connect(lambda e: flips.append(shown.visible))
    widget.flicker_ms.value = 100
    widget.flicker.value = True
    qtbot.waitUntil(lambda: len(flips) >= 3, timeout=3000)
    widget.flicker.value = False
    assert shown.visible and False in flips and flips.count(True) >= 1

    cube = np.zeros(SHAPE, np.float32)
    cube[6:16, 5:15, 4:12] = 100
    get_session(viewer).set_outcome(_outcome(Volume(cube, AFFINE, "cube"), moving,
                                             MatrixTransform(np.eye(4)), warped))
    widget.show_edges.clicked.emit()
    edges = viewer.layers[QC_PREFIX + "fixed edges"].data
    assert edges[5:7, 10, 8].any() and edges[15:17, 10, 8].any()
    assert not edges[8:14, 7:13, 6:10].any() and not edges[0, 0, 0]
    # the edges are drawn over the warped image
    names = [lyr.name for lyr in viewer.layers]
    assert names.index(QC_PREFIX + "fixed edges") > names.index(QC_PREFIX + "warped")
    widget.show_deformation.clicked.emit()  # linear: a clear message, no layer
    assert "linear" in errors[-1] and QC_PREFIX + "folds" not in viewer.layers


def test_numbers_and_deformation_on_known_pairs(make_napari_viewer, errors) -> None:
    viewer = make_napari_viewer()
    fixed_data = np.zeros(SHAPE, np.float32)
    fixed_data[5:15, 4:14, 3:11] = 50 + _ramp()[5:15, 4:14, 3:11]
    shift = np.array([4.0, -2.0, 2.0])  # whole voxels (2 mm): warped(x) = moving(x + t)
    moving_data = np.zeros(SHAPE, np.float32)
    moving_data[7:17, 3:13, 4:12] = fixed_data[5:15, 4:14, 3:11]
    fixed, moving = Volume(fixed_data, AFFINE, "f"), Volume(moving_data, AFFINE, "m")
    truth = np.eye(4)
    truth[:3, 3] = shift
    session = get_session(viewer)
    session.set_outcome(_outcome(fixed, moving, MatrixTransform(truth)))
    widget = QCWidget(viewer)
    pts = np.array([[0.0, 0, 0], [6, -4, 2], [-8, 4, 6]])
    for name, p in (("fixed points", pts), ("moving points", pts + shift)):
        viewer.add_points(p, name=name, features={"id": np.array(["a", "b", "c"], object)})
    widget.reset_choices()
    widget.fixed_points.value = viewer.layers["fixed points"]
    widget.moving_points.value = viewer.layers["moving points"]
    labels_f = (fixed_data > 0).astype(np.int32) * 3
    labels_m = (moving_data > 0).astype(np.int32) * 3
    widget.fixed_labels.value = _layer(viewer, Volume(labels_f, AFFINE, "fixed seg"), "labels")
    widget.moving_labels.value = _layer(viewer, Volume(labels_m, AFFINE, "moving seg"), "labels")
    numbers = widget.before_after()
    assert numbers["NCC"][1] == pytest.approx(1.0, abs=1e-6) and numbers["NCC"][0] < 0.5
    assert numbers["MI"][1] > numbers["MI"][0]
    before, after = numbers["TRE mean mm (3 pairs)"]
    assert before == pytest.approx(np.linalg.norm(shift)) and after == pytest.approx(0, abs=1e-9)
    assert numbers["Dice label 3"][1] == 1.0 and numbers["Dice label 3"][0] < 0.8
    assert widget.table.rowCount() == 4 and widget.table.item(0, 2).text() == "1.0000"

    # a deformable result with a fold: Jacobian map, folds, deformed grid
    u = np.zeros(SHAPE + (3,), np.float32)
    x = np.arange(SHAPE[0]) * 2.0
    u[..., 0] = np.where((x > 10) & (x < 20), -2.0 * (x - 10), np.where(x >= 20, -20.0, 0))[
        :, None, None]
    field = DisplacementField(u, AFFINE)
    session.set_outcome(_outcome(fixed, moving, field))
    jac, folds, grid = widget.deformation()
    expected = field.jacobian_determinant()
    np.testing.assert_allclose(jac.data, expected, atol=1e-5)
    np.testing.assert_array_equal(folds.data, expected <= 0)
    assert folds.data[8, 10, 8] == 1 and folds.data[2, 10, 8] == 0
    assert "folded" in widget.status.value
    # the grid: line segments in the viewed plane, each grid point x drawn at T(x)
    assert grid.data.ndim == 3 and grid.data.shape[1:] == (2, 3) and len(grid.data) > 10
    assert grid.data[:, 0, 0].min() >= -20.0 - 20.0 - 1e-9  # nothing wild
    starts, steps = grid.data[:, 0], grid.data[:, 1]
    normal = viewer.dims.not_displayed[0]
    assert np.allclose(starts[:, normal], viewer.dims.point[normal])
    viewer.dims.order = (2, 0, 1)  # an axial plane (x, y in view): the slice's grid follows
    grid = widget.qc_layers.find("deformed grid")
    starts, steps = grid.data[:, 0], grid.data[:, 1]
    assert np.allclose(starts[:, 2], viewer.dims.point[2])
    # lines along y sit at x ticks -16, -8, 0, 8, 16 (8 mm grid) moved by u(x):
    # 0, -4, -20, -20, -20 mm (x local = x + 20; u = -2 (x_local - 10) on (10, 20))
    along_y = starts[np.abs(steps[:, 1]) > 0, 0]
    np.testing.assert_allclose(np.unique(np.round(along_y, 6)), [-20.0, -16.0, -12.0, -4.0])
    assert not errors, errors


def test_mni_pair_by_its_ground_truth_and_the_current_alignment(make_napari_viewer) -> None:
    pair = load_mni_pair()  # 2 mm fixed, 2.2 x 2.2 x 2.6 mm moving
    fixed, moving = pair.fixed, pair.moving
    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1400, 1000)
    layers = [_layer(viewer, fixed), _layer(viewer, moving)]
    layers[1].visible = False
    session = get_session(viewer)
    session.set_roles(*layers)
    truth = MatrixTransform(pair.true_fixed_to_moving)
    session.set_outcome(_outcome(fixed, moving, truth))
    widget = QCWidget(viewer)
    viewer.window.add_dock_widget(widget)
    for name, p in (("fixed lm", pair.fixed_points), ("moving lm", pair.moving_points)):
        viewer.add_points(p, name=name, features={"id": pair.landmark_ids}, visible=False)
    widget.reset_choices()
    widget.fixed_points.value = viewer.layers["fixed lm"]
    widget.moving_points.value = viewer.layers["moving lm"]
    numbers = widget.before_after()
    tre_before, tre_after = next(v for k, v in numbers.items() if k.startswith("TRE"))
    assert tre_after < 1e-3 < 1.0 < tre_before  # the files keep 4 decimals
    assert numbers["MI"][1] > numbers["MI"][0]
    widget.square.value = 15.0
    board = widget.checkerboard()
    viewer.dims.order = (2, 1, 0)
    viewer.reset_view()
    viewer.screenshot(path="/tmp/napari_reg_qc.png", canvas_only=False)

    # the same QC on the current alignment (here: the truth set by hand)
    get_alignment(viewer).set(pair.true_fixed_to_moving)
    widget.source.value = "alignment"
    aligned = widget.checkerboard()
    assert aligned is board  # the same layer, updated in place
    numbers_alignment = widget.before_after()
    assert numbers_alignment["NCC"][1] == pytest.approx(numbers["NCC"][1], abs=1e-4)
