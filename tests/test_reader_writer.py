"""npe2 reader/writer/sample data: layers in world space (RAS mm), round trips, errors.

Layers are built with ``Layer.create`` (no viewer, no Qt); viewer tests are in
test_viewer_world.py.
"""

from __future__ import annotations

import napari.utils.notifications as notifications
import nibabel as nib
import numpy as np
import pytest
from napari.layers import Layer

from napari_reg import _reader, _sample_data, _writer
from napari_reg.core.image import apply_affine
from napari_reg.io.volumes import load_volume, save_volume
from napari_reg.layers import (
    is_label_map,
    layer_world_affine,
    volume_from_layer,
    volume_from_layer_data,
    volume_to_layer_data,
)


def open_layers(path) -> list[Layer]:
    reader = _reader.napari_get_reader(str(path))
    assert reader is not None
    return [Layer.create(*ld) for ld in reader(str(path))]


def test_reader_declines_foreign_extensions(tmp_path):
    for name in ("a.png", "a.tif", "a.gz", "a.csv", "dir"):
        assert _reader.napari_get_reader(str(tmp_path / name)) is None
    assert _reader.napari_get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.png")]) is None
    for name in ("a.nii", "a.nii.gz", "A.NII.GZ", "a.mgz", "a.mgh", "a.hdr", "a.img", "a.mnc"):
        assert _reader.napari_get_reader(str(tmp_path / name)) is not None


def test_world_point_lands_on_voxel_oblique(oblique_file):
    """An oblique file opens as an axis-aligned display copy (napari cannot slice a rotated
    layer) that shows each voxel's value at the voxel's world position; the layer maps
    back to the file's own voxels and affine."""
    path, data, affine = oblique_file
    (layer,) = open_layers(path)
    assert layer._type_string == "image"
    shown = layer_world_affine(layer)
    assert np.count_nonzero(shown[:3, :3] - np.diag(np.diag(shown[:3, :3]))) == 0
    # A chosen voxel's world position holds that voxel's value in the display copy
    # (values are linear in the index, so linear reslicing reproduces them exactly).
    voxel = np.array([7.0, 3.0, 5.0])
    world = apply_affine(affine, voxel)
    shown_index = layer.world_to_data(world)
    from scipy import ndimage
    value = ndimage.map_coordinates(np.asarray(layer.data, float), shown_index[:, None], order=1)
    np.testing.assert_allclose(value, [735.0], atol=1e-3)
    # Registration sees the file: original array, original affine.
    volume = volume_from_layer(layer)
    assert volume.data is data or np.array_equal(volume.data, data)
    assert volume.data[7, 3, 5] == 735.0
    np.testing.assert_allclose(volume.affine, affine, atol=1e-9)
    np.testing.assert_allclose(layer.metadata["original_affine"], affine, atol=1e-6)
    assert isinstance(layer.metadata["header"], nib.Nifti1Header)


def test_oblique_layer_saves_the_original_voxels(oblique_file, tmp_path):
    path, data, affine = oblique_file
    (layer,) = open_layers(path)
    out = tmp_path / "saved.nii.gz"
    _writer.write_image(str(out), np.asarray(layer.data), layer._get_state())
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)


def test_permuted_axes_open_transposed_without_interpolation(tmp_path):
    """A volume stored (y, z, x) is shown as a transposed view: same voxels, no copy."""
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -3], [0, 3.0, 0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "perm.nii"))
    (layer,) = open_layers(tmp_path / "perm.nii")
    assert layer.data.shape == (6, 4, 5)
    np.testing.assert_allclose(np.diag(layer.affine.affine_matrix)[:3], [-2.0, 1.5, 3.0])
    voxel = np.array([1, 2, 3])
    np.testing.assert_allclose(layer.data_to_world(voxel[[2, 0, 1]]),
                               apply_affine(affine, voxel), atol=1e-9)
    assert layer.data[3, 1, 2] == data[1, 2, 3]
    np.testing.assert_allclose(volume_from_layer(layer).affine, affine, atol=1e-12)


