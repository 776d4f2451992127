"""Correctness of the deformable benchmark's ground truth and error measures.

The benchmark is only as honest as its truth: the moving image must satisfy
``moving(T_true(x)) = fixed(x)`` with ``T_true`` mapping fixed world RAS mm to moving
world RAS mm, the truth must be invertible, and the error/Jacobian measures must read a
map in that same direction. Checked on the 4 mm template (fast).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import deform_pairs as dp  # noqa: E402
import deform_report  # noqa: E402


@pytest.fixture(scope="module")
def case() -> dp.DeformCase:
    return dp.make_case(seed=5, step=4, max_mm=8.0)


def test_truth_is_smooth_invertible_and_scaled(case: dp.DeformCase) -> None:
    mag = np.sqrt((case.u_true**2).sum(axis=0))
    assert mag[case.mask].max() == pytest.approx(8.0, rel=1e-4)
    assert dp.jacobian_det(case.u_true, case.affine).min() > 0.0
    assert case.inverse_residual_mm < 0.05


def test_moving_pulled_back_by_truth_matches_fixed(case: dp.DeformCase) -> None:
    # moving(T_true(x)) = fixed(x): sample the moving image at x + u(x) on the brain
    pos = dp.world_grid(case.fixed.shape, case.affine) + case.u_true
    vox = np.tensordot(np.linalg.inv(case.affine)[:3, :3], pos, axes=1) + np.linalg.inv(
        case.affine)[:3, 3].reshape(3, 1, 1, 1)
    back = ndimage.map_coordinates(case.moving, vox, order=3)
    inner = ndimage.binary_erosion(case.mask, iterations=2)
    err_truth = np.abs(back - case.fixed)[inner].mean()
    err_none = np.abs(case.moving - case.fixed)[inner].mean()
    # the wrong direction (x - u) must be clearly worse than the truth
    vox_wrong = 2 * np.indices(case.fixed.shape, dtype=np.float64) - vox
    err_wrong = np.abs(ndimage.map_coordinates(case.moving, vox_wrong, order=3)
                       - case.fixed)[inner].mean()
    assert err_truth < 0.5 * err_none  # what remains is 4 mm interpolation error
    assert err_truth < 0.5 * err_wrong


def test_evaluate_identity_truth_and_folds(case: dp.DeformCase) -> None:
    zero = dp.evaluate(case, np.zeros_like(case.u_true))
    mag = np.sqrt((case.u_true**2).sum(axis=0))
    assert zero["err_mean_mm"] == pytest.approx(float(mag[case.mask].mean()), rel=1e-5)
    assert zero["jac_min"] == pytest.approx(1.0) and zero["folded_fraction"] == 0.0
    exact = dp.evaluate(case, case.u_true)
    assert exact["err_mean_mm"] == 0.0
    assert exact["dice_gm"] > zero["dice_gm"] + 0.05
    # a map that reflects x inside the brain folds everywhere there
    flip = -2.0 * dp.world_grid(case.fixed.shape, case.affine).astype(np.float32)
    flip[1:] = 0.0
    folded = dp.evaluate(case, flip)
    assert folded["jac_min"] == pytest.approx(-1.0, abs=1e-4)
    assert folded["folded_fraction"] == 1.0


def test_jacobian_of_linear_map_on_oblique_grid() -> None:
    affine = np.array([[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.3, -4.0],
                       [0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
    a = np.array([[1.1, 0.1, 0.0], [0.0, 0.9, 0.2], [0.05, 0.0, 1.2]])
    x = dp.world_grid((6, 7, 5), affine)
    u = np.tensordot(a - np.eye(3), x, axes=1).astype(np.float32)
    det = dp.jacobian_det(u, affine)
    assert np.allclose(det, np.linalg.det(a), atol=1e-4)


def test_resample_case_keeps_world_geometry(case: dp.DeformCase) -> None:
    half = dp.resample_case(case, 0.5)
    assert 0.4 < half.fixed.size / case.fixed.size < 0.6
    # the field of view (world corners) is unchanged
    n_old, n_new = np.array(case.fixed.shape) - 1, np.array(half.fixed.shape) - 1
    assert np.allclose(case.affine[:3, :3] @ n_old, half.affine[:3, :3] @ n_new)
    ident = dp.evaluate(half, np.zeros_like(half.u_true))["err_mean_mm"]
    full = dp.evaluate(case, np.zeros_like(case.u_true))["err_mean_mm"]
    assert ident == pytest.approx(full, rel=0.05)


def test_report_renders_targets_and_errors() -> None:
    ok = {"tool": "napari_reg_syn", "time_s": 10.0, "cpu_s": 19.0, "peak_rss_mib": 900.0,
          "delta_rss_mib": 800.0, "err_mean_mm": 0.3, "err_max_mm": 2.0, "dice_gm": 0.9,
          "jac_min": 0.4, "folded_fraction": 0.0, "export_s": 1.0, "loadavg": "1 1 1"}
    peer = dict(ok, tool="elastix", time_s=40.0, err_mean_mm=0.25)
    failed = {"tool": "dipy", "error": "child died with exit code -11"}
    evals = {"err_mean_mm": 3.0, "dice_gm": 0.7, "jac_min": 1.0, "jac_min_grid": 1.0}
    raw = {"machine": {"date": "d", "nproc": 2, "cpu": "c", "memory": "m",
                       "loadavg_start": "1", "python": "3", "numpy": "2",
                       "case": {"name": "n", "shape": [1, 2, 3], "max_mm": 8.0,
                                "mask_voxels": 10, "inverse_residual_mm": 1e-4,
                                "identity": evals, "truth": evals}},
           "runs": [ok, peer, failed], "scaling": [dict(ok, factor=2.0, shape=[4, 4, 4],
                                                        spacing_mm=0.8)]}
    text = deform_report.render_markdown(raw)
    assert "child died with exit code -11" in text
    assert "**no** (0.300 vs 0.250)" in text  # error target missed
    assert "yes (0.25 x)" in text  # time target met


def test_unmapped_points_are_left_out(case: dp.DeformCase) -> None:
    import deform_peers

    # a warper's fill value 0 (off the moving grid) must become NaN, not world (0, 0, 0)
    coords = deform_peers._coordinate_images(case.moving, case.affine)
    k = 3  # a slice through the cerebellum: pretend it mapped off the grid
    assert case.mask[:, :, k].any()
    coords[:, :, :, k] = 0.0
    u = deform_peers._map_from_warped(coords, case.fixed, case.affine)
    assert np.isnan(u[:, :, :, k]).all() and np.allclose(u[:, :, :, k + 1:], 0.0, atol=1e-2)
    truth = case.u_true.copy()
    truth[:, :, :, k] = np.nan
    out = dp.evaluate(case, truth)
    assert out["err_mean_mm"] == 0.0
    assert out["mask_unknown"] == int(case.mask[:, :, k].sum())
    assert out["jac_min"] > 0.0
