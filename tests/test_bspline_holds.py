"""The B-spline stage on what real anatomy throws at it (issue 12): it cannot fold, one
bending weight means the same under SSD, NCC and MI, it leaves an affine-only pair
alone, and a moving-image mask keeps a lesion from pulling the map."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_reg import register
from napari_reg.core.image import Volume
from napari_reg.core.stages.bspline import register_bspline
from napari_reg.core.transforms.bspline import BSplineTransform
from napari_reg.core.transforms.bspline_bounded import BoundedBSpline
from napari_reg.core.transforms.bspline_chain import (
    CHOI_LEE_K,
    BSplineChain,
    injectivity_bound,
)
from napari_reg.core.transforms.field import jacobian_determinant_map

SHAPE = (96, 96)  # 2D, 1 mm pixels


def grid_affine(shape=SHAPE, spacing=1.0) -> np.ndarray:
    a = np.diag([spacing, spacing, 1.0])
    a[:2, 2] = -spacing * (np.asarray(shape) - 1) / 2
    return a


def blobs(world: np.ndarray, seed: int = 3, n: int = 40) -> np.ndarray:
    """A smooth "anatomy" of soft disks (a function of world mm)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-36, 36, (n, 2))
    radii = rng.uniform(3, 9, n)
    heights = rng.uniform(0.3, 1.0, n)
    r = np.sqrt(((world[..., None, :] - centres) ** 2).sum(-1))
    return (heights / (1 + np.exp((r - radii) / 1.0))).sum(-1)


def volume(values: np.ndarray, name: str = "") -> Volume:
    return Volume(values.astype(np.float32), grid_affine(), name)


WORLD = Volume(np.zeros(SHAPE), grid_affine()).world_grid()
FIXED = volume(blobs(WORLD), "fixed")


def min_jacobian(result, fixed: Volume) -> float:
    field = result.deformable.displacement_field(fixed) if hasattr(result, "deformable") \
        else result.displacement_field(fixed)
    return float(jacobian_determinant_map(field.components, field.affine).min())


# ------------------------------------------------------------------ injectivity
def test_the_bound_is_choi_and_lees():
    ffd = BSplineTransform.over_volume(FIXED, 12.0)
    np.testing.assert_allclose(injectivity_bound(ffd, 0.9), 0.9 * 12.0 / CHOI_LEE_K[2])


def test_a_bounded_chain_never_folds_where_the_raw_coefficients_do():
    rng = np.random.default_rng(0)
    chain, raw = [], []
    for spacing in (24.0, 12.0, 6.0):
        bounded = BoundedBSpline(BSplineTransform.over_volume(FIXED, spacing))
        q = rng.normal(0.0, 3.0 * spacing, bounded.n_parameters)  # far beyond any bound
        bounded.parameters = q
        chain.append(bounded.ffd.copy())
        unbounded = BSplineTransform.over_volume(FIXED, spacing)
        unbounded.parameters = q
        raw.append(unbounded)
    folded = BSplineChain(raw).to_field(SHAPE, grid_affine())
    assert jacobian_determinant_map(folded.components, folded.affine).min() < 0
    field = BSplineChain(chain).to_field(SHAPE, grid_affine())
    assert jacobian_determinant_map(field.components, field.affine).min() > 0


def test_chain_field_matches_its_exact_points():
    rng = np.random.default_rng(1)
    ffds = []
    for spacing in (24.0, 12.0):
        b = BoundedBSpline(BSplineTransform.over_volume(FIXED, spacing))
        b.parameters = rng.normal(0.0, 2.0, b.n_parameters)
        ffds.append(b.ffd)
    chain = BSplineChain(ffds)
    points = WORLD[10:-10:7, 10:-10:7].reshape(-1, 2)
    field = chain.to_field(SHAPE, grid_affine())
    np.testing.assert_allclose(field.transform_points(points), chain.transform_points(points),
                               atol=0.05)


def test_a_large_local_displacement_is_registered_without_folds():
    # moving: the fixed anatomy with a disk region pushed 9 mm sideways (a local shift
    # near the 10 mm grid spacing pulls an unbounded FFD into folding)
    shift = 9.0 * np.exp(-((WORLD ** 2).sum(-1)) / (2 * 8.0 ** 2))
    moving = volume(blobs(WORLD - np.stack([shift, 0 * shift], -1)), "moving")
    result = register(FIXED, moving, transform="bspline", metric="ssd")
    assert min_jacobian(result, FIXED) > 0
    # the do-no-harm check judges the blocks the map moved: a real local shift is kept
    assert result.diagnostics["structure_check"]["accepted"], result.diagnostics
    # and it did move: the centre's anatomy sits ~9 mm further along x in moving
    centre = result.transform.transform_points(np.zeros((1, 2)))[0]
    assert centre[0] > 5.0, centre


