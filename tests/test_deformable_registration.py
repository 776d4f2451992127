"""Deformable registration stages (core/stages/bspline.py, core/stages/syn.py) on analytic phantoms:
recovery of a known smooth deformation after a known linear part, gradients against
finite differences, diffeomorphism and inverse consistency of the SVF model, progress
events, cancellation, and clear errors for bad input."""

import numpy as np
import pytest
from scipy import ndimage

from napari_reg.core.engine.errors import DeformableError
from napari_reg.core.engine.objective import sampled_objective
from napari_reg.core.image import Volume, apply_affine
from napari_reg.core.metrics import make_metric
from napari_reg.core.optimize import Cancelled, CancelToken
from napari_reg.core.stages.bspline import register_bspline
from napari_reg.core.stages.syn import register_syn
from napari_reg.core.transforms.bspline import BSplineTransform

SHAPE, SPACING = (32, 32, 32), 2.0
RNG = np.random.default_rng(7)
CENTRES = RNG.uniform(-24, 24, (45, 3))
WIDTHS = RNG.uniform(2.5, 5.0, 45)
HEIGHTS = RNG.uniform(0.5, 1.5, 45)
LINEAR = np.array([[1.03, 0.02, 0.0, 1.5], [-0.02, 0.98, 0.01, -2.0],
                   [0.0, -0.01, 1.01, 1.0], [0, 0, 0, 1.0]])  # fixed -> moving


def phantom(x):
    """Smooth blobs, a function of world mm."""
    r2 = ((x[..., None, :] - CENTRES) ** 2).sum(-1)
    return (HEIGHTS * np.exp(-r2 / (2 * WIDTHS**2))).sum(-1)


def true_displacement(x, amp=3.0):
    """A smooth deformation of the fixed space (mm); |du/dx| < 0.35 so it is invertible."""
    k = 2 * np.pi / 64.0
    return amp * np.stack([np.sin(k * x[..., 1]) * np.cos(k * x[..., 2] / 2),
                           np.sin(k * x[..., 2]) * np.cos(k * x[..., 0] / 2),
                           np.sin(k * x[..., 0]) * np.cos(k * x[..., 1] / 2)], -1)


def true_map(x):
    return apply_affine(LINEAR, x + true_displacement(x))


def centred_affine(shape, spacing, rotation=None):
    aff = np.eye(4)
    aff[:3, :3] = (np.eye(3) if rotation is None else rotation) @ np.diag(spacing)
    aff[:3, 3] = -aff[:3, :3] @ ((np.array(shape) - 1) / 2)
    return aff


def make_pair(fixed_affine=None, moving_affine=None, fixed_shape=SHAPE, moving_shape=SHAPE):
    square = centred_affine(SHAPE, [SPACING] * 3)
    fixed_affine = square if fixed_affine is None else fixed_affine
    moving_affine = square if moving_affine is None else moving_affine
    fixed = Volume(phantom(Volume(np.zeros(fixed_shape), fixed_affine).world_grid())
                   .astype(np.float32), fixed_affine, "fixed")
    # moving(y) = f(T^-1(y)) exactly: undo the linear part, then invert x + u(x) = z
    z = apply_affine(np.linalg.inv(LINEAR), Volume(np.zeros(moving_shape),
                                                   moving_affine).world_grid())
    x = z.copy()
    for _ in range(40):
        x = z - true_displacement(x)
    moving = Volume(phantom(x).astype(np.float32), moving_affine, "moving")
    return fixed, moving


FIXED, MOVING = make_pair()
POINTS = FIXED.world_grid()[6:-6, 6:-6, 6:-6].reshape(-1, 3)  # away from the borders
TRUE = true_map(POINTS)


def mean_error(transform):
    return float(np.linalg.norm(transform.transform_points(POINTS) - TRUE, axis=1).mean())


def test_bspline_recovers_a_known_smooth_deformation():
    start = mean_error(_Linear())
    result = register_bspline(FIXED, MOVING, LINEAR, grid_spacing_mm=10.0, metric="ncc",
                              levels=2, iterations=40, samples=8000)
    err = mean_error(result.transform)
    assert err < 0.2 * start and err < 0.5, (start, err)
    # one record per composed FFD: one or more per pyramid level
    assert {lv.stage_name for lv in result.levels} == {"bspline"}
    assert sorted({lv.level for lv in result.levels}) == [0, 1]
    assert all(len(lv.costs) > 0 for lv in result.levels)
    assert result.levels[-1].costs[-1] < result.levels[-1].costs[0]
    # the saved field is the whole fixed->moving map, linear part included (the composed
    # FFDs are read at displaced points by linear interpolation: 1 % of a 2 mm voxel)
    field = result.displacement_field()
    np.testing.assert_allclose(field.transform_points(POINTS),
                               result.transform.transform_points(POINTS), atol=0.02)
    back = result.inverse_transform().transform_points(result.transform.transform_points(POINTS))
    assert np.abs(back - POINTS).max() < 0.1 * SPACING


