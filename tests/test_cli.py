"""`napari-reg register` / `apply` end to end, through the console entry point's main()."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_reg.cli import main
from napari_reg.core.image import Volume
from napari_reg.io.transform_files import read_transform
from napari_reg.io.volumes import load_volume, save_volume
from phantoms import homogeneous, phantom_volume


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The shipped sample pair (T1 fixed, T2-like moving on another grid), copied."""
    import shutil

    from napari_reg._sample_data import sample_data_dir as data_dir

    folder = tmp_path_factory.mktemp("pair")
    paths = {}
    for key, name in (("fixed", "mni_t1_fixed.nii.gz"), ("moving", "mni_t2like_moving.nii.gz"),
                      ("fixed_landmarks", "fixed_landmarks.csv"),
                      ("moving_landmarks", "moving_landmarks.csv")):
        paths[key] = folder / name
        shutil.copy(data_dir() / name, paths[key])
    truth = np.loadtxt(data_dir() / "ground_truth_fixed_to_moving.txt")
    moving = load_volume(paths["moving"])
    labels = Volume((moving.data > np.percentile(moving.data, 80)).astype(np.uint8) * 3,
                    moving.affine)
    paths["labels"] = folder / "labels.nii.gz"
    save_volume(labels, paths["labels"])
    return paths, truth


def brain_error_mm(matrix, truth, fixed) -> float:
    brain = fixed.data > np.percentile(fixed.data, 60)
    points = fixed.voxel_to_world(np.argwhere(brain).astype(float))
    diff = (points @ matrix[:3, :3].T + matrix[:3, 3]) - (points @ truth[:3, :3].T + truth[:3, 3])
    return float(np.linalg.norm(diff, axis=1).mean())


