"""2D through the command line: 2D NIfTI files and one-slice volumes register as 2D.

The image is a real axial T1 slice (ANTs' example r27, /work/shared/data/real), or a
synthetic one where that folder is missing. The moving image is the same slice under a
known in-plane rigid motion, so the recovered map can be checked against the truth.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_reg.cli import main
from napari_reg.io.transform_files import read_transform

REAL = Path("/work/shared/data/real/r27slice.jpg")
SPACING = 2.0  # mm: the 256^2 slice at half resolution keeps the test quick


def _slice() -> np.ndarray:
    if REAL.exists():
        from PIL import Image

        pixels = np.asarray(Image.open(REAL).convert("L"), dtype=np.float32)
        image = pixels[::-1].T  # rows top->bottom -> x to the right, y (anterior) up
    else:  # a synthetic head-like slice
        x, y = np.meshgrid(np.linspace(-1, 1, 256), np.linspace(-1, 1, 256), indexing="ij")
        image = 200.0 * (x**2 / 0.6 + y**2 / 0.8 < 1) - 80.0 * (x**2 + (y - 0.2) ** 2 < 0.1)
    return ndimage.zoom(image, 1 / SPACING, order=1).astype(np.float32)


def _truth() -> np.ndarray:
    """Fixed -> moving world map (2D, RAS mm): 6 degrees and (4, -3) mm."""
    a = np.deg2rad(6.0)
    m = np.eye(3)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:2, 2] = [4.0, -3.0]
    return m


def _affine(z: float) -> np.ndarray:
    affine = np.diag([SPACING, SPACING, 1.0, 1.0])
    affine[:3, 3] = [-127.0, -127.0, z]
    return affine


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """2D and one-slice NIfTI pairs: fixed at z = 12 mm, moving at z = 15 mm."""
    folder = tmp_path_factory.mktemp("slices")
    fixed = _slice()
    # moving(y) = fixed(T^-1 y): voxel map of the moving grid into the fixed one
    affine2 = _affine(0)[np.ix_([0, 1, 3], [0, 1, 3])]
    vox = np.linalg.inv(affine2) @ np.linalg.inv(_truth()) @ affine2
    moving = ndimage.affine_transform(fixed, vox[:2, :2], vox[:2, 2], order=1)
    paths = {}
    for kind, shape in (("2d", fixed.shape), ("slice", fixed.shape + (1,))):
        for role, data, z in (("fixed", fixed, 12.0), ("moving", moving, 15.0)):
            paths[kind, role] = folder / f"{role}_{kind}.nii.gz"
            nib.save(nib.Nifti1Image(data.reshape(shape), _affine(z)), paths[kind, role])
    return paths


def _error_mm(matrix2d: np.ndarray, shape) -> float:
    ij = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
    pts = ij.reshape(-1, 2) * SPACING - 127.0
    diff = pts @ (matrix2d[:2, :2] - _truth()[:2, :2]).T + matrix2d[:2, 2] - _truth()[:2, 2]
    return float(np.linalg.norm(diff, axis=1).mean())


@pytest.mark.parametrize("kind", ["2d", "slice"])
def test_register_then_apply_2d_files(files, tmp_path, kind, capsys):
    fixed, moving = files[kind, "fixed"], files[kind, "moving"]
    out = tmp_path / "out"
    code = main(["register", str(fixed), str(moving), "-o", str(out), "-q",
                 "--transform", "rigid", "--metric", "ncc"])
    assert code == 0, capsys.readouterr().err
    warped = nib.load(out / "warped.nii.gz")
    assert warped.shape == nib.load(fixed).shape  # the same kind of file: 2D stays 2D
    assert np.allclose(warped.affine, nib.load(fixed).affine)
    matrix = read_transform(out / "transform.tfm")
    if kind == "2d":  # a 2D file gets an ITK 2D transform, as ITK/ANTs expect for 2D
        assert matrix.shape == (3, 3)
        in_plane = matrix
    else:  # one slice: the 3D map that also moves the fixed slice onto the moving one
        assert matrix.shape == (4, 4)
        assert matrix[2, 3] == pytest.approx(3.0) and matrix[2, 2] == pytest.approx(1.0)
        in_plane = matrix[np.ix_([0, 1, 3], [0, 1, 3])]
    assert _error_mm(in_plane, nib.load(fixed).shape[:2]) < 0.5 * SPACING
    applied = tmp_path / "applied.nii.gz"
    code = main(["apply", str(out / "transform.tfm"), "--reference", str(fixed), "--input",
                 str(moving), "-o", str(applied)])
    assert code == 0, capsys.readouterr().err
    assert np.allclose(nib.load(applied).get_fdata(), warped.get_fdata(), atol=1e-3)


def test_deformable_2d_writes_fields_on_the_slice_grid(files, tmp_path, capsys):
    fixed, moving = files["slice", "fixed"], files["slice", "moving"]
    out = tmp_path / "syn"
    code = main(["register", str(fixed), str(moving), "-o", str(out), "-q", "--transform",
                 "syn", "--levels", "2"])
    assert code == 0, capsys.readouterr().err
    for name in ("whole_map_field.nii.gz", "warp.nii.gz", "inverse_warp.nii.gz"):
        assert nib.load(out / name).shape == nib.load(fixed).shape + (1, 3)
    warped = nib.load(out / "warped.nii.gz").get_fdata()
    # the whole map alone, and the ANTs pair (warp, then the affine that carries the
    # slice-to-slice offset), both reproduce warped.nii.gz
    for i, how in enumerate([[str(out / "whole_map_field.nii.gz")],
                             ["-t", str(out / "warp.nii.gz"), "-t", str(out / "transform.tfm")]]):
        applied = tmp_path / f"applied{i}.nii.gz"
        code = main(["apply", *how, "--reference", str(fixed), "--input", str(moving), "-o",
                     str(applied)])
        assert code == 0, capsys.readouterr().err
        assert np.allclose(nib.load(applied).get_fdata(), warped, atol=1e-3)


def test_a_2d_image_with_a_3d_volume_is_one_line(files, tmp_path, capsys):
    from napari_reg._sample_data import sample_data_dir

    code = main(["register", str(files["2d", "fixed"]),
                 str(sample_data_dir() / "mni_t1_fixed.nii.gz"), "-o", str(tmp_path / "o"),
                 "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "one slice (2D)" in err and len(err.splitlines()) == 1
