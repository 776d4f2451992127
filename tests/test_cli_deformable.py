"""`napari-reg register --transform bspline|syn` and `apply FIELD`, end to end."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_reg.cli import main
from napari_reg.core.resample import resample
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.io.displacement_fields import load_displacement_field
from napari_reg.io.volumes import load_volume, save_volume
from phantoms import homogeneous, phantom_volume, rotation

LINEAR = homogeneous(rotation(0.05, 0.03, -0.04), [2.0, -1.0, 1.5])


def smooth_displacement(world: np.ndarray) -> np.ndarray:
    """A smooth deformation of a few mm, (*grid, 3) world mm."""
    return np.stack([3.0 * np.sin(world[..., 1] / 15.0), 2.0 * np.cos(world[..., 0] / 18.0),
                     2.0 * np.sin(world[..., 2] / 14.0)], axis=-1)


@pytest.fixture(scope="module")
def deformed_pair(tmp_path_factory):
    """moving(T(x)) = fixed(x) with T(x) = LINEAR(x + u(x)) (u on the fixed grid)."""
    folder = tmp_path_factory.mktemp("deformed")
    fixed = phantom_volume((48, 48, 44), (2.0, 2.0, 2.0))
    content = phantom_volume((48, 48, 44), (2.0, 2.0, 2.0), transform=LINEAR)
    u = smooth_displacement(content.world_grid()).astype(np.float32)
    # moving(y) = content(y + u(y)): pulling through u moves the anatomy by about -u.
    moving = resample(content, content, DisplacementField(u, content.affine))
    paths = {"fixed": folder / "fixed.nii.gz", "moving": folder / "moving.nii.gz"}
    save_volume(fixed, paths["fixed"])
    save_volume(moving, paths["moving"])
    return paths


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("model", ["bspline", "syn"])
def test_deformable_register_writes_field_and_jacobian(deformed_pair, tmp_path, model, capsys):
    out = tmp_path / model
    args = ["register", str(deformed_pair["fixed"]), str(deformed_pair["moving"]), "-o",
            str(out), "-q", "--transform", model, "--metric", "ncc"]
    assert main(args) == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert names == {"transform.tfm", "warped.nii.gz", "run.json", "field.nii.gz",
                     "jacobian.nii.gz"}
    fixed = load_volume(deformed_pair["fixed"])
    moving = load_volume(deformed_pair["moving"])
    warped = load_volume(out / "warped.nii.gz")
    body = fixed.data > 0.2
    before = ncc(resample(moving, fixed, np.eye(4)).data[body], fixed.data[body])
    after = ncc(warped.data[body], fixed.data[body])
    assert after > 0.97 and after > before + 0.1, (before, after)

    record = json.loads((out / "run.json").read_text())
    assert record["job"]["parameters"]["stages"] == ["affine", model]
    assert record["result"]["jacobian"]["folded_fraction"] == 0.0
    jacobian = load_volume(out / "jacobian.nii.gz")
    assert jacobian.shape == fixed.shape and jacobian.data.min() > 0

    # The field alone maps fixed -> moving: `apply` with it reproduces warped.nii.gz.
    again = tmp_path / f"{model}_applied.nii.gz"
    assert main(["apply", str(out / "field.nii.gz"), "--reference",
                 str(deformed_pair["fixed"]), "--input", str(deformed_pair["moving"]),
                 "-o", str(again)]) == 0
    assert np.allclose(load_volume(again).data, warped.data, atol=1e-4)


def test_field_reads_the_same_in_simpleitk(deformed_pair, tmp_path):
    import SimpleITK as sitk

    out = tmp_path / "syn"
    assert main(["register", str(deformed_pair["fixed"]), str(deformed_pair["moving"]), "-o",
                 str(out), "-q", "--transform", "syn", "--metric", "ncc"]) == 0
    field = load_displacement_field(out / "field.nii.gz")
    image = sitk.ReadImage(str(out / "field.nii.gz"), sitk.sitkVectorFloat64)
    itk_transform = sitk.DisplacementFieldTransform(image)
    points = field.grid_points().reshape(-1, 3)[::997]
    ours = field.transform_points(points)
    flip = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS
    theirs = np.array([itk_transform.TransformPoint(tuple(p * flip)) for p in points]) * flip
    assert np.abs(ours - theirs).max() < 1e-3


def test_deformable_bad_options_exit_non_zero(deformed_pair, tmp_path, capsys):
    code = main(["register", str(deformed_pair["fixed"]), str(deformed_pair["moving"]), "-o",
                 str(tmp_path / "o"), "-q", "--transform", "bspline", "--grid-spacing", "0.5"])
    assert code == 1
    assert "spacing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    assert nib.load(deformed_pair["moving"]).shape == (48, 48, 44)  # input untouched
