"""Motion correction: known per-frame motion recovered, the output set, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ants_layout import SUFFIXES, check_warp_then_affine_is_the_whole_map
from motion_series import SHAPE, SPACING, TR_S, write_series
from napari_reg.cli import main
from napari_reg.core.motion import (
    FrameResult,
    MotionError,
    MotionSettings,
    framewise_displacement,
    motion_parameters,
    reference_index,
    smooth_along_time,
)
from napari_reg.motion import run_motion
from napari_reg.motion.outputs import work_dir
from phantoms import homogeneous, phantom_volume, rotation

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _errors(estimates: np.ndarray, truth: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Per frame: mean |T_est(x) - T_true(x)| (mm) over the phantom's head (inner box)."""
    ijk = np.stack(np.meshgrid(*[np.arange(4, n - 4) for n in SHAPE], indexing="ij"), -1)
    pts = ijk.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    return np.array([np.linalg.norm(pts @ (e - t)[:3, :3].T + (e - t)[:3, 3], axis=1).mean()
                     for e, t in zip(estimates, truth, strict=True)])


# ----------------------------------------------------------------- parameters and FD
def test_motion_parameters_read_back_the_rotation_and_centre_translation() -> None:
    center = np.array([10.0, -20.0, 5.0])
    angles = np.array([2.0, -1.5, 3.0])
    m = homogeneous(rotation(*np.deg2rad(angles)), [1.0, -2.0, 0.5], center)
    params = motion_parameters(m, center)
    assert np.allclose(params[:3], angles, atol=1e-9)
    assert np.allclose(params[3:], [1.0, -2.0, 0.5], atol=1e-9)  # T(c) - c


def test_framewise_displacement_is_power_2012() -> None:
    params = np.array([[0, 0, 0, 0, 0, 0], [1.0, 0, 0, 0.5, 0, -0.2],
                       [1.0, -0.5, 0, 0.5, 0.3, -0.2]], dtype=float)
    fd = framewise_displacement(params)
    assert fd[0] == 0.0
    assert fd[1] == pytest.approx(np.deg2rad(1.0) * 50.0 + 0.5 + 0.2)
    assert fd[2] == pytest.approx(np.deg2rad(0.5) * 50.0 + 0.3)


def test_smoothing_along_time_removes_jitter_and_keeps_rotations() -> None:
    rng = np.random.default_rng(0)
    results = [FrameResult(k, homogeneous(rotation(*rng.normal(0, 0.02, 3)), rng.normal(0, 1, 3)))
               for k in range(12)]
    smooth = smooth_along_time(results, 2.0)
    raw_t = np.array([r.matrix[:3, 3] for r in results])
    smooth_t = np.array([r.matrix[:3, 3] for r in smooth])
    assert np.abs(np.diff(smooth_t, axis=0)).mean() < 0.5 * np.abs(np.diff(raw_t, axis=0)).mean()
    for r in smooth:
        assert np.allclose(r.matrix[:3, :3] @ r.matrix[:3, :3].T, np.eye(3), atol=1e-9)
    assert results[3].matrix is not smooth[3].matrix  # inputs untouched


def test_reference_choices() -> None:
    assert reference_index("first", 5) == 0
    assert reference_index("mean", 5) is None
    assert reference_index(4, 5) == 4
    with pytest.raises(MotionError, match="reference frame 5 is out of range.*0 to 4"):
        reference_index(5, 5)
    with pytest.raises(MotionError, match="first, mean or a frame number"):
        MotionSettings(reference="last")


# ----------------------------------------------------------------- a whole run
@pytest.fixture(scope="module")
def corrected_run(tmp_path_factory):
    """One in-process rigid run on a 5-frame series: (series path, truth, affine, outdir)."""
    folder = tmp_path_factory.mktemp("motion")
    series = folder / "series.nii.gz"
    truth, affine = write_series(series, n_frames=5)
    out = folder / "out"
    seen = []
    report = run_motion(series, out, MotionSettings(), workers=0, callback=seen.append)
    assert report.ok, report.outcomes
    assert sorted(o.index for o in seen) == list(range(5))
    return series, truth, affine, out


