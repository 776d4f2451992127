"""`napari-reg apply` chains (ANTs order, [file,1]), --format for plain matrices,
--inverse, and `napari-reg convert` (FLIRT for FSL users, greedy, ITK HDF5)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.cli import main
from napari_reg.io.transforms import read_transform, write_transform
from napari_reg.io.volumes import load_volume, save_volume
from phantoms import homogeneous, phantom_volume, rotation

A = homogeneous(rotation(0.06, -0.03, 0.08), [3.0, -2.0, 1.0])
B = homogeneous(rotation(-0.02, 0.05, 0.01) * 1.03, [-1.5, 2.5, 0.5])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    fixed = phantom_volume((36, 40, 32), (2.0, 2.0, 2.0))
    moving = phantom_volume((30, 44, 28), (2.2, 1.8, 2.4), origin=(-30.0, -42.0, -30.0))
    paths = {"fixed": folder / "fixed.nii.gz", "moving": folder / "moving.nii.gz"}
    save_volume(fixed, paths["fixed"])
    save_volume(moving, paths["moving"])
    return paths


def _apply(images, out, *transform_args, reference="fixed", source="moving") -> np.ndarray:
    code = main(["apply", *map(str, transform_args), "--reference", str(images[reference]),
                 "--input", str(images[source]), "-o", str(out)])
    assert code == 0
    return load_volume(out).data


def test_plain_matrix_needs_its_format(images, tmp_path, capsys):
    write_transform(A, tmp_path / "a.mat", format="ras")
    code = main(["apply", str(tmp_path / "a.mat"), "--reference", str(images["fixed"]),
                 "--input", str(images["moving"]), "-o", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err
    assert code == 1 and "--format fsl" in err and "--format ras" in err
    assert not (tmp_path / "x.nii.gz").exists()
    write_transform(A, tmp_path / "a.tfm")
    np.testing.assert_allclose(
        _apply(images, tmp_path / "r.nii.gz", tmp_path / "a.mat", "--format", "ras"),
        _apply(images, tmp_path / "i.nii.gz", tmp_path / "a.tfm"), atol=1e-5)


def test_chain_in_ants_order_with_inversion(images, tmp_path):
    write_transform(A, tmp_path / "a.tfm")
    write_transform(B, tmp_path / "b.h5")
    # -t a -t [b,1]: a fixed point goes through a first, then b^-1
    write_transform(np.linalg.inv(B) @ A, tmp_path / "ab.tfm")
    chained = _apply(images, tmp_path / "c.nii.gz", "-t", tmp_path / "a.tfm",
                     "-t", f"[{tmp_path / 'b.h5'},1]")
    single = _apply(images, tmp_path / "s.nii.gz", tmp_path / "ab.tfm")
    np.testing.assert_allclose(chained, single, atol=1e-4)
    # --inverse of one linear file is the inverse matrix
    write_transform(np.linalg.inv(A), tmp_path / "a_inv.tfm")
    np.testing.assert_allclose(
        _apply(images, tmp_path / "v.nii.gz", tmp_path / "a.tfm", "--inverse",
               reference="moving", source="fixed"),
        _apply(images, tmp_path / "w.nii.gz", tmp_path / "a_inv.tfm",
               reference="moving", source="fixed"), atol=1e-4)


def test_convert_to_flirt_for_fsl_users(images, tmp_path):
    write_transform(A, tmp_path / "a.tfm")
    assert main(["convert", str(tmp_path / "a.tfm"), str(tmp_path / "flirt.mat"), "--to",
                 "fsl", "--fixed", str(images["fixed"]), "--moving", str(images["moving"])]) == 0
    fixed, moving = load_volume(images["fixed"]), load_volume(images["moving"])
    np.testing.assert_allclose(read_transform(tmp_path / "flirt.mat", format="fsl",
                                              fixed=fixed, moving=moving), A, atol=1e-10)
    # flirt -in MOVING -ref FIXED -applyxfm -init flirt.mat  ==  apply --fsl
    np.testing.assert_allclose(
        _apply(images, tmp_path / "f.nii.gz", tmp_path / "flirt.mat", "--fsl"),
        _apply(images, tmp_path / "t.nii.gz", tmp_path / "a.tfm"), atol=1e-4)
    # and to greedy / c3d, whose matrices are ours as they are
    assert main(["convert", str(tmp_path / "flirt.mat"), str(tmp_path / "greedy.txt"),
                 "--from", "fsl", "--to", "ras", "--fixed", str(images["fixed"]),
                 "--moving", str(images["moving"])]) == 0
    np.testing.assert_allclose(np.loadtxt(tmp_path / "greedy.txt"), A, atol=1e-10)


def test_convert_refusals(images, tmp_path, capsys):
    write_transform(A, tmp_path / "a.tfm")
    assert main(["convert", str(tmp_path / "a.tfm"), str(tmp_path / "x.mat")]) == 1
    assert "does not say the format" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "a.tfm"), str(tmp_path / "x.mat"), "--to",
                 "fsl"]) == 1
    assert "fixed" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "a.tfm"), str(tmp_path / "a.tfm"), "--to",
                 "itk", "--overwrite"]) == 1
    assert "input" in capsys.readouterr().err
    np.testing.assert_allclose(read_transform(tmp_path / "a.tfm"), A, atol=1e-12)


def test_register_initial_plain_matrix_needs_its_format(images, tmp_path, capsys):
    write_transform(np.eye(4), tmp_path / "init.mat", format="ras")
    base = ["register", str(images["fixed"]), str(images["moving"]), "-q", "--levels", "1",
            "--iterations", "2", "--initial", str(tmp_path / "init.mat")]
    assert main([*base, "-o", str(tmp_path / "o1")]) == 1
    assert "--format ras" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "o2"), "--initial-format", "ras"]) == 0
    record = (tmp_path / "o2" / "run.json").read_text()
    assert '"initial_format": "ras"' in record
