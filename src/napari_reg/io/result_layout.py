"""The files of a registration result folder, what each one maps, and the ANTs chains.

A deformable result ``T(x) = A(W(x))`` (fixed world -> moving world; ``W`` a deformation
of the fixed space, ``A`` the affine) is written the way ANTs writes its own::

    transform.tfm           A: fixed -> moving, ITK affine (LPS inside the file)
    transform.mat           A again, ITK/ANTs binary (ANTsPy inverts only .mat files)
    warp.nii.gz             W only (x -> x + w(x)), on the fixed grid; NOT the whole map
    inverse_warp.nii.gz     W^-1, on the fixed grid
    whole_map_field.nii.gz  T = A(W(x)) as one field on the fixed grid: use it ALONE

so that ``antsApplyTransforms -r FIXED -i MOVING -t warp.nii.gz -t transform.tfm``
reproduces ``warped.nii.gz`` and ``antsApplyTransforms -r MOVING -i FIXED_LABELS -n
NearestNeighbor -t [transform.tfm,1] -t inverse_warp.nii.gz`` brings fixed-space labels
to the moving image. ``whole_map_field.nii.gz`` followed by the affine again would apply
the affine twice. In an ANTs chain ``-t t1 -t t2 ... -t tn`` a fixed point goes through
``t1`` first: ``x -> tn(...t2(t1(x)))``.

``motion`` (``transforms/frame_NNNN``), ``segment`` (``atlas_<k>``) and ``template``
(``transforms/<image>``) write each deformable map the same way under a stem
(:func:`ants_layout_names`), through the one writer :func:`write_ants_layout`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import NapariRegError
from ..core.image import Volume
from ..core.transforms.base import CompositeTransform, MatrixTransform, Transform
from ..core.transforms.field import DisplacementField
from .displacement_fields import save_displacement_field
from .transform_files import write_itk_transform

__all__ = ["AFFINE", "AFFINE_MAT", "FILE_DIRECTIONS", "INVERSE_WARP", "JACOBIAN", "WARP",
           "WHOLE_MAP", "ResultFolderError", "ants_layout_names", "deformation_fields",
           "result_chain", "split_whole_map", "write_ants_layout"]

AFFINE = "transform.tfm"
AFFINE_MAT = "transform.mat"
WARP = "warp.nii.gz"
INVERSE_WARP = "inverse_warp.nii.gz"
WHOLE_MAP = "whole_map_field.nii.gz"
JACOBIAN = "jacobian.nii.gz"

FILE_DIRECTIONS = {
    AFFINE: "ITK affine (LPS in the file), maps fixed physical points to moving points; "
            "for a deformable result only its linear part: apply it after warp.nii.gz",
    AFFINE_MAT: "the same affine as transform.tfm in ITK/ANTs binary form (ANTsPy's "
                "apply_transforms inverts only .mat files: whichtoinvert=[True, False])",
    "warped.nii.gz": "the moving image resampled on the fixed grid: moving(T(x))",
    WARP: "deformation only, on the fixed grid (ITK/ANTs field, LPS vectors): "
          "antsApplyTransforms -r FIXED -i MOVING -t warp.nii.gz -t transform.tfm",
    INVERSE_WARP: "inverse of warp.nii.gz, on the fixed grid: antsApplyTransforms "
                  "-r MOVING -i FIXED_IMAGE -t [transform.tfm,1] -t inverse_warp.nii.gz",
    WHOLE_MAP: "the whole fixed->moving map (affine included) as one field on the fixed "
               "grid: use it alone, never followed by transform.tfm",
    JACOBIAN: "Jacobian determinant of the whole map (values <= 0 are folds)",
}


class ResultFolderError(NapariRegError):
    """A result folder without the files a chain needs."""


def deformation_fields(deformable: Any, fixed: Volume
                       ) -> tuple[DisplacementField, DisplacementField]:
    """The deformation ``W`` alone and its inverse, both sampled on ``fixed``'s grid.

    ``deformable`` is the core's ``DeformableResult`` (``T = A W``): its linear matrix is
    replaced by the identity, so the fields hold no affine part.
    """
    d = len(fixed.shape)
    only_w = dataclasses.replace(deformable, linear_matrix=np.eye(d + 1))
    warp = only_w.displacement_field(fixed)
    parts = only_w.inverse_transform()
    inverse = parts.transforms[1:] if isinstance(parts, CompositeTransform) else [parts]
    w_inv = inverse[0] if len(inverse) == 1 else CompositeTransform(inverse)
    inverse_warp = dataclasses.replace(only_w, deformation=w_inv).displacement_field(fixed)
    return warp, inverse_warp


def split_whole_map(whole: Transform, linear_matrix: np.ndarray, grid: Volume
                    ) -> tuple[DisplacementField, DisplacementField]:
    """``W = A^-1 T`` (deformation only) and ``W^-1``, both on ``grid``, from a whole
    fixed->moving map ``T`` and its affine ``A`` (world RAS mm).

    For results that keep only the whole map (motion frames, atlases, template members):
    ``W`` is exact at the grid points (``A^-1`` applied to ``T``'s values there); ``W^-1``
    is inverted numerically (:meth:`DisplacementField.inverse`, fixed-point iteration).
    """
    only_w = CompositeTransform([whole, MatrixTransform(np.linalg.inv(linear_matrix))])
    warp = DisplacementField.from_transform(only_w, grid.shape, grid.affine)
    return warp, warp.inverse()


def ants_layout_names(stem: str) -> dict[str, str]:
    """The ANTs-layout file names of one deformable result written under ``stem``
    (``transforms/frame_0003`` -> ``frame_0003.tfm``, ``frame_0003_warp.nii.gz``, ...)."""
    return {"affine": f"{stem}.tfm", "affine_mat": f"{stem}.mat",
            "warp": f"{stem}_warp.nii.gz", "inverse_warp": f"{stem}_inverse_warp.nii.gz",
            "whole_map": f"{stem}_whole_map_field.nii.gz"}


def write_ants_layout(path_for: Callable[[str], Path], names: Mapping[str, str],
                      matrix: np.ndarray, warp: DisplacementField,
                      inverse_warp: DisplacementField, whole_map: DisplacementField) -> None:
    """Write one deformable result ``T(x) = A(W(x))`` the way ANTs writes its own.

    ``names`` maps ``affine`` (ITK text ``.tfm``), ``affine_mat`` (ITK binary ``.mat``),
    ``warp`` (``W`` only), ``inverse_warp`` (``W^-1``) and ``whole_map`` (``T`` as one
    field, used alone) to file names; ``path_for`` turns a name into the path to write
    (an :class:`~napari_reg.io.output_set.OutputSet`'s ``path``). ``matrix`` is ``A``,
    fixed->moving world RAS mm; the fields are on the fixed grid. The one writer of
    ``napari-reg register``, ``motion``, ``segment`` and ``template``.
    """
    for key in ("affine", "affine_mat"):
        write_itk_transform(matrix, path_for(names[key]))
    for key, dfield in (("warp", warp), ("inverse_warp", inverse_warp),
                        ("whole_map", whole_map)):
        save_displacement_field(path_for(names[key]), dfield)


def result_chain(folder: str | os.PathLike, inverse: bool = False) -> list[tuple[Path, bool]]:
    """The ANTs-order chain ``[(file, invert), ...]`` of a ``napari-reg register`` folder.

    Forward (fixed -> moving, resample a moving-space image on the fixed grid):
    ``warp.nii.gz`` then ``transform.tfm``. Inverse (moving -> fixed, resample a
    fixed-space image on the moving grid): ``[transform.tfm,1]`` then ``inverse_warp``.
    """
    folder = Path(folder)
    affine = folder / AFFINE
    if not affine.is_file():
        raise ResultFolderError(f"{folder}: no {AFFINE}; is it a napari-reg register "
                                "output folder?")
    warp, inverse_warp = folder / WARP, folder / INVERSE_WARP
    if not inverse:
        return [(warp, False), (affine, False)] if warp.is_file() else [(affine, False)]
    if warp.is_file() and not inverse_warp.is_file():
        raise ResultFolderError(f"{folder}: a deformable result without {INVERSE_WARP}; "
                                "re-run napari-reg register to write it")
    return [(affine, True), (inverse_warp, False)] if warp.is_file() else [(affine, True)]
