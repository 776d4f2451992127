"""Register + export panels driven like a user, on the sample MNI pair at 4 mm.

The images are opened through the Load panel (our reader), Run/Stop are clicked, and
the live overlay, the cost curve, the result and the exported files are checked against
the core. Screenshots go to /tmp/napari_reg_gui_*.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

import napari_reg
import napari_reg.widgets.register_widget as register_widget_module
from napari_reg.core.engine.register import register
from napari_reg.core.image import Volume
from napari_reg.core.preview import HalfMapSquare, PreviewedTransform
from napari_reg.core.resample import resample
from napari_reg.io.displacement_fields import load_displacement_field
from napari_reg.io.transform_files import read_itk_transform
from napari_reg.io.volumes import load_volume, save_volume
from napari_reg.job import Job, run_job
from napari_reg.widgets._session import get_session
from napari_reg.widgets.export_widget import ExportWidget
from napari_reg.widgets.load_widget import LoadWidget
from napari_reg.widgets.register_widget import LIVE_LAYER_NAME, RegisterWidget
from slow_core import SlowCore

DATA = Path(napari_reg.__file__).parent / "data"


def _downsample(volume: Volume, step: int = 2) -> Volume:
    scale = np.diag([step] * 3 + [1.0])
    return Volume(volume.data[::step, ::step, ::step].copy(), volume.affine @ scale, volume.name)


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> tuple[Path, Path]:
    """The sample T1 (fixed) / T2-like (moving) pair at ~4 mm, written as NIfTI files."""
    folder = tmp_path_factory.mktemp("pair")
    paths = []
    for name in ("mni_t1_fixed", "mni_t2like_moving"):
        path = folder / f"{name}_4mm.nii.gz"
        save_volume(_downsample(load_volume(DATA / f"{name}.nii.gz")), path)
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture
def reg_plugin(npe2pm):
    """napari's test fixtures block plugin discovery: register our manifest explicitly."""
    with npe2pm.tmp_plugin(package="napari-reg") as plugin:
        yield plugin


@pytest.fixture
def notes(monkeypatch) -> dict[str, list[str]]:
    """Collect the notifications the panels show (errors and infos)."""
    got: dict[str, list[str]] = {"error": [], "info": [], "warning": []}
    for module in ("register_widget", "export_widget", "load_widget", "_notify"):
        for kind in ("error", "info", "warning"):
            target = f"napari_reg.widgets.{module}.show_{kind}"
            try:
                monkeypatch.setattr(target, got[kind].append)
            except AttributeError:
                pass
    return got


@pytest.fixture
def slow_core(monkeypatch, tmp_path) -> SlowCore:
    """Slow each reported iteration down by a few ms (the maths is untouched).

    A 4 mm run takes well under a second here; the delay makes it last long enough to
    see GUI updates *during* the run and to press Stop on any machine. The panel runs
    its target in a worker process, so the slowed target is handed to the panel (a
    test may change ``slow_core.delay`` at any time, also mid-run).
    """
    slowed = SlowCore(tmp_path)
    monkeypatch.setattr(register_widget_module, "register_and_warp", slowed.target)
    return slowed


def _panels(viewer, pair_files, qtbot):
    load, reg, export = LoadWidget(viewer), RegisterWidget(viewer), ExportWidget(viewer)
    for widget in (load, reg, export):
        viewer.window.add_dock_widget(widget)
    load.fixed_file.value, load.moving_file.value = pair_files
    qtbot.mouseClick(load.open_fixed.native, Qt.LeftButton)
    qtbot.mouseClick(load.open_moving.native, Qt.LeftButton)
    reg.preset.value = "Affine"
    reg.levels.value = 2
    reg.iterations.value = "40, 20"
    reg.samples.value = "2000, 4000"
    return load, reg, export


def _run_to_end(reg, qtbot, timeout_ms=30_000):
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    assert reg.running
    qtbot.waitUntil(lambda: not reg.running, timeout=timeout_ms)


