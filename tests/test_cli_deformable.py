"""`napari-reg register --transform bspline|syn` and `apply`, end to end; the ANTs layout
(affine + deformation-only warp + inverse warp) checked with SimpleITK emulating
antsApplyTransforms."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_reg.cli import main
from napari_reg.core.resample import resample
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.io.displacement_fields import load_displacement_field
from napari_reg.io.transforms import read_transform
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
    assert names == {"transform.tfm", "transform.mat", "warped.nii.gz", "run.json", "warp.nii.gz",
                     "inverse_warp.nii.gz", "whole_map_field.nii.gz", "jacobian.nii.gz"}
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

    assert set(record["files"]) == names - {"run.json"}  # each file says what it maps
    np.testing.assert_allclose(read_transform(out / "transform.mat"),
                               read_transform(out / "transform.tfm"), atol=1e-12)

    # The whole-map field alone maps fixed -> moving: `apply` with it reproduces
    # warped.nii.gz; so do the ANTs chain (-t warp -t affine) and the result folder.
    fix, mov = str(deformed_pair["fixed"]), str(deformed_pair["moving"])
    for i, how in enumerate([[str(out / "whole_map_field.nii.gz")],
                             ["-t", str(out / "warp.nii.gz"), "-t", str(out / "transform.tfm")],
                             [str(out)]]):
        again = tmp_path / f"{model}_applied{i}.nii.gz"
        assert main(["apply", *how, "--reference", fix, "--input", mov, "-o", str(again)]) == 0
        np.testing.assert_allclose(load_volume(again).data, warped.data, atol=2e-3)


@pytest.fixture(scope="module")
def syn_result(deformed_pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "out"
    assert main(["register", str(deformed_pair["fixed"]), str(deformed_pair["moving"]), "-o",
                 str(out), "-q", "--transform", "syn", "--metric", "ncc"]) == 0
    return out


def test_field_reads_the_same_in_simpleitk(syn_result):
    import SimpleITK as sitk

    out = syn_result
    field = load_displacement_field(out / "whole_map_field.nii.gz")
    image = sitk.ReadImage(str(out / "whole_map_field.nii.gz"), sitk.sitkVectorFloat64)
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


def _sitk_chain(*items):
    """What antsApplyTransforms builds for ``-t i1 -t i2 ...``: an ITK composite whose
    queue is the reverse of the command line (ITK applies the last-queued first, so a
    point goes through i1 first). Each item: a path or (path, invert)."""
    import SimpleITK as sitk

    queue = []
    for item in items:
        path, invert = item if isinstance(item, tuple) else (item, False)
        if str(path).endswith(".nii.gz"):
            t = sitk.DisplacementFieldTransform(
                sitk.ReadImage(str(path), sitk.sitkVectorFloat64))
        else:
            t = sitk.ReadTransform(str(path))
            t = t.GetInverse() if invert else t
        queue.insert(0, t)
    return sitk.CompositeTransform(queue)


def test_ants_chain_reproduces_warped_image(deformed_pair, syn_result):
    import SimpleITK as sitk

    out = syn_result
    fixed = sitk.ReadImage(str(deformed_pair["fixed"]), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(deformed_pair["moving"]), sitk.sitkFloat32)
    # antsApplyTransforms -r FIXED -i MOVING -t warp.nii.gz -t transform.tfm
    chain = _sitk_chain(out / "warp.nii.gz", out / "transform.tfm")
    theirs = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, chain, sitk.sitkLinear, 0.0))
    ours = load_volume(out / "warped.nii.gz").data
    theirs = np.transpose(theirs, (2, 1, 0))  # SimpleITK arrays are z, y, x
    body = load_volume(deformed_pair["fixed"]).data > 0.2
    # same points up to float32 rounding of the fields; linear interpolation both ways
    assert np.abs(ours - theirs)[body].max() < 1e-2 * np.abs(ours[body]).max()
    # while the whole-map field followed by the affine again is the classic mistake
    wrong = _sitk_chain(out / "whole_map_field.nii.gz", out / "transform.tfm")
    twice = np.transpose(sitk.GetArrayFromImage(sitk.Resample(moving, fixed, wrong,
                                                              sitk.sitkLinear, 0.0)), (2, 1, 0))
    assert np.abs(ours - twice)[body].max() > 0.1 * np.abs(ours[body]).max()


def test_inverse_warp_brings_fixed_labels_to_moving_space(deformed_pair, syn_result, tmp_path):
    import SimpleITK as sitk

    out = syn_result
    fixed = load_volume(deformed_pair["fixed"])
    labels = fixed.with_data((fixed.data > 0.2).astype(np.int16) + (fixed.data > 0.6))
    save_volume(labels, tmp_path / "fixed_labels.nii.gz")
    # points: inverse chain of the whole map is the identity where the map is invertible
    whole = load_displacement_field(out / "whole_map_field.nii.gz")
    x = whole.grid_points()[8:-8:3, 8:-8:3, 8:-8:3].reshape(-1, 3)
    inv_chain = _sitk_chain((out / "transform.tfm", True), out / "inverse_warp.nii.gz")
    y = whole.transform_points(x)
    flip = np.array([-1.0, -1.0, 1.0])
    back = np.array([inv_chain.TransformPoint(tuple(p * flip)) for p in y]) * flip
    assert np.abs(back - x).max() < 0.1  # mm, fixed-point inversion on a 2 mm grid
    # labels: SimpleITK as antsApplyTransforms -r MOVING -i FIXED_LABELS -n NearestNeighbor
    # -t [transform.tfm,1] -t inverse_warp.nii.gz, against `napari-reg apply --inverse`
    ref = sitk.ReadImage(str(deformed_pair["moving"]))
    lab = sitk.ReadImage(str(tmp_path / "fixed_labels.nii.gz"))
    theirs = np.transpose(sitk.GetArrayFromImage(
        sitk.Resample(lab, ref, inv_chain, sitk.sitkNearestNeighbor, 0)), (2, 1, 0))
    assert main(["apply", str(out), "--inverse", "--reference", str(deformed_pair["moving"]),
                 "--input", str(tmp_path / "fixed_labels.nii.gz"), "-o",
                 str(tmp_path / "labels_on_moving.nii.gz")]) == 0
    ours = load_volume(tmp_path / "labels_on_moving.nii.gz").data
    assert np.mean(ours == theirs) > 0.995
    # and they land on the moving anatomy
    moving = load_volume(deformed_pair["moving"]).data
    assert np.mean((ours > 0) == (moving > 0.2)) > 0.95


def test_result_folder_converts_to_one_ants_composite(syn_result, tmp_path):
    import SimpleITK as sitk

    assert main(["convert", str(syn_result), str(tmp_path / "Composite.h5")]) == 0
    composite = sitk.ReadTransform(str(tmp_path / "Composite.h5"))
    whole = load_displacement_field(syn_result / "whole_map_field.nii.gz")
    x = whole.grid_points()[4:-4:5, 4:-4:5, 4:-4:5].reshape(-1, 3)
    flip = np.array([-1.0, -1.0, 1.0])
    theirs = np.array([composite.TransformPoint(tuple(p * flip)) for p in x]) * flip
    assert np.abs(theirs - whole.transform_points(x)).max() < 1e-3