def test_4d_opens_as_stack_with_named_axis(nibabel_data):
    (layer,) = open_layers(nibabel_data / "example4d.nii.gz")
    assert layer.axis_labels == ("volume", "x", "y", "z")
    spatial = nib.load(str(nibabel_data / "example4d.nii.gz")).affine
    matrix = layer.affine.affine_matrix
    assert matrix.shape == (5, 5) and matrix[0, 0] == 1.0 and matrix[0, 4] == 0.0
    # The file is slightly oblique: the layer shows an axis-aligned copy of each volume
    # and keeps the file's stack for saving.
    assert layer.data.shape[0] == 2
    assert np.count_nonzero(matrix[1:4, 1:4] - np.diag(np.diag(matrix[1:4, 1:4]))) == 0
    assert layer.metadata["source_data"].shape == (2, 128, 96, 24)
    np.testing.assert_allclose(layer.metadata["original_affine"], spatial, atol=1e-6)
    # Volume 1, voxel (10, 20, 5): the display copy at that voxel's world position holds
    # (by linear interpolation) a value close to the file's.
    source = layer.metadata["source_data"]
    world = apply_affine(spatial, [10, 20, 5])
    index = layer.world_to_data([1, *world])
    from scipy import ndimage
    shown = ndimage.map_coordinates(np.asarray(layer.data[1], float), index[1:, None], order=1)
    neighbours = source[1, 9:12, 19:22, 4:7]
    assert neighbours.min() - 1e-3 <= shown[0] <= neighbours.max() + 1e-3


def test_labels_detection(tmp_path, nibabel_data):
    seg = np.zeros((8, 8, 8), np.int16)
    seg[2:5, 2:6, 3:7] = 3
    seg[5:, :, :] = 17
    save_volume(load_volume_from(seg), tmp_path / "brain.nii.gz")
    (layer,) = open_layers(tmp_path / "brain.nii.gz")
    assert layer._type_string == "labels" and layer.data.dtype == np.int16
    assert is_label_map(np.arange(1000, dtype=np.int32).reshape(10, 10, 10), "aseg")
    assert not is_label_map(np.arange(1000, dtype=np.int32).reshape(10, 10, 10), "t1")
    assert not is_label_map(seg.astype(np.float32), "seg")  # intensities, whatever the name
    (anat,) = open_layers(nibabel_data / "anatomical.nii")
    assert anat._type_string == "image"
    pair = _sample_data.load_mni_pair()
    assert not is_label_map(pair.fixed.data, pair.fixed.name)  # uint8 T1 stays an image


def load_volume_from(data: np.ndarray):
    from napari_reg.core.image import Volume

    return Volume(data, np.diag([1.0, 1.1, 1.3, 1.0]), "v")


@pytest.mark.parametrize("name", ["anatomical.nii", "oblique", "tiny.mnc", "example4d.nii.gz"])
def test_read_write_read_round_trip(tmp_path, nibabel_data, oblique_file, name):
    source = oblique_file[0] if name == "oblique" else nibabel_data / name
    (layer,) = open_layers(source)
    data, meta, kind = layer.as_layer_data_tuple()
    write = _writer.write_image if kind == "image" else _writer.write_labels
    (written,) = write(str(tmp_path / "out.nii.gz"), data, meta)
    (again,) = open_layers(written)
    assert again.data.dtype == layer.data.dtype
    np.testing.assert_array_equal(again.data, layer.data)
    np.testing.assert_allclose(again.affine.affine_matrix, layer.affine.affine_matrix, atol=1e-5)