def test_full_run_live_overlay_curve_result_and_export(make_napari_viewer, qtbot, tmp_path,
                                                       pair_files, reg_plugin, notes,
                                                       slow_core):
    viewer = make_napari_viewer()
    load, reg, export = _panels(viewer, pair_files, qtbot)
    session = get_session(viewer)
    fixed_layer, moving_layer = session.fixed_layer, session.moving_layer
    assert reg.roles.value.startswith(moving_layer.name)

    viewer.window._qt_window.resize(1500, 1000)
    viewer.dims.order = (2, 1, 0)  # axial slices
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    assert not reg.run_button.enabled and reg.stop_button.enabled
    seen, live_shapes, screenshot_taken = [], set(), False
    while reg.running:
        qtbot.wait(15)
        layer = next((lyr for lyr in viewer.layers if lyr.name == LIVE_LAYER_NAME), None)
        if layer is not None and reg.running:
            seen.append(float(np.asarray(layer.data, dtype=np.float64).sum()))
            live_shapes.add(layer.data.shape)
            if not screenshot_taken and len(set(seen)) >= 3:
                viewer.screenshot(path="/tmp/napari_reg_gui_during.png", canvas_only=False)
                screenshot_taken = True
    assert not notes["error"], notes["error"]
    # the overlay changed several times while the optimiser ran, not only at the end
    assert len(set(seen)) >= 3, seen
    # a 2D view: frames are the planes on screen, drawn on the full display grid
    assert live_shapes == {fixed_layer.data.shape}, live_shapes

    outcome = session.outcome
    result = outcome.result
    # the final transform is the core's for the same settings and seed
    direct = register(outcome.fixed, outcome.moving, **reg.settings())
    np.testing.assert_allclose(result.matrix, direct.matrix, atol=1e-9)
    # the curve holds exactly the costs the core reported, level boundaries marked
    _, ys = session.cost_panel.plot.curve_data()
    np.testing.assert_allclose(ys, result.cost_history())
    assert len(session.cost_panel.plot.current.boundaries) == 2
    assert reg.progress.value == reg.progress.max
    # the warped layer is now full resolution on the fixed grid
    warped_layer = viewer.layers[LIVE_LAYER_NAME]
    assert warped_layer.data.shape == fixed_layer.data.shape
    np.testing.assert_allclose(warped_layer.affine.affine_matrix, fixed_layer.affine.affine_matrix)
    # ... and equals the core's own resampling of the moving image (independent code)
    reference = resample(outcome.moving, outcome.fixed, result.transform)
    np.testing.assert_allclose(warped_layer.data, reference.data, atol=1e-3 * np.ptp(
        reference.data))
    truth = np.loadtxt(DATA / "ground_truth_fixed_to_moving.txt")
    fixed = outcome.fixed
    brain = fixed.world_grid()[fixed.data > 0.3 * fixed.data.max()]
    diff = result.matrix - truth
    tre = np.linalg.norm(brain @ diff[:3, :3].T + diff[:3, 3], axis=1).mean()
    assert tre < 2.0  # mm over the brain with 4 mm voxels and a short run (~1.2 mm here)
    viewer.screenshot(path="/tmp/napari_reg_gui_after.png", canvas_only=False)
    # before/after toggle
    reg.after.value = False
    assert moving_layer.visible and not warped_layer.visible
    viewer.screenshot(path="/tmp/napari_reg_gui_before.png", canvas_only=False)
    reg.after.value = True
    assert warped_layer.visible and not moving_layer.visible

    # ---- export: files read back; inputs are never overwritten
    export.transform_file.value = tmp_path / "out" / "t.tfm"
    qtbot.mouseClick(export.save_transform_button.native, Qt.LeftButton)
    np.testing.assert_allclose(read_itk_transform(tmp_path / "out" / "t.tfm"), result.matrix,
                               atol=1e-9)
    export.transform_file.value = tmp_path / "out" / "field.nii.gz"  # as a dense field
    qtbot.mouseClick(export.save_transform_button.native, Qt.LeftButton)
    field = load_displacement_field(tmp_path / "out" / "field.nii.gz", reference=outcome.fixed)
    points = outcome.fixed.corners_world()
    np.testing.assert_allclose(field.transform_points(points),
                               points @ result.matrix[:3, :3].T + result.matrix[:3, 3],
                               atol=1e-3)
    export.warped_file.value = tmp_path / "out" / "warped.nii.gz"
    qtbot.mouseClick(export.save_warped_button.native, Qt.LeftButton)
    back = load_volume(tmp_path / "out" / "warped.nii.gz")
    np.testing.assert_allclose(back.affine, outcome.fixed.affine, atol=1e-4)
    np.testing.assert_allclose(back.data, outcome.warped.data, rtol=1e-5, atol=1e-3)
    export.record_file.value = tmp_path / "out" / "run.json"
    qtbot.mouseClick(export.save_record_button.native, Qt.LeftButton)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    job = Job.load(tmp_path / "out" / "run.json")
    assert Path(job.fixed) == pair_files[0] and Path(job.moving) == pair_files[1]
    np.testing.assert_allclose(record["result"]["matrix_ras_fixed_to_moving"], result.matrix)
    assert job.parameters["seed"] == reg.seed.value
    # the record replays headless (the command line's path) to the same transform
    replayed = run_job(job, tmp_path / "replay")
    np.testing.assert_allclose(read_itk_transform(replayed["transform"]), result.matrix,
                               atol=1e-6)
    before = pair_files[0].read_bytes()
    export.warped_file.value = pair_files[0]
    qtbot.mouseClick(export.save_warped_button.native, Qt.LeftButton)
    assert any("input file" in m for m in notes["error"]), notes["error"]
    assert pair_files[0].read_bytes() == before
    assert not list(pair_files[0].parent.glob(".*"))  # no temporary left behind

    # ---- apply to a label map in moving space (nearest neighbour)
    labels = (np.asarray(moving_layer.data) > np.percentile(moving_layer.data, 70)).astype(
        np.uint8) * 7
    label_layer = viewer.add_labels(labels, name="moving labels",
                                    affine=moving_layer.affine.affine_matrix,
                                    metadata={"original_affine": outcome.moving.affine})
    export.apply_layer.value = label_layer
    qtbot.mouseClick(export.apply_button.native, Qt.LeftButton)
    applied = viewer.layers["moving labels (registered)"]
    assert applied.data.shape == fixed_layer.data.shape
    assert set(np.unique(applied.data)) <= {0, 7} and (applied.data == 7).any()
    # points are mapped the other way: T(fixed point) is where it sits in the moving image
    fixed_pts = np.array([[0.0, 2.0, -4.0], [10.0, -20.0, 15.0]])
    moving_pts = fixed_pts @ result.matrix[:3, :3].T + result.matrix[:3, 3]
    export.apply_layer.value = viewer.add_points(moving_pts, name="moving points")
    qtbot.mouseClick(export.apply_button.native, Qt.LeftButton)
    np.testing.assert_allclose(viewer.layers["moving points (registered)"].data, fixed_pts,
                               atol=1e-6)


