"""Landmarks panel driven like a user: clicks go through the Points layers' own mouse
callbacks (napari's add mode), pairs are matched by id, fits recover known transforms,
undo / delete / files / bad input behave. Screenshot: /tmp/napari_reg_landmarks.png."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from napari.utils._proxies import ReadOnlyWrapper
from napari.utils.interactions import (
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)

from napari_reg.core.image import Volume, apply_affine
from napari_reg.io.landmarks import read_landmarks
from napari_reg.layers import volume_to_layer_data
from napari_reg.widgets._layer_volumes import manual_initial
from napari_reg.widgets._notify import guarded
from napari_reg.widgets._session import get_session
from napari_reg.widgets.landmarks_widget import LandmarksWidget
from napari_reg.widgets.overlay import LIVE_MAP_STEP, warp_to_grid
from napari_reg.widgets.qc_widget import QCWidget
from napari_reg.widgets.register_widget import RegisterWidget
from phantoms import homogeneous, oblique_landmark_nifti, rotation

# napari's "Non-orthogonal slicing ... not fully supported" warning means a layer we made
# would be drawn in the wrong place (napari #7310): an error in these tests.
pytestmark = pytest.mark.filterwarnings("error:Non-orthogonal slicing:UserWarning")

FIXED_AFFINE = np.array([[2.0, 0, 0, -30], [0, 1.5, 0, -25], [0, 0, 2.5, -20], [0, 0, 0, 1]])
MOVING_AFFINE = np.array([[-1.8, 0, 0, 35], [0, 1.6, 0, -28], [0, 0, 2.2, -18], [0, 0, 0, 1]])
TRUTH = homogeneous(rotation(0.05, -0.08, 0.12), [3.0, -2.0, 1.5], center=[0, 0, 0])
FIXED_CLICKS = np.array([[-10.0, -5, -4], [12, 3, 6], [0, 14, -8], [8, -12, 10], [-6, 8, 12],
                         [4, 0, 0]])


@dataclass
class Click:
    """The mouse event napari's layer callbacks read (world position, buttons, keys)."""

    type: str
    position: tuple
    is_dragging: bool = False
    modifiers: list = field(default_factory=list)
    view_direction: object = None
    dims_displayed: list = field(default_factory=lambda: [1, 2])
    pos: np.ndarray = field(default_factory=lambda: np.array([50.0, 50.0]))
    button: int = 1
    handled: bool = False


def event(kind: str, world, **kwargs) -> ReadOnlyWrapper:
    """A mouse event as napari's canvas hands it to layer callbacks (read-only wrapper:
    napari swaps the wrapped event of a running drag for each move / release)."""
    position = tuple(float(v) for v in world)
    return ReadOnlyWrapper(Click(kind, position, **kwargs), exceptions=("handled",))


def click(layer, world) -> None:
    """Press and release at a world point (no motion: napari's add mode adds a point)."""
    mouse_press_callbacks(layer, event("mouse_press", world))
    mouse_release_callbacks(layer, event("mouse_release", world))


@pytest.fixture
def notes(monkeypatch) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {"error": [], "info": [], "warning": []}
    for kind in got:
        monkeypatch.setattr(f"napari_reg.widgets.landmarks_widget.show_{kind}",
                            got[kind].append)
    # button failures are notified by the shared wrapper
    monkeypatch.setattr("napari_reg.widgets._notify.show_error", got["error"].append)
    return got


@pytest.fixture
def panel(make_napari_viewer):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    layers = []
    for name, affine in (("fixed", FIXED_AFFINE), ("moving", MOVING_AFFINE)):
        vol = Volume(rng.random((30, 34, 18)).astype(np.float32), affine, name)
        data, kwargs, _ = volume_to_layer_data(vol, "image")
        layers.append(viewer.add_image(data, **kwargs))
    get_session(viewer).set_roles(*layers)
    widget = LandmarksWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _click_all(widget, fixed_points, moving_points, moving_order) -> None:
    widget.start_clicking("fixed")
    fixed_layer, moving_layer = widget.fixed_points.value, widget.moving_points.value
    for p in fixed_points:
        click(fixed_layer, p)
    widget.start_clicking("moving")
    assert moving_layer.mode == "add" and not widget._session.fixed_layer.visible
    for k in moving_order:  # not the fixed order: the table row chosen says which pair
        widget.table.selectRow([r.id for r in widget.table.rows].index(str(k + 1)))
        click(moving_layer, moving_points[k])
    widget.start_clicking(None)


