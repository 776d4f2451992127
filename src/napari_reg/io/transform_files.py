"""Transform files <-> fixed->moving transforms: the old import path, kept.

The readers and writers live in :mod:`napari_reg.io.transforms`, one module per format
(ITK text/MATLAB/HDF5, FSL FLIRT and FNIRT, greedy/c3d RAS, FreeSurfer LTA, AFNI, X5);
this module re-exports them so ``from napari_reg.io.transform_files import
read_transform`` keeps working.
"""

from __future__ import annotations

from .transforms import (
    FORMATS,
    LINEAR_FORMATS,
    TransformFileError,
    detect_format,
    load_transform,
    read_afni_matrix,
    read_fnirt_warp,
    read_fsl_matrix,
    read_itk_h5,
    read_itk_mat,
    read_itk_transform,
    read_lta,
    read_ras_matrix,
    read_transform,
    read_x5,
    write_fsl_matrix,
    write_itk_h5,
    write_itk_transform,
    write_ras_matrix,
    write_transform,
)

__all__ = ["FORMATS", "LINEAR_FORMATS", "TransformFileError", "detect_format",
           "load_transform", "read_afni_matrix", "read_fnirt_warp", "read_fsl_matrix",
           "read_itk_h5", "read_itk_mat", "read_itk_transform", "read_lta",
           "read_ras_matrix", "read_transform", "read_x5", "write_fsl_matrix",
           "write_itk_h5", "write_itk_transform", "write_ras_matrix", "write_transform"]