def test_writer_folds_scale_and_translate_into_affine(tmp_path, oblique_file):
    (layer,) = open_layers(oblique_file[0])
    layer.scale = (1.0, 2.0, 0.5)
    layer.translate = (3.0, -4.0, 1.5)
    (written,) = _writer.write_image(str(tmp_path / "moved"), *layer.as_layer_data_tuple()[:2])
    assert written.endswith("moved.nii.gz")
    affine = nib.load(written).affine
    # the file's voxels are written (not the display copy), each placed where napari
    # now shows it: through the display grid, moved by scale and translate
    to_shown = np.linalg.inv(layer.metadata["display_grid_affine"]) @ oblique_file[2]
    for voxel in ([0, 0, 0], [11, 9, 6], [4, 2, 3]):
        np.testing.assert_allclose(apply_affine(affine, voxel),
                                   layer.data_to_world(apply_affine(to_shown, voxel)), atol=1e-5)
    np.testing.assert_allclose(volume_from_layer(layer).affine, affine, atol=1e-5)


def test_labels_writer_keeps_integer_type(tmp_path):
    labels = np.zeros((6, 5, 4), dtype=np.int64)
    labels[2:4, 1:3, 1:3] = 5
    layer = Layer.create(*volume_to_layer_data(load_volume_from(labels), "labels"))
    (written,) = _writer.write_labels(str(tmp_path / "seg.nii"), *layer.as_layer_data_tuple()[:2])
    back = load_volume(written)
    assert back.data.dtype == np.int32
    np.testing.assert_array_equal(back.data, labels)


@pytest.mark.parametrize("kind", ["empty", "corrupt", "truncated", "singular"])
def test_broken_file_notifies_and_returns_no_layers(tmp_path, make_broken_file,
                                                    monkeypatch, kind):
    path = make_broken_file(kind)
    before = sorted(tmp_path.iterdir())
    messages: list[str] = []
    monkeypatch.setattr(notifications, "show_error", messages.append)
    reader = _reader.napari_get_reader(str(path))
    assert reader is not None  # we own the extension, so we take responsibility
    assert reader(str(path)) == [(None,)]  # napari's "nothing to add", no exception
    assert len(messages) == 1 and path.name in messages[0]
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_sample_pair_geometry_and_truth():
    pair = _sample_data.load_mni_pair()
    truth = pair.true_fixed_to_moving
    # moving landmarks = T_true(fixed landmarks), T_true fixed world -> moving world.
    np.testing.assert_allclose(apply_affine(truth, pair.fixed_points), pair.moving_points,
                               atol=1e-3)
    assert len(pair.landmark_ids) >= 8
    spread = pair.fixed_points.max(0) - pair.fixed_points.min(0)
    assert np.all(spread > 60.0)  # well spread in x, y and z
    linear = truth[:3, :3]
    scales = np.linalg.svd(linear, compute_uv=False)
    rot = linear / np.cbrt(np.linalg.det(linear))
    angle = np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))
    assert 7.0 < angle < 11.0 and np.all(np.abs(scales - 1) < 0.06)
    # Different grids: anisotropic moving voxels, flipped x.
    assert not pair.fixed.same_grid(pair.moving)
    np.testing.assert_allclose(pair.moving.spacing, [2.2, 2.2, 2.6], atol=1e-5)
    assert pair.moving.affine[0, 0] < 0
    files = [_sample_data.sample_data_dir() / f for f in
             (_sample_data.FIXED_FILE, _sample_data.MOVING_FILE)]
    assert sum(f.stat().st_size for f in files) < 1.5e6


def correlation_in_fixed_brain(pair, transform: np.ndarray) -> float:
    """Correlation of fixed(x) and moving(transform(x)) over fixed brain voxels."""
    from scipy import ndimage

    grid = pair.fixed.world_grid()[::2, ::2, ::2].reshape(-1, 3)
    fixed_values = pair.fixed.data[::2, ::2, ::2].reshape(-1).astype(float)
    vox = pair.moving.world_to_voxel(apply_affine(transform, grid))
    moving_values = ndimage.map_coordinates(pair.moving.data.astype(float), vox.T, order=1)
    brain = fixed_values > 30
    return float(np.corrcoef(fixed_values[brain], moving_values[brain])[0, 1])