def test_syn_recovers_diffeomorphic_and_inverse_consistent():
    start = mean_error(_Linear())
    result = register_syn(FIXED, MOVING, LINEAR, levels=2, iterations=(40, 30), radius=2)
    err = mean_error(result.transform)
    assert err < 0.25 * start and err < 0.6, (start, err)
    field = result.displacement_field()
    assert field.folding_fraction() == 0.0
    svf = result.deformation
    forward, backward = svf.exp(), svf.inverse().exp()
    for a, b in ((forward, backward), (backward, forward)):
        assert np.abs(b.transform_points(a.transform_points(POINTS)) - POINTS).max() < 0.1 * SPACING
    np.testing.assert_allclose(field.transform_points(POINTS),
                               result.transform.transform_points(POINTS), atol=1e-3)
    # the whole moving->fixed inverse (linear part included) undoes the forward map
    back = result.inverse_transform().transform_points(result.transform.transform_points(POINTS))
    assert np.abs(back - POINTS).max() < 0.1 * SPACING


def test_syn_default_schedule_iterates_at_full_resolution():
    """greedy-like default, 100x50x10 over 3 levels: the finest (unshrunk) level runs its
    10 iterations, the velocity lives on the fixed grid, and a real deformation is kept
    by the do-no-harm judge."""
    result = register_syn(FIXED, MOVING, LINEAR)
    assert result.parameters["iterations"] == [100, 50, 10]
    assert len(result.levels[-1].costs) == 10
    assert result.deformation.shape == SHAPE
    assert result.diagnostics["deformation_kept"], result.diagnostics
    assert mean_error(result.transform) < 0.3 * mean_error(_Linear())
    assert result.displacement_field().same_grid(FIXED.shape, FIXED.affine)