def test_register_writes_the_three_outputs(pair, tmp_path, capsys):
    pair, truth = pair
    out = tmp_path / "out"
    code = main(["register", str(pair["fixed"]), str(pair["moving"]), "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"transform.tfm", "warped.nii.gz", "run.json"}
    fixed = load_volume(pair["fixed"])
    matrix = read_transform(out / "transform.tfm")
    # Defaults (affine, MI, centres of mass) on T1 vs T2-like, 2-2.6 mm voxels.
    assert brain_error_mm(matrix, truth, fixed) < 0.5
    warped = nib.load(out / "warped.nii.gz")
    assert warped.shape == fixed.shape
    assert np.allclose(warped.affine, fixed.affine, atol=1e-4)
    record = json.loads((out / "run.json").read_text())
    assert record["job"]["parameters"]["metric"] == "mi"
    assert record["result"]["levels"] and record["versions"]["napari_reg"]

    # Replay from the record gives the same transform.
    again = tmp_path / "again"
    assert main(["register", "--replay", str(out / "run.json"), "-o", str(again), "-q"]) == 0
    assert np.allclose(read_transform(again / "transform.tfm"), matrix, atol=1e-8)

    # apply: a label map goes through with nearest neighbour and keeps its labels.
    warped_labels = tmp_path / "labels_on_fixed.nii.gz"
    assert main(["apply", str(out / "transform.tfm"), "--reference", str(pair["fixed"]),
                 "--input", str(pair["labels"]), "-o", str(warped_labels)]) == 0
    values = np.unique(np.asarray(nib.load(warped_labels).dataobj))
    assert set(values.tolist()) <= {0, 3} and 3 in values


def test_landmark_initialisation_from_csv(pair, tmp_path, capsys):
    pair, truth = pair
    out = tmp_path / "lm"
    code = main(["register", str(pair["fixed"]), str(pair["moving"]), "-o", str(out), "-q",
                 "--transform", "rigid", "--landmarks", str(pair["fixed_landmarks"]),
                 str(pair["moving_landmarks"]), "--iterations", "0", "0", "0"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["job"]["parameters"]["init"] == "landmarks"
    # No iterations: the result is the rigid landmark fit alone, a few mm from the truth
    # (which has scaling and shear a rigid fit cannot follow).
    fixed = load_volume(pair["fixed"])
    assert brain_error_mm(read_transform(out / "transform.tfm"), truth, fixed) < 4.0


def test_register_refuses_to_overwrite_inputs_and_leaves_nothing_on_error(pair, tmp_path, capsys):
    pair, _ = pair
    folder = pair["fixed"].parent
    before = sorted(p.name for p in folder.iterdir())
    # A failing run (no overlap) must leave no partial outputs and touch no input.
    far = phantom_volume((20, 20, 20), (2.0, 2.0, 2.0), origin=(900, 0, 0),
                         transform=homogeneous(np.eye(3), [900.0, 0, 0]))
    far_path = tmp_path / "far.nii.gz"
    save_volume(far, far_path)
    out = tmp_path / "out"
    code = main(["register", str(pair["fixed"]), str(far_path), "-o", str(out), "-q",
                 "--init", "none"])
    assert code == 1
    assert "overlap" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == before


def test_apply_refuses_to_overwrite_its_input(pair, tmp_path, capsys):
    pair, _ = pair
    tfm = tmp_path / "identity.tfm"
    from napari_reg.io.transform_files import write_itk_transform

    write_itk_transform(np.eye(4), tfm)
    original = pair["moving"].read_bytes()
    code = main(["apply", str(tfm), "--reference", str(pair["fixed"]), "--input",
                 str(pair["moving"]), "-o", str(pair["moving"]), "--overwrite"])
    assert code == 1
    assert "input" in capsys.readouterr().err
    assert pair["moving"].read_bytes() == original


def test_bad_inputs_exit_non_zero_with_a_message(pair, tmp_path, capsys):
    pair, _ = pair
    missing = tmp_path / "nope.nii.gz"
    assert main(["register", str(pair["fixed"]), str(missing), "-o", str(tmp_path / "o")]) == 1
    assert "not found" in capsys.readouterr().err
    four_d = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8, 3)).astype(np.float32),
                             np.eye(4)), four_d)
    assert main(["register", str(pair["fixed"]), str(four_d), "-o", str(tmp_path / "o")]) == 1
    assert "4 dimensions" in capsys.readouterr().err
    bad_tfm = tmp_path / "bad.tfm"
    bad_tfm.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: Nonsense_3_3\n")
    assert main(["apply", str(bad_tfm), "--reference", str(pair["fixed"]), "--input",
                 str(pair["moving"]), "-o", str(tmp_path / "x.nii.gz")]) == 1
    assert "Nonsense" in capsys.readouterr().err


def test_moving_mask_is_used_recorded_and_replayed(pair, tmp_path, capsys):
    pair, truth = pair
    moving = load_volume(pair["moving"])
    # the moving image's top third is "missing tissue": masked out, the rest aligns
    keep = np.ones(moving.shape, np.uint8)
    keep[:, :, 2 * moving.shape[2] // 3:] = 0
    mask_path = tmp_path / "moving_mask.nii.gz"
    save_volume(moving.with_data(keep), mask_path)
    out = tmp_path / "masked"
    code = main(["register", str(pair["fixed"]), str(pair["moving"]),
                 "--moving-mask", str(mask_path), "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["job"]["moving_mask"] == str(mask_path)
    matrix = read_transform(out / "transform.tfm")
    assert brain_error_mm(matrix, truth, load_volume(pair["fixed"])) < 0.5
    again = tmp_path / "again"
    assert main(["register", "--replay", str(out / "run.json"), "-o", str(again), "-q"]) == 0
    assert np.allclose(read_transform(again / "transform.tfm"), matrix, atol=1e-8)
    # an empty moving mask is refused with a message, nothing written
    save_volume(moving.with_data(np.zeros(moving.shape, np.uint8)), mask_path)
    assert main(["register", str(pair["fixed"]), str(pair["moving"]), "--moving-mask",
                 str(mask_path), "-o", str(tmp_path / "bad"), "-q"]) != 0
    assert "moving mask is empty" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
