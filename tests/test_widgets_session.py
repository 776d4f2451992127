"""Save the whole registration session as a folder, restore it in a fresh viewer, and
replay it headless: the same images, roles (the moving-image mask too), alignment,
landmarks, Register fields and result. Screenshot of the restored viewer:
/tmp/napari_reg_session_restored.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

import test_widgets_register as register_tests
from napari_reg.commands.register import build_job
from napari_reg.io.transforms import read_itk_transform
from napari_reg.job import run_job
from napari_reg.widgets._alignment import get_alignment
from napari_reg.widgets._lm_model import ids_of, world_points
from napari_reg.widgets._session import get_session
from napari_reg.widgets.export_widget import ExportWidget
from napari_reg.widgets.landmarks_widget import LandmarksWidget
from napari_reg.widgets.register_widget import LIVE_LAYER_NAME, RegisterWidget

_panels = register_tests._panels
pair_files, reg_plugin, notes = (register_tests.pair_files, register_tests.reg_plugin,
                                 register_tests.notes)


def test_session_save_restore_and_replay(make_napari_viewer, qtbot, tmp_path, pair_files,
                                         reg_plugin, notes):
    viewer = make_napari_viewer()
    load, reg, export = _panels(viewer, pair_files, qtbot)
    session = get_session(viewer)
    # a moving-image mask (a block of "missing tissue" left out), chosen in the Load panel
    moving_layer = session.moving_layer
    keep = np.ones(moving_layer.data.shape, np.uint8)
    keep[: keep.shape[0] // 3, : keep.shape[1] // 3] = 0
    mask_affine = np.array(moving_layer.affine.affine_matrix)  # the moving file's grid
    mask_layer = viewer.add_labels(keep, name="moving keep", affine=mask_affine)
    load.reset_choices()
    load.moving_mask.value = mask_layer
    assert session.moving_mask_layer is mask_layer
    reg.seed.value, reg.iterations.value = 7, "30, 15"
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: not reg.running, timeout=60_000)
    outcome = session.outcome
    assert outcome is not None, notes["error"]
    # a hand alignment and three landmark pairs on top of the result
    shift = np.eye(4)
    shift[:3, 3] = [2.0, -1.0, 0.5]
    get_alignment(viewer).set(shift)
    landmarks = LandmarksWidget(viewer)
    viewer.window.add_dock_widget(landmarks)
    fixed_pts, moving_pts = landmarks.create_layers()
    for layer, offset in ((fixed_pts, 0.0), (moving_pts, 1.0)):
        layer.add(np.array([[10.0, 12.0, 9.0], [20.0, 14.0, 11.0], [12.0, 25.0, 15.0]]) + offset)
    reg.preset.value = "Affine + B-spline"  # fields changed after the run
    reg.grid_spacing.value = 15.0
    fields = reg.fields()
    folder = tmp_path / "my session"
    export.save_session(folder)
    assert not notes["error"], notes["error"]
    assert (folder / "session.json").exists() and (folder / "run.json").exists()

    # ---- a fresh viewer: open the folder
    other = make_napari_viewer()
    other.window._qt_window.resize(1280, 800)
    reg2, export2 = RegisterWidget(other), ExportWidget(other)
    for widget in (reg2, export2):
        other.window.add_dock_widget(widget)
    export2.open_session(folder)
    assert not notes["error"], notes["error"]
    s2 = get_session(other)
    assert (s2.fixed_layer.name, s2.moving_layer.name) == (session.fixed_layer.name,
                                                           session.moving_layer.name)
    np.testing.assert_array_equal(s2.fixed_layer.data, session.fixed_layer.data)
    np.testing.assert_array_equal(s2.moving_layer.data, session.moving_layer.data)
    np.testing.assert_allclose(get_alignment(other).matrix, shift, atol=1e-9)
    assert s2.moving_mask_layer is not None and s2.moving_mask_layer.name == "moving keep"
    np.testing.assert_array_equal(s2.moving_mask_layer.data, keep)
    np.testing.assert_allclose(s2.moving_mask_layer.affine.affine_matrix, mask_affine,
                               atol=1e-6)
    assert reg2.fields() == fields
    restored = s2.outcome
    np.testing.assert_allclose(restored.result.matrix, outcome.result.matrix, atol=1e-9)
    np.testing.assert_allclose(restored.result.cost_history(), outcome.result.cost_history())
    np.testing.assert_allclose(other.layers[LIVE_LAYER_NAME].data, outcome.warped.data,
                               atol=1e-6)
    assert "cost" in export2.summary.value  # Export (and QC) see the restored result
    f2, m2 = s2.landmark_layers
    for new, old in ((f2, fixed_pts), (m2, moving_pts)):
        assert ids_of(new) == ids_of(old)
        np.testing.assert_allclose(world_points(new), world_points(old), atol=1e-4)
    other.screenshot(path="/tmp/napari_reg_session_restored.png", canvas_only=False)
    # the restored moving landmarks follow a later hand alignment, like ones made here
    landmarks2 = LandmarksWidget(other)
    assert landmarks2.moving_points.value is m2
    before_data, before_world, fixed_data = np.array(m2.data), world_points(m2), np.array(f2.data)
    moved = shift.copy()
    moved[:3, 3] += [3.0, 0.0, -2.0]  # fixed -> moving: the image is shown 3 mm further left
    get_alignment(other).set(moved)
    np.testing.assert_allclose(world_points(m2), before_world, atol=1e-6)  # same anatomy
    np.testing.assert_allclose(m2.data - before_data, [[-3.0, 0.0, 2.0]] * 3, atol=1e-6)
    np.testing.assert_array_equal(f2.data, fixed_data)  # the fixed landmarks stay

    # ---- the command line replays the folder to the same registration
    class Args:
        replay = str(folder)

    job = build_job(Args())
    assert Path(job.fixed).parent == folder / "inputs"
    assert Path(job.moving_mask) == folder / "inputs" / "moving_mask.nii.gz"
    replayed = run_job(job, tmp_path / "replay")
    np.testing.assert_allclose(read_itk_transform(replayed["transform"]),
                               outcome.result.matrix, atol=1e-5)

    # an existing session is not overwritten by accident
    with pytest.raises(ValueError, match="exist"):
        export.save_session(folder)
