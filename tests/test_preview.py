"""Live-display previews (core/preview.py) and the SyN loop's previewed snapshots: the
preview is exp(v/2) o exp(v/2) from the half map, close to the exact exp(v); events keep
the exact map; bad input is refused with a clear message."""

import numpy as np
import pytest

from napari_reg.core.image import Volume, apply_affine
from napari_reg.core.preview import HalfMapSquare, PreviewedTransform, affine_points, preview_of
from napari_reg.core.resample import resample
from napari_reg.core.stages.syn import register_syn
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.field import _to_voxel_vectors
from napari_reg.core.transforms.velocity import StationaryVelocityField, exp_voxel

SHAPE = (24, 20, 22)
# an oblique, anisotropic grid: voxel units and world mm must not be confused
ROT = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
AFFINE = np.eye(4)
AFFINE[:3, :3] = ROT @ np.diag([2.0, 2.5, 1.5])
AFFINE[:3, 3] = [-20.0, -25.0, -16.0]
MATRIX = np.array([[1.02, 0.03, 0.0, 2.0], [-0.01, 0.97, 0.02, -1.0],
                   [0.0, 0.01, 1.01, 0.5], [0, 0, 0, 1.0]])
RNG = np.random.default_rng(3)


def smooth_velocity(amp_mm: float = 6.0) -> np.ndarray:
    """A smooth world-mm velocity field (3, *SHAPE) on the grid AFFINE."""
    x = Volume(np.zeros(SHAPE), AFFINE).world_grid()
    k = 2 * np.pi / 60.0
    return amp_mm * np.stack([np.sin(k * x[..., 1]), np.cos(k * x[..., 2]),
                              np.sin(k * x[..., 0] + 1.0)]).astype(np.float32)


def interior_points(n: int = 400) -> np.ndarray:
    vox = RNG.uniform(4, np.array(SHAPE) - 5, (n, 3))
    return apply_affine(AFFINE, vox)


def test_zero_half_map_is_the_matrix():
    half = np.zeros((3,) + SHAPE, np.float32)
    pts = interior_points()
    np.testing.assert_allclose(HalfMapSquare(half, AFFINE, MATRIX).transform_points(pts),
                               apply_affine(MATRIX, pts), atol=1e-9)


def test_constant_half_shift_applies_twice():
    half = np.zeros((3,) + SHAPE, np.float32)
    half[1] = 0.75  # voxels along the second grid axis
    pts = interior_points()
    shift_mm = AFFINE[:3, :3] @ np.array([0.0, 1.5, 0.0])
    np.testing.assert_allclose(HalfMapSquare(half, AFFINE, MATRIX).transform_points(pts),
                               apply_affine(MATRIX, pts + shift_mm), atol=1e-5)


def test_squared_half_map_matches_the_exact_exponential():
    v = smooth_velocity()
    half = exp_voxel(0.5 * _to_voxel_vectors(v, AFFINE), max_step_voxels=0.5)
    preview = HalfMapSquare(half, AFFINE, MATRIX)
    exact = CompositeTransform([StationaryVelocityField.from_components(v, AFFINE),
                                MatrixTransform(MATRIX)])
    pts = interior_points()
    err = np.linalg.norm(preview.transform_points(pts) - exact.transform_points(pts), axis=1)
    moved = np.linalg.norm(exact.transform_points(pts) - apply_affine(MATRIX, pts), axis=1)
    assert moved.mean() > 3.0  # the deformation is not trivial
    assert err.mean() < 0.05 * moved.mean() and err.max() < 0.5


