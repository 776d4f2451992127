"""More transform formats, read as their own tools mean them: greedy/c3d RAS matrices,
FreeSurfer LTA, AFNI, X5, ITK HDF5 composites (with warps) and FSL FNIRT warps.

Third-party files: nitransforms' shipped test data (written by ANTs, FreeSurfer's
bbregister / lta_convert, AFNI) and files SimpleITK writes in the test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import nitransforms
import numpy as np
import pytest
import SimpleITK as sitk
from nitransforms.io import fsl as nt_fsl
from nitransforms.io import itk as nt_itk

from napari_reg.core.image import Volume
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.io.transforms import (
    TransformFileError,
    detect_format,
    load_transform,
    read_transform,
    write_transform,
)

NT_DATA = Path(nitransforms.__file__).parent / "tests" / "data"
REGRESSIONS = NT_DATA / "regressions"
RNG = np.random.default_rng(7)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:3, :3].T + m[:3, 3]


def _lps(pts: np.ndarray) -> np.ndarray:
    out = np.array(pts, dtype=float)
    out[..., :2] *= -1.0
    return out


def _sitk_points(tx: sitk.Transform, pts: np.ndarray) -> np.ndarray:
    """SimpleITK's mapping of world RAS points (it works in LPS)."""
    return _lps(np.array([tx.TransformPoint(tuple(map(float, q))) for q in _lps(pts)]))


def _random_affine() -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] += RNG.normal(scale=0.1, size=(3, 3))
    m[:3, 3] = RNG.normal(scale=8.0, size=3)
    return m


# ------------------------------------------------------------------ no guessing
def test_plain_matrix_is_refused_until_its_format_is_named(tmp_path):
    m = _random_affine()
    path = tmp_path / "affine.mat"
    path.write_text("".join(" ".join(f"{v:.10f}" for v in row) + "\n" for row in m))
    with pytest.raises(TransformFileError) as info:
        read_transform(path)
    message = str(info.value)
    assert "--format fsl" in message and "--format ras" in message and str(path) in message
    np.testing.assert_allclose(read_transform(path, format="ras"), m, atol=1e-9)


def test_greedy_ras_matrix_round_trip(tmp_path):
    m = _random_affine()
    write_transform(m, tmp_path / "greedy.mat", format="ras")
    rows = (tmp_path / "greedy.mat").read_text().splitlines()
    assert len(rows) == 4 and all(len(r.split()) == 4 for r in rows)  # what greedy reads
    np.testing.assert_allclose(read_transform(tmp_path / "greedy.mat", format="ras"), m,
                               rtol=0, atol=1e-12)
    with pytest.raises(TransformFileError, match="does not say the format"):
        write_transform(m, tmp_path / "x.mat")


