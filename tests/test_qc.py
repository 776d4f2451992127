"""QC maths: checkerboard in world mm, difference, edges, Dice, TRE, similarity, Jacobian."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.core import qc
from napari_reg.core.image import Volume
from napari_reg.core.thin_plate import fit_thin_plate
from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.core.transforms.field import DisplacementField


def test_checkerboard_squares_are_world_mm_and_alternate_sources() -> None:
    shape = (8, 6, 4)
    affine = np.diag([2.0, 1.0, 3.0, 1.0])  # anisotropic: 2 x 1 x 3 mm voxels
    fixed = np.full(shape, 1.0, np.float32)
    warped = np.full(shape, 2.0, np.float32)
    out = qc.checkerboard(fixed, warped, 4.0, affine, normalize=False)
    i, j, k = np.indices(shape)
    odd = ((2 * i) // 4 + j // 4 + (3 * k) // 4) % 2 == 1
    np.testing.assert_array_equal(out, np.where(odd, 2.0, 1.0))
    # along x a square covers 4 mm = 2 voxels; along y 4 voxels
    assert out[0, 0, 0] == 1 and out[2, 0, 0] == 2 and out[0, 4, 0] == 2 and out[2, 4, 0] == 1


def test_checkerboard_with_offset_flipped_affine_and_normalisation() -> None:
    affine = np.array([[-1.0, 0, 0, 3.5], [0, 1, 0, -2.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    fixed = np.arange(6 * 5 * 2, dtype=np.float32).reshape(6, 5, 2)
    warped = 1000 + fixed
    out = qc.checkerboard(fixed, warped, 2.0, affine)
    x = 3.5 - np.arange(6)[:, None, None]
    y = -2.0 + np.arange(5)[None, :, None]
    z = np.arange(2)[None, None, :]
    odd = (np.floor(x / 2) + np.floor(y / 2) + np.floor(z / 2)) % 2 == 1
    np.testing.assert_allclose(out, np.where(odd, qc.normalize_intensity(warped),
                                             qc.normalize_intensity(fixed)))


def test_difference_and_bad_shapes() -> None:
    a = np.zeros((4, 4, 4))
    b = np.zeros((4, 4, 4))
    b[1, 1, 1] = 5
    d = qc.difference(a, b, normalize=False)
    assert d[1, 1, 1] == -5 and np.count_nonzero(d) == 1
    with pytest.raises(qc.QCError, match="same grid"):
        qc.difference(a, np.zeros((4, 4, 3)))
    with pytest.raises(qc.QCError, match="positive"):
        qc.checkerboard(a, b, 0.0, np.eye(4))


def test_edges_lie_on_the_boundary_of_a_cube() -> None:
    data = np.zeros((24, 24, 24), np.float32)
    data[6:18, 6:18, 6:18] = 100
    mag = qc.edge_map(data, np.eye(4), sigma_mm=1.0)
    assert mag[12, 12, 12] < 1e-3 and mag[5:7, 12, 12].max() > 10
    e = qc.edges(data, np.eye(4), sigma_mm=1.0)
    assert e[5:7, 12, 12].any() and e[17:19, 12, 12].any()
    assert not e[12, 12, 12] and not e[0, 0, 0]
    assert not e[8:16, 8:16, 8:16].any()  # nothing inside the cube


def test_edge_map_units_are_per_mm() -> None:
    ramp = np.tile(np.arange(10, dtype=np.float32)[:, None, None], (1, 4, 4))
    mag = qc.edge_map(ramp, np.diag([2.0, 1, 1, 1]), sigma_mm=0)
    np.testing.assert_allclose(mag[3:7, 2, 2], 0.5)  # 1 per voxel = 0.5 per mm


def test_dice_per_label() -> None:
    a = np.zeros((10, 10), np.int16)
    b = np.zeros((10, 10), np.int16)
    a[:5] = 1
    b[:4] = 1  # 40 of 50 overlap -> 2*40/(50+40)
    a[7:, :] = 2
    b[7:, :] = 2
    got = qc.dice_per_label(a, b)
    assert got[1] == pytest.approx(80 / 90) and got[2] == 1.0
    assert np.isnan(qc.dice_per_label(a, b, labels=[7])[7])


def test_dice_per_label_of_a_segmentation_against_its_truth() -> None:
    """(moved from test_labels.py: one Dice for QC and atlas segmentation)"""
    seg = np.array([0, 1, 1, 2, 2, 2])
    ref = np.array([0, 1, 2, 2, 2, 0])
    report = qc.dice_per_label(seg, ref)
    assert set(report) == {1, 2}
    assert report[1] == pytest.approx(2 * 1 / 3)
    assert report[2] == pytest.approx(2 * 2 / 6)
    assert np.isnan(qc.dice_per_label(seg, ref, labels=[7])[7])
    with pytest.raises(qc.QCError, match="same grid"):
        qc.dice_per_label(seg, ref[:4])
    a = Volume(np.ones((4, 4), np.int16), np.eye(3))
    shifted = np.eye(3)
    shifted[0, 2] = 2.0
    assert qc.dice_per_label(a, a.with_data(a.data)) == {1: 1.0}
    with pytest.raises(qc.QCError, match="same grid"):
        qc.dice_per_label(a, Volume(a.data, shifted))


def test_tre_and_similarity() -> None:
    f = np.array([[0, 0, 0], [10, 0, 0], [0, 5, 0.0]])
    m = f + [1, 0, 0]
    shift = np.eye(4)
    shift[0, 3] = 1
    np.testing.assert_allclose(qc.target_registration_error(shift, f, m), 0, atol=1e-12)
    np.testing.assert_allclose(qc.target_registration_error(MatrixTransform(np.eye(4)), f, m), 1)
    rng = np.random.default_rng(0)
    img = rng.normal(size=(20, 20, 20))
    assert qc.similarity(img, 3 * img + 1, "ncc") == pytest.approx(1.0, abs=1e-9)
    assert qc.similarity(img, -img, "ncc") == pytest.approx(-1.0, abs=1e-9)
    assert qc.similarity(img, img, "mi") > qc.similarity(img, rng.normal(size=img.shape), "mi")
    with pytest.raises(qc.QCError, match="fewer than 10"):
        qc.similarity(img, img, mask=np.zeros(img.shape, bool))


def test_jacobian_of_a_scaling_and_a_fold() -> None:
    shape, affine = (12, 12, 12), np.diag([2.0, 2.0, 2.0, 1.0])
    scale = np.diag([1.1, 1.0, 0.9, 1.0])
    jac = qc.jacobian_determinant(MatrixTransform(scale), shape, affine)
    np.testing.assert_allclose(jac, 1.1 * 0.9, atol=1e-5)
    assert qc.folding_fraction(jac) == 0.0
    # a displacement that overturns the middle slab along x: du/dx = -2 there
    u = np.zeros(shape + (3,), np.float32)
    x = np.arange(12) * 2.0
    ux = np.where((x > 8) & (x < 14), -2.0 * (x - 8), np.where(x >= 14, -12.0, 0))
    u[..., 0] = ux[:, None, None]
    field = DisplacementField(u, affine)
    jac = qc.jacobian_determinant(field, shape, affine)
    assert qc.folding_fraction(jac) > 0.1
    assert jac[0, 5, 5] == pytest.approx(1.0)


def test_deformed_grid_identity_and_spline() -> None:
    shape, affine = (21, 21, 3), np.eye(4)
    ident = qc.deformed_grid(MatrixTransform(np.eye(4)), shape, affine, spacing_mm=10, line_mm=1)
    np.testing.assert_array_equal(ident[10, :, 1], 1)  # the plane x = 10
    assert ident[5, 5, 1] == 0 and ident[5, 0, 1] == 1
    f = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 2], [10, 10, 1.0]])
    push = np.array([[0, 0, 0]] * 4 + [[3, 0, 0]])
    bent = qc.deformed_grid(fit_thin_plate(f, f + push), shape, affine, spacing_mm=10, line_mm=1)
    assert not np.array_equal(bent, ident)
