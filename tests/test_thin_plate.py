"""Thin-plate spline from landmarks: exact interpolation, affine reproduction, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.core.image import Volume
from napari_reg.core.initialize import LandmarkError, fit_landmarks
from napari_reg.core.resample import resample
from napari_reg.core.thin_plate import ThinPlateSpline, fit_thin_plate
from phantoms import homogeneous, rotation


def _points(n: int, d: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-60, 60, size=(n, d))


def test_exact_at_landmarks_3d_and_2d() -> None:
    for d in (3, 2):
        f = _points(12, d)
        m = f + np.random.default_rng(2).normal(0, 4, size=f.shape)
        tps = fit_thin_plate(f, m)
        assert tps.ndim == d
        np.testing.assert_allclose(tps.transform_points(f), m, atol=1e-6)
        assert not tps.is_linear


def test_reproduces_an_affine_map_everywhere() -> None:
    truth = homogeneous(1.05 * rotation(0.1, -0.2, 0.15), [4.0, -7.0, 2.5])
    truth[:3, :3] += np.array([[0, 0.03, 0], [0, 0, -0.02], [0.01, 0, 0]])
    f = _points(9)
    m = f @ truth[:3, :3].T + truth[:3, 3]
    tps = fit_thin_plate(f, m)
    np.testing.assert_allclose(tps.affine_matrix, truth, atol=1e-8)
    elsewhere = _points(50, seed=7) * 1.5
    np.testing.assert_allclose(tps(elsewhere), elsewhere @ truth[:3, :3].T + truth[:3, 3],
                               atol=1e-6)
    assert tps.bending_energy() < 1e-12


def test_minimal_set_is_affine_and_inverse_swaps_roles() -> None:
    f = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10.0]])
    m = f * 1.1 + [1, 2, 3]
    tps = fit_thin_plate(f, m)
    np.testing.assert_allclose(tps.transform_points(f), m, atol=1e-9)
    inv = tps.inverse()
    np.testing.assert_allclose(inv.transform_points(m), f, atol=1e-9)


def test_smoothing_relaxes_exactness_but_not_the_affine_part() -> None:
    for d in (3, 2):
        f = _points(15, d)
        m = f + np.random.default_rng(3).normal(0, 3, size=f.shape)
        exact, smooth = fit_thin_plate(f, m), fit_thin_plate(f, m, smoothing=50.0)
        assert np.abs(smooth(f) - m).max() > 0.1
        assert smooth.bending_energy() < exact.bending_energy()
        # very strong smoothing leaves the least-squares affine fit
        stiff = fit_thin_plate(f, m, smoothing=1e9)
        np.testing.assert_allclose(stiff.affine_matrix, fit_landmarks(f, m, "affine"), atol=1e-4)


def test_resample_with_a_spline() -> None:
    data = np.zeros((20, 20, 20), np.float32)
    data[8:12, 8:12, 8:12] = 1
    vol = Volume(data, np.eye(4))
    f = _points(6, seed=4) / 6 + 10
    shift = np.array([2.0, 0.0, 0.0])
    tps = fit_thin_plate(f, f + shift)  # a pure translation: warped(x) = moving(x + 2)
    out = resample(vol, vol, tps, interpolation="nearest")
    np.testing.assert_array_equal(out.data[6:10, 8:12, 8:12], 1)
    assert out.data[10:12].sum() == 0


@pytest.mark.parametrize("fixed, moving, words", [
    (np.zeros((3, 3)), np.zeros((3, 3)), "at least 4"),
    (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.0]]), None, "coplanar"),
    (np.array([[0, 0], [1, 1], [2, 2.0]]), None, "collinear"),
    (_points(5), _points(4), "pairs"),
    (np.vstack([_points(5), _points(5)[:1]]), None, "same position"),
])
def test_bad_landmarks_are_refused(fixed, moving, words) -> None:
    moving = fixed + 1.0 if moving is None else moving
    with pytest.raises(LandmarkError, match=words):
        ThinPlateSpline(fixed, moving)


def test_nan_and_negative_smoothing_refused() -> None:
    f = _points(6)
    bad = f.copy()
    bad[2, 1] = np.nan
    with pytest.raises(LandmarkError, match="NaN"):
        fit_thin_plate(bad, f)
    with pytest.raises(LandmarkError, match="smoothing"):
        fit_thin_plate(f, f, smoothing=-1)
