"""Cubic B-spline FFD (core/transforms/bspline.py): the seed's formula, its Jacobian,
bending energy (value and gradient), subdivision, dense sampling, bad grids."""

import numpy as np
import pytest

from napari_reg.core.image import Volume
from napari_reg.core.transforms.bspline import (
    BSplineGridError,
    BSplineTransform,
    cubic_bspline_basis,
)


def make_volume(shape=(30, 34, 26), spacing=(1.5, 1.2, 2.0)):
    aff = np.diag(list(spacing) + [1.0])
    aff[:3, 3] = [-20.0, 5.0, -30.0]
    return Volume(np.zeros(shape, np.float32), aff)


def random_ffd(spacing=10.0, scale=2.0, seed=1):
    ffd = BSplineTransform.over_volume(make_volume(), spacing)
    ffd.parameters = np.random.default_rng(seed).standard_normal(ffd.n_parameters) * scale
    return ffd


def random_points(n=60, seed=2):
    lo, hi = make_volume().bounds_world()
    return np.random.default_rng(seed).uniform(lo, hi, (n, 3))


def seed_formula(ffd, x):
    """The course notes' triple sum over B_l(u) B_m(v) B_n(w) phi[i+l, j+m, k+n]."""
    tau = (x - ffd.start) / ffd.spacing
    cell = np.minimum(np.floor(tau).astype(int), ffd.n_cells - 1)
    frac = tau - cell
    b = [cubic_bspline_basis(frac[a]) for a in range(3)]
    out = np.zeros(3)
    for l in range(4):
        for m in range(4):
            for n in range(4):
                out += (b[0][l] * b[1][m] * b[2][n]
                        * ffd.coefficients[:, cell[0] + l, cell[1] + m, cell[2] + n])
    return x + out


def test_basis_is_the_seeds_and_a_partition_of_unity():
    s = np.linspace(0, 1, 11)
    b = cubic_bspline_basis(s)
    np.testing.assert_allclose(b[:, 0], (1 - s) ** 3 / 6)
    np.testing.assert_allclose(b[:, 1], (3 * s**3 - 6 * s**2 + 4) / 6)
    np.testing.assert_allclose(b[:, 2], (-3 * s**3 + 3 * s**2 + 3 * s + 1) / 6)
    np.testing.assert_allclose(b[:, 3], s**3 / 6)
    np.testing.assert_allclose(b.sum(axis=1), 1.0)
    eps = 1e-6
    for order in (1, 2):
        fd = (cubic_bspline_basis(s + eps, order - 1) - cubic_bspline_basis(s - eps, order - 1))
        np.testing.assert_allclose(cubic_bspline_basis(s, order), fd / (2 * eps), atol=1e-6)


def test_transform_points_matches_the_seed_formula():
    ffd = random_ffd()
    pts = random_points()
    expected = np.array([seed_formula(ffd, p) for p in pts])
    np.testing.assert_allclose(ffd.transform_points(pts), expected, atol=1e-10)


def test_jacobian_against_finite_differences():
    ffd = random_ffd(spacing=16.0)
    pts = random_points(8)
    jac = ffd.jacobian(pts)
    p0 = ffd.parameters
    rng = np.random.default_rng(0)
    weights = ffd.weight_matrix(pts)
    np.testing.assert_allclose(np.asarray(weights.sum(axis=1)).ravel(), 1.0)
    for k in rng.choice(p0.size, 12, replace=False):
        p = p0.copy()
        p[k] += 1e-4
        ffd.parameters = p
        plus = ffd.transform_points(pts)
        p[k] -= 2e-4
        ffd.parameters = p
        minus = ffd.transform_points(pts)
        np.testing.assert_allclose(jac[:, :, k], (plus - minus) / 2e-4, atol=1e-8)
    ffd.parameters = p0
    forces = rng.standard_normal((8, 3))
    np.testing.assert_allclose(ffd.gradient_from_forces(weights, forces),
                               np.einsum("nc,ncp->p", forces, jac), atol=1e-12)


def _fill(ffd, component, func):
    cp = ffd.control_point_positions()
    coef = np.zeros_like(ffd.coefficients)
    coef[component] = func(cp[..., 0], cp[..., 1], cp[..., 2])
    ffd.coefficients = coef


def test_bending_energy_of_polynomials():
    ffd = BSplineTransform.over_volume(make_volume(), 10.0)
    h = ffd.spacing[0]
    _fill(ffd, 0, lambda x, y, z: x**2 - h**2 / 3)  # cubic B-splines reproduce x^2 exactly
    pts = random_points()
    np.testing.assert_allclose(ffd.displacement_at(pts)[:, 0], pts[:, 0] ** 2, rtol=1e-9)
    assert ffd.bending_energy() == pytest.approx(4.0, rel=1e-9)  # (d2/dx2)^2 = 4
    _fill(ffd, 2, lambda x, y, z: x * y)
    assert ffd.bending_energy() == pytest.approx(2.0, rel=1e-9)  # 2 (d2/dxdy)^2 = 2
    _fill(ffd, 1, lambda x, y, z: 2 * x - 3 * z + 1)
    assert abs(ffd.bending_energy()) < 1e-12  # affine maps do not bend


def test_bending_gradient_against_finite_differences():
    ffd = random_ffd(scale=1.0)
    e0, grad = ffd.bending_energy_and_gradient()
    p0 = ffd.parameters
    for k in np.random.default_rng(3).choice(p0.size, 10, replace=False):
        p = p0.copy()
        p[k] += 1e-4
        ffd.parameters = p
        plus = ffd.bending_energy()
        p[k] -= 2e-4
        ffd.parameters = p
        minus = ffd.bending_energy()
        assert (plus - minus) / 2e-4 == pytest.approx(grad[k], rel=1e-5, abs=1e-12)


def test_refinement_is_exact():
    ffd = random_ffd()
    fine = ffd.refine(2)
    assert np.allclose(fine.spacing, ffd.spacing / 2)
    pts = random_points(200)
    np.testing.assert_allclose(fine.transform_points(pts), ffd.transform_points(pts),
                               atol=1e-10)
    assert fine.bending_energy() == pytest.approx(ffd.bending_energy(), rel=1e-9)


def test_dense_field_separable_and_oblique_paths_agree():
    ffd = random_ffd()
    vol = make_volume()
    field = ffd.to_field(vol.shape, vol.affine)  # axis-aligned: separable products
    grid = vol.world_grid().reshape(-1, 3)
    np.testing.assert_allclose(field.displacement.reshape(-1, 3), ffd.displacement_at(grid),
                               atol=1e-4)
    oblique = vol.affine.copy()
    c, s = np.cos(0.3), np.sin(0.3)
    oblique[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ oblique[:3, :3]
    field = ffd.to_field((10, 11, 12), oblique)
    pts = field.grid_points().reshape(-1, 3)
    np.testing.assert_allclose(field.transform_points(pts), ffd.transform_points(pts), atol=1e-4)


def test_bad_grids_are_rejected_clearly():
    vol = make_volume()
    with pytest.raises(BSplineGridError, match="smaller than a voxel"):
        BSplineTransform.over_volume(vol, 0.5)
    with pytest.raises(BSplineGridError, match="positive"):
        BSplineTransform.over_volume(vol, -3.0)
    ffd = BSplineTransform.over_volume(vol, 10.0)
    with pytest.raises(BSplineGridError, match="parameters"):
        ffd.parameters = np.zeros(5)