def test_click_pair_fit_undo_delete(panel, notes) -> None:
    viewer, widget = panel
    moving_clicks = apply_affine(TRUTH, FIXED_CLICKS)
    _click_all(widget, FIXED_CLICKS, moving_clicks, [3, 0, 5, 1, 4, 2])
    fixed_layer, moving_layer = widget.fixed_points.value, widget.moving_points.value
    # points live in world mm (no layer affine: nothing for napari to slice obliquely)
    for layer in (fixed_layer, moving_layer):
        np.testing.assert_allclose(layer.affine.affine_matrix, np.eye(4))
    np.testing.assert_allclose(fixed_layer.data, FIXED_CLICKS, atol=1e-9)
    np.testing.assert_allclose(moving_layer.data, moving_clicks[[3, 0, 5, 1, 4, 2]],
                               atol=1e-9)
    assert list(fixed_layer.features["id"]) == ["1", "2", "3", "4", "5", "6"]
    assert list(moving_layer.features["id"]) == ["4", "1", "6", "2", "5", "3"]
    assert all(r.paired for r in widget.table.rows) and len(widget.table.rows) == 6

    for kind in ("rigid", "similarity", "affine"):
        widget.kind.value = kind
        fit = widget.run_fit()
        np.testing.assert_allclose(fit.matrix, TRUTH, atol=1e-6)
        assert max(r.residual for r in widget.table.rows) < 1e-6
    widget.kind.value = "tps"
    tps = widget.run_fit()
    np.testing.assert_allclose(tps.transform_points(FIXED_CLICKS), moving_clicks, atol=1e-6)
    assert "residual mean 0.000 mm" in widget.summary.value
    # the spline previews through the shared overlay and is inspectable by the QC panel
    widget.preview_fit()
    alignment = widget.alignment
    alignment.wait()
    assert alignment.transform is tps
    # The live preview of a non-linear map evaluates it on every LIVE_MAP_STEP-th voxel.
    expected = warp_to_grid(alignment.overlay.moving, tps, alignment.overlay.shape,
                            alignment.overlay.grid_affine, map_step=LIVE_MAP_STEP)
    np.testing.assert_allclose(alignment.overlay.layer.data, expected, atol=1e-5)
    qc_panel = QCWidget(viewer)
    qc_panel.source.value = "alignment"
    jac, _, _ = qc_panel.deformation()
    assert np.isfinite(jac.data).all() and jac.data.min() > 0
    session = get_session(viewer)  # the Register panel would start from the affine part
    np.testing.assert_allclose(manual_initial(session.fixed_layer, session.moving_layer),
                               tps.affine_matrix, atol=1e-9)
    alignment.reset()  # the images back where their files put them
    alignment.wait()

    # an extra fixed point is unpaired, shown as such, left out of the fit with a warning
    widget.table.clearSelection()
    widget.start_clicking("fixed")
    click(fixed_layer, [2.0, 2.0, 2.0])
    row = widget.table.rows[-1]
    assert row.id == "7" and not row.paired and widget.table.text(6, 7) == "unpaired"
    assert str(fixed_layer.symbol[-1]) in ("ring", "Symbol.RING")
    assert str(fixed_layer.symbol[0]) in ("disc", "Symbol.DISC")
    widget.kind.value = "affine"
    widget.run_fit()
    assert any("7" in w for w in notes["warning"])
    # Ctrl+Z on the active Points layer undoes the click (napari's layer keymap)
    binding = next(k for k in fixed_layer.keymap if str(k).lower() in ("control-z", "ctrl+z"))
    fixed_layer.keymap[binding](fixed_layer)
    assert len(fixed_layer.data) == 6 and all(r.paired for r in widget.table.rows)

    # dragging a point in napari's select mode (press on it, move, release) is undoable
    before = np.array(moving_layer.data)
    widget.start_clicking(None)
    viewer.layers.selection.active = moving_layer
    start = moving_layer.data_to_world(before[0])  # pair 4 (clicked first on moving)
    viewer.dims.point = tuple(start)
    end = start + np.array([0.0, 3.0, 2.0])
    mouse_press_callbacks(moving_layer, event("mouse_press", start))
    mouse_move_callbacks(moving_layer, event("mouse_move", end, is_dragging=True))
    mouse_release_callbacks(moving_layer, event("mouse_release", end))
    np.testing.assert_allclose(moving_layer.data_to_world(moving_layer.data[0]), end,
                               atol=1e-6)
    assert widget.table.rows[3].residual > 1.0  # live residual of pair 4 after the move
    widget.undo()
    np.testing.assert_allclose(moving_layer.data, before)

    # delete a pair from the table, then undo the deletion
    widget.table.selectRow(1)
    widget.delete_selected()
    assert [r.id for r in widget.table.rows] == ["1", "3", "4", "5", "6"]
    widget.undo()
    assert [r.id for r in widget.table.rows] == ["1", "2", "3", "4", "5", "6"]
    assert not notes["error"], notes["error"]

    # selecting a pair moves the view there (slider position and camera centre)
    viewer.dims.order = (2, 0, 1)
    step = viewer.dims.range[2].step  # napari snaps the slider to its step
    widget.table.cellClicked.emit(2, 1)
    assert abs(viewer.dims.point[2] - FIXED_CLICKS[2][2]) <= step / 2 + 1e-9
    np.testing.assert_allclose(viewer.camera.center[-2:], FIXED_CLICKS[2][[0, 1]], atol=1e-6)
    widget.table.cellClicked.emit(4, 5)  # the moving half of the row
    assert abs(viewer.dims.point[2] - moving_clicks[4][2]) <= step / 2 + 1e-9
    np.testing.assert_allclose(viewer.camera.center[-2:], moving_clicks[4][[0, 1]], atol=1e-6)
    assert widget.moving_points.value.selected_data == {list(moving_layer.features["id"])
                                                        .index("5")}
    viewer.screenshot(path="/tmp/napari_reg_landmarks.png", canvas_only=False)


