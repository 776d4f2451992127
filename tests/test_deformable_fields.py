"""Dense displacement fields and stationary velocity fields (core/transforms/field.py,
velocity.py): interpolation, composition, inversion, Jacobian determinants, folding."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.linalg import expm

from napari_reg.core.image import Volume, apply_affine
from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.core.transforms.field import DisplacementField, FieldGridError
from napari_reg.core.transforms.velocity import StationaryVelocityField


def oblique_affine(spacing=(1.5, 1.2, 2.0), angle=0.4, origin=(10.0, -20.0, 5.0)):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array(
        [[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, 1, 1]) @ rot @ np.diag(spacing)  # flipped, oblique, aniso
    aff[:3, 3] = origin
    return aff


def world_points(shape, affine):
    return Volume(np.zeros(shape), affine).world_grid()


def smooth_random_field(shape, amplitude, seed=0, sigma=4.0):
    rng = np.random.default_rng(seed)
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)],
                 -1)
    return u * (amplitude / np.abs(u).max())


def interior(points, margin=4):
    return points[margin:-margin, margin:-margin, margin:-margin].reshape(-1, 3)


def test_grid_points_map_exactly_and_interpolation_is_linear():
    shape, aff = (10, 12, 9), oblique_affine()
    u = smooth_random_field(shape, 3.0)
    field = DisplacementField(u, aff)
    x = world_points(shape, aff)
    np.testing.assert_allclose(field.transform_points(x.reshape(-1, 3)),
                               (x + u).reshape(-1, 3), atol=1e-5)
    # half-way between two neighbouring voxel centres: the mean of their vectors
    mid = apply_affine(aff, np.array([[3.5, 4.0, 5.0]]))
    expected = mid + (u[3, 4, 5] + u[4, 4, 5]) / 2
    np.testing.assert_allclose(field.transform_points(mid), expected, atol=1e-5)


def test_jacobian_determinant_of_analytic_fields_on_oblique_grid():
    shape, aff = (14, 16, 12), oblique_affine()
    x = world_points(shape, aff)
    # linear field: u = B x  ->  det(I + B) everywhere (borders too: differences are exact)
    b = np.array([[0.1, 0.05, 0.0], [-0.02, -0.2, 0.03], [0.0, 0.04, 0.15]])
    det = DisplacementField(x @ b.T, aff).jacobian_determinant()
    np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + b), rtol=1e-5)
    # quadratic field u = (a x^2, a y z, 0): det = (1 + 2 a x)(1 + a z) (central diffs exact)
    a = 0.01
    u = np.stack([a * x[..., 0] ** 2, a * x[..., 1] * x[..., 2], np.zeros(shape)], -1)
    det = DisplacementField(u, aff).jacobian_determinant()
    expected = (1 + 2 * a * x[..., 0]) * (1 + a * x[..., 2])
    np.testing.assert_allclose(det[1:-1, 1:-1, 1:-1], expected[1:-1, 1:-1, 1:-1], rtol=1e-4,
                               atol=1e-4)


def test_folding_fraction():
    shape, aff = (8, 8, 8), np.diag([2.0, 2.0, 2.0, 1.0])
    x = world_points(shape, aff)
    assert DisplacementField.identity(shape, aff).folding_fraction() == 0.0
    flip = np.zeros(shape + (3,))
    flip[..., 0] = -2.0 * x[..., 0]  # T(x) = -x along x: det = -1 everywhere
    assert DisplacementField(flip, aff).folding_fraction() == 1.0


def test_fixed_point_inverse_and_composition():
    shape, aff = (30, 28, 26), oblique_affine()
    field = DisplacementField(smooth_random_field(shape, 4.0), aff)
    inv = field.inverse()
    pts = interior(world_points(shape, aff), 5)
    back = field.transform_points(inv.transform_points(pts))
    assert np.abs(back - pts).max() < 0.05  # mm
    m = np.eye(4)
    m[:3, 3] = [1.0, -2.0, 3.0]
    m[:3, :3] = np.diag([1.1, 0.95, 1.0])
    composed = field.compose(MatrixTransform(m))
    grid = world_points(shape, aff).reshape(-1, 3)
    np.testing.assert_allclose(composed.transform_points(grid),
                               apply_affine(m, field.transform_points(grid)), atol=1e-4)
    sampled = DisplacementField.from_transform(MatrixTransform(m), shape, aff)
    np.testing.assert_allclose(sampled.transform_points(grid), apply_affine(m, grid), atol=1e-4)


def test_field_bad_input():
    with pytest.raises(FieldGridError, match="shape"):
        DisplacementField(np.zeros((4, 4, 4, 2)), np.eye(4))
    with pytest.raises(FieldGridError, match="affine"):
        DisplacementField(np.zeros((4, 4, 4, 3)), np.eye(3))
    with pytest.raises(FieldGridError, match="NaN"):
        DisplacementField(np.full((4, 4, 4, 3), np.nan), np.eye(4))


def test_svf_exponential_of_constant_and_linear_velocities():
    shape, aff = (24, 24, 24), np.diag([1.5, 1.5, 1.5, 1.0])
    aff[:3, 3] = -17.25
    x = world_points(shape, aff)
    shift = np.array([3.0, -1.0, 2.0])
    svf = StationaryVelocityField(np.broadcast_to(shift, shape + (3,)), aff)
    pts = interior(x, 4)
    np.testing.assert_allclose(svf.transform_points(pts), pts + shift, atol=1e-4)
    b = np.array([[0.0, -0.3, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.1]])  # rotation + growth
    svf = StationaryVelocityField(x @ b.T, aff)
    pts = interior(x, 7)  # the flow of interior points stays inside the grid
    np.testing.assert_allclose(svf.transform_points(pts), pts @ expm(b).T, atol=0.05)


def test_svf_inverse_consistency_and_no_folding():
    shape, aff = (40, 36, 32), oblique_affine()
    svf = StationaryVelocityField(smooth_random_field(shape, 5.0, seed=3), aff)  # det 0.5..1.7
    forward, backward = svf.exp(), svf.inverse().exp()
    assert forward.folding_fraction() == 0.0
    assert backward.folding_fraction() == 0.0
    pts = interior(world_points(shape, aff), 8)
    voxel = Volume(np.zeros(shape), aff).spacing.min()
    for a, b in ((forward, backward), (backward, forward)):
        err = np.linalg.norm(b.transform_points(a.transform_points(pts)) - pts, axis=1)
        assert err.max() < 0.1 * voxel