def test_known_motion_is_recovered_per_frame(corrected_run) -> None:
    series, truth, affine, out = corrected_run
    record = json.loads((out / "run.json").read_text())
    estimates = np.array([f["matrix_ras_reference_to_frame"] for f in record["frames"]])
    errors = _errors(estimates, truth, affine)
    assert errors[0] == 0.0
    assert errors.max() < 0.1, errors
    # motion.tsv: the parameters of the recorded maps (close to the truth's), FD from them
    table = np.loadtxt(out / "motion.tsv", skiprows=1)
    center = np.array(record["parameters"]["center_mm"])
    recorded = np.stack([motion_parameters(m, center) for m in estimates])
    assert np.allclose(table[:, 1:7], recorded, atol=1e-5)
    assert np.allclose(table[:, 7], framewise_displacement(recorded), atol=1e-4)
    expected = np.stack([motion_parameters(m, center) for m in truth])
    assert np.abs(table[:, 1:4] - expected[:, :3]).max() < 0.2  # degrees
    assert np.abs(table[:, 4:7] - expected[:, 3:]).max() < 0.05  # mm
    assert list(table[:, 8]) == [float(fd > 0.5) for fd in table[:, 7]]


def test_output_set_is_whole_with_header_timing(corrected_run) -> None:
    series, truth, affine, out = corrected_run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["corrected.nii.gz", "motion.tsv", "reference.nii.gz", "run.json",
                     "transforms"]
    assert sorted(p.name for p in (out / "transforms").iterdir()) == \
        [f"frame_{k:04d}.tfm" for k in range(5)]
    img = nib.load(str(out / "corrected.nii.gz"))
    assert img.shape == SHAPE + (5,)
    assert img.header.get_zooms()[3] == pytest.approx(TR_S)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    assert np.allclose(img.affine, affine, atol=1e-4)
    # every corrected frame looks like the reference inside the head
    data = img.get_fdata()
    inner = (slice(5, -5),) * 3
    for k in range(1, 5):
        assert np.abs(data[inner + (k,)] - data[inner + (0,)]).mean() < 0.01
    assert not work_dir(out).exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left
    record = json.loads((out / "run.json").read_text())
    assert record["timing"]["tr_s"] == pytest.approx(TR_S)
    assert "REFERENCE" in record["direction"]


def test_transform_direction_through_simpleitk(corrected_run) -> None:
    import SimpleITK as sitk  # in the test extra

    series, truth, affine, out = corrected_run
    lps = np.diag([-1.0, -1.0, 1.0])
    x_ras = np.array([7.0, -5.0, 3.0])
    for k in (1, 3):
        tx = sitk.ReadTransform(str(out / "transforms" / f"frame_{k:04d}.tfm"))
        y_lps = np.array(tx.TransformPoint(tuple(lps @ x_ras)))
        assert np.allclose(lps @ y_lps, truth[k][:3, :3] @ x_ras + truth[k][:3, 3], atol=0.1)
    # SimpleITK resamples frame 3 onto the reference with it: the reference comes back
    frame = sitk.ReadImage(str(series))[:, :, :, 3]
    reference = sitk.ReadImage(str(out / "reference.nii.gz"))
    tx = sitk.ReadTransform(str(out / "transforms" / "frame_0003.tfm"))
    warped = sitk.GetArrayFromImage(sitk.Resample(frame, reference, tx, sitk.sitkLinear))
    ref = sitk.GetArrayFromImage(reference)
    inner = (slice(5, -5),) * 3
    assert np.abs(warped[inner] - ref[inner]).mean() < 0.01


def test_mean_reference_and_deformable_with_time_smoothing(tmp_path) -> None:
    series = tmp_path / "series.nii.gz"
    write_series(series, n_frames=3)
    out = tmp_path / "out"
    settings = MotionSettings(transform="bspline", reference="mean", smooth_sigma_frames=1.0,
                              levels=2, iterations=[30, 10], samples=[1000, 3000],
                              deformable_options={"levels": 1, "iterations": 5})
    report = run_motion(series, out, settings, workers=0)
    assert report.ok, report.outcomes
    fields = sorted((out / "transforms").glob("*_whole_map_field.nii.gz"))
    assert len(fields) == 3
    field = nib.load(str(fields[1]))
    assert field.shape == SHAPE + (1, 3)
    # every frame in register's ANTs layout: affine (.tfm + .mat), warp, inverse warp
    for k in range(3):
        for suffix in SUFFIXES:
            assert (out / "transforms" / f"frame_{k:04d}{suffix}").is_file(), (k, suffix)
    assert nib.load(str(out / "corrected.nii.gz")).shape == SHAPE + (3,)
    assert json.loads((out / "run.json").read_text())["settings"]["smooth_sigma_frames"] == 1.0
    grid = nib.load(str(out / "reference.nii.gz")).affine
    check_warp_then_affine_is_the_whole_map(out / "transforms" / "frame_0002", grid, SHAPE)