def test_bad_input_is_refused_and_nothing_lost(panel, notes, tmp_path) -> None:
    viewer, widget = panel
    widget.start_clicking("fixed")
    fixed_layer = widget.fixed_points.value
    for p in FIXED_CLICKS[:3]:
        click(fixed_layer, p)
    click(fixed_layer, [500.0, 0.0, 0.0])  # outside the fixed image
    assert len(fixed_layer.data) == 3 and "outside" in notes["warning"][-1]
    widget.start_clicking("moving")
    for p in [[0.0, 0, 0], [5.0, 5, 5], [10.0, 10, 10]]:  # collinear on the moving side
        click(widget.moving_points.value, p)
    widget.kind.value = "rigid"
    widget.fit_button.clicked.emit()
    assert "collinear" in notes["error"][-1]
    widget.kind.value = "affine"
    widget.fit_button.clicked.emit()
    assert "at least 4" in notes["error"][-1]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,a,b,c\n1,0,0,0\n")
    inches = tmp_path / "inches.csv"
    inches.write_text("id,x_in,y_in,z_in\n1,0,0,0\n")
    for path in (bad, inches):
        guarded(lambda p=path: widget.load(p, "fixed"))()
    assert "header" in notes["error"][-2] and "millimetres" in notes["error"][-1]
    assert len(fixed_layer.data) == 3 and len(widget.table.rows) == 3
    widget.moving_points.value = fixed_layer  # one layer for both sides: refused
    assert "two different" in notes["error"][-1] and widget.moving_points.value is None
    assert len(fixed_layer.data) == 3


