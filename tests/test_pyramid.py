"""Gaussian smoothing in mm, downsampling with world positions kept, pyramid schedules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_reg.core.image import Volume
from napari_reg.core.pyramid import default_schedule, downsample, gaussian_pyramid, smooth
from napari_reg.core.transforms.linear import euler_to_matrix


def oblique(spacing, angles=(0.4, -0.3, 0.2), origin=(12.0, -30.0, 7.5)):
    d = len(spacing)
    a = np.eye(d + 1)
    a[:d, :d] = euler_to_matrix(angles if d == 3 else angles[:1]) @ np.diag(spacing)
    a[:d, d] = origin[:d]
    return a


def test_downsample_keeps_world_positions_on_oblique_affine():
    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(size=(13, 10, 9)), oblique([0.9, 1.4, 2.2]))
    small = downsample(vol, (3, 2, 1))
    assert small.shape == (5, 5, 9) and small.data.dtype == vol.data.dtype
    ijk = np.array([[0, 0, 0], [4, 4, 8], [2, 3, 5]])
    old = ijk * np.array([3, 2, 1])
    np.testing.assert_allclose(small.voxel_to_world(ijk), vol.voxel_to_world(old), atol=1e-12)
    np.testing.assert_array_equal(small.data[tuple(ijk.T)], vol.data[tuple(old.T)])
    np.testing.assert_allclose(small.spacing, vol.spacing * [3, 2, 1])
    assert small.data.flags.c_contiguous
    two_d = downsample(Volume(np.arange(20.0).reshape(4, 5), oblique([1.0, 2.0])), 2)
    np.testing.assert_array_equal(two_d.data, [[0, 2, 4], [10, 12, 14]])


def test_smooth_uses_millimetres_per_axis():
    data = np.zeros((41, 41, 21), dtype=np.float32)
    data[20, 20, 10] = 1.0
    vol = Volume(data, oblique([0.5, 1.0, 2.0]))  # oblique: spacing from column norms
    out = smooth(vol, 2.0)
    assert out.data.dtype == np.float32 and out.same_grid(vol)
    # the impulse response has a physical standard deviation of 2 mm along every axis
    for axis, spacing in enumerate([0.5, 1.0, 2.0]):
        profile = out.data.sum(axis=tuple(a for a in range(3) if a != axis))
        pos = (np.arange(profile.size) - profile.argmax()) * spacing
        assert np.sqrt(np.sum(profile * pos**2) / profile.sum()) == pytest.approx(2.0, rel=0.03)
    np.testing.assert_allclose(out.data.sum(), 1.0, rtol=1e-3)
    expected = ndimage.gaussian_filter(data, [4.0, 2.0, 1.0], mode="nearest", truncate=3.0)
    np.testing.assert_allclose(out.data, expected, atol=1e-6)
    per_axis = smooth(vol, [1.0, 0.0, 0.0])
    # smoothing along axis 0 only: nothing spreads along the other axes
    np.testing.assert_allclose(per_axis.data.sum(axis=0), data.sum(axis=0), atol=1e-6)
    assert per_axis.data[:, 20, 10].max() < 0.5 and np.count_nonzero(per_axis.data) <= 41


def test_pyramid_equals_smooth_then_downsample():
    rng = np.random.default_rng(1)
    vol = Volume(rng.normal(size=(30, 26, 12)), oblique([1.0, 1.0, 2.5]))
    levels = gaussian_pyramid(vol, [(4, 4, 2), 2, (1, 1, 1)], [2.0, 1.0, 0.0])
    assert [lv.shape for lv in levels] == [(8, 7, 6), (15, 13, 6), (30, 26, 12)]
    for lv, f, s in zip(levels, [(4, 4, 2), (2, 2, 2), (1, 1, 1)], [2.0, 1.0, 0.0],
                        strict=True):
        ref = downsample(smooth(vol, s), f)
        np.testing.assert_allclose(lv.data, ref.data, atol=1e-5)
        np.testing.assert_allclose(lv.affine, ref.affine)
        assert lv.data.dtype == np.float32 and lv.data.flags.c_contiguous
    np.testing.assert_allclose(levels[-1].data, vol.data.astype(np.float32))


def test_default_schedule_makes_anisotropic_voxels_isotropic():
    vol = Volume(np.zeros((200, 200, 60), dtype=np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
    factors, sigmas = default_schedule(vol, 3)
    assert factors == [(4, 4, 1), (2, 2, 1), (1, 1, 1)]
    assert sigmas == [2.0, 1.0, 0.0]
    coarse_spacing = vol.spacing * factors[0]
    assert coarse_spacing.max() / coarse_spacing.min() < 1.5
    iso = Volume(np.zeros((40, 20), dtype=np.float32), np.eye(3))
    f, s = default_schedule(iso, 4)
    assert f == [(5, 2), (4, 2), (2, 2), (1, 1)]  # capped so that no axis gets below 8 voxels
    assert s == [4.0, 2.0, 1.0, 0.0]
    levels = gaussian_pyramid(iso, f, s)
    assert min(min(lv.shape) for lv in levels) >= 8


def test_bad_inputs():
    vol = Volume(np.zeros((8, 8, 8)), np.eye(4))
    with pytest.raises(ValueError, match="integers"):
        downsample(vol, 1.5)
    with pytest.raises(ValueError, match="1 or 3 values"):
        smooth(vol, [1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        smooth(vol, -1.0)
    with pytest.raises(ValueError, match="per pyramid level"):
        gaussian_pyramid(vol, [2, 1], [1.0])
    with pytest.raises(ValueError, match="at least one level"):
        default_schedule(vol, 0)
