"""Motion panel on a real viewer: a 4D file opened by the reader, Run with per-frame
progress and growing traces, a click on the traces moves the time slider, export, Stop,
bad input as notifications."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from motion_series import write_series
from napari_reg.layers import volume_to_layer_data
from napari_reg.widgets.motion_widget import CORRECTED_SUFFIX, MotionWidget
from phantoms import phantom_volume

N_FRAMES = 6
SCREENSHOT = Path("/tmp/napari_reg_motion_panel.png")  # looked at by hand, not kept


@pytest.fixture
def reg_plugin(npe2pm):
    """napari's test fixtures block plugin discovery: register our manifest explicitly."""
    with npe2pm.tmp_plugin(package="napari-reg") as plugin:
        yield plugin


@pytest.fixture
def notes(monkeypatch) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {"error": [], "info": []}
    for kind in got:
        monkeypatch.setattr(f"napari_reg.widgets.motion_widget.show_{kind}", got[kind].append)
    return got


@pytest.fixture
def scene(make_napari_viewer, reg_plugin, tmp_path):
    path = tmp_path / "bold.nii.gz"
    truth, _ = write_series(path, n_frames=N_FRAMES, seed=11)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-reg")
    return viewer, layer, truth


def _panel(viewer) -> MotionWidget:
    widget = MotionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Motion correction (4D)", area="right")
    viewer.window._qt_window.resize(1280, 800)
    return widget


def _settle(qtbot, widget, timeout_ms: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout_ms)


def test_run_fills_frames_grows_traces_and_clicks_jump(scene, qtbot, notes, tmp_path) -> None:
    viewer, layer, truth = scene
    widget = _panel(viewer)
    assert layer.ndim == 4 and widget.series.value is layer
    seen: list[tuple[int, int]] = []  # (frames done, finite FD points in the plot)
    widget.runs.progress.connect(
        lambda _events: seen.append((widget.progress.value,
                                     int(np.isfinite(widget.plot.fd).sum()))))
    qtbot.mouseClick(widget.run_button.native, Qt.LeftButton)
    assert widget.running and not widget.run_button.enabled and widget.stop_button.enabled
    _settle(qtbot, widget)
    assert notes["error"] == []
    # per-frame progress: frames arrived in more than one batch, the traces grew with them
    assert len(seen) >= 2 and seen[0][0] < N_FRAMES, seen
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    assert all(points == done for done, points in seen)
    assert widget.progress.value == N_FRAMES
    assert widget.status.value.startswith(f"Done: {N_FRAMES} frames")
    # the corrected series, in the time axis of the original, matches the reference
    corrected = viewer.layers[layer.name + CORRECTED_SUFFIX]
    np.testing.assert_allclose(corrected.affine.affine_matrix, layer.affine.affine_matrix)
    data = np.asarray(corrected.data)
    assert data.shape == layer.data.shape
    inner = (slice(5, -5),) * 3
    for k in range(1, N_FRAMES):
        assert np.abs(data[k][inner] - data[0][inner]).mean() < 0.01
    # the traces: the recovered motion (rotations in degrees) and FD
    params = widget.correction.parameters()
    assert np.all(np.isfinite(params)) and np.abs(params[1:, :3]).max() > 0.5
    assert np.allclose(widget.plot.fd, widget.correction.framewise_displacement())
    flagged = [k for k in range(N_FRAMES) if widget.plot.fd[k] > 0.5]
    assert widget.flagged_label.value == "Flagged (FD > 0.5 mm): " + ", ".join(map(str, flagged))
    widget.threshold.value = 100.0
    assert widget.flagged_label.value.endswith("none") and widget.plot.flagged() == []
    widget.threshold.value = 0.5
    # a click on the FD trace at frame 3 moves the time slider there (and stops following)
    qtbot.mouseClick(widget.plot, Qt.LeftButton, pos=widget.plot.point_of(3).toPoint())
    assert viewer.dims.current_step[0] == 3
    assert widget.plot.current == 3 and widget.follow.value is False
    qtbot.mouseClick(widget.plot, Qt.LeftButton, pos=widget.plot.point_of(1, row=0).toPoint())
    assert viewer.dims.current_step[0] == 1
    # screenshot of the whole window after the run (1280x800), then export
    viewer.dims.set_current_step(0, 3)
    qtbot.wait(200)
    image = viewer.screenshot(path=str(SCREENSHOT), canvas_only=False, flash=False)
    assert image.shape[0] > 600 and image[..., :3].std() > 10
    out = tmp_path / "export"
    widget.export_dir.value = str(out)
    qtbot.mouseClick(widget.export_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.exports.running, timeout=60_000)
    assert notes["error"] == [] and "Motion correction saved" in notes["info"][-1]
    record = json.loads((out / "run.json").read_text())
    assert record["n_frames"] == N_FRAMES and record["runner"] == "napari panel"
    assert sorted(p.name for p in (out / "transforms").iterdir()) == \
        [f"frame_{k:04d}.tfm" for k in range(N_FRAMES)]
    estimates = np.array([f["matrix_ras_reference_to_frame"] for f in record["frames"]])
    assert np.abs(estimates - truth).max() < 0.1
    # exporting again into the same folder is refused: nothing is overwritten
    qtbot.mouseClick(widget.export_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.exports.running, timeout=60_000)
    assert "already holds" in notes["error"][-1]


