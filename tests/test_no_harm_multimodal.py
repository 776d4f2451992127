"""Do no harm across contrasts (issue 12): the deformable presets keep a real smooth
deformation between two contrasts (MI's deformation recovers it, and the judge, which
asks about edges, not intensities, must keep it) and leave the same pair unbent when
there is nothing but the contrast to fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_reg import register
from napari_reg.core.image import Volume, apply_affine

SHAPE = (96, 96)  # 1 mm pixels
INNER = (slice(8, -8),) * 2


def _displacement(points: np.ndarray, peak_mm: float) -> np.ndarray:
    """Two smooth Gaussian bumps (sigma 10-12 mm) of the fixed->moving map, ``(2, ...)``."""
    c = (np.asarray(SHAPE, float) - 1) / 2
    b1 = np.exp(-((points[0] - c[0] - 15) ** 2 + (points[1] - c[1] + 10) ** 2) / (2 * 12.0**2))
    b2 = np.exp(-((points[0] - c[0] + 18) ** 2 + (points[1] - c[1] - 12) ** 2) / (2 * 10.0**2))
    return peak_mm * np.stack([b1 - 0.7 * b2, 0.6 * b1 + b2])


def two_contrast_pair(peak_mm: float) -> tuple[Volume, Volume, np.ndarray, np.ndarray]:
    """Fixed: smooth random texture; moving: the texture moved by the bumps, through a
    non-monotonic contrast (cos 3t) plus noise. Returns the pair, the inner pixels' fixed
    points (mm) and where the truth maps them."""
    rng = np.random.default_rng(3)
    texture = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.5)
    texture = (texture - texture.min()) / np.ptp(texture)
    ij = np.indices(SHAPE, dtype=np.float64)
    source = ij.copy()
    for _ in range(40):  # moving(y) = fixed(z) where z + u(z) = y (fixed-point iteration)
        source = ij - _displacement(source, peak_mm)
    moved = ndimage.map_coordinates(texture, source, order=3, mode="nearest")
    moving = np.cos(3.0 * moved) + rng.normal(scale=0.02, size=SHAPE)
    points = np.moveaxis(ij[(slice(None),) + INNER], 0, -1).reshape(-1, 2)
    truth = points + np.moveaxis(_displacement(ij, peak_mm)[(slice(None),) + INNER], 0,
                                 -1).reshape(-1, 2)
    return (Volume(texture.astype(np.float32), np.eye(3), "fixed"),
            Volume(moving.astype(np.float32), np.eye(3), "moving"), points, truth)


def _error(mapped: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(mapped - truth, axis=1).mean())


@pytest.mark.parametrize("model", ["syn", "bspline"])
def test_a_real_deformation_between_two_contrasts_is_kept(model):
    # peak 4.7 mm: forced or not, MI's deformation brings the error from ~1.0 to < 0.1 mm
    fixed, moving, points, truth = two_contrast_pair(4.0)
    result = register(fixed, moving, transform=model)
    check = result.diagnostics["structure_check"]
    assert check["accepted"], check
    assert check["beats_mirror"], check
    if model == "syn":
        assert result.diagnostics["metric"] == "mi", result.diagnostics
        assert result.diagnostics["deformation_kept"], result.diagnostics
    linear = _error(apply_affine(result.matrix, points), truth)
    assert _error(result.transform.transform_points(points), truth) < 0.25 * linear, linear


@pytest.mark.parametrize("model", ["syn", "bspline"])
def test_the_same_contrasts_without_a_deformation_stay_unbent(model):
    fixed, moving, points, truth = two_contrast_pair(0.0)
    result = register(fixed, moving, transform=model)
    check = result.diagnostics["structure_check"]
    assert not check["accepted"], check
    np.testing.assert_allclose(result.transform.transform_points(points),
                               apply_affine(result.matrix, points), atol=1e-6)
