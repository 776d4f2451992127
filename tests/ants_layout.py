"""Shared check of a deformable result written in the ANTs layout (read by SimpleITK)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SUFFIXES = (".tfm", ".mat", "_warp.nii.gz", "_inverse_warp.nii.gz", "_whole_map_field.nii.gz")


def check_warp_then_affine_is_the_whole_map(stem: Path, grid: np.ndarray,
                                            shape: tuple[int, ...]) -> None:
    """Every file of ``stem``'s layout exists; SimpleITK's reading of ``-t STEM_warp -t
    STEM.tfm`` maps points inside the grid (voxel->world ``grid``, RAS) as the whole-map
    field does (1e-3 mm); the inverse warp undoes the warp (0.02 mm)."""
    import SimpleITK as sitk  # in the test extra: the ANTs-layout check reads with ITK

    for suffix in SUFFIXES:
        assert stem.with_name(stem.name + suffix).is_file(), suffix

    def field_tx(suffix: str):
        image = sitk.ReadImage(str(stem.with_name(stem.name + suffix)))
        return sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))

    def lps(pts: np.ndarray) -> np.ndarray:
        return pts * np.array([-1.0, -1.0, 1.0])

    def mapped(tx, pts: np.ndarray) -> np.ndarray:  # world RAS in and out
        return lps(np.array([tx.TransformPoint(tuple(map(float, q))) for q in lps(pts)]))

    affine = sitk.ReadTransform(str(stem.with_name(stem.name + ".tfm")))
    warp, whole = field_tx("_warp.nii.gz"), field_tx("_whole_map_field.nii.gz")
    inverse_warp = field_tx("_inverse_warp.nii.gz")
    chain = sitk.CompositeTransform([affine, warp])  # ITK applies the last added first
    ijk = np.random.default_rng(3).uniform(3, np.array(shape) - 4, size=(200, 3))
    pts = ijk @ grid[:3, :3].T + grid[:3, 3]
    ours = mapped(chain, pts)
    assert np.abs(ours - pts).max() > 0.01  # the map does move points
    np.testing.assert_allclose(ours, mapped(whole, pts), atol=1e-3)
    np.testing.assert_allclose(mapped(sitk.CompositeTransform([inverse_warp, warp]), pts),
                               pts, atol=0.02)
