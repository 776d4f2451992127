"""FreeSurfer linear transform arrays (``.lta``) -> a RAS fixed->moving matrix.

Read through nitransforms, which converts VOX2VOX and RAS2RAS LTAs alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import TransformFileError, check_matrix, nitransforms_io, read_text

__all__ = ["read_lta"]


def read_lta(path: str | os.PathLike) -> np.ndarray:
    """A FreeSurfer ``.lta`` (``mri_robust_register``, ``bbregister``, ``lta_convert``) as a
    RAS fixed->moving matrix. The file's own volume info gives the grids for VOX2VOX LTAs;
    its ``dst`` volume is the fixed image, ``src`` the moving one."""
    path = Path(path)
    text = read_text(path, "FreeSurfer LTA")
    io = nitransforms_io()
    try:
        lta = io.lta.FSLinearTransformArray.from_string(text)
    except Exception as exc:  # nitransforms raises several types on bad input
        raise TransformFileError(f"{path}: not a readable FreeSurfer LTA ({exc})") from None
    if len(lta["xforms"]) != 1:
        raise TransformFileError(f"{path}: holds {len(lta['xforms'])} transforms; only "
                                 "single-transform LTA files can be read")
    return check_matrix(np.asarray(lta.to_ras())[0], str(path))
