"""Atlas panel driven with qtbot on a real viewer: layers and files, Run, Stop, warnings."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import Qt

import napari_reg.core.engine.register as register_module
from napari_reg.core.image import Volume, apply_affine
from napari_reg.io.volumes import save_volume
from napari_reg.layers import volume_to_layer_data
from napari_reg.widgets.atlas_widget import FUSED_LAYER_NAME, AtlasWidget
from phantoms import homogeneous, phantom, phantom_volume, rotation

SHAPE, SPACING = (26, 22, 20), (3.0, 3.0, 3.0)


def _labels_of(world: np.ndarray) -> np.ndarray:
    value = phantom(world)
    return ((value > 0.25).astype(np.uint8) + (value > 0.65)).astype(np.uint8)


def _atlas(matrix: np.ndarray, name: str, contrast: str = "t1") -> tuple[Volume, Volume]:
    image = phantom_volume(SHAPE, SPACING, transform=matrix, contrast=contrast, name=name)
    labels = _labels_of(apply_affine(np.linalg.inv(matrix), image.world_grid()))
    return image, Volume(labels, image.affine, f"{name}_labels")


def _add(viewer, volume: Volume, kind: str):
    data, meta, _ = volume_to_layer_data(volume, kind)
    return viewer.add_image(data, **meta) if kind == "image" else viewer.add_labels(data, **meta)


@pytest.fixture
def scene(make_napari_viewer):
    viewer = make_napari_viewer()
    subject = phantom_volume(SHAPE, SPACING, name="subject")
    subject_layer = _add(viewer, subject, "image")
    truth_layer = _add(viewer, subject.with_data(_labels_of(subject.world_grid()), "truth"),
                       "labels")
    atlas_layers = []
    for k, m in enumerate([homogeneous(rotation(0.04, 0.0, 0.06), [3.0, -2.0, 1.0]),
                           homogeneous(0.96 * np.eye(3), [-2.0, 2.0, -1.0])]):
        image, labels = _atlas(m, f"atlas{k}")
        atlas_layers.append((_add(viewer, image, "image"), _add(viewer, labels, "labels")))
    return viewer, subject_layer, truth_layer, atlas_layers


@pytest.fixture
def reg_plugin(npe2pm):
    """napari's test fixtures block plugin discovery: register our manifest explicitly."""
    with npe2pm.tmp_plugin(package="napari-reg") as plugin:
        yield plugin


@pytest.fixture
def notes(monkeypatch) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {"error": [], "info": [], "warning": []}
    for kind in got:
        monkeypatch.setattr(f"napari_reg.widgets.atlas_widget.show_{kind}", got[kind].append)
    return got


def _settle(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)


def test_segment_from_layers_shows_fused_labels_and_dice(scene, qtbot, notes) -> None:
    viewer, subject_layer, truth_layer, atlas_layers = scene
    widget = AtlasWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.subject.value = subject_layer
    widget.rows[0].image.value, widget.rows[0].labels.value = atlas_layers[0]
    qtbot.mouseClick(widget.add_row.native, Qt.LeftButton)
    qtbot.mouseClick(widget.add_row.native, Qt.LeftButton)
    qtbot.mouseClick(widget.remove_row.native, Qt.LeftButton)
    assert len(widget.rows) == 2
    widget.rows[1].image.value, widget.rows[1].labels.value = atlas_layers[1]
    widget.truth.value = truth_layer
    assert {"affine", "syn", "bspline"} <= set(widget.transform.choices)  # what register() has
    widget.metric.value = "ncc"
    qtbot.mouseClick(widget.run_button.native, Qt.LeftButton)
    assert widget.running and not widget.run_button.enabled
    _settle(qtbot, widget)
    assert notes["error"] == []
    fused = viewer.layers[FUSED_LAYER_NAME]
    np.testing.assert_allclose(fused.affine.affine_matrix, subject_layer.affine.affine_matrix)
    truth = np.asarray(truth_layer.data)
    for value in (1, 2):
        a, b = np.asarray(fused.data) == value, truth == value
        assert 2 * np.count_nonzero(a & b) / (a.sum() + b.sum()) > 0.85
    assert "fused" in widget.report.value and widget.progress.value == 100
    assert widget.status.value.startswith("Done: 2 atlas(es), weighted fusion")
    # A second run replaces the layer rather than stacking another.
    widget.fusion.value = "majority"
    assert not widget.similarity.enabled
    widget.run()
    _settle(qtbot, widget)
    assert [lyr.name for lyr in viewer.layers].count(FUSED_LAYER_NAME) == 1
    viewer.window.add_dock_widget(widget, name="Atlas segmentation")
    viewer.dims.ndisplay = 2
    viewer.screenshot("/tmp/napari_reg_gui_atlas.png", canvas_only=False)


