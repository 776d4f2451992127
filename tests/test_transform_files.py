"""ITK / ANTs / FSL linear transform files <-> our RAS fixed->moving matrix."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nitransforms
import numpy as np
import pytest
import scipy.io
import SimpleITK as sitk
from nitransforms.io import fsl as nt_fsl

from napari_reg.core.image import Volume
from napari_reg.io.transform_files import (
    TransformFileError,
    read_fsl_matrix,
    read_itk_mat,
    read_itk_transform,
    read_transform,
    write_fsl_matrix,
    write_itk_transform,
)

NT_DATA = Path(nitransforms.__file__).parent / "tests" / "data"
RNG = np.random.default_rng(1234)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    d = m.shape[0] - 1
    return pts @ m[:d, :d].T + m[:d, d]


def _lps(pts: np.ndarray) -> np.ndarray:
    out = np.array(pts, dtype=float)
    out[..., :2] *= -1.0
    return out


def _random_affine(d: int = 3) -> np.ndarray:
    m = np.eye(d + 1)
    m[:d, :d] += RNG.normal(scale=0.15, size=(d, d))
    m[:d, d] = RNG.normal(scale=10.0, size=d)
    return m


def _sitk_matches(tx: sitk.Transform, m: np.ndarray, d: int = 3) -> None:
    """SimpleITK maps LPS(p) to LPS(M p) for random world RAS points p."""
    pts = RNG.normal(scale=60.0, size=(20, d))
    ours = _apply(m, pts)
    theirs = np.array([tx.TransformPoint(tuple(map(float, q))) for q in _lps(pts)])
    np.testing.assert_allclose(_lps(theirs), ours, atol=1e-9)


# ------------------------------------------------------------------ writing ITK
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("suffix", [".tfm", ".txt", ".mat"])
def test_itk_round_trip_and_simpleitk_reads_ours(tmp_path, d, suffix):
    m = _random_affine(d)
    path = tmp_path / f"xfm{suffix}"
    write_itk_transform(m, path)
    np.testing.assert_allclose(read_transform(path), m, rtol=0, atol=1e-12)
    _sitk_matches(sitk.ReadTransform(str(path)), m, d)
    if suffix != ".mat":
        text = path.read_text()
        # Only ITK's own header lines: nitransforms' reader splits on '#' and fails on
        # any other comment line.
        assert [ln for ln in text.splitlines() if ln.startswith("#")] == [
            "#Insight Transform File V1.0", "#Transform 0"]
        assert f"AffineTransform_double_{d}_{d}" in text
        assert not list(tmp_path.glob(".*"))  # no temporary left behind (atomic write)


def test_write_full_precision(tmp_path):
    m = np.eye(4)
    m[0, 3] = 0.1 + 0.2  # not representable in few digits
    m[1, 2] = 1e-17
    write_itk_transform(m, tmp_path / "p.tfm")
    assert np.array_equal(read_itk_transform(tmp_path / "p.tfm"), m)


# ------------------------------------------------------------------ reading SimpleITK's
def _sitk_transforms() -> list[tuple[str, sitk.Transform, int]]:
    euler = sitk.Euler3DTransform((10.0, -20.0, 5.0), 0.1, -0.2, 0.3, (4.0, 5.0, -6.0))
    euler_zyx = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.3, 0.2, -0.1, (1.0, 0.0, 2.0))
    euler_zyx.SetComputeZYX(True)
    affine = sitk.AffineTransform(RNG.normal(scale=0.5, size=9).tolist(), (1.0, 2.0, 3.0),
                                  (30.0, -40.0, 12.0))
    return [
        ("euler", euler, 3),
        ("euler_zyx", euler_zyx, 3),
        ("similarity", sitk.Similarity3DTransform(1.1, (0.3, 0.2, 1.0), 0.4, (4.0, 5.0, 6.0),
                                                  (-7.0, 8.0, 9.0)), 3),
        ("versor", sitk.VersorRigid3DTransform((0.0, 1.0, 1.0), -0.3, (1.0, 2.0, 3.0),
                                               (5.0, 5.0, 5.0)), 3),
        ("scaleversor", sitk.ScaleVersor3DTransform((1.1, 0.9, 1.2), (0.1, 0.2, 0.3), 0.4,
                                                    (1.0, 2.0, 3.0), (4.0, 5.0, 6.0)), 3),
        ("affine", affine, 3),
        ("translation", sitk.TranslationTransform(3, (1.0, -2.0, 3.5)), 3),
        ("scale", sitk.ScaleTransform(3, (1.0, 2.0, 0.5)), 3),
        ("identity", sitk.Transform(3, sitk.sitkIdentity), 3),
        ("euler2d", sitk.Euler2DTransform((3.0, -4.0), 0.3, (4.0, 5.0)), 2),
        ("similarity2d", sitk.Similarity2DTransform(1.2, 0.3, (4.0, 5.0), (1.0, 2.0)), 2),
        ("affine2d", sitk.AffineTransform([1.1, 0.2, -0.1, 0.9], (1.0, 2.0), (7.0, 8.0)), 2),
    ]


@pytest.mark.parametrize("name,tx,d", _sitk_transforms(), ids=lambda v: v
                         if isinstance(v, str) else "")
@pytest.mark.parametrize("suffix", [".tfm", ".mat"])
def test_we_read_what_simpleitk_writes(tmp_path, name, tx, d, suffix):
    path = tmp_path / f"{name}{suffix}"
    sitk.WriteTransform(tx, str(path))
    _sitk_matches(tx, read_transform(path), d)


def test_composite_order_matches_simpleitk(tmp_path):
    # ITK applies the components of a CompositeTransform last-added first:
    # T(x) = T1(T2(T3(x))), so the matrix is M1 @ M2 @ M3 in file order.
    t1 = sitk.TranslationTransform(3, (1.0, 2.0, 3.0))
    t2 = sitk.Euler3DTransform((10.0, 0.0, -5.0), 0.2, 0.1, -0.3, (4.0, 5.0, 6.0))
    t3 = sitk.AffineTransform([1.1, 0.1, 0, 0, 0.9, 0.2, 0, 0, 1.05], (1.0, 0, 0), (3, 2, 1))
    comp = sitk.CompositeTransform([t1, t2, t3])
    sitk.WriteTransform(comp, str(tmp_path / "comp.tfm"))
    m = read_transform(tmp_path / "comp.tfm")
    _sitk_matches(comp, m)
    parts = []
    for i, t in enumerate((t1, t2, t3)):
        sitk.WriteTransform(t, str(tmp_path / f"{i}.tfm"))
        parts.append(read_transform(tmp_path / f"{i}.tfm"))
    np.testing.assert_allclose(m, parts[0] @ parts[1] @ parts[2], atol=1e-12)
    assert not np.allclose(m, parts[2] @ parts[1] @ parts[0], atol=1e-3)  # order matters


def test_centered_types_and_float_precision(tmp_path):
    # Types SimpleITK cannot write: centre among the parameters.
    a = np.array([[1.1, 0.1, 0.0], [0.0, 0.9, 0.2], [0.1, 0.0, 1.0]])
    c, t = np.array([5.0, -3.0, 2.0]), np.array([1.0, 2.0, 3.0])
    path = tmp_path / "ca.tfm"
    path.write_text("#Insight Transform File V1.0\n#Transform 0\n"
                    "Transform: CenteredAffineTransform_float_3_3\nParameters: "
                    + " ".join(map(str, [*a.ravel(), *c, *t])) + "\nFixedParameters: 0 0 0\n")
    tx = sitk.AffineTransform(a.ravel().tolist(), t.tolist(), c.tolist())
    _sitk_matches(tx, read_itk_transform(path))
    path.write_text("#Insight Transform File V1.0\n#Transform 0\n"
                    "Transform: CenteredRigid2DTransform_double_2_2\n"
                    "Parameters: 0.3 3 4 1 2\nFixedParameters: 0 0\n")
    _sitk_matches(sitk.Euler2DTransform((3.0, 4.0), 0.3, (1.0, 2.0)),
                  read_itk_transform(path), 2)


# ------------------------------------------------------------------ ANTs .mat
def test_ants_mat_layout(tmp_path):
    a = np.array([[1.02, 0.05, 0.0], [-0.03, 0.97, 0.1], [0.0, -0.08, 1.01]])
    t, c = np.array([3.0, -2.0, 7.5]), np.array([10.0, 20.0, -30.0])
    path = tmp_path / "0GenericAffine.mat"
    scipy.io.savemat(path, {"AffineTransform_float_3_3": np.r_[a.ravel(), t][:, None]
                            .astype(np.float32),
                            "fixed": c[:, None].astype(np.float32)}, format="4")
    tx = sitk.AffineTransform(np.float32(a).ravel().tolist(), np.float32(t).tolist(),
                              np.float32(c).tolist())
    _sitk_matches(tx, read_itk_mat(path))
    _sitk_matches(tx, read_transform(path))
    # scipy's default MATLAB v5 layout (e.g. from Python scripts) reads too.
    scipy.io.savemat(tmp_path / "v5.mat", {"MatrixOffsetTransformBase_double_3_3":
                                           np.r_[a.ravel(), t][:, None], "fixed": c[:, None]})
    m5 = read_transform(tmp_path / "v5.mat")
    np.testing.assert_allclose(_apply(m5, _lps(c)), _lps(c + t), atol=1e-9)  # c -> c + t


# ------------------------------------------------------------------ nitransforms files
def _someones_anatomy(orientation: str) -> Volume:
    """The grid of nitransforms' test image (not shipped) from the .lta that records it.

    The .lta volume info gives size, voxel size, direction cosines and the RAS of voxel
    n/2 (FreeSurfer's c_ras), which fixes the voxel->world affine.
    """
    text = (NT_DATA / f"affine-{orientation}.fs.lta").read_text()
    info = text.split("src volume info")[1].split("dst volume info")[0]
    kv = {}
    for line in info.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            kv[key.strip()] = value.split("#")[0].split()
    n = np.array(kv["volume"], dtype=int)
    cosines = np.column_stack([np.array(kv[k], dtype=float) for k in ("xras", "yras", "zras")])
    affine = np.eye(4)
    affine[:3, :3] = cosines * np.array(kv["voxelsize"], dtype=float)
    affine[:3, 3] = np.array(kv["cras"], dtype=float) - affine[:3, :3] @ (n / 2.0)
    return Volume(np.zeros(tuple(n), dtype=np.uint8), affine)


def test_nitransforms_itk_files_are_one_transform():
    # All three store the same test transform: rotation 0.9 rad about x, RAS t=(4, 2, -1).
    ref = read_transform(NT_DATA / "affine-RAS.itk.tfm")
    for name in ("LPS", "oblique"):
        np.testing.assert_allclose(read_transform(NT_DATA / f"affine-{name}.itk.tfm"), ref)
    np.testing.assert_allclose(ref[:3, 3], [4.0, 2.0, -1.0], atol=1e-6)
    assert abs(np.degrees(np.arctan2(ref[2, 1], ref[1, 1])) - np.degrees(0.9)) < 1e-3


@pytest.mark.parametrize("orientation", ["RAS", "LAS", "LPS", "oblique"])
def test_nitransforms_itk_and_fsl_agree(orientation):
    img = _someones_anatomy(orientation)
    m_itk = read_transform(NT_DATA / f"affine-{orientation}.itk.tfm")
    m_fsl = read_transform(NT_DATA / f"affine-{orientation}.fsl", fixed=img, moving=img,
                           format="fsl")
    pts = np.vstack([img.corners_world(), img.center_world()])
    err = np.linalg.norm(_apply(m_itk, pts) - _apply(m_fsl, pts), axis=1).max()
    # The files hold 6 significant digits (e.g. translation 107.976): measured 1.3e-4 to
    # 6.4e-4 mm over the image corners; 1e-4 mm is below what the files can express.
    assert err < 1e-3
    # And exactly nitransforms' own FSL conversion (an independent implementation).
    nii = nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine)
    theirs = nt_fsl.FSLLinearTransform.from_filename(
        NT_DATA / f"affine-{orientation}.fsl").to_ras(reference=nii, moving=nii)
    np.testing.assert_allclose(m_fsl, theirs, atol=1e-9)


def _grid(shape, zooms, flip=(), rot=0.0, origin=(0.0, 0.0, 0.0)) -> Volume:
    a = np.diag([*zooms, 1.0])
    for ax in flip:
        a[ax, ax] *= -1.0
    c, s = np.cos(rot), np.sin(rot)
    r = np.eye(4)
    r[:2, :2] = [[c, -s], [s, c]]
    a = r @ a
    a[:3, 3] = origin
    return Volume(np.zeros(shape, dtype=np.uint8), a)


@pytest.mark.parametrize("flip_fixed,flip_moving", [((), ()), ((0,), ()), ((), (0, 1))])
def test_fsl_write_read_and_direction(tmp_path, flip_fixed, flip_moving):
    fixed = _grid((20, 24, 18), (1.0, 1.2, 2.0), flip_fixed, 0.2, (-10.0, 5.0, 3.0))
    moving = _grid((16, 30, 12), (1.5, 0.8, 2.5), flip_moving, -0.1, (4.0, -7.0, 1.0))
    m = _random_affine()
    path = tmp_path / "flirt.mat"
    write_fsl_matrix(m, path, fixed, moving)
    np.testing.assert_allclose(read_fsl_matrix(path, fixed, moving), m, atol=1e-10)
    np.testing.assert_allclose(read_transform(path, fixed=fixed, moving=moving, format="fsl"),
                               m, atol=1e-10)
    # nitransforms (reference = fixed, moving = moving) writes the same FLIRT matrix.
    nii = [nib.Nifti1Image(np.zeros(v.shape, np.uint8), v.affine) for v in (fixed, moving)]
    theirs = nt_fsl.FSLLinearTransform.from_ras(m, reference=nii[0], moving=nii[1])
    np.testing.assert_allclose(np.loadtxt(path), theirs.structarr["parameters"], atol=1e-9)
    # Direction: FLIRT maps moving scaled-voxel points to fixed ones. A fixed voxel x
    # corresponds to moving world M x; push the moving voxel through F and we land on x.
    f = np.loadtxt(path)

    def scaled(v: Volume, ijk: np.ndarray) -> np.ndarray:
        out = ijk * v.spacing
        if np.linalg.det(v.affine[:3, :3]) > 0:
            out[..., 0] = (v.shape[0] - 1 - ijk[..., 0]) * v.spacing[0]
        return out

    ijk_fixed = np.array([[3.0, 4.0, 5.0], [10.0, 2.0, 7.0]])
    ijk_moving = moving.world_to_voxel(_apply(m, fixed.voxel_to_world(ijk_fixed)))
    np.testing.assert_allclose(_apply(f, scaled(moving, ijk_moving)),
                               scaled(fixed, ijk_fixed), atol=1e-9)


# ------------------------------------------------------------------ errors
def _itk(tmp_path: Path, body: str, name: str = "bad.tfm") -> Path:
    path = tmp_path / name
    path.write_text("#Insight Transform File V1.0\n#Transform 0\n" + body)
    return path


@pytest.mark.parametrize("body,message", [
    ("Transform: BSplineTransform_double_3_3\nParameters: 1 2\nFixedParameters: 1\n",
     "nonlinear"),
    ("Transform: DisplacementFieldTransform_double_3_3\nParameters:\nFixedParameters:\n",
     "nonlinear"),
    ("Transform: FancyTransform_double_3_3\nParameters: 1\nFixedParameters:\n", "unknown"),
    ("Transform: AffineTransform\nParameters: 1\n", "cannot parse transform type"),
    ("Transform: AffineTransform_double_3_2\nParameters: 1\n", "3D to 2D"),
    ("Transform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0\n"
     "FixedParameters: 0 0 0\n", "needs 12 Parameters, found 11"),
    ("Transform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0 x1\n"
     "FixedParameters: 0 0 0\n", "malformed number"),
    ("Transform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0 nan\n"
     "FixedParameters: 0 0 0\n", "NaN"),
    ("Transform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0 0\n"
     "FixedParameters: 0 0\n", "FixedParameters"),
    ("Transform: Euler2DTransform_double_3_3\nParameters: 1 0 0 0 1 0\n", "does not exist"),
    ("Transform: VersorRigid3DTransform_double_3_3\nParameters: 1 1 0 0 0 0\n"
     "FixedParameters: 0 0 0\n", "norm"),
    ("Transform: AffineTransform_double_3_3\nFixedParameters: 0 0 0\n", "missing 'Parameters"),
    ("Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\n", "before any 'Transform:'"),
    ("Transform: AffineTransform_double_3_3\nScales: 1 0\n", "unknown key"),
    ("Transform: AffineTransform_double_3_3\njunk line\n", "Key: value"),
    ("", "no 'Transform:'"),
    ("Transform: CompositeTransform_double_3_3\n", "without components"),
    ("Transform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0 0\n"
     "#Transform 1\nTransform: AffineTransform_double_3_3\n"
     "Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\n", "2 separate transforms"),
])
def test_itk_errors(tmp_path, body, message):
    path = _itk(tmp_path, body)
    with pytest.raises(TransformFileError, match=message) as info:
        read_transform(path)
    assert str(path) in str(info.value)


def test_transform_list_file_is_rejected():
    with pytest.raises(TransformFileError, match="separate transforms"):
        read_itk_transform(NT_DATA / "itktflist.tfm")


def test_file_level_errors(tmp_path):
    with pytest.raises(TransformFileError, match="not found"):
        read_transform(tmp_path / "missing.tfm")
    with pytest.raises(TransformFileError, match="not found"):
        read_itk_transform(tmp_path / "missing.tfm")
    with pytest.raises(TransformFileError, match="not found"):
        read_itk_mat(tmp_path / "missing.mat")
    (tmp_path / "empty.tfm").write_text("")
    with pytest.raises(TransformFileError, match="empty"):
        read_transform(tmp_path / "empty.tfm")
    (tmp_path / "other.tfm").write_text("hello\n")
    with pytest.raises(TransformFileError, match="not an ITK text transform"):
        read_itk_transform(tmp_path / "other.tfm")
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(TransformFileError, match="HDF5"):
        read_transform(tmp_path / "x.h5")
    (tmp_path / "junk.mat").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TransformFileError, match="junk.mat"):
        read_transform(tmp_path / "junk.mat")
    scipy.io.savemat(tmp_path / "two.mat", {"a": np.eye(2), "b": np.eye(2)})
    with pytest.raises(TransformFileError, match="one transform variable"):
        read_itk_mat(tmp_path / "two.mat")
    scipy.io.savemat(tmp_path / "short.mat", {"AffineTransform_double_3_3": np.ones(5)})
    with pytest.raises(TransformFileError, match="needs 12 Parameters, found 5"):
        read_itk_mat(tmp_path / "short.mat")
    with pytest.raises(TransformFileError, match="unknown transform format"):
        read_transform(tmp_path / "short.mat", format="nifti")


def test_fsl_errors(tmp_path):
    img = _grid((10, 10, 10), (1.0, 1.0, 1.0))
    (tmp_path / "f.mat").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(TransformFileError, match="needs the fixed"):
        read_transform(tmp_path / "f.mat", format="fsl")
    np.testing.assert_allclose(read_transform(tmp_path / "f.mat", fixed=img, moving=img,
                                              format="fsl"), np.eye(4), atol=1e-12)
    (tmp_path / "g.mat").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    with pytest.raises(TransformFileError, match="4 rows of 4"):
        read_fsl_matrix(tmp_path / "g.mat", img, img)
    (tmp_path / "h.mat").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 1 1\n")
    with pytest.raises(TransformFileError, match="last row"):
        read_fsl_matrix(tmp_path / "h.mat", img, img)
    (tmp_path / "i.mat").write_text("1 0 0 0\n0 1 zero 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(TransformFileError, match="row 2: malformed number"):
        read_transform(tmp_path / "i.mat", fixed=img, moving=img, format="fsl")
    (tmp_path / "j.mat").write_text("0 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(TransformFileError, match="singular"):
        read_fsl_matrix(tmp_path / "j.mat", img, img)
    flat = Volume(np.zeros((8, 8)), np.eye(3))
    with pytest.raises(TransformFileError, match="3D"):
        write_fsl_matrix(np.eye(4), tmp_path / "k.mat", flat, img)
    with pytest.raises(TransformFileError, match="3D"):
        write_fsl_matrix(np.eye(3), tmp_path / "k.mat", img, img)


def test_write_errors(tmp_path):
    with pytest.raises(TransformFileError, match="must end in .tfm, .txt or .mat"):
        write_itk_transform(np.eye(4), tmp_path / "a.h5")
    with pytest.raises(TransformFileError, match="shape"):
        write_itk_transform(np.eye(5), tmp_path / "a.tfm")
    bad = np.eye(4)
    bad[3, 0] = 1.0
    with pytest.raises(TransformFileError, match="last row"):
        write_itk_transform(bad, tmp_path / "a.tfm")
    bad = np.eye(4)
    bad[0, 3] = np.inf
    with pytest.raises(TransformFileError, match="infinite"):
        write_itk_transform(bad, tmp_path / "a.tfm")
    assert not (tmp_path / "a.tfm").exists()


def test_windows_line_endings_and_bom(tmp_path):
    m = _random_affine()
    write_itk_transform(m, tmp_path / "a.tfm")
    text = (tmp_path / "a.tfm").read_text()
    (tmp_path / "b.tfm").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    np.testing.assert_allclose(read_transform(tmp_path / "b.tfm"), m, atol=1e-12)