def test_sample_motion_is_in_the_voxels():
    """The moving image matches the fixed one only through T_true (T1 vs T2-like:
    anti-correlated), not through the identity: a resampled, not header-only, move;
    and T_true is the best match (2 mm off is measurably worse)."""
    pair = _sample_data.load_mni_pair()
    aligned = correlation_in_fixed_brain(pair, pair.true_fixed_to_moving)
    unaligned = correlation_in_fixed_brain(pair, np.eye(4))
    off_by_2mm = pair.true_fixed_to_moving.copy()
    off_by_2mm[:3, 3] += [2.0, 0.0, 0.0]
    assert aligned < -0.5  # measured -0.56
    assert abs(unaligned) < 0.2  # measured 0.03
    assert correlation_in_fixed_brain(pair, off_by_2mm) > aligned + 0.05  # measured -0.44


def test_sample_data_layers():
    layers = _sample_data.make_mni_pair()
    (fixed, fmeta, ftype), (moving, mmeta, mtype) = layers[:2]
    assert ftype == mtype == "image"
    assert fmeta["colormap"] == "gray" and mmeta["colormap"] == "magenta"
    assert mmeta["blending"] == "additive" and 0.4 <= mmeta["opacity"] <= 0.8
    pair = _sample_data.load_mni_pair()
    np.testing.assert_allclose(fmeta["affine"], pair.fixed.affine)
    np.testing.assert_allclose(mmeta["affine"], pair.moving.affine)
    assert [t[2] for t in layers[2:]] == ["points", "points", "labels"]
    labels, lmeta, _ = layers[4]  # tissue classes of the fixed image, on its grid
    np.testing.assert_allclose(lmeta["affine"], pair.fixed.affine)
    assert labels.shape == pair.fixed.shape and set(np.unique(labels)) == {0, 1, 2, 3}
    # white matter (3) is where the T1 is brightest, CSF (1) where it is darkest
    means = [float(pair.fixed.data[labels == k].mean()) for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2], means


def test_layer_world_affine_matches_napari_composition():
    """affine @ (rotate @ shear @ scale + translate), as napari displays the layer."""
    affine = np.array([[0, -1.2, 0, 5], [0.9, 0, 0, 3], [0, 0, 2, 1], [0, 0, 0, 1.0]])
    layer = Layer.create(np.zeros((4, 5, 6), np.float32),
                         {"affine": affine, "scale": (1, 2, 3), "translate": (1, 2, 3),
                          "rotate": 20, "shear": (0.1, 0.2, 0.3)}, "image")
    matrix = layer_world_affine(layer)
    for voxel in ([0, 0, 0], [3, 4, 5], [1, 2, 3]):
        np.testing.assert_allclose(apply_affine(matrix, voxel), layer.data_to_world(voxel),
                                   atol=1e-9)
    data, meta, _ = layer.as_layer_data_tuple()
    np.testing.assert_allclose(volume_from_layer_data(data, meta).affine, matrix, atol=1e-12)


def test_writer_refuses_what_nifti_cannot_hold(tmp_path):
    mixed = np.eye(5)
    mixed[1, 0] = 0.5  # the volume axis leans into x: not a stack of volumes on one grid
    layer = Layer.create(np.zeros((2, 3, 4, 5), np.float32), {"affine": mixed}, "image")
    with pytest.raises(ValueError, match="rotated into space"):
        _writer.write_image(str(tmp_path / "s.nii.gz"), *layer.as_layer_data_tuple()[:2])
    layer = Layer.create(np.zeros((3, 4, 5)), {}, "image")
    with pytest.raises(ValueError, match=r"\.nii"):
        save_volume(volume_from_layer(layer), tmp_path / "x.tif")
    assert not list(tmp_path.iterdir())