def test_previewed_transform_is_exact_and_exposes_its_preview():
    exact = MatrixTransform(MATRIX)
    cheap = MatrixTransform(np.eye(4))
    both = PreviewedTransform(exact, cheap)
    pts = interior_points(10)
    np.testing.assert_allclose(both.transform_points(pts), apply_affine(MATRIX, pts))
    np.testing.assert_allclose(both.inverse().transform_points(apply_affine(MATRIX, pts)), pts,
                               atol=1e-9)
    assert preview_of(both) is cheap and preview_of(exact) is exact
    assert both.is_linear  # follows the exact map


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="shape"):
        HalfMapSquare(np.zeros((2,) + SHAPE, np.float32), AFFINE, MATRIX)
    with pytest.raises(ValueError, match="matrix"):
        HalfMapSquare(np.zeros((3,) + SHAPE, np.float32), AFFINE, np.eye(3))
    with pytest.raises(ValueError, match="points"):
        HalfMapSquare(np.zeros((3,) + SHAPE, np.float32), AFFINE, MATRIX).transform_points(
            np.zeros((5, 2)))
    with pytest.raises(ValueError, match="dimension"):
        PreviewedTransform(MatrixTransform(np.eye(4)), MatrixTransform(np.eye(3)))


def test_syn_events_carry_the_exact_map_and_a_close_preview():
    """A preview frame warps the moving image almost exactly like the event's exact map."""
    shape = (28, 28, 28)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = -27.0
    fixed_vol = Volume(np.zeros(shape, np.float32), aff)
    x = fixed_vol.world_grid()
    blobs = sum(np.exp(-((x - c) ** 2).sum(-1) / (2 * 7.0**2))
                for c in ([-8, -6, 4], [9, 5, -6], [0, 10, 8], [-4, -10, -9]))
    fixed = Volume(blobs.astype(np.float32), aff, "fixed")
    bent = x + 3.0 * np.stack([np.sin(x[..., 1] / 9), np.cos(x[..., 2] / 11),
                               np.sin(x[..., 0] / 10)], -1)
    moving_data = sum(np.exp(-((bent - c) ** 2).sum(-1) / (2 * 7.0**2))
                      for c in ([-8, -6, 4], [9, 5, -6], [0, 10, 8], [-4, -10, -9]))
    moving = Volume(moving_data.astype(np.float32), aff, "moving")
    events = []
    result = register_syn(fixed, moving, np.eye(4), levels=2,
                          iterations=[8, 6], callback=events.append)
    assert isinstance(events[0].transform, PreviewedTransform)
    last_iteration = [e for e in events if e.kind == "iteration"][-1]
    # the event's transform_points is the exact map (the final one, since the last
    # iteration is the last change of v)
    pts = interior_points(50) * 0.5
    np.testing.assert_allclose(last_iteration.transform.transform_points(pts),
                               result.transform.transform_points(pts), atol=1e-4)
    # its preview, used to draw a live frame, warps the moving image nearly identically
    exact = resample(moving, fixed, last_iteration.transform).data
    frame = resample(moving, fixed, preview_of(last_iteration.transform)).data
    linear = resample(moving, fixed, MatrixTransform(np.eye(4))).data
    assert np.abs(exact - linear).mean() > 0.01  # the deformation shows
    assert np.abs(frame - exact).mean() < 0.1 * np.abs(exact - linear).mean()


def test_affine_points_equals_apply_affine():
    pts = RNG.normal(0, 50, (1000, 3))
    np.testing.assert_allclose(affine_points(MATRIX @ AFFINE, pts),
                               apply_affine(MATRIX @ AFFINE, pts), rtol=1e-12, atol=1e-9)


def test_a_coarsened_half_map_is_small_and_maps_close_to_the_original():
    """What a worker process sends a display: the half field on every s-th voxel."""
    v = smooth_velocity()
    half = exp_voxel(0.5 * _to_voxel_vectors(v, AFFINE), max_step_voxels=0.5)
    full = HalfMapSquare(half, AFFINE, MATRIX)
    coarse = full.coarsened(max_voxels=2000)
    assert coarse.half[0].size <= 2000 and coarse.half.dtype == np.float32
    assert full.coarsened(max_voxels=half[0].size) is full  # small enough: unchanged
    pts = interior_points()
    moved = np.linalg.norm(full.transform_points(pts) - apply_affine(MATRIX, pts), axis=1)
    err = np.linalg.norm(coarse.transform_points(pts) - full.transform_points(pts), axis=1)
    assert moved.mean() > 3.0
    # every 2nd-3rd voxel of a field smooth on a 60 mm scale: well under a voxel (1.5-2.5 mm)
    assert err.max() < 0.3, err.max()