def test_files_round_trip_and_initialisation(panel, notes, tmp_path) -> None:
    viewer, widget = panel
    register = RegisterWidget(viewer)
    viewer.window.add_dock_widget(register)
    moving_clicks = apply_affine(TRUTH, FIXED_CLICKS)
    _click_all(widget, FIXED_CLICKS, moving_clicks, range(6))
    for name in ("lm.csv", "lm.fcsv", "lm.mrk.json"):
        f_path, m_path = widget.save(tmp_path / name)
        assert f_path.name.startswith("lm_fixed") and m_path.name.startswith("lm_moving")
        np.testing.assert_allclose(read_landmarks(f_path).points, FIXED_CLICKS, atol=1e-9)
        np.testing.assert_allclose(read_landmarks(m_path).points, moving_clicks, atol=1e-9)
    assert (tmp_path / "lm_fixed.csv").read_text().startswith("id,x,y,z")

    # load into a fresh pair of layers, in a reversed file order: pairs still match by id
    text = (tmp_path / "lm_moving.csv").read_text().splitlines()
    (tmp_path / "rev.csv").write_text("\n".join([text[0]] + text[:0:-1]) + "\n")
    widget.create_layers()
    widget.load(tmp_path / "lm_fixed.fcsv", "fixed")
    widget.load(tmp_path / "rev.csv", "moving")
    assert len(widget.table.rows) == 6 and all(r.paired for r in widget.table.rows)
    widget.kind.value = "rigid"
    fit = widget.run_fit()
    np.testing.assert_allclose(fit.matrix, TRUTH, atol=1e-6)
    assert widget.undo() and len(widget.moving_points.value.data) == 0  # undo the load

    # the fit becomes the Register panel's initialisation ("Current manual alignment")
    widget.load(tmp_path / "rev.csv", "moving")
    widget.use_as_initialisation()
    session = get_session(viewer)
    np.testing.assert_allclose(manual_initial(session.fixed_layer, session.moving_layer),
                               TRUTH, atol=1e-9)
    assert register.init.value == "manual"
    # the moving landmarks follow the moved moving image on screen
    moving_layer = widget.moving_points.value
    first_id = int(moving_layer.features["id"][0])  # the file was reversed: id 6
    shown = moving_layer.data_to_world(moving_layer.data[0])
    np.testing.assert_allclose(shown, FIXED_CLICKS[first_id - 1], atol=1e-6)
    widget.alignment.wait()
    assert not session.moving_layer.visible and widget.alignment.overlay.layer.visible
    assert not notes["error"], notes["error"]


def test_sample_data_landmarks_are_adopted(make_napari_viewer, notes) -> None:
    from napari_reg._sample_data import load_mni_pair, make_mni_pair
    from napari_reg.widgets._layer_volumes import paired_landmarks

    viewer = make_napari_viewer()
    added = [getattr(viewer, f"add_{kind}")(data, **kwargs)
             for data, kwargs, kind in make_mni_pair()]
    get_session(viewer).set_roles(added[0], added[1])
    widget = LandmarksWidget(viewer)
    assert widget.fixed_points.value is added[2] and widget.moving_points.value is added[3]
    rows = widget.table.rows
    assert len(rows) == len(load_mni_pair().landmark_ids) and all(r.paired for r in rows)
    widget.kind.value = "affine"
    fit = widget.run_fit()
    np.testing.assert_allclose(fit.matrix, load_mni_pair().true_fixed_to_moving, atol=2e-3)
    # the Register panel's own pairing (by the id feature) agrees with the table
    f, m = paired_landmarks(added[2], added[3])
    assert len(f) == len(rows)
    # one more fixed click without a partner: a ring on the canvas, a flagged table row
    viewer.window.add_dock_widget(widget)
    viewer.window._qt_window.resize(1500, 1000)
    viewer.dims.order = (2, 1, 0)
    widget.start_clicking("fixed")
    click(added[2], [20.0, -30.0, f[0][2]])
    assert not widget.table.rows[-1].paired
    widget.start_clicking(None)
    widget.table.cellClicked.emit(0, 1)
    viewer.reset_view()
    viewer.screenshot(path="/tmp/napari_reg_landmarks_sample.png", canvas_only=False)
    assert not notes["error"], notes["error"]


