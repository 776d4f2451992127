"""Export panel, Format: the same fixed->moving map saved for FSL (FLIRT), greedy/c3d and
ITK HDF5 users, with a real viewer and real clicks. Screenshot: /tmp/napari_reg_export.png
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_reg.core.engine.result import RegistrationResult
from napari_reg.core.image import Volume
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.io.transforms import load_transform, read_transform
from napari_reg.widgets._session import RunOutcome, get_session
from napari_reg.widgets.export_widget import ExportError, ExportWidget

FIXED = Volume(np.zeros((20, 18, 16), np.float32),
               np.array([[2.0, 0, 0, -20], [0, 2.0, 0, -18], [0, 0, 2.5, -14], [0, 0, 0, 1]]),
               "fixed")
MOVING = Volume(np.zeros((16, 22, 14), np.float32),
                np.array([[-2.2, 0, 0, 18], [0, 1.8, 0, -20], [0, 0, 2.0, -12], [0, 0, 0, 1]]),
                "moving")
M = np.array([[0.99, -0.05, 0.02, 3.0], [0.05, 0.98, 0.01, -2.0], [-0.02, 0.0, 1.02, 1.5],
              [0, 0, 0, 1]])


def _outcome(transform) -> RunOutcome:
    result = RegistrationResult(transform=transform, initial_transform=transform, levels=[],
                                parameters={}, timings={})
    return RunOutcome(result, FIXED, MOVING, FIXED, FIXED.name, MOVING.name)


@pytest.fixture
def export(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _save(qtbot, widget, path, fmt):
    widget.transform_format.value = fmt
    widget.transform_file.value = path
    qtbot.mouseClick(widget.save_transform_button.native, Qt.LeftButton)
    return path


def test_flirt_greedy_and_h5_from_the_export_panel(export, qtbot, tmp_path):
    viewer, widget = export
    get_session(viewer).set_outcome(_outcome(MatrixTransform(M)))
    flirt = _save(qtbot, widget, tmp_path / "flirt.mat", "fsl")
    np.testing.assert_allclose(read_transform(flirt, format="fsl", fixed=FIXED, moving=MOVING),
                               M, atol=1e-10)
    greedy = _save(qtbot, widget, tmp_path / "greedy.txt", "ras")
    np.testing.assert_allclose(np.loadtxt(greedy), M, atol=1e-12)
    h5 = _save(qtbot, widget, tmp_path / "t.h5", "itk")
    np.testing.assert_allclose(read_transform(h5), M, atol=1e-12)
    viewer.window._qt_window.resize(1280, 800)
    viewer.screenshot(path="/tmp/napari_reg_export.png", canvas_only=False)


def test_deformable_result_goes_to_h5_or_a_field_not_to_flirt(export, qtbot, tmp_path):
    viewer, widget = export
    u = np.zeros((*FIXED.shape, 3), np.float32)
    u[..., 0] = 1.5
    transform = CompositeTransform([DisplacementField(u, FIXED.affine), MatrixTransform(M)])
    get_session(viewer).set_outcome(_outcome(transform))
    widget.transform_format.value = "fsl"
    widget.transform_file.value = tmp_path / "flirt.mat"
    with pytest.raises(ExportError, match="deformable"):
        widget.save_transform()
    assert not (tmp_path / "flirt.mat").exists()
    h5 = _save(qtbot, widget, tmp_path / "whole.h5", "itk")
    loaded = load_transform(h5)
    pts = FIXED.corners_world()
    np.testing.assert_allclose(loaded.transform_points(pts), transform.transform_points(pts),
                               atol=1e-4)
