"""io/volumes.py: reading volumes with their world (RAS mm) affine, writing NIfTI atomically."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_reg.core.image import Volume
from napari_reg.io import volumes
from napari_reg.io.volumes import (
    VolumeReadError,
    VolumeWriteError,
    has_volume_extension,
    load_volume,
    load_volume_stack,
    save_volume,
    volume_name,
)


def test_anatomical_keeps_file_geometry_and_integer_type(nibabel_data):
    path = nibabel_data / "anatomical.nii"
    vol = load_volume(path)
    ref = nib.load(str(path))
    assert vol.shape == (33, 41, 25)
    np.testing.assert_array_equal(vol.affine, ref.affine)  # x flipped: -2 mm
    assert vol.data.dtype == np.int16 and vol.data.dtype.isnative  # big-endian on disk
    np.testing.assert_array_equal(vol.data, np.asanyarray(ref.dataobj))
    assert vol.name == "anatomical"
    assert vol.metadata["source_path"] == str(path)
    np.testing.assert_array_equal(vol.metadata["original_affine"], ref.affine)
    assert vol.metadata["header"]["sizeof_hdr"] == 348


def test_oblique_file(oblique_file):
    path, data, affine = oblique_file
    vol = load_volume(path)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.spacing, [1.2, 0.9, 2.5], atol=1e-6)


def test_other_formats(nibabel_data):
    for name in ("tiny.mnc", "small.mnc"):  # MINC 1 and 2
        vol = load_volume(nibabel_data / name)
        np.testing.assert_allclose(vol.affine, nib.load(str(nibabel_data / name)).affine)
    # MINC puts the time axis first; the stack is returned spatial axes first.
    data, affine, _ = load_volume_stack(nibabel_data / "minc1_4d.mnc")
    assert data.shape == (10, 20, 20, 2)
    np.testing.assert_allclose(data[..., 0], load_volume(nibabel_data / "tiny.mnc").data)
    # MGH (4D, 2 frames).
    data, affine, meta = load_volume_stack(nibabel_data / "test.mgz")
    assert data.shape == (3, 4, 5, 2) and meta["format"] == "MGHImage"
    np.testing.assert_allclose(affine, nib.load(str(nibabel_data / "test.mgz")).affine)


def test_4d_refused_by_load_volume_but_read_as_stack(nibabel_data):
    path = nibabel_data / "example4d.nii.gz"
    with pytest.raises(VolumeReadError, match=r"example4d.*\(128, 96, 24, 2\)"):
        load_volume(path)
    data, affine, meta = load_volume_stack(path)
    assert data.shape == (128, 96, 24, 2) and data.dtype == np.int16
    np.testing.assert_allclose(affine, nib.load(str(path)).affine)
    assert abs(affine[1, 2]) > 0.3  # the file is oblique


def test_singleton_fourth_axis_squeezed_and_scaling_applied(tmp_path):
    raw = np.arange(60, dtype=np.int16).reshape(3, 4, 5, 1)
    img = nib.Nifti1Image(raw, np.diag([2.0, 3.0, 4.0, 1.0]))
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, str(path))
    vol = load_volume(path)
    assert vol.shape == (3, 4, 5)
    assert vol.data.dtype == np.float32  # scaled integers become intensities
    np.testing.assert_allclose(vol.data, raw[..., 0] * 0.5 + 10.0)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_save_round_trip_oblique(tmp_path, suffix, oblique_matrix):
    affine = oblique_matrix
    data = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    path = save_volume(Volume(data, affine, "x"), tmp_path / f"out{suffix}")
    img = nib.load(str(path))
    assert int(img.header["sform_code"]) > 0 and int(img.header["qform_code"]) > 0
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-6)
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-4)  # rigid+zoom: exact
    back = load_volume(path)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_save_dtypes(tmp_path):
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    labels = np.zeros((4, 4, 4), dtype=np.int64)
    labels[1:3, 1:3, 1:3] = 7
    back = load_volume(save_volume(Volume(labels, affine), tmp_path / "l.nii.gz"))
    assert back.data.dtype == np.int32
    np.testing.assert_array_equal(back.data, labels)
    mask = labels > 0
    back = load_volume(save_volume(Volume(mask, affine), tmp_path / "m.nii.gz"))
    assert back.data.dtype == np.uint8 and back.data.sum() == 8
    floats = np.full((4, 4, 4), 2.6)
    back = load_volume(save_volume(Volume(floats, affine), tmp_path / "f.nii", dtype=np.int16))
    assert back.data.dtype == np.int16 and np.all(back.data == 3)  # rounded, not truncated


def test_save_keeps_header_codes_and_units(nibabel_data, tmp_path):
    vol = load_volume(nibabel_data / "anatomical.nii")
    path = save_volume(vol, tmp_path / "copy.nii.gz")
    src, out = vol.metadata["header"], nib.load(str(path)).header
    assert out.get_xyzt_units() == src.get_xyzt_units()
    assert int(out["sform_code"]) == (int(src["sform_code"]) or 2)
    np.testing.assert_array_equal(load_volume(path).data, vol.data)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "keep.nii.gz"
    target.write_bytes(b"old")

    def boom(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(volumes.nib, "save", boom)
    with pytest.raises(VolumeWriteError, match="disk full"):
        save_volume(Volume(np.zeros((2, 2, 2)), np.eye(4)), target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]


def test_save_refuses_other_formats(tmp_path):
    with pytest.raises(VolumeWriteError, match=r"\.nii"):
        save_volume(Volume(np.zeros((2, 2, 2)), np.eye(4)), tmp_path / "x.mgz")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kind", "message"),
    [("empty", "empty"), ("corrupt", "not a readable"), ("truncated", "truncated"),
     ("singular", "not invertible")],
)
def test_broken_files_give_clear_errors(make_broken_file, kind, message):
    path = make_broken_file(kind)
    with pytest.raises(VolumeReadError, match=message) as info:
        load_volume(path)
    assert path.name in str(info.value)
    with pytest.raises(VolumeReadError, match=message):
        load_volume_stack(path)


def test_missing_file_and_names(tmp_path):
    with pytest.raises(VolumeReadError, match="no such file"):
        load_volume(tmp_path / "nope.nii")
    assert volume_name("a/b/T1w.nii.gz") == "T1w" and volume_name("x.MGZ") == "x"
    assert has_volume_extension("X.NII.GZ") and has_volume_extension("a.mnc")
    assert not has_volume_extension("a.png") and not has_volume_extension("a.gz")
