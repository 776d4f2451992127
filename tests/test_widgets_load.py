"""Load panel driven like a user: layer combos, file open through the reader, swap, opacity."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_reg.core.image import Volume
from napari_reg.io.volumes import save_volume
from napari_reg.widgets._session import get_session
from napari_reg.widgets.load_widget import LoadWidget


def _volume(seed: int, name: str) -> Volume:
    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    affine[:3, 3] = [-20.0, -22.0, -15.0]
    return Volume(rng.random((20, 22, 12)).astype(np.float32) * 100, affine, name)


def test_roles_styles_swap_and_opacity(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    a = viewer.add_image(_volume(0, "a").data, name="a")
    b = viewer.add_image(_volume(1, "b").data, name="b")
    mask = viewer.add_labels(np.ones((20, 22, 12), dtype=np.uint8), name="brain mask")
    widget = LoadWidget(viewer)
    viewer.window.add_dock_widget(widget)
    session = get_session(viewer)
    # two images open: first fixed, second moving, styled grey / magenta additive
    assert widget.fixed.value is a and widget.moving.value is b
    assert a.colormap.name == "gray" and b.colormap.name == "magenta"
    assert b.blending == "additive"
    assert session.fixed_layer is a and session.moving_layer is b
    widget.mask.value = mask
    assert session.mask_layer is mask
    widget.opacity.value = 0.3
    assert abs(b.opacity - 0.3) < 1e-6
    qtbot.mouseClick(widget.swap.native, Qt.LeftButton)
    assert session.fixed_layer is b and session.moving_layer is a
    assert b.colormap.name == "gray" and a.colormap.name == "magenta"
    # removing a layer drops it from the choices and from the session
    viewer.layers.remove(a)
    assert widget.moving.value is None and session.moving_layer is None
    assert a not in [v for _, v in widget._image_choices()]


@pytest.fixture
def reg_plugin(npe2pm):
    """napari's test fixtures block plugin discovery: register our manifest explicitly."""
    with npe2pm.tmp_plugin(package="napari-reg") as plugin:
        yield plugin


def test_open_files_through_the_reader(make_napari_viewer, qtbot, tmp_path, reg_plugin):
    fixed_path, moving_path = tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz"
    save_volume(_volume(2, "fixed"), fixed_path)
    moving_volume = _volume(3, "moving")
    save_volume(moving_volume, moving_path)
    viewer = make_napari_viewer()
    widget = LoadWidget(viewer)
    widget.fixed_file.value = fixed_path
    qtbot.mouseClick(widget.open_fixed.native, Qt.LeftButton)
    widget.moving_file.value = moving_path
    qtbot.mouseClick(widget.open_moving.native, Qt.LeftButton)
    session = get_session(viewer)
    assert session.fixed_layer is not None and session.moving_layer is not None
    moving = session.moving_layer
    # the reader placed the layer with the file's voxel->world affine
    np.testing.assert_allclose(moving.affine.affine_matrix, moving_volume.affine, atol=1e-5)
    assert moving.colormap.name == "magenta"


def test_open_errors_are_notifications(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr("napari_reg.widgets.load_widget.show_error", messages.append)
    # the reader's own notification is the one message for a file it refuses
    monkeypatch.setattr("napari_reg._reader._notify_error", messages.append)
    viewer = make_napari_viewer()
    widget = LoadWidget(viewer)
    qtbot.mouseClick(widget.open_fixed.native, Qt.LeftButton)  # no file chosen
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    widget.moving_file.value = broken
    qtbot.mouseClick(widget.open_moving.native, Qt.LeftButton)
    assert len(messages) == 2
    assert "Choose a fixed image file" in messages[0]
    assert "broken.nii.gz" in messages[1] and "not a readable volume" in messages[1]
    assert len(viewer.layers) == 0


def test_moving_mask_choice_reaches_register(make_napari_viewer, qtbot):
    from napari_reg.widgets._layer_volumes import layer_volume

    viewer = make_napari_viewer()
    viewer.add_image(_volume(0, "a").data, name="a")
    viewer.add_image(_volume(1, "b").data, name="b")
    lesion = np.ones((20, 22, 12), dtype=np.uint8)
    lesion[5:9, 5:9, 3:6] = 0
    mask = viewer.add_labels(lesion, name="moving mask")
    widget = LoadWidget(viewer)
    viewer.window.add_dock_widget(widget)
    session = get_session(viewer)
    assert widget.moving_mask.value is None and session.moving_mask_layer is None
    widget.moving_mask.value = mask
    assert session.moving_mask_layer is mask and session.mask_layer is None
    # what the Register panel hands to register(): the moving mask only
    kwargs = session.mask_volumes(layer_volume)
    assert set(kwargs) == {"moving_mask"}
    np.testing.assert_array_equal(kwargs["moving_mask"].data, lesion)
    assert session.mask_sources(lambda layer: layer.name) == {"fixed_mask": None,
                                                              "moving_mask": "moving mask"}
    widget.moving_mask.value = None
    assert session.moving_mask_layer is None