# ------------------------------------------------------------------ regularisation
def smooth_warp_pair():
    u = np.stack([3.0 * np.sin(WORLD[..., 1] / 9.0), 3.0 * np.cos(WORLD[..., 0] / 11.0)], -1)
    return volume(blobs(WORLD + u), "moving")


def log_jacobian_spread(metric: str, weight: float, moving: Volume) -> float:
    # intensities x 50 for SSD: a metric's units must not change what lambda means
    scale = 50.0 if metric == "ssd" else 1.0
    result = register_bspline(volume(FIXED.data * scale), volume(moving.data * scale),
                              metric=metric, bending_weight=weight, levels=2, iterations=30,
                              structure_check=False)
    field = result.displacement_field(FIXED)
    jac = jacobian_determinant_map(field.components, field.affine)[10:-10, 10:-10]
    return float(np.log(jac).std())


def test_one_bending_weight_gives_the_same_smoothness_under_ssd_ncc_mi():
    moving = smooth_warp_pair()
    stiff = {m: log_jacobian_spread(m, 1e5, moving) for m in ("ssd", "ncc", "mi")}
    values = np.array(list(stiff.values()))
    assert values.min() > 0.005, stiff  # it did deform
    assert values.max() / values.min() < 1.5, stiff
    # and the weight is what made it smooth: a small one bends more (the same for all)
    assert log_jacobian_spread("ssd", 100.0, moving) > 1.4 * stiff["ssd"], stiff


# ------------------------------------------------------------------ do no harm
def test_an_affine_only_contrast_changed_pair_is_not_bent():
    # moving: a T2-like contrast of the fixed anatomy (bright where fixed is dark, a
    # smooth bias, noise) under a known affine
    rng = np.random.default_rng(5)
    matrix = np.array([[0.98, 0.05, 1.5], [-0.04, 1.02, -2.0], [0, 0, 1.0]])  # fixed->moving
    source = WORLD @ np.linalg.inv(matrix)[:2, :2].T + np.linalg.inv(matrix)[:2, 2]
    anatomy = blobs(source)
    t2 = np.where(anatomy > 0.05, 1.6 - anatomy, 0.0)  # inverted inside, dark outside
    bias = 1.0 + 0.1 * WORLD[..., 0] / 48 - 0.08 * WORLD[..., 1] / 48
    moving = volume(ndimage.gaussian_filter(t2 * bias, 0.7) + rng.normal(0, 0.02, SHAPE))
    affine = register(FIXED, moving, transform="affine")
    result = register(FIXED, moving, transform="bspline")
    points = WORLD[8:-8:3, 8:-8:3].reshape(-1, 2)
    moved = np.linalg.norm(result.transform.transform_points(points)
                           - affine.transform.transform_points(points), axis=1)
    assert moved.mean() < 0.1, (moved.mean(), result.diagnostics.get("structure_check"))


# ------------------------------------------------------------------ moving mask
def test_a_moving_mask_keeps_a_lesion_from_pulling_the_map():
    lesion = np.exp(-(((WORLD - [10.0, -6.0]) ** 2).sum(-1)) / (2 * 4.0 ** 2))
    moving = volume(FIXED.data + 2.0 * lesion, "moving with lesion")
    mask = volume((lesion < 0.05).astype(np.uint8), "moving mask")
    near = WORLD[(((WORLD - [10.0, -6.0]) ** 2).sum(-1)) < 12.0 ** 2]
    options = {"structure_check": False}
    moved = {}
    for name, kwargs in (("unmasked", {}), ("masked", {"moving_mask": mask})):
        result = register(FIXED, moving, transform="bspline", metric="ssd", init="none",
                          deformable_options=options, **kwargs)
        moved[name] = float(np.linalg.norm(result.transform.transform_points(near) - near,
                                           axis=1).mean())
    assert moved["unmasked"] > 0.3, moved  # the lesion pulls an unmasked run
    assert moved["masked"] < 0.3 * moved["unmasked"], moved
