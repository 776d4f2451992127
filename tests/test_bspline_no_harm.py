"""Do no harm, both ways (issue 12): the B-spline preset keeps a real small local
correction on otherwise aligned images, and leaves the shipped sample pair (whose truth
is affine) at the affine stage's error."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_reg import register
from napari_reg._sample_data import load_mni_pair
from napari_reg.core.image import Volume


@pytest.fixture(scope="module")
def sample_pair():
    return load_mni_pair()


def brain_points(volume: Volume) -> np.ndarray:
    inside = volume.data > np.percentile(volume.data, 60)
    return volume.voxel_to_world(np.argwhere(inside).astype(float))


def test_a_single_small_local_deformation_is_kept(sample_pair):
    # moving: the fixed T1 (2 mm) with one local deformation, a Gaussian bump of 2.8 mm
    # (sigma 4 mm: ~10 mm across) in a cortical region; elsewhere the images are aligned
    fixed = sample_pair.fixed
    world = fixed.world_grid()
    bump = np.exp(-((world - [20.0, -10.0, 15.0]) ** 2).sum(-1) / (2 * 4.0**2))
    u = np.stack([2.5 * bump, 1.25 * bump, 0.0 * bump], -1)  # fixed -> moving: x + u(x)
    ijk = (world - u - fixed.affine[:3, 3]) @ np.linalg.inv(fixed.affine[:3, :3]).T
    moving = ndimage.map_coordinates(fixed.data, np.moveaxis(ijk, -1, 0), order=3,
                                     mode="nearest").astype(np.float32)
    result = register(fixed, Volume(moving, fixed.affine.copy(), "moving"),
                      transform="bspline")
    check = result.diagnostics["structure_check"]
    assert check["accepted"], check
    near = bump > 0.5
    points = world[near]
    error = np.linalg.norm(result.transform.transform_points(points) - (points + u[near]),
                           axis=1).mean()
    initial = np.linalg.norm(u[near], axis=1).mean()
    assert error < 0.75 * initial, (error, initial)
    # and the rest of the brain stays where it was
    far = brain_points(fixed)
    far = far[np.linalg.norm(far - [20.0, -10.0, 15.0], axis=1) > 25.0]
    assert np.linalg.norm(result.transform.transform_points(far) - far, axis=1).mean() < 0.2


def test_the_sample_pair_is_not_bent(sample_pair):
    # its truth is affine (T1 vs a T2-like contrast with a bias field): a deformation can
    # only fit the contrast, so the preset must return the affine stage's map
    fixed, moving, truth = sample_pair.fixed, sample_pair.moving, sample_pair.true_fixed_to_moving
    points = brain_points(fixed)
    expected = points @ truth[:3, :3].T + truth[:3, 3]
    affine = register(fixed, moving, transform="affine")
    bspline = register(fixed, moving, transform="bspline")
    assert not bspline.diagnostics["structure_check"]["accepted"]
    errors = [float(np.linalg.norm(r.transform.transform_points(points) - expected,
                                   axis=1).mean()) for r in (affine, bspline)]
    assert abs(errors[1] - errors[0]) < 0.1, errors