def test_frames_on_a_dask_cluster(tmp_path) -> None:
    import distributed  # in the test extra (and the batch extra)

    series = tmp_path / "series.nii.gz"
    write_series(series, n_frames=3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        report = run_motion(series, tmp_path / "out", scheduler=cluster.scheduler_address)
    assert report.ok and report.runner.startswith("dask ")
    assert len(json.loads((tmp_path / "out" / "run.json").read_text())["frames"]) == 3


# ----------------------------------------------------------------- resume
def test_a_killed_run_resumes_without_redoing_finished_frames(tmp_path) -> None:
    series = tmp_path / "series.nii.gz"
    write_series(series, n_frames=8)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_reg.cli", "motion", str(series), "-o", str(out),
           "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    work = work_dir(out)
    deadline = time.monotonic() + 120
    while not (work / "frame_0002.json").exists():
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, "no frame finished in 2 minutes"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not out.exists()  # nothing half-written where the outputs go
    kept = {p.name: p.stat().st_mtime_ns for p in work.glob("frame_*.json")}
    assert len(kept) >= 3
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("[already done]") == len(kept)
    assert rerun.stderr.count("[done]") == 8 - len(kept)
    record = json.loads((out / "run.json").read_text())
    assert len(record["frames"]) == 8
    assert not work.exists()


# ----------------------------------------------------------------- bad input
def _bad_run(args: list[str], capsys) -> str:
    code = main(["motion", *args])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def good_series(tmp_path) -> Path:
    path = tmp_path / "series.nii.gz"
    write_series(path, n_frames=3)
    return path


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not work_dir(out).exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_a_3d_file_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "volume.nii.gz"
    volume = phantom_volume(SHAPE, SPACING)
    nib.save(nib.Nifti1Image(volume.data, volume.affine), str(path))
    out = tmp_path / "out"
    assert "needs a 4D series" in _bad_run([str(path), "-o", str(out)], capsys)
    _nothing_written(out)


def test_a_one_frame_series_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "one.nii.gz"
    volume = phantom_volume(SHAPE, SPACING)
    nib.save(nib.Nifti1Image(np.stack([volume.data], -1), volume.affine), str(path))
    out = tmp_path / "out"
    assert "only one frame" in _bad_run([str(path), "-o", str(out)], capsys)
    _nothing_written(out)


def test_nan_frames_are_named(tmp_path, capsys) -> None:
    path = tmp_path / "nan.nii.gz"
    write_series(path, n_frames=4, nan_frame=2)
    out = tmp_path / "out"
    assert "frames with NaN or infinite voxels: 2" in _bad_run([str(path), "-o", str(out)],
                                                                capsys)
    _nothing_written(out)


def test_reference_out_of_range(good_series, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    message = _bad_run([str(good_series), "-o", str(out), "--reference", "7"], capsys)
    assert "reference frame 7 is out of range" in message
    _nothing_written(out)


def test_mask_on_another_grid(good_series, tmp_path, capsys) -> None:
    mask = phantom_volume((10, 10, 10), (2.0, 2.0, 2.0))
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((mask.data > 0.2).astype(np.uint8), mask.affine), str(mask_path))
    out = tmp_path / "out"
    message = _bad_run([str(good_series), "-o", str(out), "--mask", str(mask_path)], capsys)
    assert "mask's grid" in message and "not the series grid" in message
    _nothing_written(out)


def test_existing_outputs_and_inputs_are_never_overwritten(good_series, tmp_path,
                                                           capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "motion.tsv").write_text("an older table")
    message = _bad_run([str(good_series), "-o", str(out)], capsys)
    assert "already holds motion.tsv" in message and "nothing is ever overwritten" in message
    assert (out / "motion.tsv").read_text() == "an older table"
    assert sorted(p.name for p in out.iterdir()) == ["motion.tsv", "notes.txt"]
    assert not work_dir(out).exists()
    # the series itself as the output folder
    size = good_series.stat().st_size
    assert "is a file" in _bad_run([str(good_series), "-o", str(good_series)], capsys)
    assert good_series.stat().st_size == size
    # a series named like an output, corrected into its own folder
    named = tmp_path / "corrected.nii.gz"
    good_series.rename(named)
    message = _bad_run([str(named), "-o", str(tmp_path)], capsys)
    assert "corrected.nii.gz" in message
    assert named.stat().st_size == size


def test_a_smooth_intensity_drift_is_fitted_and_does_not_bias_the_motion() -> None:
    from napari_reg.core.intensity_drift import apply_gain, fit_gain
    from napari_reg.core.motion import register_frame

    reference = phantom_volume(SHAPE, SPACING)
    coeffs = np.array([1.08, 0.06, -0.03, 0.02])  # +8 %, a few % per 100 mm
    drifted = apply_gain(reference, coeffs)
    assert np.allclose(fit_gain(reference, drifted.data), coeffs, atol=1e-4)
    move = homogeneous(rotation(*np.deg2rad([2.0, -1.0, 1.5])), [1.5, -2.0, 1.0])
    frame = apply_gain(phantom_volume(SHAPE, SPACING, transform=move), coeffs)
    errors = {}
    for drift in (False, True):
        found = register_frame(reference, frame, MotionSettings(intensity_drift=drift), 1)
        errors[drift] = _errors(found.matrix[None], move[None], reference.affine)[0]
        assert found.matrix.shape == (4, 4) and np.isfinite(found.matrix).all()
    # (the benchmark's MNI series: 0.019 -> 0.009 mm; this phantom's soft, partly negative
    # tissues make the fit noisier, so only "no worse, and sub-0.1 mm" is asked here)
    assert errors[True] < 0.1 and errors[True] <= errors[False], errors


def test_deformable_motion_is_corrected_better_than_rigid(tmp_path) -> None:
    """A 'breathing' series: a smooth local displacement (up to 2.5 mm) that grows and
    shrinks with time. B-spline frames leave less residual than rigid ones (measured:
    uncorrected 0.0041, rigid 0.0051, B-spline 0.0023 mean |difference| to frame 0)."""
    from phantoms import phantom

    reference = phantom_volume(SHAPE, SPACING)
    world = reference.world_grid()
    amplitudes = [0.0, 1.0, 2.5, 1.5]
    frames = []
    for a in amplitudes:
        # frame(y) = f(y - u(y)): a local bulge along z, off the centre (no rigid map
        # reproduces it)
        bulge = a * np.exp(-np.sum(((world - [10.0, 5.0, 5.0]) / 12.0) ** 2, axis=-1))
        moved = world - np.stack([0.3 * bulge, 0 * bulge, bulge], axis=-1)
        frames.append(phantom(moved).astype(np.float32))
    path = tmp_path / "breathing.nii.gz"
    nib.save(nib.Nifti1Image(np.stack(frames, -1), reference.affine), str(path))
    residual = {}
    for transform in ("rigid", "bspline"):
        out = tmp_path / transform
        settings = MotionSettings(transform=transform, levels=2,
                                  iterations=[50, 30], samples=[3000, 20000],
                                  deformable_options={"grid_spacing_mm": 15.0})
        assert run_motion(path, out, settings, workers=0).ok
        data = nib.load(str(out / "corrected.nii.gz")).get_fdata()
        inner = (slice(5, -5),) * 3
        residual[transform] = float(np.mean([np.abs(data[inner + (k,)] - frames[0][inner]).mean()
                                             for k in (2, 3)]))
    inner = (slice(5, -5),) * 3
    before = float(np.mean([np.abs(frames[k][inner] - frames[0][inner]).mean() for k in (2, 3)]))
    assert residual["bspline"] < 0.6 * residual["rigid"], residual
    assert residual["bspline"] < 0.7 * before, (before, residual)
