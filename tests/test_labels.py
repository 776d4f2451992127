"""Label propagation (nearest, per-label linear + argmax), label tables, modality check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_reg.core.atlas.labels import (
    Atlas,
    LabelError,
    LabelTableError,
    ModalityWarning,
    check_label_tables,
    label_memberships,
    modality_check,
    propagate_labels,
)
from napari_reg.core.image import Volume
from phantoms import grid_affine, homogeneous, phantom_volume, rotation


def _blocky_labels(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int16)
    for value in (1, 2, 5):
        lo = [rng.integers(0, n // 2) for n in shape]
        hi = [lo[a] + rng.integers(2, shape[a] - lo[a]) for a in range(len(shape))]
        labels[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = value
    return labels


@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_propagation_through_known_grid_map_is_exact(method: str) -> None:
    """Subject voxel (i, j, k) maps exactly onto atlas voxel (n-1-j, i+2, k): a flip, an
    axis swap and a shift, on oblique anisotropic grids. Both methods must reproduce the
    atlas labels voxel for voxel (and the dtype)."""
    atlas_shape = (14, 12, 9)
    atlas_affine = grid_affine(atlas_shape, (1.3, 0.8, 2.0), (4.0, -3.0, 1.0),
                               rotation(0.2, -0.1, 0.3))
    atlas_labels = _blocky_labels(atlas_shape)
    subject_shape = (10, 14, 9)  # i over atlas j-2, j over atlas i flipped
    subject_affine = grid_affine(subject_shape, (0.9, 1.1, 1.5), (-8.0, 2.0, 5.0),
                                 rotation(-0.3, 0.2, 0.1))
    # voxel map subject -> atlas: a = P s + o
    vox = np.array([[0, -1, 0, atlas_shape[0] - 1], [1, 0, 0, 2], [0, 0, 1, 0], [0, 0, 0, 1]],
                   dtype=float)
    transform = atlas_affine @ vox @ np.linalg.inv(subject_affine)  # subject world -> atlas
    labels = Volume(atlas_labels, atlas_affine, "atlas")
    subject = Volume(np.zeros(subject_shape, np.float32), subject_affine, "subject")
    out = propagate_labels(labels, subject, transform, method=method)
    i, j, k = np.meshgrid(*[np.arange(n) for n in subject_shape], indexing="ij")
    ai, aj = atlas_shape[0] - 1 - j, i + 2
    inside = (ai >= 0) & (ai < atlas_shape[0]) & (aj < atlas_shape[1])
    expected = np.zeros(subject_shape, np.int16)
    expected[inside] = atlas_labels[ai[inside], aj[inside], k[inside]]
    assert out.data.dtype == np.int16
    np.testing.assert_array_equal(out.data, expected)
    np.testing.assert_allclose(out.affine, subject_affine)


def test_linear_argmax_smooths_boundaries_and_matches_analytic_truth() -> None:
    """A disc label map rotated+scaled by a known affine: both methods agree with the
    analytic answer almost everywhere; linear+argmax is at least as good as nearest."""
    shape = (48, 48)
    affine = grid_affine(shape, (1.0, 1.0))
    world = Volume(np.zeros(shape), affine).world_grid()
    disc = lambda p: (np.linalg.norm((p - [3.0, -2.0]) / [14.0, 9.0], axis=-1) < 1).astype(np.uint8)  # noqa: E731
    atlas = Volume(disc(world) + 2 * (world[..., 0] > 12), affine, "atlas")
    m = np.eye(3)
    m[:2, :2] = 1.07 * rotation(0, 0, 0.35)[:2, :2]
    m[:2, 2] = [1.3, -2.2]
    mapped = world @ m[:2, :2].T + m[:2, 2]
    truth = disc(mapped) + 2 * (mapped[..., 0] > 12)
    inside = atlas.contains_voxel(atlas.world_to_voxel(mapped), margin=0.5)
    errors = {}
    for method in ("nearest", "linear"):
        out = propagate_labels(atlas, atlas, m, method=method)
        assert np.all(out.data[~inside] == 0)
        errors[method] = np.count_nonzero(out.data[inside] != truth[inside])
        assert errors[method] < 0.03 * np.count_nonzero(inside)
    assert errors["linear"] <= errors["nearest"] + 5


def test_memberships_sum_to_one_and_outside_is_background() -> None:
    shape = (12, 10)
    labels = Volume(_blocky_labels(shape, seed=3), grid_affine(shape, (1.0, 1.0)))
    shift = np.eye(3)
    shift[:2, 2] = [4.5, -2.25]
    values, member = label_memberships(labels, labels, shift)
    np.testing.assert_allclose(member.sum(axis=0), 1.0, atol=1e-5)
    assert values[0] == 0
    assert np.all(member[0, -3:, :] == 1.0)  # mapped beyond the atlas: background


def test_label_tables_must_agree() -> None:
    a = np.array([[0, 1], [2, 3]])
    assert check_label_tables([a, a.copy()]).tolist() == [0, 1, 2, 3]
    with pytest.raises(LabelTableError, match=r"'b' lacks labels \[3\] and has extra labels \[4\]"):
        check_label_tables([a, np.array([[0, 1], [2, 4]])], names=["a", "b"])
    with pytest.raises(LabelTableError, match="label 2 is 'WM' in 'a' but 'GM' in 'b'"):
        check_label_tables([a, a], ["a", "b"], [{2: "WM"}, {2: "GM"}])


def test_bad_label_maps_are_refused() -> None:
    affine = np.eye(3)
    with pytest.raises(LabelError, match="non-integer values"):
        Atlas(Volume(np.ones((4, 4)), affine), Volume(np.full((4, 4), 0.5), affine), "x")
    atlas = Atlas(Volume(np.ones((4, 4)), affine), Volume(np.ones((4, 4), np.float32), affine))
    assert atlas.labels.data.dtype == np.int32  # whole-number floats are accepted
    with pytest.raises(LabelError, match="unknown label propagation"):
        propagate_labels(atlas.labels, atlas.labels, None, method="cubic")


def test_modality_check_asks_for_mi_across_contrasts() -> None:
    t1 = phantom_volume((24, 24, 20), (3.0, 3.0, 3.0), name="t1")
    t2 = phantom_volume((24, 24, 20), (3.0, 3.0, 3.0), contrast="t2", name="t2")
    with pytest.warns(ModalityWarning, match="metric='mi'"):
        assert "different contrasts" in modality_check(t1, t2, "ssd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert modality_check(t1, t2, "mi") is None
        assert modality_check(t1, t1, "ncc") is None


def test_non_linear_maps_are_sampled_once_and_give_the_same_labels() -> None:
    from napari_reg.core.atlas.labels import dense_on
    from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
    from napari_reg.core.transforms.field import DisplacementField

    shape = (20, 18)
    affine = grid_affine(shape, (1.5, 1.5))
    labels = Volume(_blocky_labels(shape, seed=5), affine)
    world = labels.world_grid()
    bump = np.exp(-np.sum(world ** 2, axis=-1) / 50.0)[..., None] * [1.2, -0.8]
    warp = CompositeTransform([DisplacementField(bump, affine),
                               MatrixTransform(homogeneous(np.eye(2), [0.7, -0.4]))])
    dense = dense_on(labels, warp)
    assert isinstance(dense, DisplacementField)
    assert dense_on(labels, dense) is dense and dense_on(labels, np.eye(3)).is_linear
    for method in ("nearest", "linear"):
        np.testing.assert_array_equal(propagate_labels(labels, labels, dense, method).data,
                                      propagate_labels(labels, labels, warp, method).data)
