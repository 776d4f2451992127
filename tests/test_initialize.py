"""Initial alignments (grid centres, centres of mass, moments) and landmark fits."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.core.image import Volume, VolumeError
from napari_reg.core.initialize import (
    LandmarkError,
    center_of_mass,
    fit_landmarks,
    init_center_of_mass,
    init_geometry,
    init_moments,
    landmark_residuals,
)
from napari_reg.core.transforms.linear import Affine, Rigid, Similarity, euler_to_matrix


def grid_affine(spacing, angles, shape, centre):
    """Oblique affine whose grid centre is at ``centre`` (world mm)."""
    d = len(spacing)
    a = np.eye(d + 1)
    a[:d, :d] = euler_to_matrix(angles[:1] if d == 2 else angles) @ np.diag(spacing)
    a[:d, d] = np.asarray(centre) - a[:d, :d] @ ((np.asarray(shape) - 1) / 2)
    return a


def blob_volume(shape, affine, centre, widths, background=5.0, rotation=None):
    """Background plus an anisotropic Gaussian with axes ``rotation`` columns (world mm)."""
    vol = Volume(np.zeros(shape, dtype=np.float32), affine)
    x = vol.world_grid() - centre
    if rotation is not None:
        x = x @ rotation  # coordinates along the blob's own axes
    data = background + 100.0 * np.exp(-0.5 * np.sum((x / widths) ** 2, axis=-1))
    return vol.with_data(data.astype(np.float32))


def test_init_geometry_aligns_grid_centres():
    fixed = Volume(np.zeros((10, 12, 8)), grid_affine([1, 1, 2], [0.1, 0, 0], (10, 12, 8),
                                                      [3, 4, 5]))
    moving = Volume(np.zeros((20, 6, 9)), grid_affine([0.5, 2, 1], [0, 0.3, 0], (20, 6, 9),
                                                      [-7, 1, 12]))
    m = init_geometry(fixed, moving)
    np.testing.assert_allclose(m[:3, :3], np.eye(3))
    np.testing.assert_allclose(m[:3, :3] @ fixed.center_world() + m[:3, 3],
                               moving.center_world(), atol=1e-12)


def test_center_of_mass_formula_and_known_blob():
    shape = (30, 26, 22)
    affine = grid_affine([1.2, 1.0, 1.5], [0.3, -0.2, 0.4], shape, [10, -20, 30])
    vol = blob_volume(shape, affine, centre=np.array([12.0, -21.0, 29.0]), widths=[4, 3, 5])
    com = center_of_mass(vol)
    # the seed's formula, brute force: weights I - min(I), world coordinates via the affine
    w = (vol.data - vol.data.min()).astype(np.float64).ravel()
    brute = w @ vol.world_grid().reshape(-1, 3) / w.sum()
    np.testing.assert_allclose(com, brute, atol=1e-6)
    np.testing.assert_allclose(com, [12.0, -21.0, 29.0], atol=0.05)


def test_center_of_mass_mask_and_nan_and_constant():
    shape = (40, 30)
    affine = grid_affine([1.0, 2.0], [0.2], shape, [0, 0])
    a = blob_volume(shape, affine, np.array([-6.0, -10.0]), [2, 3], background=0).data
    b = blob_volume(shape, affine, np.array([6.0, 12.0]), [2, 3], background=0).data
    vol = Volume(a + b, affine)
    mask = vol.world_grid()[..., 0] < 0
    np.testing.assert_allclose(center_of_mass(vol, mask), [-6.0, -10.0], atol=0.05)
    np.testing.assert_allclose(center_of_mass(vol, Volume(mask, affine)), [-6.0, -10.0],
                               atol=0.05)
    with_nan = vol.data.copy()
    with_nan[0, 0] = np.nan
    np.testing.assert_allclose(center_of_mass(Volume(with_nan, affine)), center_of_mass(vol),
                               atol=1e-4)
    flat = Volume(np.full(shape, 3.0), affine)
    np.testing.assert_allclose(center_of_mass(flat), flat.center_world(), atol=1e-9)
    with pytest.raises(VolumeError, match="shape"):
        center_of_mass(vol, np.ones((3, 3), bool))
    with pytest.raises(VolumeError, match="no finite"):
        center_of_mass(vol, np.zeros(shape, bool))


def test_init_center_of_mass_recovers_shift():
    shape = (28, 28, 24)
    affine = grid_affine([1.0, 1.0, 1.0], [0, 0, 0], shape, [0, 0, 0])
    fixed = blob_volume(shape, affine, np.array([1.0, -2.0, 0.5]), [4, 5, 3])
    moving = blob_volume((30, 22, 20), grid_affine([1.1, 1.3, 1.4], [0.2, 0.1, -0.3],
                                                   (30, 22, 20), [5, 3, -4]),
                         np.array([4.0, 1.5, -2.0]), [4, 5, 3])
    m = init_center_of_mass(fixed, moving)
    np.testing.assert_allclose(m[:3, 3], [3.0, 3.5, -2.5], atol=0.1)
    np.testing.assert_allclose(m[:3, :3], np.eye(3))


@pytest.mark.parametrize("ndim", [2, 3])
def test_init_moments_recovers_rotation_of_anisotropic_blob(ndim):
    widths = np.array([12.0, 6.0, 3.5])[:ndim]
    angles = [0.35, -0.25, 0.5] if ndim == 3 else [0.6]
    rot = euler_to_matrix(angles)
    c_f = np.array([2.0, -3.0, 1.0])[:ndim]
    c_m = np.array([-4.0, 5.0, 3.0])[:ndim]
    shape_f = (44, 44, 44)[:ndim]
    shape_m = (50, 46, 48)[:ndim]
    fixed = blob_volume(shape_f, grid_affine([1.0, 1.0, 1.2][:ndim], [0, 0, 0][:ndim],
                                             shape_f, c_f), c_f, widths)
    # the moving blob is the fixed one rotated by `rot` about its centre and moved
    moving = blob_volume(shape_m, grid_affine([1.1, 0.9, 1.0][:ndim], [0.1, 0.2, -0.1][:ndim],
                                              shape_m, c_m), c_m, widths, rotation=rot)
    m = init_moments(fixed, moving)
    d = ndim
    np.testing.assert_allclose(m[:d, :d], rot, atol=0.02)
    np.testing.assert_allclose(m[:d, :d] @ c_f + m[:d, d], c_m, atol=0.05)
    assert np.isclose(np.linalg.det(m[:d, :d]), 1.0)
    # with identical images the sign/order rule gives the identity, not a 180 degree flip
    np.testing.assert_allclose(init_moments(fixed, fixed), np.eye(d + 1), atol=1e-6)


def _random_transform(kind, ndim, rng):
    cls = {"rigid": Rigid, "similarity": Similarity, "affine": Affine}[kind]
    t = cls(ndim=ndim, center=rng.normal(scale=10, size=ndim))
    p = t.parameters
    if kind == "affine":
        p = p + rng.normal(scale=0.1, size=p.size)
        p[ndim * ndim:] = rng.normal(scale=15, size=ndim)
    else:
        p = rng.normal(scale=0.3, size=p.size)
        n_ang = 1 if ndim == 2 else 3
        p[n_ang:n_ang + ndim] = rng.normal(scale=15, size=ndim)
    t.parameters = p
    return t.matrix


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", ["translation", "rigid", "similarity", "affine"])
def test_fit_landmarks_exact_recovery(kind, ndim):
    rng = np.random.default_rng(10 + ndim)
    if kind == "translation":
        true = np.eye(ndim + 1)
        true[:ndim, ndim] = [3.5, -7.25, 11.0][:ndim]
    else:
        true = _random_transform(kind, ndim, rng)
    n = {"translation": 1, "rigid": ndim, "similarity": ndim, "affine": ndim + 1}[kind]
    for count in (n, 12):  # the minimum number of pairs, and more
        f = rng.uniform(-60, 60, size=(count, ndim))
        m = f @ true[:ndim, :ndim].T + true[:ndim, ndim]
        fit = fit_landmarks(f, m, kind)
        np.testing.assert_allclose(landmark_residuals(fit, f, m), 0, atol=1e-6)
        probe = rng.uniform(-80, 80, size=(20, ndim))
        np.testing.assert_allclose(probe @ fit[:ndim, :ndim].T + fit[:ndim, ndim],
                                   probe @ true[:ndim, :ndim].T + true[:ndim, ndim], atol=1e-6)


def test_fit_landmarks_noisy_pairs():
    rng = np.random.default_rng(3)
    true = _random_transform("similarity", 3, rng)
    f = rng.uniform(-70, 70, size=(40, 3))
    noise = 0.5
    m = f @ true[:3, :3].T + true[:3, 3] + rng.normal(scale=noise, size=f.shape)
    for kind in ("similarity", "affine"):
        fit = fit_landmarks(f, m, kind)
        res = landmark_residuals(fit, f, m)
        assert res.shape == (40,)
        rms = np.sqrt(np.mean(res**2))
        assert 0.5 * noise * np.sqrt(3) < rms < 1.2 * noise * np.sqrt(3)
    fit = fit_landmarks(f, m, "similarity")
    np.testing.assert_allclose(fit[:3, :3], true[:3, :3], atol=0.01)
    # rigid keeps a proper rotation even though the truth is scaled
    rigid = fit_landmarks(f, m, "rigid")
    np.testing.assert_allclose(rigid[:3, :3] @ rigid[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(rigid[:3, :3]), 1.0)


def test_rigid_fit_never_returns_a_reflection():
    f = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    m = f * [1, 1, -1]  # a mirror image: the best proper rotation is still a rotation
    fit = fit_landmarks(f, m, "rigid")
    assert np.isclose(np.linalg.det(fit[:3, :3]), 1.0)


def test_landmark_errors():
    f = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    with pytest.raises(LandmarkError, match="pairs: 4 fixed .* 3 moving"):
        fit_landmarks(f, f[:3], "rigid")
    with pytest.raises(LandmarkError, match="at least 4"):
        fit_landmarks(f[:3], f[:3], "affine")
    with pytest.raises(LandmarkError, match="at least 3"):
        fit_landmarks(f[:2], f[:2], "rigid")
    with pytest.raises(LandmarkError, match="at least 1"):
        fit_landmarks(np.zeros((0, 3)), np.zeros((0, 3)), "translation")
    line = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [5, 5, 5.0]])
    with pytest.raises(LandmarkError, match="fixed landmarks are .*collinear"):
        fit_landmarks(line, f, "rigid")
    plane = f.copy()
    plane[:, 2] = 0
    with pytest.raises(LandmarkError, match="moving landmarks are .*coplanar"):
        fit_landmarks(f, plane, "affine")
    fit_landmarks(f, plane, "rigid")  # coplanar is fine for a rigid fit
    with pytest.raises(LandmarkError, match="coincide"):
        fit_landmarks(f, np.ones((4, 3)), "similarity")
    nan = f.copy()
    nan[2, 1] = np.nan
    with pytest.raises(LandmarkError, match=r"NaN .*rows \[2\]"):
        fit_landmarks(nan, f, "affine")
    with pytest.raises(LandmarkError, match="unknown landmark fit"):
        fit_landmarks(f, f, "bspline")
    with pytest.raises(LandmarkError, match=r"\(N, 2\) or \(N, 3\)"):
        fit_landmarks(f[:, 0], f[:, 0], "rigid")
    with pytest.raises(LandmarkError, match="matrix"):
        landmark_residuals(np.eye(3), f, f)
    assert issubclass(LandmarkError, ValueError)
