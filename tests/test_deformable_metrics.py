"""Dense metrics (core/dense_metrics.py): local NCC, SSD and MI derivatives against finite
differences, for both images, with and without a mask."""

import numpy as np
import pytest
from scipy import ndimage

from napari_reg.core.metrics.dense import (
    LocalNCC,
    force_field,
    image_gradient_world,
    make_dense_metric,
    symmetric_force,
)


def image_pair(shape=(12, 13, 11), seed=0):
    rng = np.random.default_rng(seed)
    i = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 50 + 100
    j = 0.7 * i + ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) * 20 + 30
    return i, j


def check_derivatives(metric, i, j, mask, rel):
    metric.setup(i, j)
    _, d_i, d_j = metric.value_and_derivatives(i, j, mask)
    rng = np.random.default_rng(1)
    for _ in range(8):
        y = tuple(int(rng.integers(0, n)) for n in i.shape)
        eps = 1e-2
        for image, deriv, is_fixed in ((j, d_j, False), (i, d_i, True)):
            plus, minus = image.copy(), image.copy()
            plus[y] += eps
            minus[y] -= eps
            if is_fixed:
                if hasattr(metric, "_bwd"):  # histogram metrics: fixed side via swapped roles
                    cp = metric._bwd.value(j[mask] if mask is not None else j.ravel(),
                                           plus[mask] if mask is not None else plus.ravel())
                    cm = metric._bwd.value(j[mask] if mask is not None else j.ravel(),
                                           minus[mask] if mask is not None else minus.ravel())
                else:
                    cp = metric.value_and_derivatives(plus, j, mask)[0]
                    cm = metric.value_and_derivatives(minus, j, mask)[0]
            else:
                cp = metric.value_and_derivatives(i, plus, mask)[0]
                cm = metric.value_and_derivatives(i, minus, mask)[0]
            fd = (cp - cm) / (2 * eps)
            scale = np.abs(deriv).max()
            assert abs(fd - deriv[y]) <= rel * scale, (metric, is_fixed, fd, deriv[y])


@pytest.mark.parametrize("use_mask", [False, True])
def test_local_ncc_exact_gradient(use_mask):
    i, j = image_pair()
    mask = (np.random.default_rng(5).random(i.shape) > 0.3) if use_mask else None
    check_derivatives(LocalNCC(radius=2), i, j, mask, rel=2e-3)  # float32 sums


@pytest.mark.parametrize("name", ["ssd", "mi"])
def test_sampled_dense_metrics_gradients(name):
    i, j = image_pair()
    check_derivatives(make_dense_metric(name), i, j, None, rel=1e-4)


def test_local_ncc_values():
    i, j = image_pair()
    metric = LocalNCC(radius=3)
    assert metric.value_and_derivatives(i, 3 * i + 7)[0] == pytest.approx(-1.0, abs=1e-3)
    worse = metric.value_and_derivatives(i, np.random.default_rng(2).random(i.shape))[0]
    assert worse > -0.3
    with pytest.raises(ValueError, match="radius"):
        LocalNCC(radius=0)


def test_force_field_points_along_the_world_gradient():
    aff = np.diag([2.0, 1.0, 0.5, 1.0])
    x = np.arange(10.0)[:, None, None] * np.ones((10, 10, 10))
    grad = image_gradient_world(3.0 * x, aff)  # 3 per voxel along i = 1.5 per mm along x
    np.testing.assert_allclose(grad[0], 1.5, rtol=1e-6)
    np.testing.assert_allclose(grad[1:], 0.0, atol=1e-6)
    force = force_field(np.full(x.shape, 2.0), 3.0 * x, aff)
    np.testing.assert_allclose(force[0], 3.0, rtol=1e-6)


def test_local_ncc_keeps_few_image_sized_temporaries():
    """Memory (1 mm brain: each image-sized float32 array is 35 MB): the window sums are
    consumed as they are made, so one evaluation allocates at most 12 arrays of the
    image's size at once (the earlier version: 19 without a mask, 21 with one)."""
    import tracemalloc

    i, j = (a.astype(np.float32) for a in image_pair((48, 40, 36)))
    metric = LocalNCC(radius=2)
    metric.setup(i, j)
    for mask in (None, i > np.median(i)):
        tracemalloc.start()
        try:
            cost, d_i, d_j = metric.value_and_derivatives(i, j, mask)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert d_i.dtype == d_j.dtype == np.float32
        assert peak <= 12.5 * i.nbytes, peak / i.nbytes


def test_symmetric_force_is_the_two_images_forces_computed_in_slabs():
    """The symmetric force dC/dJ grad J - dC/dI grad I, computed in slabs along the first
    axis (3 slabs here: > 2 M voxels), equals the two whole-array forces on an oblique,
    anisotropic grid: the slabs' halo rows give the same central differences."""
    rng = np.random.default_rng(4)
    shape = (203, 100, 101)
    i, j, d_i, d_j = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.2, 0.9, 2.0])
    force = symmetric_force(d_i, i, d_j, j, aff)
    assert force.dtype == np.float32 and force.shape == (3,) + shape
    expected = force_field(d_j, j, aff) - force_field(d_i, i, aff)
    np.testing.assert_allclose(force, expected, atol=1e-5 * float(np.abs(expected).max()))
