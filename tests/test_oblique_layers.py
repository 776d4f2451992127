"""Oblique volumes in napari: an axis-aligned display copy on screen, the file's voxels and
affine for registration, manual moves and landmarks (no Qt: a ViewerModel)."""

from __future__ import annotations

import warnings

import numpy as np
from napari.components import ViewerModel
from napari.layers import Layer

from napari_reg import _reader
from napari_reg.core.image import apply_affine
from napari_reg.widgets._layer_volumes import (
    file_affine,
    layer_affine,
    layer_volume,
    manual_initial,
)
from napari_reg.widgets._lm_files import add_landmark_layer
from napari_reg.widgets._lm_model import world_points


def _open(viewer, path):
    (data, meta, kind), = _reader.read_volumes(str(path))
    return viewer.add_layer(Layer.create(data, meta, kind))


def test_registration_sees_the_file_and_manual_moves(oblique_file):
    path, data, affine = oblique_file
    viewer = ViewerModel()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no napari non-orthogonal slicing warning
        layer = _open(viewer, path)
        viewer.dims.set_point(2, 10.0)
    fixed = layer_volume(layer, use_file_affine=True)
    assert fixed.data is data or np.array_equal(fixed.data, data)
    np.testing.assert_allclose(fixed.affine, affine, atol=1e-9)
    np.testing.assert_allclose(manual_initial(layer, layer), np.eye(4), atol=1e-9)
    # the user shifts the layer 5 mm right: the displayed volume moves with it, the file
    # volume does not, and the manual alignment against an unmoved copy is that shift
    other = _open(viewer, path)
    shift = np.eye(4)
    shift[0, 3] = 5.0
    layer.affine = shift @ layer.affine.affine_matrix
    np.testing.assert_allclose(layer_volume(layer).affine, shift @ affine, atol=1e-9)
    np.testing.assert_allclose(layer_volume(layer, use_file_affine=True).affine, affine,
                               atol=1e-9)
    # T maps fixed (other, unmoved) world -> moving (layer) file world: x -> x - 5 mm
    np.testing.assert_allclose(manual_initial(other, layer), np.linalg.inv(shift), atol=1e-9)
    np.testing.assert_allclose(layer_affine(layer) @ np.linalg.inv(file_affine(layer)), shift,
                               atol=1e-9)


def test_landmarks_on_an_oblique_image_are_axis_aligned_and_in_world_mm(oblique_file):
    path, _data, affine = oblique_file
    viewer = ViewerModel()
    image = _open(viewer, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        points = add_landmark_layer(viewer, image, "fixed", "yellow")
        target = apply_affine(affine, [6.0, 4.0, 3.0])  # a voxel's world position
        points.add(points.world_to_data(target))
        viewer.dims.set_point(2, float(target[2]))
    matrix = points.affine.affine_matrix[:3, :3]
    assert np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0
    np.testing.assert_allclose(world_points(points)[0], target, atol=1e-9)


def test_live_overlay_on_an_oblique_fixed_image_is_drawn_axis_aligned(oblique_file):
    """The warped overlay (live frames and the final warp) of a run whose fixed image is
    oblique goes on the axis-aligned display grid: napari slices it without warnings and
    the result itself stays on the fixed grid."""
    from napari_reg.core.transforms.base import MatrixTransform
    from napari_reg.display_grid import is_axis_aligned
    from napari_reg.widgets.overlay import LiveOverlay, warp_volume

    path, _data, affine = oblique_file
    viewer = ViewerModel()
    fixed = layer_volume(_open(viewer, path), use_file_affine=True)
    assert not is_axis_aligned(fixed.affine)
    shift = np.eye(4)
    shift[0, 3] = 2.0
    overlay = LiveOverlay(viewer, fixed, fixed, max_voxels=5000)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no napari non-orthogonal slicing warning
            overlay.request(MatrixTransform(shift))
            assert overlay.wait_frame(10)
            assert overlay.poll()
            viewer.dims.set_point(2, 10.0)
            assert is_axis_aligned(overlay.layer.affine.affine_matrix)
            final = warp_volume(fixed, fixed, MatrixTransform(shift))
            overlay.show_final(final)
            viewer.dims.set_point(2, 12.0)
        assert is_axis_aligned(overlay.layer.affine.affine_matrix)
        np.testing.assert_allclose(final.affine, affine, atol=1e-9)  # kept on the file grid
    finally:
        overlay.close()
