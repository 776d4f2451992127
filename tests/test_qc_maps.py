"""QC maps behind the views: the multi-modal mismatch, iso-surface levels, deformed grid
lines (whole map and deformation alone)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.core import qc
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.field import DisplacementField

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = [-20.0, -18.0, -14.0]
SHAPE = (22, 20, 16)


def _blob(centre) -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return (100.0 * np.exp(-r2 / 18.0)).astype(np.float32)


def test_mismatch_ignores_contrast_and_sees_a_shift() -> None:
    fixed = _blob((10, 9, 8))
    inverted = 100.0 - _blob((10, 9, 8))  # another "modality": same structure, inverted
    shifted = 100.0 - _blob((13, 9, 8))  # the same, 6 mm off along x
    near = qc.normalize_intensity(fixed) > 0.2  # around the blob
    aligned = qc.local_mismatch(fixed, inverted, AFFINE, radius_mm=4.0)
    off = qc.local_mismatch(fixed, shifted, AFFINE, radius_mm=4.0)
    assert aligned.dtype == np.float32 and aligned.min() >= 0 and off.max() <= 1
    assert aligned[near].mean() < 0.05  # inverted contrast, same place: no mismatch
    assert off[near].mean() > aligned[near].mean() + 0.2
    # the plain difference cannot tell: it is large for the aligned pair too
    assert np.abs(qc.difference(fixed, inverted))[near].mean() > max(0.3, 5 * aligned[near].mean())
    # flat windows (the far background) are no evidence: 0
    assert aligned[0, 0, 0] == 0 and off[0, 0, 0] == 0
    with pytest.raises(qc.QCError):
        qc.local_mismatch(fixed, fixed[:-1], AFFINE)


def test_surface_level_separates_object_and_background() -> None:
    data = np.zeros(SHAPE, np.float32)
    data[4:18, 4:16, 3:13] = 80.0
    data[8:14, 8:12, 6:10] = 200.0
    data += np.random.default_rng(0).normal(0, 3, SHAPE).astype(np.float32)
    level = qc.surface_level(data)
    # noisy background against the object: in the middle of the gap between them
    assert 25 < level < 65
    with pytest.raises(qc.QCError):
        qc.surface_level(np.zeros(SHAPE))


def test_grid_lines_whole_map_and_deformation_alone() -> None:
    scale = np.diag([1.1, 1.0, 1.0, 1.0])  # the affine part A
    u = np.zeros(SHAPE + (3,), np.float32)
    u[..., 1] = 3.0 * np.exp(-((np.indices(SHAPE)[0] - 10) ** 2) / 8.0)  # a bump along y
    whole = CompositeTransform([DisplacementField(u, AFFINE), MatrixTransform(scale)])
    lines = qc.grid_lines(whole, SHAPE, AFFINE, 4.0, normal_axis=2, position_mm=2.0)
    assert lines.shape[1:] == (2, 3) and np.all(lines[:, 0, 2] == 2.0)
    assert np.all(lines[:, 1, 2] == 0)  # flat in the plane
    along_y = np.abs(lines[:, 1, 1]) > np.abs(lines[:, 1, 0])
    # whole map: lines along y at x ticks t sit at 1.1 t (the bump moves along y only)
    xs = np.unique(np.round(lines[along_y, 0, 0], 6))
    ticks = np.arange(-20, 24, 4.0)
    ticks = ticks[(ticks >= -20) & (ticks <= 22)]
    np.testing.assert_allclose(xs, np.sort(1.1 * ticks), atol=1e-6)
    # deformation alone (A^-1 T): back on the ticks; lines along x bend near the bump only
    alone = qc.grid_lines(whole, SHAPE, AFFINE, 4.0, 2, 2.0, linear=scale)
    along_y = np.abs(alone[:, 1, 1]) > np.abs(alone[:, 1, 0])
    np.testing.assert_allclose(np.unique(np.round(alone[along_y, 0, 0], 6)), ticks, atol=1e-6)
    regular = qc.grid_lines(MatrixTransform(np.eye(4)), SHAPE, AFFINE, 4.0, 2, 2.0)
    moved = alone[:, 0] - regular[:, 0]  # the same points in the same order
    assert np.allclose(moved[:, 0], 0, atol=1e-6)
    at_bump = np.abs(regular[:, 0, 0]) < 1.0  # x = 0 mm is voxel 10, the bump's centre
    np.testing.assert_allclose(moved[at_bump, 1], 3.0, atol=0.05)
    assert np.abs(moved[np.abs(regular[:, 0, 0]) > 14, 1]).max() < 0.01
    with pytest.raises(qc.QCError):
        qc.grid_lines(whole, SHAPE, AFFINE, 0.0, 2, 2.0)
