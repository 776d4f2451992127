"""greedy / c3d (ITK-SNAP) plain-text matrices <-> a RAS fixed->moving matrix.

``greedy -a -o affine.mat`` and ``c3d_affine_tool`` write four rows of four numbers in
world RAS mm that map FIXED points to MOVING points: exactly our matrix, no conversion.
The file carries no marker, so it is read only when the format is named (``ras``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import TransformFileError, check_matrix, text_rows, write_text

__all__ = ["read_ras_matrix", "write_ras_matrix"]


def read_ras_matrix(path: str | os.PathLike) -> np.ndarray:
    """Read a greedy/c3d 4x4 RAS fixed->moving matrix (world RAS mm)."""
    path = Path(path)
    return check_matrix(text_rows(path, "greedy/c3d RAS matrix"), str(path))


def write_ras_matrix(matrix: np.ndarray, path: str | os.PathLike) -> None:
    """Write a RAS fixed->moving matrix as greedy/c3d read it (``greedy -it FILE``)."""
    m = check_matrix(matrix, f"writing {path}")
    if m.shape != (4, 4):
        raise TransformFileError(f"writing {path}: greedy/c3d matrices are 3D (4x4)")
    write_text(path, "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in m))