def test_stop_ends_the_run_and_keeps_the_frames_done(scene, qtbot, notes) -> None:
    viewer, layer, _ = scene
    widget = _panel(viewer)
    widget.transform.value = "bspline"  # slower frames, so Stop lands mid-run
    qtbot.mouseClick(widget.run_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=60_000)
    qtbot.mouseClick(widget.stop_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=2000)
    assert widget.status.value.startswith("Stopped")
    assert 1 <= len(widget.correction.results) < N_FRAMES
    assert not widget.export_button.enabled and notes["error"] == []


def test_bad_input_is_a_notification_and_runs_nothing(scene, qtbot, notes) -> None:
    viewer, layer, _ = scene
    widget = _panel(viewer)
    volume = phantom_volume((40, 36, 32), (2.0, 2.0, 2.2), name="t1")
    data, meta, _ = volume_to_layer_data(volume, "image")
    three_d = viewer.add_image(data, **meta)
    widget.series.value = three_d
    qtbot.mouseClick(widget.run_button.native, Qt.LeftButton)
    assert not widget.running and "not a 4D stack" in notes["error"][-1]
    widget.series.value = layer
    widget.reference.value = "index"
    widget.reference_frame.value = 9
    widget.run()
    assert not widget.running and "reference frame 9 is out of range" in notes["error"][-1]
    widget.reference.value = "first"
    other = phantom_volume((10, 10, 10), (2.0, 2.0, 2.0), name="mask")
    mdata, mmeta, _ = volume_to_layer_data(other.with_data((other.data > 0.2).astype(np.uint8)),
                                           "labels")
    widget.mask.value = viewer.add_labels(mdata, **mmeta)
    widget.run()
    assert not widget.running and "not the series grid" in notes["error"][-1]
    assert not [lyr for lyr in viewer.layers if lyr.name.endswith(CORRECTED_SUFFIX)]
    qtbot.mouseClick(widget.export_button.native, Qt.LeftButton)  # disabled: nothing to export
    assert len(notes["error"]) == 3


def test_oblique_series_is_registered_on_its_own_voxels(make_napari_viewer, reg_plugin,
                                                         qtbot, notes, tmp_path) -> None:
    """An oblique 4D file is shown as an axis-aligned copy; the panel must register the
    file's voxels (not the resliced copy) and show the corrected frames on the copy's grid."""
    import warnings

    import nibabel as nib

    from phantoms import homogeneous, rotation

    path = tmp_path / "bold.nii.gz"
    truth, affine = write_series(path, n_frames=3, seed=5)
    tilt = homogeneous(rotation(np.deg2rad(18.0), 0.0, np.deg2rad(-12.0)), np.zeros(3))
    image = nib.load(str(path))
    oblique = nib.Nifti1Image(np.asarray(image.dataobj), tilt @ affine, image.header)
    oblique.set_qform(tilt @ affine, 1)
    oblique.set_sform(tilt @ affine, 1)
    nib.save(oblique, str(path))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-reg")
    assert "source_data" in layer.metadata  # shown as a resliced copy
    widget = _panel(viewer)
    widget.series.value = layer
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*non-orthogonal.*")
        qtbot.mouseClick(widget.run_button.native, Qt.LeftButton)
        _settle(qtbot, widget)
        qtbot.wait(100)
    assert notes["error"] == []
    np.testing.assert_allclose(widget.correction.affine, tilt @ affine, atol=1e-6)
    for k in range(3):  # the motion, in the tilted world: tilt @ m @ tilt^-1
        expected = tilt @ truth[k] @ np.linalg.inv(tilt)
        assert np.abs(widget.correction.results[k].matrix - expected).max() < 0.1
    corrected = viewer.layers[layer.name + CORRECTED_SUFFIX]
    np.testing.assert_allclose(corrected.affine.affine_matrix, layer.affine.affine_matrix)
    data = np.asarray(corrected.data)
    assert data.shape == layer.data.shape
    inner = tuple(slice(s // 4, -(s // 4)) for s in data.shape[1:])
    assert data[0][inner].std() > 0.05  # frames were filled in, not left empty
    for k in range(1, 3):
        assert np.abs(data[k][inner] - data[0][inner]).mean() < 0.01
