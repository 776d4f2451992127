"""Sampling at world points and backward warping onto a reference grid."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.core.image import Volume, VolumeError
from napari_reg.core.resample import resample, sample, sample_with_gradient
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.linear import Affine, Rigid, Translation, euler_to_matrix


def oblique_affine(spacing, angles=(0.3, -0.2, 0.5), origin=(-20.0, 15.0, 5.0)):
    d = len(spacing)
    a = np.eye(d + 1)
    rot = euler_to_matrix(angles if d == 3 else angles[:1])
    a[:d, :d] = rot @ np.diag(spacing)
    a[:d, d] = origin[:d]
    return a


def centred_affine(spacing, angles, shape, centre):
    """An oblique affine whose grid centre sits at ``centre`` (world mm)."""
    a = oblique_affine(spacing, angles, np.zeros(len(spacing)))
    d = len(spacing)
    a[:d, d] = np.asarray(centre) - a[:d, :d] @ ((np.asarray(shape) - 1) / 2)
    return a


def blob(points, center, widths):
    """A smooth anisotropic Gaussian of world points (mm)."""
    return np.exp(-0.5 * np.sum(((points - center) / widths) ** 2, axis=-1))


def volume_of(func, shape, affine, dtype=np.float32):
    vol = Volume(np.zeros(shape, dtype=dtype), affine)
    return vol.with_data(func(vol.world_grid()).astype(dtype))


def test_linear_function_is_reproduced_exactly_with_its_gradient():
    affine = oblique_affine([1.5, 1.0, 2.5])
    slope = np.array([0.7, -1.3, 0.4])
    vol = volume_of(lambda x: x @ slope + 3.0, (12, 14, 10), affine, np.float64)
    rng = np.random.default_rng(0)
    pts = vol.voxel_to_world(rng.uniform(0, np.array(vol.shape) - 1, size=(500, 3)))
    v, g, inside = sample_with_gradient(vol, pts)
    assert inside.all() and v.dtype == np.float64 and g.shape == (500, 3)
    np.testing.assert_allclose(v, pts @ slope + 3.0, atol=2e-4)  # float32 working type
    np.testing.assert_allclose(g, np.broadcast_to(slope, g.shape), atol=1e-4)
    np.testing.assert_allclose(sample(vol, pts), v, rtol=1e-6)


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradient_matches_finite_differences(ndim):
    rng = np.random.default_rng(1)
    shape = (9, 11, 8)[:ndim]
    affine = oblique_affine([1.2, 0.8, 2.0][:ndim])
    vol = Volume(rng.normal(size=shape).astype(np.float32), affine)
    # keep points away from cell faces so that a small step stays in one cell
    ijk = rng.integers(0, np.array(shape) - 1, size=(200, ndim)) + rng.uniform(0.2, 0.8,
                                                                                (200, ndim))
    pts = vol.voxel_to_world(ijk)
    _, g, inside = sample_with_gradient(vol, pts)
    assert inside.all()
    h = 1e-3
    for k in range(ndim):
        e = np.zeros(ndim)
        e[k] = h
        plus, minus = sample_with_gradient(vol, pts + e)[0], sample_with_gradient(vol, pts - e)[0]
        fd = (plus - minus) / (2 * h)
        np.testing.assert_allclose(g[:, k], fd, atol=2e-3)


def test_outside_points_and_edges():
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    vol = Volume(data, np.diag([2.0, 1.0, 0.5, 1.0]))
    ijk = np.array([[0, 0, 0], [3, 4, 5], [3.0, 4.0, 5.0 + 1e-9], [-0.01, 1, 1], [1, 4.2, 1],
                    [1, 1, 5.5]])
    pts = vol.voxel_to_world(ijk)
    v, g, inside = sample_with_gradient(vol, pts)
    np.testing.assert_array_equal(inside, [True, True, True, False, False, False])
    np.testing.assert_allclose(v[:3], [data[0, 0, 0], data[3, 4, 5], data[3, 4, 5]])
    assert np.all(v[3:] == 0) and np.all(g[3:] == 0)
    # sample() reads as resample() does: half a voxel past the edge centres is the edge
    # value (ITK's rule), beyond that the fill
    near = vol.voxel_to_world(np.array([[-0.01, 1, 1], [1, 4.2, 1], [1, 1, 5.5]]))
    far = vol.voxel_to_world(np.array([[-0.6, 1, 1], [1, 4.6, 1], [1, 1, 5.6]]))
    for order in (0, 1, 3):
        out = sample(vol, pts[:2], order=order, fill=-7.0)
        np.testing.assert_allclose(out, [data[0, 0, 0], data[3, 4, 5]], atol=1e-4)
        np.testing.assert_allclose(sample(vol, far, order=order, fill=-7.0), -7.0)
    np.testing.assert_allclose(sample(vol, near, order=1, fill=-7.0),
                               [data[0, 1, 1], data[1, 4, 1], data[1, 1, 5]])


def test_single_slice_and_memory_layouts_agree():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(6, 7, 5))
    affine = oblique_affine([1.0, 1.3, 0.9])
    pts = Volume(data, affine).voxel_to_world(rng.uniform(0, 4, size=(100, 3)))
    ref = sample_with_gradient(Volume(data.astype(np.float32), affine), pts)
    for variant in (np.asfortranarray(data), data[::-1][::-1], data.astype(np.float32, order="F")):
        out = sample_with_gradient(Volume(variant, affine), pts)
        for a, b in zip(ref, out, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    flat = Volume(data[:, :, :1], affine)  # one slice: in-plane interpolation only
    v, _, inside = sample_with_gradient(flat, flat.voxel_to_world([[1.5, 2.0, 0.0], [1, 1, 0.5]]))
    np.testing.assert_allclose(v[0], 0.5 * (data[1, 2, 0] + data[2, 2, 0]), atol=1e-6)
    np.testing.assert_array_equal(inside, [True, False])


@pytest.mark.parametrize("transform_kind", ["translation", "rotation"])
def test_resample_recovers_known_motion_on_oblique_anisotropic_grids(transform_kind):
    center, widths = np.array([2.0, -3.0, 4.0]), np.array([6.0, 4.5, 5.0])
    if transform_kind == "translation":
        t = Translation(parameters=[4.0, -3.5, 2.25])
    else:
        t = Rigid(center=[1.0, 2.0, 3.0], parameters=[0.2, -0.15, 0.3, 2.0, 1.0, -1.5])
    fixed = volume_of(lambda x: blob(x, center, widths), (24, 22, 20),
                      centred_affine([1.8, 2.0, 2.2], (0.3, -0.2, 0.5), (24, 22, 20), center))
    # the moving image holds f(T^-1(y)), so moving(T(x)) = f(x) on the fixed grid
    inv = t.inverse()
    moving = volume_of(lambda y: blob(inv(y.reshape(-1, 3)).reshape(y.shape), center, widths),
                       (40, 36, 30), centred_affine([1.0, 1.2, 1.5], (-0.4, 0.1, 0.2),
                                                    (40, 36, 30), t(center[None])[0]))
    # compare where the moving grid covers T(x) (it does around the blob)
    mapped = t(fixed.world_grid().reshape(-1, 3))
    covered = moving.contains_voxel(moving.world_to_voxel(mapped), margin=0.5).reshape(fixed.shape)
    assert covered.mean() > 0.3 and fixed.data[~covered].max() < 0.05
    for interp, tol in (("linear", 0.03), ("cubic", 0.01)):
        out = resample(moving, fixed, t, interp)
        assert out.data.dtype == np.float32 and out.same_grid(fixed)
        np.testing.assert_allclose(out.data[covered], fixed.data[covered], atol=tol)
        assert np.all(out.data[~covered] == 0.0)
    # and the same images do not match without the transform
    assert np.abs(resample(moving, fixed, np.eye(4)).data - fixed.data).max() > 0.1


@pytest.mark.parametrize("interp,order", [("nearest", 0), ("linear", 1), ("cubic", 3)])
def test_linear_and_slab_paths_agree_with_sample(interp, order):
    rng = np.random.default_rng(3)
    moving = Volume(rng.normal(size=(10, 12, 9)).astype(np.float32),
                    oblique_affine([1.1, 0.9, 1.4]))
    reference = Volume(np.zeros((8, 9, 7)), oblique_affine([1.3, 1.2, 1.0], (0.1, 0.2, -0.1),
                                                          (-18, 12, 4)))
    t = Affine(center=[1, 2, 3], parameters=[1.05, 0.02, 0, -0.03, 0.97, 0.01, 0, 0.02, 1.0,
                                             1.5, -2.0, 0.5])
    fast = resample(moving, reference, t, interp, fill=-5.0)
    slab = resample(moving, reference, CompositeTransform([t, MatrixTransform(np.eye(4))]),
                    interp, fill=-5.0)
    assert not CompositeTransform([t]).is_linear
    np.testing.assert_allclose(fast.data, slab.data, atol=1e-5)
    direct = sample(moving, t(reference.world_grid().reshape(-1, 3)), order=order, fill=-5.0)
    np.testing.assert_allclose(fast.data.ravel(), direct, atol=1e-4)
    assert (fast.data == -5.0).any() and (fast.data != -5.0).any()


def test_nearest_keeps_label_values_and_dtype():
    rng = np.random.default_rng(4)
    labels = rng.choice(np.array([0, 3, 17, 1000, 40000], dtype=np.int32), size=(10, 11, 12))
    moving = Volume(labels, oblique_affine([1.0, 1.0, 1.5]))
    t = Rigid(center=moving.center_world(), parameters=[0.1, 0.05, -0.2, 1.3, -0.7, 0.4])
    out = resample(moving, moving, t, "nearest")
    assert out.data.dtype == np.int32
    assert set(np.unique(out.data)) <= {0, 3, 17, 1000, 40000}
    mask = Volume(labels > 100, moving.affine)
    out_mask = resample(mask, moving, t, "nearest")
    assert out_mask.data.dtype == bool and out_mask.data.any()


def test_identity_on_same_grid_keeps_every_voxel():
    rng = np.random.default_rng(5)
    vol = Volume(rng.normal(size=(7, 8, 9)).astype(np.float32),
                 oblique_affine([0.7, 1.3, 2.1], (0.5, -1.0, 2.0), (13.3, -7.7, 2.2)))
    for interp in ("nearest", "linear"):
        np.testing.assert_array_equal(resample(vol, vol, np.eye(4), interp, fill=99).data,
                                      vol.data)
    np.testing.assert_allclose(resample(vol, vol, np.eye(4), "cubic", fill=99).data, vol.data,
                               atol=1e-5)


def test_2d_rotation_resample():
    center, widths = np.array([1.0, -2.0]), np.array([5.0, 8.0])
    t = Rigid(ndim=2, center=[0.0, 0.0], parameters=[0.4, 3.0, -2.0])
    fixed = volume_of(lambda x: blob(x, center, widths), (40, 44),
                      oblique_affine([1.0, 1.0], (0.2,), (-20, -22)))
    inv = t.inverse()
    moving = volume_of(lambda y: blob(inv(y.reshape(-1, 2)).reshape(y.shape), center, widths),
                       (60, 70), oblique_affine([0.8, 0.9], (-0.3,), (-25, -30)))
    out = resample(moving, fixed, t, "linear")
    np.testing.assert_allclose(out.data, fixed.data, atol=0.02)


def test_bad_inputs():
    vol = Volume(np.zeros((4, 4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="interpolation"):
        resample(vol, vol, np.eye(4), "spline")
    with pytest.raises(VolumeError, match="2D"):
        resample(vol, Volume(np.zeros((4, 4)), np.eye(3)), np.eye(4))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        sample(vol, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="order"):
        sample(vol, np.zeros((5, 3)), order=2)


@pytest.mark.parametrize("interp", ["nearest", "linear"])
def test_border_follows_itk_half_voxel_rule(interp):
    """A voxel covers half a voxel around its centre (ITK, ANTs, greedy): shifted by 0.3
    voxel the edge voxel keeps the edge value, shifted by 0.7 it is filled; the same on
    the affine fast path and the general (slab) path."""
    data = np.arange(1, 7, dtype=np.float32)[:, None, None] * np.ones((6, 4, 3), np.float32)
    vol = Volume(data, np.diag([2.0, 1.0, 1.0, 1.0]))
    for shift, edge_kept in ((0.3, True), (0.7, False)):
        t = np.eye(4)
        t[0, 3] = 2.0 * shift  # mm: the last row of the grid maps to index 5 + shift
        for transform in (t, CompositeTransform([MatrixTransform(t), MatrixTransform(np.eye(4))])):
            out = resample(vol, vol, transform, interp, fill=-1.0).data
            assert (out[-1] == 6.0).all() if edge_kept else (out[-1] == -1.0).all()
            assert (out[0] > 0).all()
        backwards = np.eye(4)
        backwards[0, 3] = -2.0 * shift
        out = resample(vol, vol, backwards, interp, fill=-1.0).data
        assert (out[0] == 1.0).all() if edge_kept else (out[0] == -1.0).all()