def test_register_panel_starts_from_the_landmark_fit(make_napari_viewer, qtbot, notes) -> None:
    """End to end: sample landmarks -> affine fit -> Register panel run from it."""
    from napari_reg._sample_data import load_mni_pair, make_mni_pair

    viewer = make_napari_viewer()
    added = [getattr(viewer, f"add_{kind}")(data, **kwargs)
             for data, kwargs, kind in make_mni_pair()]
    get_session(viewer).set_roles(added[0], added[1])
    widget = LandmarksWidget(viewer)
    register = RegisterWidget(viewer)
    for w in (widget, register):
        viewer.window.add_dock_widget(w)
    widget.kind.value = "affine"
    widget.use_as_initialisation()
    assert register.init.value == "manual"
    register.preset.value = "Affine"
    register.init.value = "manual"
    register.levels.value = 1
    register.iterations.value = "15"
    register.samples.value = "4000"
    register.live.value = False
    assert register.run() is not None
    np.testing.assert_allclose(register._run_settings["initial"], widget.fit.matrix, atol=1e-9)
    qtbot.waitUntil(lambda: not register.running, timeout=30_000)
    outcome = get_session(viewer).outcome
    assert outcome is not None, notes
    # the run started from the fit (the landmark files keep 4 decimals: ~1e-3 mm)
    np.testing.assert_allclose(outcome.result.initial_transform.matrix, widget.fit.matrix,
                               atol=1e-9)
    truth = load_mni_pair().true_fixed_to_moving
    corners = outcome.fixed.corners_world()
    error = np.linalg.norm(apply_affine(outcome.result.matrix, corners)
                           - apply_affine(truth, corners), axis=1)
    # 15 iterations at 2 mm keep the start's accuracy within a voxel at the FOV corners
    assert error.max() < 2.0, error


def test_leave_one_out_error_is_honest_where_residuals_are_zero() -> None:
    from napari_reg.widgets._lm_model import leave_one_out

    rng = np.random.default_rng(5)
    f = rng.uniform(-50, 50, (10, 3))
    exact = apply_affine(TRUTH, f)
    assert np.nanmax(leave_one_out(f, exact, "rigid")) < 1e-9  # a true rigid map: no error
    noisy = exact + rng.normal(0, 1.0, f.shape)
    loo = leave_one_out(f, noisy, "tps")  # residuals are 0 here, the LOO error is not
    assert np.all(np.isfinite(loo)) and loo.mean() > 0.5
    assert np.isnan(leave_one_out(f[:4], noisy[:4], "affine")).all()  # 3 left: no affine


def test_landmark_fit_exports_without_a_registration(panel, notes, tmp_path) -> None:
    """A landmark-only alignment (no registration run) saves from the Export panel: the
    rigid fit as an ITK .tfm, the thin-plate spline as a displacement field; an affine
    file for the spline is refused with a message."""
    from napari_reg.io.displacement_fields import load_displacement_field
    from napari_reg.io.transform_files import read_itk_transform
    from napari_reg.widgets.export_widget import ExportError, ExportWidget

    viewer, widget = panel
    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(export)
    moving_clicks = apply_affine(TRUTH, FIXED_CLICKS)
    _click_all(widget, FIXED_CLICKS, moving_clicks, range(6))
    widget.kind.value = "rigid"
    widget.use_as_initialisation()
    with pytest.raises(ExportError, match="registration"):  # the default source: a run
        export.transform_file.value = tmp_path / "none.tfm"
        export.save_transform()
    export.transform_source.value = "alignment"
    export.transform_file.value = tmp_path / "fit.tfm"
    np.testing.assert_allclose(read_itk_transform(export.save_transform()), TRUTH, atol=1e-6)

    widget.kind.value = "tps"
    widget.preview_fit()
    export.transform_file.value = tmp_path / "fit_tps.tfm"
    with pytest.raises(ExportError, match="displacement field"):
        export.save_transform()
    export.transform_file.value = tmp_path / "fit_tps.nii.gz"
    field = load_displacement_field(export.save_transform())
    # the spline interpolates the landmarks: the field maps each fixed click onto its pair
    np.testing.assert_allclose(field.transform_points(FIXED_CLICKS), moving_clicks, atol=0.05)
    assert not (tmp_path / "fit_tps.tfm").exists()
    assert not notes["error"], notes["error"]