def test_stop_ends_the_run_within_a_second(make_napari_viewer, qtbot, pair_files, reg_plugin,
                                            notes, slow_core):
    viewer = make_napari_viewer()
    _, reg, _ = _panels(viewer, pair_files, qtbot)
    reg.iterations.value = "400, 200"
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    plot = get_session(viewer).cost_panel.plot
    qtbot.waitUntil(lambda: len(plot.current.y) >= 3, timeout=20_000)
    # a second Run while running is refused
    assert not reg.run_button.enabled
    assert reg.run() is None and any("already running" in m for m in notes["info"])
    qtbot.mouseClick(reg.stop_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: not reg.running, timeout=1000)
    assert reg.status.value == "Stopped." and get_session(viewer).outcome is None
    assert reg.run_button.enabled and not reg.stop_button.enabled
    assert not notes["error"]
    # the viewer stays usable: the dims still move and a new run starts
    viewer.dims.set_current_step(0, 3)
    reg.iterations.value = "3, 2"
    _run_to_end(reg, qtbot)
    assert get_session(viewer).outcome is not None


def test_error_paths_become_notifications(make_napari_viewer, qtbot, pair_files, reg_plugin,
                                          notes, slow_core):
    viewer = make_napari_viewer()
    reg = RegisterWidget(viewer)
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)  # nothing loaded
    assert "Load panel" in notes["error"][-1] and not reg.running

    _, reg, _ = _panels(viewer, pair_files, qtbot)
    reg.iterations.value = "forty"
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    assert "Iterations" in notes["error"][-1] and not reg.running
    reg.levels.value = 3  # per-level lists follow the number of levels
    assert reg.iterations.value == "forty" and reg.samples.value == "2000, 2000, 4000"
    reg.levels.value = 2
    assert reg.samples.value == "2000, 4000"
    reg.iterations.value = "40, 20, 10"  # three values for two levels
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    assert "3 values for 2 levels" in notes["error"][-1] and not reg.running

    # a failing core run: a fixed image with no contrast
    session = get_session(viewer)
    flat = viewer.add_image(np.zeros(session.fixed_layer.data.shape, np.float32), name="flat",
                            affine=session.fixed_layer.affine.affine_matrix)
    session.set_roles(flat, session.moving_layer)
    reg.iterations.value = "5, 5"
    _run_to_end(reg, qtbot)
    assert notes["error"][-1].startswith("Registration failed:"), notes["error"]
    assert session.outcome is None and reg.run_button.enabled

    # an input layer removed mid-run stops the run with a message
    session.set_roles(viewer.layers[0], session.moving_layer)
    reg.iterations.value = "400, 200"
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: reg.runs.run is None or reg.runs.run.n_events > 2, timeout=20_000)
    viewer.layers.remove(session.moving_layer)
    qtbot.waitUntil(lambda: not reg.running, timeout=2000)
    assert any("was removed" in m for m in notes["error"])
    assert reg.status.value == "Stopped."