def test_atlas_from_files_and_incomplete_rows(scene, qtbot, tmp_path, notes, reg_plugin):
    viewer, subject_layer, _, _ = scene
    widget = AtlasWidget(viewer)
    qtbot.addWidget(widget.native)
    image, labels = _atlas(np.eye(4), "file_atlas")
    save_volume(image, tmp_path / "file_atlas.nii.gz")
    # float-stored labels, as many label files are: read as an image, turned into Labels
    save_volume(labels.with_data(labels.data.astype(np.float32)),
                tmp_path / "file_atlas_seg.nii.gz")
    widget.image_file.value = tmp_path / "file_atlas.nii.gz"
    widget.labels_file.value = tmp_path / "file_atlas_seg.nii.gz"
    qtbot.mouseClick(widget.open_files.native, Qt.LeftButton)
    row = widget.rows[0]
    assert row.image.value.name == "file_atlas"
    assert row.labels.value.__class__.__name__ == "Labels"
    np.testing.assert_allclose(row.labels.value.affine.affine_matrix, labels.affine, atol=1e-5)
    widget.add_atlas_row(image=row.image.value)  # no labels chosen
    assert widget.run() is None
    assert notes["error"][-1] == "Atlas 2 needs both an image and a labels layer."


def test_stop_ends_the_run_without_adding_a_layer(scene, qtbot, notes, monkeypatch) -> None:
    viewer, subject_layer, _, atlas_layers = scene
    real = register_module.register

    def slow_register(*args, callback=None, **kwargs):
        def slowed(event):
            time.sleep(0.01)
            callback(event)

        return real(*args, callback=slowed, **kwargs)

    monkeypatch.setattr(register_module, "register", slow_register)
    widget = AtlasWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.subject.value = subject_layer
    widget.rows[0].image.value, widget.rows[0].labels.value = atlas_layers[0]
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=20_000)
    qtbot.mouseClick(widget.stop_button.native, Qt.LeftButton)
    _settle(qtbot, widget)
    assert widget.status.value == "Stopped."
    assert FUSED_LAYER_NAME not in [lyr.name for lyr in viewer.layers]
    assert widget.run_button.enabled


def test_intensity_metric_across_contrasts_asks_first(scene, qtbot, notes) -> None:
    viewer, subject_layer, _, _ = scene
    image, labels = _atlas(np.eye(4), "t2atlas", contrast="t2")
    pair = _add(viewer, image, "image"), _add(viewer, labels, "labels")
    widget = AtlasWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.subject.value = subject_layer
    widget.rows[0].image.value, widget.rows[0].labels.value = pair
    widget.metric.value = "ssd"
    assert widget.run() is None
    assert "metric='mi'" in notes["warning"][-1]
    widget.metric.value = "mi"  # the suggested fix runs at once
    assert widget.run() is not None
    _settle(qtbot, widget)
    assert FUSED_LAYER_NAME in [lyr.name for lyr in viewer.layers]


def test_the_sample_data_has_an_atlas_path(make_napari_viewer, qtbot, notes) -> None:
    """The demo pair ships the fixed T1's tissue labels: the Atlas panel segments the
    moving (T2-like) image with them, close to the labels moved by the known T_true."""
    from napari_reg._sample_data import load_mni_pair, load_tissue_labels, make_mni_pair
    from napari_reg.core.resample import resample

    viewer = make_napari_viewer()
    added = [getattr(viewer, f"add_{kind}")(data, **kwargs)
             for data, kwargs, kind in make_mni_pair()]
    fixed_layer, moving_layer, labels_layer = added[0], added[1], added[4]
    widget = AtlasWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.subject.value = moving_layer
    widget.rows[0].image.value, widget.rows[0].labels.value = fixed_layer, labels_layer
    widget.transform.value, widget.metric.value = "affine", "mi"
    widget.fusion.value = "majority"
    widget.run()
    _settle(qtbot, widget)
    assert not notes["error"], notes["error"]
    fused = viewer.layers[FUSED_LAYER_NAME].data
    pair = load_mni_pair()
    # the truth on the moving grid: fixed labels at T_true^-1(y) for every moving voxel y
    truth = resample(load_tissue_labels(), pair.moving, np.linalg.inv(pair.true_fixed_to_moving),
                     interpolation="nearest").data
    assert fused.shape == truth.shape
    dice = {k: 2 * np.sum((fused == k) & (truth == k)) / (np.sum(fused == k) + np.sum(truth == k))
            for k in (1, 2, 3)}
    assert dice[3] > 0.75 and dice[2] > 0.6, dice