def test_landmark_on_an_oblique_aligned_image_stays_right_in_world_and_every_view(
        make_napari_viewer, tmp_path):
    """A known landmark (world RAS mm) loaded on an oblique moving image, then a hand
    alignment with out-of-plane rotations: its world position stays the file's, it is
    shown where the aligned image shows that anatomy, in each of the three planes, and
    nothing is sliced obliquely (the module's filterwarnings turns that into an error)."""
    import nibabel as nib

    from napari_reg.io.landmarks import Landmarks, write_landmarks
    from napari_reg.widgets._alignment import get_alignment
    from napari_reg.widgets._lm_model import world_points
    from napari_reg.widgets.ortho_views import PLANES, orient

    landmark = oblique_landmark_nifti(tmp_path / "moving.nii.gz")
    fixed_grid = np.diag([1.5, 1.5, 1.5, 1.0])
    fixed_grid[:3, 3] = -50.0  # 80 voxels: -50 to 68.5 mm on each axis
    nib.save(nib.Nifti1Image(np.ones((80, 80, 80), np.float32), fixed_grid),
             str(tmp_path / "fixed.nii.gz"))
    viewer = make_napari_viewer()
    (fixed,) = viewer.open(str(tmp_path / "fixed.nii.gz"), plugin="napari-reg")
    (moving,) = viewer.open(str(tmp_path / "moving.nii.gz"), plugin="napari-reg")
    get_session(viewer).set_roles(fixed, moving)
    widget = LandmarksWidget(viewer)
    widget.create_layers()
    write_landmarks(Landmarks(["7"], landmark[None]), tmp_path / "moving.csv",
                    coordinate_system="RAS")
    widget.load(tmp_path / "moving.csv", "moving")
    points = widget.moving_points.value
    np.testing.assert_allclose(points.affine.affine_matrix, np.eye(4))
    np.testing.assert_allclose(points.data[0], landmark, atol=1e-9)  # world mm, as loaded

    # a hand alignment with rotations out of every plane (fixed world -> moving world)
    turn = homogeneous(rotation(0.2, -0.15, 0.3), [4.0, -3.0, 2.0], center=landmark)
    alignment = get_alignment(viewer)
    alignment.max_voxels = 600_000  # the whole 1.5 mm fixed grid
    alignment.set(turn)
    alignment.wait()
    np.testing.assert_allclose(moving.affine.affine_matrix[:3, :3],
                               np.diag(np.diag(moving.affine.affine_matrix[:3, :3])))
    np.testing.assert_allclose(world_points(points)[0], landmark, atol=1e-6)
    shown = apply_affine(np.linalg.inv(turn), landmark)  # where the aligned image has it
    np.testing.assert_allclose(points.data[0], shown, atol=1e-6)
    overlay = alignment.overlay.layer
    assert overlay.visible and not moving.visible
    for plane in PLANES:  # in each plane through it, the point is drawn at its place
        orient(viewer, plane)
        viewer.dims.point = tuple(shown)
        assert list(points._view_indices) == [0], plane
        # the slice drawn there shows the landmark's bright block under the point
        assert overlay.get_value(shown, world=True) > 500, plane
        displayed = list(viewer.dims.displayed)
        np.testing.assert_allclose(points._view_data[0], shown[displayed], atol=1e-6)
    # the Register panel starts from the alignment, and the landmark keeps its place
    np.testing.assert_allclose(manual_initial(fixed, moving), turn, atol=1e-9)
    alignment.reset()
    np.testing.assert_allclose(points.data[0], landmark, atol=1e-6)