def test_manual_alignment_and_landmark_settings(make_napari_viewer, qtbot, pair_files,
                                                reg_plugin, notes):
    viewer = make_napari_viewer()
    _, reg, _ = _panels(viewer, pair_files, qtbot)
    session = get_session(viewer)
    moving = session.moving_layer
    shown = moving.affine.affine_matrix.copy()
    shown[:3, 3] += [5.0, 0.0, -2.0]  # the user dragged the moving image by (5, 0, -2) mm
    moving.affine = shown
    from napari_reg.widgets._layer_volumes import manual_initial

    initial = manual_initial(session.fixed_layer, moving)
    expected = np.eye(4)
    expected[:3, 3] = [-5.0, 0.0, 2.0]  # fixed point x shows moving file point x - shift
    np.testing.assert_allclose(initial, expected, atol=1e-9)
    reg.init.value = "manual"
    reg.iterations.value = "3, 2"
    preview = viewer.add_image(np.zeros((2, 2, 2)), name="warped (alignment)")
    _run_to_end(reg, qtbot)
    assert not preview.visible  # the live overlay replaced the manual-alignment preview
    used = session.outcome.result.parameters
    assert used["init"] == "initial"
    np.testing.assert_allclose(used["initial"], expected, atol=1e-9)
    # the warped image is still on the fixed grid (the registration is in file space)
    assert viewer.layers[LIVE_LAYER_NAME].data.shape == session.fixed_layer.data.shape

    fixed_pts = np.loadtxt(DATA / "fixed_landmarks.csv", delimiter=",", skiprows=1)[:, 1:]
    moving_pts = np.loadtxt(DATA / "moving_landmarks.csv", delimiter=",", skiprows=1)[:, 1:]
    viewer.add_points(fixed_pts, name="fixed landmarks")
    viewer.add_points(moving_pts[:-1], name="moving landmarks")
    reg.init.value = "landmarks"
    assert not reg.fixed_points.native.isHidden()
    reg.fixed_points.value = viewer.layers["fixed landmarks"]
    reg.moving_points.value = viewer.layers["moving landmarks"]
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    assert "paired by order" in notes["error"][-1] and not reg.running
    viewer.layers["moving landmarks"].data = moving_pts
    _run_to_end(reg, qtbot)
    assert session.outcome.result.parameters["init"] == "landmarks"
    assert not notes["error"][1:], notes["error"]
    # with an ``id`` feature the pairs are explicit: order and extra points do not matter
    ids = np.arange(1, len(fixed_pts) + 1)
    viewer.layers["fixed landmarks"].data = fixed_pts[::-1]
    viewer.layers["fixed landmarks"].features = {"id": ids[::-1]}
    viewer.layers["moving landmarks"].data = np.vstack([moving_pts, [[0.0, 0.0, 0.0]]])
    viewer.layers["moving landmarks"].features = {"id": np.r_[ids, 99]}
    f_pairs, m_pairs = reg._landmarks()
    assert len(f_pairs) == len(fixed_pts)
    truth = np.loadtxt(DATA / "ground_truth_fixed_to_moving.txt")  # moving = T(fixed) per id
    np.testing.assert_allclose(f_pairs @ truth[:3, :3].T + truth[:3, 3], m_pairs, atol=1e-3)