def test_plain_matrices_skip_comment_lines(tmp_path):
    """The sample data's ground truth is a RAS matrix with '#' comment lines (as numpy's
    savetxt writes them): it reads as RAS, and a bad row is named by its line in the file."""
    import napari_reg

    truth = Path(napari_reg.__file__).parent / "data" / "ground_truth_fixed_to_moving.txt"
    m = read_transform(truth, format="ras")
    np.testing.assert_allclose(m, np.loadtxt(truth), rtol=0, atol=0)
    bad = tmp_path / "bad.mat"
    bad.write_text("# header\n1 0 0 0\n0 1 0 x\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(TransformFileError, match="row 3: malformed number"):
        read_transform(bad, format="ras")


def test_unknown_files_name_the_choices(tmp_path):
    (tmp_path / "a.txt").write_text("1 2 3\n")
    with pytest.raises(TransformFileError, match="itk, itk-mat"):
        read_transform(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text(" ".join(["1"] * 12) + "\n")
    with pytest.raises(TransformFileError, match="--format afni"):
        read_transform(tmp_path / "b.txt")
    with pytest.raises(TransformFileError, match="unknown transform format"):
        read_transform(tmp_path / "b.txt", format="elastix")
    (tmp_path / "TransformParameters.0.txt").write_text(
        '(Transform "AffineTransform")\n(NumberOfParameters 12)\n')
    with pytest.raises(TransformFileError, match="elastix.*ConvertToItkTransform"):
        read_transform(tmp_path / "TransformParameters.0.txt")


# ------------------------------------------------------------------ FreeSurfer LTA
@pytest.mark.parametrize("name", ["from-fsnative_to-bold_mode-image",
                                  "from-scanner_to-bold_mode-image",
                                  "from-fsnative_to-scanner_mode-image"])
def test_lta_from_bbregister_agrees_with_the_itk_file(name):
    # bbregister's VOX2VOX LTA, lta_convert's RAS2RAS one and fMRIPrep's ITK .tfm of the
    # same registration (nitransforms' regression data).
    itk = read_transform(REGRESSIONS / f"{name}.tfm")
    assert detect_format(REGRESSIONS / f"{name}.lta") == "lta"
    pts = RNG.uniform(-90, 90, size=(50, 3))
    for path in [REGRESSIONS / f"{name}.lta", REGRESSIONS / f"{name}_type-ras2ras.lta"]:
        if path.exists():
            err = np.abs(_apply(read_transform(path), pts) - _apply(itk, pts)).max()
            assert err < 1e-3, (path.name, err)  # the files hold ~7 significant digits


@pytest.mark.parametrize("orientation", ["RAS", "LAS", "LPS", "oblique"])
def test_nitransforms_lta_test_files_hold_the_inverse(orientation):
    # nitransforms writes its affine-*.fs.lta test files from the inverse of the ITK test
    # transform ("FS defines LTA transforms reversed", its test_linear_save).
    lta = read_transform(NT_DATA / f"affine-{orientation}.fs.lta")
    itk = read_transform(NT_DATA / f"affine-{orientation}.itk.tfm")
    np.testing.assert_allclose(lta @ itk, np.eye(4), atol=1e-5)


# ------------------------------------------------------------------ AFNI
@pytest.mark.parametrize("orientation", ["RAS", "LAS", "LPS"])
def test_afni_matches_itk(tmp_path, orientation):
    path = tmp_path / f"affine-{orientation}.aff12.1D"
    shutil.copy(NT_DATA / f"affine-{orientation}.afni", path)
    assert detect_format(path) == "afni"
    itk = read_transform(NT_DATA / f"affine-{orientation}.itk.tfm")
    pts = RNG.uniform(-90, 90, size=(50, 3))
    # the AFNI file holds 6 significant digits
    assert np.abs(_apply(read_transform(path), pts) - _apply(itk, pts)).max() < 2e-3
    with pytest.raises(TransformFileError, match="AFNI"):
        read_transform(NT_DATA / f"affine-{orientation}.afni")  # no .1D: must be named
    np.testing.assert_allclose(
        read_transform(NT_DATA / f"affine-{orientation}.afni", format="afni"),
        read_transform(path))


def test_afni_series_is_refused_with_a_reason(tmp_path):
    path = tmp_path / "motion.aff12.1D"
    shutil.copy(NT_DATA / "affine-RAS.afni-array", path)
    with pytest.raises(TransformFileError, match="series"):
        read_transform(path)


# ------------------------------------------------------------------ X5
def test_x5_written_by_nitransforms(tmp_path):
    m = _random_affine()
    nitransforms.linear.Affine(m).to_filename(tmp_path / "a.x5", fmt="X5")
    assert detect_format(tmp_path / "a.x5") == "x5"
    np.testing.assert_allclose(read_transform(tmp_path / "a.x5"), m, atol=1e-12)


# ------------------------------------------------------------------ ITK HDF5
def test_ants_composite_h5_matches_nitransforms_and_simpleitk():
    path = NT_DATA / "affine-antsComposite.h5"
    m = read_transform(path)
    (theirs,) = nt_itk.ITKCompositeH5.from_filename(path)
    np.testing.assert_allclose(m, theirs.to_ras(), atol=1e-9)
    pts = RNG.uniform(-90, 90, size=(30, 3))
    np.testing.assert_allclose(_apply(m, pts), _sitk_points(sitk.ReadTransform(str(path)),
                                                            pts), atol=1e-6)


def _sitk_field(shape, spacing, origin, direction) -> sitk.Image:
    """A smooth random LPS displacement field as SimpleITK holds it."""
    z, y, x = np.meshgrid(*[np.linspace(0, np.pi, n) for n in shape[::-1]], indexing="ij")
    vec = np.stack([3 * np.sin(x + y), -2 * np.cos(z) * np.sin(y), 1.5 * np.sin(x * z)], -1)
    img = sitk.GetImageFromArray(vec.astype(np.float64), isVector=True)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def test_h5_composite_with_warp_written_by_simpleitk(tmp_path):
    # An ANTs-style Composite.h5 (affine, then warp: x -> Affine(Warp(x))) from SimpleITK.
    rot = sitk.VersorTransform((0.1, -0.2, 0.05), 0.2).GetMatrix()
    field = _sitk_field((12, 10, 9), (4.0, 5.0, 6.0), (-20.0, 30.0, -15.0), rot)
    warp = sitk.DisplacementFieldTransform(sitk.Image(field))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(tuple(np.eye(3).ravel() + RNG.normal(scale=0.05, size=9)))
    affine.SetTranslation((3.0, -4.0, 2.0))
    composite = sitk.CompositeTransform([affine, warp])
    sitk.WriteTransform(composite, str(tmp_path / "Composite.h5"))
    ours = load_transform(tmp_path / "Composite.h5")
    assert isinstance(ours, CompositeTransform)
    ras_grid = _lps(np.array([field.TransformContinuousIndexToPhysicalPoint(
        tuple(map(float, RNG.uniform(1, 8, 3)))) for _ in range(40)]))
    theirs = _sitk_points(sitk.ReadTransform(str(tmp_path / "Composite.h5")), ras_grid)
    np.testing.assert_allclose(ours.transform_points(ras_grid), theirs, atol=1e-4)
    # and SimpleITK reads what we write
    write_transform(ours, tmp_path / "ours.h5")
    again = _sitk_points(sitk.ReadTransform(str(tmp_path / "ours.h5")), ras_grid)
    np.testing.assert_allclose(again, theirs, atol=1e-4)
    with pytest.raises(TransformFileError, match="displacement field"):
        read_transform(tmp_path / "ours.h5")


def test_linear_h5_round_trip_read_by_simpleitk(tmp_path):
    m = _random_affine()
    write_transform(m, tmp_path / "a.h5")
    assert detect_format(tmp_path / "a.h5") == "itk-h5"
    np.testing.assert_allclose(read_transform(tmp_path / "a.h5"), m, atol=1e-12)
    pts = RNG.uniform(-90, 90, size=(30, 3))
    np.testing.assert_allclose(_sitk_points(sitk.ReadTransform(str(tmp_path / "a.h5")), pts),
                               _apply(m, pts), atol=1e-9)


# ------------------------------------------------------------------ FSL FNIRT
def test_fnirt_warp_matches_nitransforms_on_its_own_grid():
    path = NT_DATA / "ds-005_sub-01_from-OASIS_to-T1_warp_fsl.nii.gz"
    img = nib.load(str(path))
    assert detect_format(path) == "fnirt"
    same_grid = Volume(np.zeros(img.shape[:3], np.uint8), img.affine)
    ours = load_transform(path, moving=same_grid)
    assert isinstance(ours, DisplacementField)
    theirs = np.asarray(nt_fsl.FSLDisplacementsField.from_image(img).dataobj)
    # nitransforms negates x: right for axis-aligned grids, which this one is
    np.testing.assert_allclose(ours.displacement, theirs, atol=1e-4)
    with pytest.raises(TransformFileError, match="moving"):
        load_transform(path)


def test_fnirt_warp_between_different_grids(tmp_path):
    # FSL's scaled-voxel coordinates of the two images differ (a flipped, shifted moving
    # grid): a zero FNIRT warp is then FSL's identity in those coordinates, which is a
    # flip in world space for the LAS -> RAS pair.
    fixed_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    moving_aff = np.diag([-2.0, 2.0, 2.0, 1.0])
    moving_aff[0, 3] = 18.0
    data = np.zeros((10, 8, 6, 3), np.float32)
    img = nib.Nifti1Image(data, fixed_aff)
    img.header.set_intent(2006)
    nib.save(img, tmp_path / "warp.nii.gz")
    moving = Volume(np.zeros((10, 8, 6), np.uint8), moving_aff)
    field = load_transform(tmp_path / "warp.nii.gz", moving=moving)
    # FLIRT's identity matrix between these grids says the same
    eye = tmp_path / "eye.mat"
    eye.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    fixed = Volume(np.zeros((10, 8, 6), np.uint8), fixed_aff)
    m = read_transform(eye, format="fsl", fixed=fixed, moving=moving)
    pts = field.grid_points().reshape(-1, 3)
    np.testing.assert_allclose(field.transform_points(pts), _apply(m, pts), atol=1e-4)


def test_fnirt_coefficients_are_refused_with_what_to_do(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4))
    img.header.set_intent(2007)
    nib.save(img, tmp_path / "coef.nii.gz")
    with pytest.raises(TransformFileError, match="convertwarp"):
        load_transform(tmp_path / "coef.nii.gz", moving=Volume(np.zeros((4, 4, 4)), np.eye(4)))


def test_matrix_transform_loads_as_matrix(tmp_path):
    m = _random_affine()
    write_transform(m, tmp_path / "a.tfm")
    t = load_transform(tmp_path / "a.tfm")
    assert isinstance(t, MatrixTransform)
    np.testing.assert_allclose(t.matrix, m, atol=1e-12)


def test_linear_h5_composite_is_one_matrix_in_itk_order(tmp_path):
    a, b = _random_affine(), _random_affine()
    parts = []
    for m in (a, b):  # ITK queue [a, b]: b is applied to a point first
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ m @ np.diag([-1.0, -1.0, 1.0, 1.0])
        t = sitk.AffineTransform(3)
        t.SetMatrix(tuple(lps[:3, :3].ravel()))
        t.SetTranslation(tuple(lps[:3, 3]))
        parts.append(t)
    composite = sitk.CompositeTransform(parts)
    sitk.WriteTransform(composite, str(tmp_path / "two.h5"))
    np.testing.assert_allclose(read_transform(tmp_path / "two.h5"), a @ b, atol=1e-9)
    assert isinstance(load_transform(tmp_path / "two.h5"), MatrixTransform)


def test_nitransforms_reads_our_tfm(tmp_path):
    # It split on '#' and failed (IndexError) on the comment lines we used to write.
    m = _random_affine()
    write_transform(m, tmp_path / "ours.tfm")
    theirs = nitransforms.linear.load(tmp_path / "ours.tfm", fmt="itk")
    np.testing.assert_allclose(theirs.matrix, m, atol=1e-12)
    nt_itk.ITKLinearTransform.from_filename(tmp_path / "ours.tfm")  # the reader that failed