def test_syn_skipped_full_resolution_keeps_the_velocity_coarse():
    """ANTs SyNQuick-like schedule on request (0 iterations at full resolution): the
    velocity stays on the half-resolution grid and the field is still on the fixed grid."""
    result = register_syn(FIXED, MOVING, LINEAR, iterations=[70, 50, 0])
    assert result.levels[-1].stop_reason == "skipped" and not result.levels[-1].costs
    assert result.deformation.shape == tuple(n // 2 for n in SHAPE)
    assert mean_error(result.transform) < 0.3 * mean_error(_Linear())


@pytest.mark.parametrize("which", ["bspline", "syn"])
def test_oblique_anisotropic_flipped_grids(which):
    """World-space registration: the fixed grid is rotated, flipped and anisotropic, the
    moving grid is axis-aligned with other voxels; the answer must not change."""
    c, s = np.cos(0.35), np.sin(0.35)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([-1.0, 1, 1])
    fixed, moving = make_pair(centred_affine((30, 26, 36), [2.0, 2.4, 1.6], rot),
                              centred_affine((36, 34, 30), [1.8, 1.9, 2.1]),
                              (30, 26, 36), (36, 34, 30))
    pts = fixed.world_grid()[6:-6, 6:-6, 6:-6].reshape(-1, 3)
    truth = true_map(pts)
    start = np.linalg.norm(apply_affine(LINEAR, pts) - truth, axis=1).mean()
    if which == "bspline":
        result = register_bspline(fixed, moving, LINEAR, grid_spacing_mm=10.0, metric="ncc",
                                  levels=2, iterations=40, samples=8000)
    else:
        result = register_syn(fixed, moving, LINEAR, levels=2, iterations=(40, 30))
    err = np.linalg.norm(result.transform.transform_points(pts) - truth, axis=1).mean()
    assert err < 0.25 * start, (start, err)
    field = result.displacement_field()
    assert field.same_grid(fixed.shape, fixed.affine) and field.folding_fraction() == 0.0


@pytest.mark.parametrize("metric", ["ssd", "mi", "ncc"])
def test_bspline_objective_gradient_against_finite_differences(metric):
    ffd = BSplineTransform.over_volume(FIXED, 16.0)
    rng = np.random.default_rng(1)
    ffd.parameters = rng.standard_normal(ffd.n_parameters) * 0.7
    points = POINTS[rng.choice(len(POINTS), 3000, replace=False)]
    fvals = phantom(points)
    m = make_metric(metric)
    m.setup(FIXED.data, MOVING.data)
    objective = sampled_objective(ffd, m, MOVING, points, fvals, then=LINEAR,
                                  penalty=ffd.bending_energy_and_gradient, penalty_weight=0.5)
    p0 = ffd.parameters
    _, grad = objective(p0)
    for k in np.argsort(-np.abs(grad))[:6]:
        p = p0.copy()
        p[k] += 1e-5
        plus = objective(p)[0]
        p[k] -= 2e-5
        minus = objective(p)[0]
        fd = (plus - minus) / 2e-5
        assert fd == pytest.approx(grad[k], rel=2e-2), (k, fd, grad[k])


@pytest.mark.parametrize("which", ["bspline", "syn"])
def test_progress_events_and_cancellation(which):
    events = []
    run = register_bspline if which == "bspline" else register_syn
    kwargs = dict(levels=2, iterations=3, stage=2)
    if which == "bspline":
        kwargs.update(grid_spacing_mm=16.0, samples=2000)
    result = run(FIXED, MOVING, LINEAR, callback=events.append, **kwargs)
    iterations = [e for e in events if e.kind == "iteration"]
    assert {e.stage_name for e in events} == {which} and {e.stage for e in events} == {2}
    assert [e.kind for e in events][:1] == ["level_start"] and events[-1].kind == "level_end"
    assert [e.total_iterations for e in iterations] == list(range(1, len(iterations) + 1))
    assert len(iterations) == sum(len(lv.costs) for lv in result.levels) == result.n_iterations
    # the last event's transform is the current whole fixed->moving map
    np.testing.assert_allclose(events[-1].transform.transform_points(POINTS[:50]),
                               result.transform.transform_points(POINTS[:50]), atol=1e-4)

    token = CancelToken()
    seen = []

    def cancel_at_first(event):
        seen.append(event.kind)
        if event.kind == "iteration":
            token.cancel()

    with pytest.raises(Cancelled):
        run(FIXED, MOVING, LINEAR, callback=cancel_at_first, cancel=token, **kwargs)
    assert seen.count("iteration") == 1  # nothing ran after the cancel


def test_bad_input_is_rejected_clearly():
    with pytest.raises(DeformableError, match="smaller than a voxel"):
        register_bspline(FIXED, MOVING, grid_spacing_mm=0.5)
    flat = Volume(np.zeros((8, 8), np.float32), np.eye(3))
    with pytest.raises(DeformableError, match="2D"):
        register_syn(FIXED, flat)
    with pytest.raises(DeformableError, match="singular"):
        register_syn(FIXED, MOVING, np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(DeformableError, match="step_voxels"):
        register_syn(FIXED, MOVING, step_voxels=-1.0)
    far = np.eye(4)
    far[:3, 3] = 500.0
    with pytest.raises(DeformableError, match="overlap"):
        register_bspline(FIXED, MOVING, far, grid_spacing_mm=16.0)


class _Linear:
    """The linear part alone (the starting point of both deformable stages)."""

    def transform_points(self, x):
        return apply_affine(LINEAR, x)


def test_register_gives_the_deformable_metric_its_own_options():
    """The linear stage's MI bins must not reach a different deformable metric (SSD)."""
    from napari_reg import register

    result = register(FIXED, MOVING, transform="bspline", metric="mi", levels=2,
                      iterations=5, deformable_metric="ssd",
                      deformable_options={"levels": 1, "iterations": 3, "samples": 2000})
    assert result.deformable.parameters["metric"] == "ssd"
    assert result.deformable.parameters["metric_options"] == {}
    assert result.deformable.parameters["sampling"] == "foreground"
    boxed = register(FIXED, MOVING, transform="bspline", levels=2, iterations=5,
                     sampling="all", deformable_options={"levels": 1, "iterations": 3})
    assert boxed.deformable.parameters["sampling"] == "all"  # register's choice reaches it


def test_bspline_samples_the_foreground_by_default():
    """With no mask, samples come from the fixed foreground grown by a margin (air carries
    no information); ``sampling="all"`` uses the whole box; a bad value is an error."""
    from napari_reg.core.stages.bspline import FOREGROUND_MARGIN_VOXELS

    radius = FIXED.world_grid() - FIXED.center_world()
    inside = np.linalg.norm(radius, axis=-1) < 20.0  # a ball in a 64 mm box: ~13 % of it
    head = Volume(np.where(inside, FIXED.data + 1.0, 0.0).astype(np.float32), FIXED.affine,
                  "head")
    options = {"grid_spacing_mm": 16.0, "levels": 1, "iterations": 2, "samples": 10 ** 6}
    result = register_bspline(head, MOVING, LINEAR, **options)
    grown = ndimage.binary_dilation(inside, iterations=FOREGROUND_MARGIN_VOXELS)
    assert result.parameters["sampling"] == "foreground"
    assert result.levels[0].n_samples <= np.count_nonzero(grown) < inside.size
    assert result.levels[0].n_samples > np.count_nonzero(inside) // 2
    everywhere = register_bspline(head, MOVING, LINEAR, sampling="all", **options)
    assert everywhere.levels[0].n_samples > np.count_nonzero(grown)
    with pytest.raises(DeformableError, match="sampling"):
        register_bspline(head, MOVING, LINEAR, sampling="edges", **options)


@pytest.mark.parametrize("which", ["bspline", "syn"])
def test_blas_runs_single_threaded_during_deformable_runs(which):
    """Tiny BLAS calls dominate with threaded OpenBLAS (core/threads.py): the loops limit
    every BLAS library to one thread while they run and restore it afterwards."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    seen = []
    run = register_bspline if which == "bspline" else register_syn
    options = ({"levels": 1, "iterations": 2, "samples": 2000} if which == "bspline"
               else {"levels": 1, "iterations": 2})
    run(FIXED, MOVING, LINEAR, callback=lambda event: seen.append(blas_threads()), **options)
    assert seen and all(threads == [1] * len(threads) for threads in seen)
    assert blas_threads() == before


def test_syn_coarse_half_maps_match_the_exact_exponentials():
    """The iterations' exp(+-v/2) computed on every 2nd voxel and interpolated back agree
    with the exact ones for a smooth velocity (smooth on the update's 3-voxel scale)."""
    from napari_reg.core.stages.syn_ops import half_maps as _half_maps

    rng = np.random.default_rng(3)
    v = np.stack([ndimage.gaussian_filter(rng.normal(size=(40, 44, 36)), 5.0)
                  for _ in range(3)]).astype(np.float32)
    v *= np.float32(5.0 / np.abs(v).max())  # up to 5 voxels (gradient 0.6): 3 squarings
    exact = _half_maps(v, 1, None)
    coarse = _half_maps(v, 2, None)
    for a, b in zip(exact, coarse, strict=True):
        assert np.abs(a).max() > 2.0
        inner = (slice(None),) + (slice(2, -2),) * 3  # edges: nearest-extrapolated
        error = np.abs(a - b)[inner]
        assert error.mean() < 0.02 and error.max() < 0.2, (error.mean(), error.max())
    with pytest.raises(DeformableError, match="exp_shrink"):
        register_syn(FIXED, MOVING, LINEAR, levels=1, iterations=1, exp_shrink=0)


def test_syn_fields_stay_float32_and_update_in_place():
    """Memory: the velocity, its half maps and the smoothed update are float32 (a float64
    field on a 1 mm brain is 210 MB instead of 105), and smoothing in place returns the
    array it was given."""
    from napari_reg.core.stages.syn_ops import half_maps as _half_maps
    from napari_reg.core.stages.syn_ops import smooth_components

    result = register_syn(FIXED, MOVING, LINEAR, levels=2, iterations=(5, 3))
    v = result.deformation.components
    assert v.dtype == np.float32 and v.shape == (3,) + SHAPE
    assert result.displacement_field().components.dtype == np.float32
    halves = _half_maps(v, 2, None)
    assert [h.dtype for h in halves] == [np.float32, np.float32]
    assert [h.shape for h in halves] == [v.shape, v.shape]
    field = v.copy()
    assert smooth_components(field, 2.0, np.ones(3), in_place=True) is field
    assert field.dtype == np.float32
    np.testing.assert_allclose(field, smooth_components(v, 2.0, np.ones(3)), atol=1e-6)


def test_syn_local_ncc_window_holds_as_many_samples_in_2d_as_in_3d():
    """Default radius: greedy's NCC 2x2x2 in 3D (125 voxels); in 2D 11 x 11 = 121 pixels
    (radius 2 gave 25, and trailed greedy on real slices). An explicit radius wins."""
    from napari_reg.core.stages.syn_rules import default_radius

    assert (default_radius(3), default_radius(2)) == (2, 5)
    yy, xx = np.mgrid[:48, :48].astype(np.float32)
    fixed = Volume(np.exp(-((xx - 22) ** 2 + (yy - 25) ** 2) / 60.0), np.eye(3), "fixed")
    moving = Volume(np.exp(-((xx - 24) ** 2 + (yy - 24) ** 2) / 70.0), np.eye(3), "moving")
    result = register_syn(fixed, moving, np.eye(3), levels=1, iterations=3, no_harm=False)
    assert result.parameters["radius"] == 5
    assert register_syn(FIXED, MOVING, LINEAR, levels=1, iterations=1).parameters["radius"] == 2
    assert register_syn(fixed, moving, np.eye(3), levels=1, iterations=1,
                        radius=2).parameters["radius"] == 2