def test_panels_docked_from_the_manifest_work_together(make_napari_viewer, qtbot, pair_files,
                                                       reg_plugin, notes):
    """napari gives each plugin widget its own viewer proxy: they must still share state."""
    viewer = make_napari_viewer()
    _, load = viewer.window.add_plugin_dock_widget("napari-reg", "1. Load images")
    _, reg = viewer.window.add_plugin_dock_widget("napari-reg", "2. Register")
    _, export = viewer.window.add_plugin_dock_widget("napari-reg", "3. Export")
    load.fixed_file.value, load.moving_file.value = pair_files
    qtbot.mouseClick(load.open_fixed.native, Qt.LeftButton)
    qtbot.mouseClick(load.open_moving.native, Qt.LeftButton)
    assert "->" in reg.roles.value
    reg.levels.value, reg.iterations.value, reg.samples.value = 1, "5", "2000"
    _run_to_end(reg, qtbot)
    assert not notes["error"], notes["error"]
    assert "cost" in export.summary.value  # the export panel saw the result


def test_closing_the_panel_mid_run_stops_the_worker(make_napari_viewer, qtbot, pair_files,
                                                    reg_plugin, notes, slow_core):
    viewer = make_napari_viewer()
    _, reg, _ = _panels(viewer, pair_files, qtbot)
    reg.iterations.value = "400, 200"
    job = reg.run()
    qtbot.waitUntil(lambda: job.n_events > 2, timeout=20_000)
    reg.native.close()
    reg.native.deleteLater()
    qtbot.waitUntil(lambda: not job.running, timeout=2000)
    assert job.cancelled


