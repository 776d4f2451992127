"""SyN's choice of metric per pair and its moving-image mask (issue 12): a pair of two
contrasts gets mutual information without being asked, one contrast local NCC; missing
tissue in the moving image, masked out, pulls nothing into its hole."""

import numpy as np
from scipy import ndimage

from napari_reg import register
from napari_reg.core.image import Volume
from napari_reg.core.stages.syn import register_syn
from phantoms import phantom_volume

SHAPE = (64, 64)
HOLE = (slice(24, 40), slice(24, 40))


def _texture(shape, seed=5):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    return ((img - img.min()) / np.ptp(img)).astype(np.float32)


def _hole_pair():
    """The same texture twice (the truth is the identity), the moving one with a 16 mm
    block of tissue missing (set to the background, 0)."""
    fixed = _texture(SHAPE)
    moving = fixed.copy()
    moving[HOLE] = 0.0
    keep = np.ones(SHAPE, np.uint8)
    keep[HOLE] = 0
    return Volume(fixed, np.eye(3), "fixed"), Volume(moving, np.eye(3), "moving"), keep


def _largest_shift_near_hole(result) -> float:
    u = result.displacement_field().components
    near = np.zeros(SHAPE, bool)
    near[20:44, 20:44] = True  # the hole and a 4 mm rim
    return float(np.sqrt((u ** 2).sum(axis=0))[near].max())


def test_moving_mask_stops_syn_pulling_into_missing_tissue():
    fixed, moving, keep = _hole_pair()
    options = dict(levels=2, iterations=(40, 20), no_harm=False)
    unmasked = register_syn(fixed, moving, np.eye(3), **options)
    masked = register_syn(fixed, moving, np.eye(3), moving_mask=keep, **options)
    pulled, kept_still = _largest_shift_near_hole(unmasked), _largest_shift_near_hole(masked)
    assert pulled > 1.0, pulled  # without the mask the field bends into the hole
    assert kept_still < 0.25 * pulled and kept_still < 0.5, (pulled, kept_still)
    assert masked.displacement_field().folding_fraction() == 0.0


def test_moving_mask_reaches_syn_through_register():
    fixed, moving, keep = _hole_pair()
    result = register(fixed, moving, stages=["syn"], moving_mask=keep,
                      deformable_options={"levels": 2, "iterations": (40, 20),
                                          "no_harm": False})
    assert _largest_shift_near_hole(result.deformable) < 0.5


def test_syn_chooses_mutual_information_for_two_contrasts():
    fixed = phantom_volume((32, 32, 28), (2.0, 2.0, 2.0), name="fixed")
    same = phantom_volume((32, 32, 28), (2.0, 2.0, 2.0), name="t1")
    other = phantom_volume((32, 32, 28), (2.0, 2.0, 2.0), contrast="t2", name="t2")
    opts = dict(levels=1, iterations=2)
    one = register_syn(fixed, same, np.eye(4), **opts)
    two = register_syn(fixed, other, np.eye(4), **opts)
    assert one.diagnostics["metric"] == "lncc" and one.diagnostics["intensity_correlation"] > 0.9
    assert two.diagnostics["metric"] == "mi" and two.diagnostics["intensity_correlation"] < 0.3
    # asked for, a metric is used as given (no correlation measured)
    asked = register_syn(fixed, other, np.eye(4), metric="lncc", **opts)
    assert asked.diagnostics["metric"] == "lncc"
    assert asked.diagnostics["intensity_correlation"] is None


def test_update_smoothing_per_level():
    """A list gives each level its own update smoothing (coarse to fine); a single value
    every level; a negative or empty one is refused with a clear message."""
    import pytest

    from napari_reg.core.engine.errors import RegistrationError

    fixed, moving, _ = _hole_pair()
    opts = dict(levels=2, iterations=(3, 3), no_harm=False)
    per_level = register_syn(fixed, moving, np.eye(3), update_sigma_voxels=[3.0, 1.0], **opts)
    assert per_level.parameters["update_sigma_voxels"] == [3.0, 1.0]
    one = register_syn(fixed, moving, np.eye(3), update_sigma_voxels=2.5, **opts)
    assert one.parameters["update_sigma_voxels"] == [2.5, 2.5]
    # a list longer than the levels keeps its fine end, as iterations do
    longer = register_syn(fixed, moving, np.eye(3), update_sigma_voxels=[9.0, 3.0, 1.0], **opts)
    assert longer.parameters["update_sigma_voxels"] == [3.0, 1.0]
    # a smoother update gives a smoother field (the same iterations, the same pair)
    rough = register_syn(fixed, moving, np.eye(3), update_sigma_voxels=0.5, **opts)
    smooth = register_syn(fixed, moving, np.eye(3), update_sigma_voxels=4.0, **opts)

    def roughness(result):
        u = result.displacement_field().components
        return float(np.abs(np.diff(u, axis=1)).mean() / max(np.abs(u).mean(), 1e-9))

    assert roughness(smooth) < roughness(rough)
    for bad in ([2.0, -1.0], []):
        with pytest.raises(RegistrationError, match="update_sigma_voxels"):
            register_syn(fixed, moving, np.eye(3), update_sigma_voxels=bad, **opts)
