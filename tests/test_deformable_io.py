"""NIfTI displacement fields (io/displacement_fields.py): SimpleITK reads ours and maps
points exactly as we do; we read fields SimpleITK/ITK write; clear errors for bad files."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from napari_reg.core.image import Volume
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.bspline import BSplineTransform
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.io.displacement_fields import (
    DisplacementFieldFileError,
    load_displacement_field,
    save_displacement_field,
)

LPS = np.array([-1.0, -1.0, 1.0])


def oblique_field(shape=(20, 22, 18), seed=0):
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, 1, 1]) @ rot @ np.diag([1.5, 1.2, 2.0])
    aff[:3, 3] = [10.0, -20.0, 5.0]
    rng = np.random.default_rng(seed)
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 3) for _ in range(3)], -1)
    return DisplacementField(u * (6.0 / np.abs(u).max()), aff)


def inner_points(field, n=300, seed=1):
    rng = np.random.default_rng(seed)
    ijk = rng.uniform(1, np.array(field.shape) - 2, (n, 3))
    return ijk @ field.affine[:3, :3].T + field.affine[:3, 3]


def sitk_map(path, points_ras):
    image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(image)
    return np.array([tx.TransformPoint(tuple(p * LPS)) for p in points_ras]) * LPS


def test_simpleitk_reads_our_field_and_maps_points_like_us(tmp_path):
    field = oblique_field()
    path = tmp_path / "warp.nii.gz"
    save_displacement_field(path, field)
    img = nib.load(path)
    assert img.shape == field.shape + (1, 3)
    assert int(img.header["intent_code"]) == 1007
    pts = inner_points(field)
    np.testing.assert_allclose(sitk_map(path, pts), field.transform_points(pts), atol=1e-4)
    back = load_displacement_field(path)
    np.testing.assert_allclose(back.components, field.components, atol=1e-6)
    np.testing.assert_allclose(back.affine, field.affine, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["warp.nii.gz"]  # no temporaries left


def test_we_read_fields_written_by_simpleitk(tmp_path):
    field = oblique_field(seed=4)
    ours = tmp_path / "ours.nii.gz"
    save_displacement_field(ours, field)
    # let ITK write its own file from an LPS vector image it built
    itk_path = tmp_path / "itk.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(ours)), str(itk_path))
    loaded = load_displacement_field(itk_path)
    pts = inner_points(field, seed=3)
    np.testing.assert_allclose(loaded.transform_points(pts), sitk_map(itk_path, pts), atol=1e-4)
    # a field made in SimpleITK from scratch: constant LPS vector (1, 2, 3) mm
    arr = np.zeros((6, 7, 8, 3))
    arr[...] = [1.0, 2.0, 3.0]  # sitk arrays are (z, y, x, c)
    image = sitk.GetImageFromArray(arr, isVector=True)
    image.SetSpacing((2.0, 1.0, 1.5))
    image.SetOrigin((5.0, -3.0, 1.0))
    path = tmp_path / "const.nii.gz"
    sitk.WriteImage(image, str(path))
    loaded = load_displacement_field(path)
    assert loaded.shape == (8, 7, 6)
    np.testing.assert_allclose(loaded.displacement[2, 3, 4], [-1.0, -2.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(loaded.affine[:3, 3], [-5.0, 3.0, 1.0])


def test_transforms_are_sampled_on_the_reference_grid(tmp_path):
    ref = Volume(np.zeros((16, 16, 16), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    ffd = BSplineTransform.over_volume(ref, 10.0)
    ffd.parameters = np.random.default_rng(0).standard_normal(ffd.n_parameters)
    m = np.eye(4)
    m[:3, 3] = [3.0, -1.0, 2.0]
    whole = CompositeTransform([ffd, MatrixTransform(m)])
    path = tmp_path / "whole.nii"
    save_displacement_field(path, whole, reference=ref)
    pts = ref.world_grid()[2:-2, 2:-2, 2:-2].reshape(-1, 3)[::7]
    np.testing.assert_allclose(sitk_map(path, pts), whole.transform_points(pts), atol=1e-4)
    with pytest.raises(DisplacementFieldFileError, match="reference grid"):
        save_displacement_field(tmp_path / "x.nii", whole)


def test_bad_files_and_grid_mismatch_are_clear_errors(tmp_path):
    field = oblique_field()
    good = tmp_path / "good.nii.gz"
    save_displacement_field(good, field)
    other = Volume(np.zeros((5, 5, 5)), np.eye(4))
    with pytest.raises(DisplacementFieldFileError, match="does not match"):
        load_displacement_field(good, reference=other)
    with pytest.raises(DisplacementFieldFileError, match="does not match"):
        save_displacement_field(tmp_path / "bad.nii.gz", field, reference=other)
    plain = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), plain)
    with pytest.raises(DisplacementFieldFileError, match=r"\(X, Y, Z, 1, 3\)"):
        load_displacement_field(plain)
    no_intent = tmp_path / "nointent.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 1, 3), np.float32), np.eye(4)), no_intent)
    with pytest.raises(DisplacementFieldFileError, match="intent"):
        load_displacement_field(no_intent)
    with pytest.raises(DisplacementFieldFileError, match="cannot read"):
        load_displacement_field(tmp_path / "missing.nii.gz")
