"""Linear transform models: matrices, Jacobians, projections, inverses, composition."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.core.transforms.linear import (
    Affine,
    Rigid,
    Similarity,
    Translation,
    euler_to_matrix,
    matrix_to_euler,
)

CLASSES = [Translation, Rigid, Similarity, Affine]
N_PARAMS = {
    (Translation, 2): 2, (Translation, 3): 3, (Rigid, 2): 3, (Rigid, 3): 6,
    (Similarity, 2): 4, (Similarity, 3): 7, (Affine, 2): 6, (Affine, 3): 12,
}


def random_params(cls, ndim, rng):
    t = cls(ndim=ndim)
    p = t.parameters
    n = p.size
    if cls is Affine:
        p = p + rng.normal(scale=0.1, size=n)
        p[ndim * ndim:] = rng.normal(scale=10, size=ndim)
    else:
        p = rng.normal(scale=0.3, size=n)
        n_ang = {Translation: 0, Rigid: 1 if ndim == 2 else 3, Similarity: 1 if ndim == 2 else 3}
        k = n_ang[cls]
        p[k:k + ndim] = rng.normal(scale=10, size=ndim)
    return p


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("cls", CLASSES)
def test_identity_and_sizes(cls, ndim):
    t = cls(ndim=ndim, center=np.arange(ndim) * 7.0)
    assert t.n_parameters == N_PARAMS[(cls, ndim)]
    assert t.parameters.dtype == np.float64
    assert t.is_linear
    np.testing.assert_allclose(t.matrix, np.eye(ndim + 1), atol=1e-15)
    assert t.parameter_scales().shape == (t.n_parameters,)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("cls", CLASSES)
def test_formula_matrix_and_points_agree(cls, ndim):
    rng = np.random.default_rng(1)
    c = rng.normal(scale=20, size=ndim)
    t = cls(ndim=ndim, center=c, parameters=random_params(cls, ndim, rng))
    x = rng.normal(scale=50, size=(20, ndim))
    m = t.linear
    expected = (x - c) @ m.T + c + t.translation
    np.testing.assert_allclose(t.transform_points(x), expected, atol=1e-10)
    h = np.c_[x, np.ones(len(x))] @ t.matrix.T
    np.testing.assert_allclose(h[:, :ndim], expected, atol=1e-10)
    np.testing.assert_allclose(t(c[None]), (c + t.translation)[None], atol=1e-10)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("cls", CLASSES)
def test_jacobian_matches_finite_differences(cls, ndim):
    rng = np.random.default_rng(2)
    t = cls(ndim=ndim, center=rng.normal(scale=20, size=ndim),
            parameters=random_params(cls, ndim, rng))
    x = rng.normal(scale=60, size=(15, ndim))
    jac = t.jacobian(x)
    assert jac.shape == (15, ndim, t.n_parameters)
    p0 = t.parameters
    h = 1e-6
    for k in range(p0.size):
        plus, minus = p0.copy(), p0.copy()
        plus[k] += h
        minus[k] -= h
        t.parameters = plus
        yp = t.transform_points(x)
        t.parameters = minus
        ym = t.transform_points(x)
        np.testing.assert_allclose(jac[:, :, k], (yp - ym) / (2 * h), atol=1e-5, rtol=1e-6)
    t.parameters = p0


def test_euler_convention_is_rz_ry_rx():
    ax, ay, az = 0.3, -0.2, 0.7
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = Rigid(parameters=[ax, ay, az, 0, 0, 0]).linear
    np.testing.assert_allclose(r, rz @ ry @ rx, atol=1e-15)
    # a positive 2D angle turns +x towards +y
    np.testing.assert_allclose(Rigid(ndim=2, parameters=[np.pi / 2, 0, 0])([[1.0, 0.0]]),
                               [[0.0, 1.0]], atol=1e-15)


@pytest.mark.parametrize("angles", [[0.3, -0.2, 0.7], [-2.5, 1.2, 3.0], [0.4, np.pi / 2, 0.0],
                                    [0.4, -np.pi / 2, 0.0], [0.0, 0.0, 0.0]])
def test_euler_round_trip_including_gimbal_lock(angles):
    r = euler_to_matrix(angles)
    np.testing.assert_allclose(euler_to_matrix(matrix_to_euler(r)), r, atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("cls", CLASSES)
def test_from_matrix_round_trip(cls, ndim):
    rng = np.random.default_rng(3)
    c = rng.normal(scale=20, size=ndim)
    t = cls(ndim=ndim, center=c, parameters=random_params(cls, ndim, rng))
    # same centre: parameters come back; other centre: the same map
    back = cls.from_matrix(t.matrix, center=c)
    np.testing.assert_allclose(back.matrix, t.matrix, atol=1e-10)
    np.testing.assert_allclose(back.parameters, t.parameters, atol=1e-10)
    other = cls.from_matrix(t.matrix, center=c + 30)
    np.testing.assert_allclose(other.matrix, t.matrix, atol=1e-10)
    np.testing.assert_allclose(cls.from_matrix(t.matrix).matrix, t.matrix, atol=1e-10)


def test_from_matrix_projections():
    rng = np.random.default_rng(4)
    rot = euler_to_matrix([0.2, -0.4, 0.9])
    stretch = np.diag([1.1, 0.95, 1.05])
    m = np.eye(4)
    m[:3, :3] = rot @ stretch
    m[:3, 3] = [4, -5, 6]
    c = rng.normal(scale=10, size=3)
    rigid = Rigid.from_matrix(m, center=c)
    np.testing.assert_allclose(rigid.linear, rot, atol=1e-12)  # polar factor of R S is R
    assert np.isclose(np.linalg.det(rigid.linear), 1.0)
    # the centre goes exactly where the general matrix sends it
    np.testing.assert_allclose(rigid([c]), MatrixTransform(m)([c]), atol=1e-10)
    sim = Similarity.from_matrix(m, center=c)
    np.testing.assert_allclose(sim.linear, rot * np.mean([1.1, 0.95, 1.05]), atol=1e-12)
    np.testing.assert_allclose(sim([c]), MatrixTransform(m)([c]), atol=1e-10)
    tr = Translation.from_matrix(m, center=c)
    np.testing.assert_allclose(tr([c]), MatrixTransform(m)([c]), atol=1e-10)
    np.testing.assert_allclose(tr.linear, np.eye(3))
    # a reflection still gives a proper rotation
    refl = np.diag([1.0, 1.0, -1.0, 1.0])
    assert np.isclose(np.linalg.det(Rigid.from_matrix(refl).linear), 1.0)


def test_similarity_scale_parametrisation():
    s = Similarity(ndim=3)
    assert s.scale == 1.0 and s.parameters[-1] == 0.0
    s.scale = 1.2
    np.testing.assert_allclose(s.parameters[-1], np.log(1.2))
    np.testing.assert_allclose(s.linear, 1.2 * np.eye(3))
    with pytest.raises(ValueError, match="positive"):
        s.scale = -1.0


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("cls", CLASSES)
def test_inverse_is_exact_and_same_family(cls, ndim):
    rng = np.random.default_rng(5)
    t = cls(ndim=ndim, center=rng.normal(scale=20, size=ndim),
            parameters=random_params(cls, ndim, rng))
    inv = t.inverse()
    assert type(inv) is cls
    x = rng.normal(scale=50, size=(10, ndim))
    np.testing.assert_allclose(inv(t(x)), x, atol=1e-9)
    np.testing.assert_allclose(inv.matrix @ t.matrix, np.eye(ndim + 1), atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
def test_then_composes_in_order(ndim):
    rng = np.random.default_rng(6)
    a = Rigid(ndim=ndim, center=np.ones(ndim), parameters=random_params(Rigid, ndim, rng))
    b = Affine(ndim=ndim, center=-np.ones(ndim), parameters=random_params(Affine, ndim, rng))
    x = rng.normal(scale=40, size=(8, ndim))
    ab = a.then(b)
    assert ab.is_linear
    np.testing.assert_allclose(ab(x), b(a(x)), atol=1e-9)
    assert not np.allclose(b.then(a)(x), ab(x))


def test_parameter_scales_and_radius():
    r = Rigid(ndim=3)
    np.testing.assert_allclose(r.parameter_scales(), [100, 100, 100, 1, 1, 1])
    r.radius = 80.0
    np.testing.assert_allclose(r.parameter_scales(), [80, 80, 80, 1, 1, 1])
    np.testing.assert_allclose(r.parameter_scales(radius_mm=50), [50, 50, 50, 1, 1, 1])
    np.testing.assert_allclose(Similarity(ndim=2).parameter_scales(30), [30, 1, 1, 30])
    np.testing.assert_allclose(Affine(ndim=2).parameter_scales(30), [30] * 4 + [1, 1])
    np.testing.assert_allclose(Translation(ndim=3).parameter_scales(30), [1, 1, 1])
    assert r.copy().radius == 80.0 and r.inverse().radius == 80.0


def test_copy_is_independent():
    a = Affine(ndim=3, center=[1, 2, 3])
    b = a.copy()
    b.parameters = b.parameters + 1
    b.center[0] = 50
    np.testing.assert_allclose(a.matrix, np.eye(4))
    np.testing.assert_allclose(a.center, [1, 2, 3])


def test_bad_input_messages():
    with pytest.raises(ValueError, match="6 parameters"):
        Rigid(ndim=3, parameters=[0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        Translation(ndim=2, parameters=[np.nan, 0])
    with pytest.raises(ValueError, match="2D or 3D"):
        Affine(ndim=4)
    with pytest.raises(ValueError, match="center"):
        Affine(ndim=3, center=[0, 0])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        Affine(ndim=3).transform_points(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="homogeneous"):
        Rigid.from_matrix(np.eye(5))