def test_2d_pair_recovers_a_known_shift(make_napari_viewer, qtbot, notes):
    """A 2D image pair (no files): the GUI run finds the translation that made the pair."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random((80, 90)), 3)
    image = ((image - image.min()) / np.ptp(image)).astype(np.float32)
    moved = ndimage.shift(image, (3.0, -2.0), order=1)  # moved(x) = image(x - s)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="fixed 2d")
    viewer.add_image(moved, name="moving 2d")
    load, reg = LoadWidget(viewer), RegisterWidget(viewer)
    assert load.moving.value.name == "moving 2d"
    reg.preset.value = "Rigid"
    reg.metric.value = "ncc"
    reg.levels.value, reg.iterations.value, reg.samples.value = 2, "50, 30", "2000, 4000"
    _run_to_end(reg, qtbot)
    assert not notes["error"], notes["error"]
    matrix = get_session(viewer).outcome.result.matrix
    # T maps fixed -> moving points: moving(T x) = image(x) needs T x = x + s
    np.testing.assert_allclose(matrix[:2, 2], [3.0, -2.0], atol=0.2)
    np.testing.assert_allclose(matrix[:2, :2], np.eye(2), atol=0.01)
    warped = viewer.layers[LIVE_LAYER_NAME].data
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(warped[inner] - image[inner]).max() < 0.05


def test_deformable_preset_live_overlay_and_field_export(make_napari_viewer, qtbot, tmp_path,
                                                         pair_files, reg_plugin, notes,
                                                         slow_core):
    """Affine + B-spline: the overlay follows the non-linear map during its stage."""
    slow_core.delay = 0.004
    viewer = make_napari_viewer()
    _, reg, export = _panels(viewer, pair_files, qtbot)
    reg.preset.value = "Affine + B-spline"  # back to the preset's defaults
    reg.levels.value, reg.iterations.value, reg.samples.value = 2, "20, 10", "2000, 4000"
    reg.grid_spacing.value, reg.bending.value = 12.0, 5.0  # Advanced: regularisation
    seen = {}
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    while reg.running:
        qtbot.wait(15)
        status = reg.status.value
        layer = next((lyr for lyr in viewer.layers if lyr.name == LIVE_LAYER_NAME), None)
        if layer is not None and reg.running and status.startswith("bspline"):
            seen.setdefault(float(np.asarray(layer.data, dtype=np.float64).sum()), status)
    assert not notes["error"], notes["error"]
    assert len(seen) >= 2, seen  # the overlay moved during the deformable stage
    outcome = get_session(viewer).outcome
    assert not outcome.result.transform.is_linear
    used = outcome.result.deformable.parameters
    assert used["bending_weight"] == 5.0 and used["grid_spacing_mm"] == [12.0] * 3
    viewer.dims.order = (2, 1, 0)
    viewer.screenshot(path="/tmp/napari_reg_gui_bspline.png", canvas_only=False)
    reference = resample(outcome.moving, outcome.fixed, outcome.result.transform)
    np.testing.assert_allclose(viewer.layers[LIVE_LAYER_NAME].data, reference.data,
                               atol=1e-3 * np.ptp(reference.data))
    _, ys = get_session(viewer).cost_panel.plot.curve_data()
    np.testing.assert_allclose(ys, outcome.result.cost_history())
    labels = [label for _, label in get_session(viewer).cost_panel.plot.current.boundaries]
    assert labels[0].startswith("affine") and labels[-1].startswith("bspline")
    # an ITK affine file cannot hold it; a displacement field can
    export.transform_file.value = tmp_path / "t.tfm"
    qtbot.mouseClick(export.save_transform_button.native, Qt.LeftButton)
    assert "deformable" in notes["error"][-1] and not (tmp_path / "t.tfm").exists()
    export.transform_file.value = tmp_path / "field.nii.gz"
    qtbot.mouseClick(export.save_transform_button.native, Qt.LeftButton)
    field = load_displacement_field(tmp_path / "field.nii.gz", reference=outcome.fixed)
    points = outcome.fixed.world_grid()[::5, ::5, ::5].reshape(-1, 3)
    np.testing.assert_allclose(field.transform_points(points),
                               outcome.result.transform.transform_points(points), atol=1e-3)


def test_diffeomorphic_preset_previews_live_and_ends_exact(make_napari_viewer, qtbot,
                                                           pair_files, reg_plugin, notes,
                                                           slow_core, monkeypatch):
    """Affine + diffeomorphic: the overlay follows the SyN stage through its cheap preview
    (no exponential per frame) and ends with the exact warp of the returned transform."""
    slow_core.delay = 0.004
    viewer = make_napari_viewer()
    _, reg, _ = _panels(viewer, pair_files, qtbot)
    reg.preset.value = "Affine + diffeomorphic"
    reg.levels.value, reg.iterations.value, reg.samples.value = 2, "20, 10", "2000, 4000"
    viewer.dims.order = (2, 1, 0)
    events = []
    reg.runs.progress.connect(events.extend)  # every batch the panel receives
    frames, statuses = {}, set()
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    while reg.running:
        qtbot.wait(15)
        statuses.add(reg.status.value)
        layer = next((lyr for lyr in viewer.layers if lyr.name == LIVE_LAYER_NAME), None)
        if layer is not None and reg.running and reg.status.value.startswith("syn"):
            frames.setdefault(float(np.asarray(layer.data, dtype=np.float64).sum()), 1)
            if len(frames) == 3:
                viewer.screenshot(path="/tmp/napari_reg_gui_syn_live.png", canvas_only=False)
    assert not notes["error"], notes["error"]
    assert len(frames) >= 2, frames  # the overlay moved during the SyN stage
    # the core reported the initial alignment first, before any iteration
    assert events[0].kind == "initialised" and not np.isfinite(events[0].cost)
    # the worker process sends SyN states as their cheap preview only (no exact map, whose
    # evaluation is a full exponential), and a transform only every ~1/50 s
    syn_events = [e for e in events if e.stage_name == "syn" and e.kind != "done"]
    drawn = [e.transform for e in syn_events if e.transform is not None]
    assert any(isinstance(t, HalfMapSquare) for t in drawn), drawn[:2]
    assert not any(isinstance(t, PreviewedTransform) for t in drawn)
    # the status counts SyN's own levels, names its metric; the whole-run bar ends full
    syn_levels = {e.n_levels for e in syn_events}
    assert len(syn_levels) == 1
    for text in (t for t in statuses if t.startswith("syn, level")):
        done, of = text.split("level ")[1].split(",")[0].split(":")[0].split("/")
        assert int(of) in syn_levels and int(done) <= int(of), text
    assert any("lncc/mi" in t for t in statuses), statuses
    assert reg.overall.value == reg.overall.max
    assert get_session(viewer).cost_panel.plot.current.metrics == {"affine": "mi",
                                                                   "syn": "lncc/mi"}
    outcome = get_session(viewer).outcome
    _, ys = get_session(viewer).cost_panel.plot.curve_data()
    np.testing.assert_allclose(ys, outcome.result.cost_history())
    # the final layer is the exact warp of the returned transform
    viewer.screenshot(path="/tmp/napari_reg_gui_syn_final.png", canvas_only=False)
    reference = resample(outcome.moving, outcome.fixed, outcome.result.transform)
    np.testing.assert_allclose(viewer.layers[LIVE_LAYER_NAME].data, reference.data,
                               atol=1e-3 * np.ptp(reference.data))


def test_advanced_regularisation_follows_the_preset(make_napari_viewer, reg_plugin):
    """Only the deformable model of the chosen preset shows (and passes) its
    regularisation; the values start at the core's defaults."""
    from napari_reg.core.stages.bspline import BSplineStage
    from napari_reg.core.stages.syn import SyNStage

    def shown(widget) -> bool:  # not hidden by the panel (the window itself is not shown)
        return not widget.native.isHidden()

    reg = RegisterWidget(make_napari_viewer())
    bspline_controls, syn_controls = (reg.grid_spacing, reg.bending), (reg.update_sigma,
                                                                       reg.field_sigma)
    reg.preset.value = "Affine"
    assert not any(shown(w) for w in (*bspline_controls, *syn_controls))
    assert "deformable_options" not in reg.settings()
    reg.preset.value = "Affine + B-spline"
    assert all(shown(w) for w in bspline_controls) and not any(shown(w) for w in syn_controls)
    assert reg.settings()["deformable_options"] == {
        "grid_spacing_mm": BSplineStage.__init__.__kwdefaults__["grid_spacing_mm"],
        "bending_weight": BSplineStage.__init__.__kwdefaults__["bending_weight"]}
    reg.preset.value = "Affine + diffeomorphic"
    reg.field_sigma.value = 1.0
    assert all(shown(w) for w in syn_controls) and not any(shown(w) for w in bspline_controls)
    assert reg.settings()["deformable_options"] == {
        "update_sigma_voxels": SyNStage.__init__.__kwdefaults__["update_sigma_voxels"],
        "field_sigma_voxels": 1.0}
