"""X5 (NiPreps' HDF5 transform format) -> a RAS fixed->moving matrix (via nitransforms)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import TransformFileError, check_matrix, nitransforms_io

__all__ = ["read_x5"]


def read_x5(path: str | os.PathLike) -> np.ndarray:
    """A linear X5 (NiPreps' HDF5 transform format) as a RAS fixed->moving matrix."""
    path = Path(path)
    io = nitransforms_io()
    try:
        items = io.x5.from_filename(path)
    except Exception as exc:  # h5py / nitransforms raise several types
        raise TransformFileError(f"{path}: not a readable X5 file ({exc})") from None
    if len(items) != 1 or items[0].array_length != 1:
        raise TransformFileError(f"{path}: holds {len(items)} transform groups; only a "
                                 "single transform can be read")
    if items[0].type != "linear":
        raise TransformFileError(f"{path}: an X5 {items[0].type} transform; only linear X5 "
                                 "files are read (write a NIfTI displacement field instead)")
    return check_matrix(np.asarray(items[0].transform, np.float64), str(path))
